"""The caches of reference cases: the last ``MEMORY_CACHE`` cases in this process, and one verified file per
case on disk.

In memory: complete cases (inputs, float64 reference, floor statistics) under the sha256 of their case dict. What a
caller gets (``reference_case``, ``case_inputs``, ``reference_arrays``, and through them ``make_golden``) are
read-only views: writing into them raises, instead of changing the reference of the next check or golden
file. The reference arrays in the cache are read-only themselves. (Code in the same process can still reach
the memory behind the views; docs/tolerances.md states that trust model.)

On disk, when ``cache_dir`` or the environment variable ``MINICP_REFERENCE_CACHE`` names a folder: one
uncompressed .npz per case, ``minicp-ref-<key>.npz``, holding the float64 reference, the floors' row statistics, the case
key, the sha256 of the inputs the reference was computed from (``inputs_sha256``) and a sha256 over all of it
(``digest``; both ``guards.combined_digest``: each array hashed on its own thread). The inputs themselves are not stored: they are drawn again from the seed, which costs about
what reading them did, and their digest must be the entry's. An entry is used only after its zip directory
and .npy headers matched the case's shapes (``minicp.testing.npz``), the digest of its arrays (mapped into
memory, read-only: their pages are read once by the digest) matched, and the floors are consistent with the stored reference
(``floors_consistent``): their reference rows are its own, and no floor is larger than what it rounds. Anything else is recomputed and the entry rewritten. Entries are written atomically (a temporary
file, then a rename) and never rewritten in place, so a mapping keeps the complete file it verified:
pytest-xdist workers sharing a folder read either a complete old entry or a complete new one, and two
workers computing one case write the same bytes. (Mapping instead of reading saves about 0.3 s per entry of
256 MiB on the 2-core VM, where fresh memory costs page faults; a process that rewrites an entry in place,
which minicp never does, is outside the trust model of docs/tolerances.md.)
"""

import collections
import os
import zipfile

import numpy as onp

from minicp.files import atomic_savez, open_regular
from minicp.testing import npz
from minicp.testing.budgets import FLOOR_ULPS, ZERO_ULPS
from minicp.testing.dtypes import EPS
from minicp.testing.guards import combined_digest
from minicp.testing.rowstats import FLOOR_ROWS

__all__ = [
    "MEMORY_CACHE",
    "CACHE_ENV",
    "clear_cache",
    "forget",
    "recall",
    "remember",
    "read_only",
    "entry_path",
    "load_entry",
    "store_entry",
    "floors_consistent",
]

MEMORY_CACHE = 4
CACHE_ENV = "MINICP_REFERENCE_CACHE"
STRINGS = ("key", "inputs_sha256", "digest")  # the entry's text members
_MEMORY = collections.OrderedDict()


def clear_cache():
    """Forget the in-process cache."""
    _MEMORY.clear()


def forget(key):
    """Drop one case (by its key) from the in-process cache."""
    _MEMORY.pop(key, None)


def recall(key):
    """The cached case ``key`` (the cache's own dict, copied: its arrays are shared), or None."""
    if key not in _MEMORY:
        return None
    _MEMORY.move_to_end(key)
    return dict(_MEMORY[key])


def remember(key, case, inputs=()):
    """Keep ``case`` (dict) under ``key``, its arrays other than ``inputs`` made read-only; the oldest of
    more than ``MEMORY_CACHE`` cases is dropped."""
    for name, value in case.items():
        if isinstance(value, onp.ndarray) and name not in inputs:
            value.flags.writeable = False
    _MEMORY[key] = case
    _MEMORY.move_to_end(key)
    while len(_MEMORY) > MEMORY_CACHE:
        _MEMORY.popitem(last=False)


def _view(value):
    if isinstance(value, onp.ndarray):  # (a GPU's arrays have no read-only flag: docs/tolerances.md)
        view = value.view()
        view.flags.writeable = False
        return view
    return value


def read_only(case):
    """``case`` with every array a read-only view and the case dict a copy: what leaves the cache."""
    out = {name: _view(value) for name, value in case.items()}
    if isinstance(out.get("case"), dict):
        out["case"] = dict(out["case"], pattern_args=dict(out["case"]["pattern_args"]))
    return out


def entry_path(cache_dir, key):
    """The disk cache's file for ``key``, or None when no folder is set (argument or environment)."""
    folder = cache_dir if cache_dir is not None else os.environ.get(CACHE_ENV)
    return None if not folder else os.path.join(os.fspath(folder), f"minicp-ref-{key[:24]}.npz")


def _entry_digest(key, inputs_sha256, arrays):
    text = {"key": onp.asarray(key), "inputs_sha256": onp.asarray(inputs_sha256)}
    return combined_digest(dict(text, **arrays), ["key", "inputs_sha256", *sorted(arrays)])


def store_entry(cache_dir, key, computed, inputs_sha256):
    """Write the reference and floor statistics of case ``key`` (``computed``: name -> array), computed from inputs of
    digest ``inputs_sha256``, as one uncompressed .npz (atomically); nothing without a cache folder."""
    path = entry_path(cache_dir, key)
    if path is None:
        return None
    os.makedirs(os.path.dirname(path), exist_ok=True)
    text = {"key": key, "inputs_sha256": inputs_sha256, "digest": _entry_digest(key, inputs_sha256, computed)}
    return atomic_savez(path, dict(computed, **{k: onp.asarray(v) for k, v in text.items()}), compressed=False)


def load_entry(cache_dir, key, shapes, inputs_sha256, dtype):
    """The verified arrays (name -> read-only array) of case ``key`` from the disk cache, or None when there
    is no entry or it is not exactly what ``shapes`` (name -> (shape, dtype)), ``inputs_sha256`` and its own
    digest say, or its floors are inconsistent (``floors_consistent``; ``dtype`` the case's)."""
    path = entry_path(cache_dir, key)
    if path is None or not os.path.isfile(path):
        return None
    try:
        with open_regular(path) as fh, zipfile.ZipFile(fh) as zf:
            found = npz.members(zf, path)
            if set(found) != set(shapes) | set(STRINGS):
                return None
            text = {}
            for name in STRINGS:
                member = npz.header(zf, found[name], path, shape=(), limit=1024)
                if member.dtype.kind != "U":
                    return None
                text[name] = str(npz.read(zf, member, path, fh=fh)[()])
            if text["key"] != key or text["inputs_sha256"] != inputs_sha256:
                return None
            arrays = {}
            for name, (shape, dt) in shapes.items():
                member = npz.header(zf, found[name], path, shape=shape, dtype=dt)
                arrays[name] = npz.mapped(fh, member, path)
    except (ValueError, OSError, EOFError, zipfile.BadZipFile):
        return None
    if _entry_digest(key, inputs_sha256, arrays) != text["digest"]:
        return None
    tensors = [name for name in arrays if "floor_" + name in arrays]
    if not all(floors_consistent(arrays[t], arrays["floor_" + t], dtype) for t in tensors):
        return None
    if "twin_out" in arrays and not (onp.isfinite(arrays["twin_out"]).all() and (arrays["twin_out"] >= 0).all()):
        return None
    for value in arrays.values():
        value.flags.writeable = False
    return arrays


def floors_consistent(reference, floor, dtype):
    """True when the floor statistics ``floor`` (5, h, rows: ``rowstats.FLOOR_ROWS``) of ``reference`` are finite
    and >= 0, their reference rows (sum of squares, largest magnitude) are the reference's own (to 1e-9
    relative), and the floors are no larger than the values they round: the plain implementation's largest
    error below the reference's largest magnitude plus the absolute budget, the production one's squared
    errors and their row-parallel parts below the reference's squares."""
    f = onp.asarray(floor, dtype=onp.float64)
    if f.ndim != 3 or f.shape[0] != len(FLOOR_ROWS) or not (onp.isfinite(f).all() and (f >= 0).all()):
        return False
    r = onp.where(onp.isfinite(reference), reference, 0.0)
    rv = r.transpose(1, 2, 0, 3)
    if rv.shape[:2] != f.shape[1:]:
        return False
    r_sq, r_max = onp.einsum("hrbd,hrbd->hr", rv, rv), onp.abs(rv).max(axis=(2, 3)) if r.size else f[4]
    close = lambda x, y: bool(onp.all(onp.abs(x - y) <= 1e-9 * onp.maximum(onp.abs(x), onp.abs(y))))
    if not (close(f[3], r_sq) and close(f[4], r_max)):
        return False
    absolute = _absolute(float(onp.sqrt(r_sq.sum() / r.size)) if r.size else 0.0, dtype)
    top = float(r_max.max()) if r_max.size else 0.0
    return (
        float(f[0].max(initial=0.0)) <= top + absolute and f[2].sum() <= f[1].sum() <= r_sq.sum() + absolute**2 * r.size
    )


def _absolute(scale, dtype):
    """The absolute budget FLOOR_ULPS * eps * rms(R) (``scale``), or ZERO_ULPS * eps for an all-zero R."""
    return FLOOR_ULPS * EPS[dtype] * scale if scale > 0 else ZERO_ULPS * EPS[dtype]
