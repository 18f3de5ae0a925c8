"""Writing and reading golden files: atomic, no pickle, and checked before they are read.

``read_golden`` reads the zip directory and the config first (``minicp.testing.npz``), then refuses, before
reading any array: a member the config's ``arrays`` listing does not name, a name given twice, a listed
array that is missing, more than ``max_bytes`` (``READ_LIMIT``; None: no bound) of declared array data plus
the pattern masks rebuilt from the config (about a byte per score entry), a recomputation of more than
``max_work`` multiply-adds (when asked), a listing other than what the config's case implies
(``config.implied_arrays``), and any member whose .npy header or zip directory size differs from the
listing. Only then are the arrays read (decompressed), each exactly as large as declared. A small
file whose members would decompress to gigabytes is thus refused in milliseconds.
"""

import json
import os
import zipfile

import numpy as onp

from minicp.files import atomic_savez, open_regular
from minicp.golden.config import INPUTS, attention_case, attention_work, implied_arrays, input_draw
from minicp.golden.make import Golden, block_arrays, input_digest
from minicp.testing import npz
from minicp.testing.reference import seeded_inputs
from minicp.validate import real

__all__ = ["CONFIG_LIMIT", "READ_LIMIT", "save_golden", "read_golden", "read_golden_config", "regenerate_inputs"]

CONFIG_LIMIT = 1 << 24  # bytes of a golden file's JSON config
READ_LIMIT = 1 << 31  # bytes of array data a golden file may declare, unless max_bytes=None


def save_golden(golden, path, overwrite=True):
    """Write a ``Golden`` as a compressed .npz (no pickled objects), atomically: a temporary file in the same
    folder, then ``os.replace``; a symlink at ``path`` is refused, and with ``overwrite=False`` an existing
    file. With ``inputs="seed"`` q, k, v, dout are left out. Returns the path written."""
    if not isinstance(golden, Golden):
        raise ValueError(f"golden must be a minicp.golden.Golden, got {type(golden).__name__}")
    path = os.fspath(path)
    if not path.endswith(".npz"):
        raise ValueError(f"path must end in .npz, got {path!r}")
    arrays = dict(golden.arrays)
    if golden.config.get("inputs") == "seed":
        for key in INPUTS:
            arrays.pop(key, None)
    arrays["config"] = onp.asarray(json.dumps(golden.config))
    atomic_savez(path, arrays, overwrite=overwrite, lock=True)
    return path


def read_golden(path, max_bytes=READ_LIMIT, max_work=None):
    """The arrays and config of a golden .npz, inputs regenerated (and verified against ``input_sha256``)
    when the file recorded only their seed; every refusal of the module docstring is made before any array
    is read. ValueError saying what is wrong."""
    if max_bytes is not None:
        real("max_bytes", max_bytes, low=0)
    with open_regular(path) as fh:  # ValueError for a FIFO, a directory, a missing or unreadable file
        try:
            with zipfile.ZipFile(fh) as zf:
                found = npz.members(zf, path)
                config = _parse_config(_config_text(zf, found, path), path)
                listed = _listing(config, found, path, max_bytes, max_work)
                members = {key: npz.header(zf, found[key], path, shape, dt) for key, (shape, dt) in listed.items()}
                arrays = {key: npz.read(zf, member, path) for key, member in members.items()}
        except (zipfile.BadZipFile, OSError, EOFError) as e:
            raise ValueError(
                f"{path}: cannot read as .npz, truncated or not a zip archive ({type(e).__name__}: {e})"
            ) from e
    if config.get("inputs") == "seed":
        arrays.update(regenerate_inputs(config, path))
    return Golden(arrays, config)


def _config_text(zf, found, path):
    if "config" not in found:
        raise ValueError(f"{path}: no 'config' entry; not a minicp golden file")
    member = npz.header(zf, found["config"], path, shape=(), limit=CONFIG_LIMIT)
    if member.dtype.kind != "U":
        raise ValueError(f"{path}: 'config' must be a unicode string, got dtype {member.dtype.str}")
    return str(npz.read(zf, member, path)[()])


def _listing(config, found, path, max_bytes, max_work):
    """name -> (shape, dtype) of the members to read: the config's listing, after it was checked against the
    file's members, ``max_bytes``, ``max_work`` and what the config's case implies."""
    listed = config.get("arrays")
    if not isinstance(listed, dict) or not all(_spec_ok(spec) for spec in listed.values()):
        raise ValueError(f"{path}: config 'arrays' must map names to [shape, dtype]")
    extra = sorted(set(found) - set(listed) - {"config"})
    if extra:
        raise ValueError(f"{path}: arrays not listed in the config: {extra}; refused before reading")
    missing = [key for key in listed if key not in found]
    if missing:
        raise ValueError(f"{path}: missing array {missing[0]!r}")
    declared = sum(int(onp.prod(shape, dtype=onp.int64)) * onp.dtype(dt).itemsize for shape, dt in listed.values())
    attention = config.get("kind") == "attention"
    work = _work(config, path) if attention and (max_bytes is not None or max_work is not None) else 0.0
    entries = int(work / (6 * config["head_dim"] * config["batch"])) if work else 0  # about a byte each to rebuild
    if max_bytes is not None and declared + entries > max_bytes:
        raise ValueError(
            f"{path}: reading this file takes {declared:,} bytes of arrays and {entries:,} of the pattern's masks "
            f"rebuilt from the config, more than max_bytes = {max_bytes:,}; pass max_bytes=None (CLI: --allow-large)"
            " to read it anyway"
        )
    if max_work is not None and work > max_work:
        raise ValueError(
            f"{path}: recomputing this case takes {work:.2g} multiply-adds, more than max_work = {max_work:.2g}; "
            "pass max_work=None (CLI: --allow-large) to check it anyway"
        )
    regenerated = set(INPUTS) if config.get("inputs") == "seed" and config.get("kind") == "attention" else set()
    implied = {k: v for k, v in implied_arrays(config, path, block_arrays).items() if k not in regenerated}
    for key in sorted(set(implied) | set(listed)):
        want = [list(implied[key][0]), implied[key][1]] if key in implied else None
        if want != listed.get(key):
            got = listed.get(key, "nothing")
            raise ValueError(f"{path}: array {key!r} is listed as {got}, the config's case implies {want or 'none'}")
    return {key: (tuple(shape), dt) for key, (shape, dt) in listed.items()}


def _spec_ok(spec):
    if not (isinstance(spec, list) and len(spec) == 2 and isinstance(spec[0], list) and isinstance(spec[1], str)):
        return False
    try:
        onp.dtype(spec[1])
    except TypeError:
        return False
    return all(isinstance(x, int) and not isinstance(x, bool) and x >= 0 for x in spec[0])


def _work(config, path):
    attention_case(config, path, patterns=False)  # the fields the work depends on (ValueError naming them)
    try:
        return attention_work(config)
    except (KeyError, TypeError, ValueError) as e:
        raise ValueError(f"{path}: config lacks a valid field or its pattern is invalid ({e})") from None


def read_golden_config(path):
    """The JSON config of a golden .npz, read alone (the zip directory and the config's own .npy header are
    checked first; no other member is read). ValueError saying what is wrong."""
    with open_regular(path) as fh:
        try:
            with zipfile.ZipFile(fh) as zf:
                found = npz.members(zf, path)
                if "config" not in found:
                    raise ValueError(f"{path}: no 'config' entry; not a minicp golden file")
                member = npz.header(zf, found["config"], path, shape=(), limit=CONFIG_LIMIT)
                if member.dtype.kind != "U":
                    raise ValueError(f"{path}: 'config' must be a unicode string, got dtype {member.dtype.str}")
                text = str(npz.read(zf, member, path)[()])
        except (zipfile.BadZipFile, OSError, EOFError) as e:
            raise ValueError(
                f"{path}: cannot read as .npz, truncated or not a zip archive ({type(e).__name__}: {e})"
            ) from e
    return _parse_config(text, path)


def _parse_config(text, path):
    try:
        config = json.loads(text)
    except (json.JSONDecodeError, TypeError) as e:
        raise ValueError(f"{path}: 'config' is not valid JSON ({e})") from e
    if not isinstance(config, dict):
        raise ValueError(f"{path}: 'config' must be a JSON object, got {type(config).__name__}")
    return config


def regenerate_inputs(config, source):
    """q, k, v, dout of an attention file from its recorded case, verified against ``input_sha256``."""
    try:
        inputs = seeded_inputs(
            int(config["seed"]),
            int(config["batch"]),
            int(config["heads"]),
            int(config["seq_len"]),
            int(config["head_dim"]),
            int(config["out_rows"]),
            config["dtype"],
            input_draw(config, source),
        )
    except (KeyError, TypeError, ValueError) as e:
        raise ValueError(f"{source}: cannot regenerate the inputs from the config ({type(e).__name__}: {e})") from e
    if input_digest(inputs) != config.get("input_sha256"):
        raise ValueError(
            f"{source}: inputs regenerated from seed {config.get('seed')} do not match the recorded "
            "input_sha256 (a different NumPy random stream, or an edited config)"
        )
    return inputs
