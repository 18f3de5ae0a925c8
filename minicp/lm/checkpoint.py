"""Training checkpoints: one ``.npz`` file, no pickle, written atomically.

A checkpoint holds the parameters under their official state_dict names (``param/<name>``; for official
weights also their RoPE buffers ``param/layers.i.0.fn.pos_emb.freqs``, which make those weights exact and
are checked on load by ``load_official_state_dict`` itself), the AdamW moments of the parameters
(``adam_m/<name>``, ``adam_v/<name>``), the data sampler's arrays, and one JSON string ``meta``
(format version, step, ModelConfig, TrainConfig, sampler state with the generator's bit-generator
state, loss history). ``save_checkpoint`` writes through ``minicp.files``: a temporary file in the same
directory, fsynced and renamed over the target, so a crash never leaves half a file, with the target's
writer lock held (another writer's run gets "in use by process N"); ``load_checkpoint`` reads with
``allow_pickle=False`` and raises ``CheckpointError`` (a ValueError) for anything missing, truncated,
corrupt or mismatched.

Hardening (docs/inputs.md#files). The loader refuses what is not a regular file (a FIFO would block it,
a directory is named as such), reads the metadata first and then the arrays one member at a time,
checking each member's shape and dtype from its .npy header, and its size from the zip directory,
against the model config before any data is read, so a small crafted file cannot decompress to
gigabytes. Parameters and moments must be float32 / float64 and finite, ``step`` and ``adam_step``
integers with 0 <= adam_step <= step, the sampler position within its epoch order. A Ctrl-C during
``save_checkpoint`` is held until the file is complete (then raised). The writer's temporary
``.<name>.<pid>.tmp-*.npz`` is removed on failure by the writer itself, and by ``remove_stale_temps`` once
that process is gone (``train`` calls it after deciding to start or resume, holding the lock).
"""

import contextlib
import dataclasses
import json
import math
import os
import signal
import threading
import warnings
import zipfile

import numpy as np

from minicp import backend as B
from minicp import files
from minicp.config import ModelConfig
from minicp.nn import interop
from minicp.nn import model as M
from minicp.nn.params import is_rope_buffer
from minicp.validate import finite_array, nonnegative_int, regular_file

MAX_META_BYTES = 1 << 28  # the JSON metadata (the loss history grows with the steps)
MAX_OTHER_BYTES = 1 << 31  # the sampler's arrays (the epoch order: 8 bytes per training row)
HEADER_BYTES = 1 << 16  # an .npy header is far smaller
DTYPES = ("float32", "float64")

FORMAT = "minicp-checkpoint-1"


def jsonable(obj):
    if isinstance(obj, dict):
        return {k: jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [jsonable(v) for v in obj]
    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, np.floating):
        return float(obj)
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    return obj


# ----------------------------------------------------------------------------------------------------
# Checkpoints
# ----------------------------------------------------------------------------------------------------


class CheckpointError(ValueError):
    """A checkpoint that cannot be read or does not fit the run (nothing is written when this is raised)."""


def config_to_dict(cfg):
    return dataclasses.asdict(cfg)


def config_from_dict(d):
    """ModelConfig from its ``asdict`` form (derived fields such as half_segment are given explicitly)."""
    return ModelConfig(**d)


def remove_stale_temps(path):
    """Remove the temporary files that killed writers of ``path`` left behind (only those whose process is
    gone: a live writer's temporary is never touched); returns their names."""
    return files.remove_stale_temporaries(path)


def check_writable(path):
    """``path`` as str if a checkpoint can be written there: not a directory, its directory writable."""
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"checkpoint must be a path (str or os.PathLike), got {type(path).__name__}")
    path = os.fspath(path)
    if os.path.isdir(path):
        raise ValueError(f"checkpoint {path!r} is a directory; give a file name such as {path!r}/run.npz")
    if os.path.exists(path) and not os.path.isfile(path):
        raise ValueError(f"checkpoint {path!r} exists and is not a regular file")
    directory = os.path.dirname(os.path.abspath(path))
    if os.path.exists(directory) and not os.access(directory, os.W_OK | os.X_OK):
        raise ValueError(f"checkpoint directory {directory!r} is not writable")
    return path


@contextlib.contextmanager
def sigint_held():
    """Hold SIGINT (Ctrl-C) while the block runs and raise KeyboardInterrupt after it, so a write is never
    cut in the middle (main thread only; elsewhere signals do not arrive anyway)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    caught = []
    previous = signal.signal(signal.SIGINT, lambda signum, frame: caught.append(signum))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
    if caught:
        raise KeyboardInterrupt


def save_checkpoint(
    path, params, opt_state=None, *, config, train_config=None, step=0, sampler_state=None, history=None
):
    """Write a checkpoint atomically: a temporary file in the same directory, fsync, then rename.

    A Ctrl-C while writing is held until the new file is in place (then raised); on any failure the
    temporary file is removed and ``path`` keeps its previous content."""
    path = check_writable(path)
    step = nonnegative_int("step", step)
    adam_step = nonnegative_int("opt_state['step']", opt_state["step"]) if opt_state is not None else 0
    if adam_step > step:
        raise ValueError(f"opt_state['step'] {adam_step} must be at most step {step}")
    flat = M.check_params(params, config, M.param_spec)
    arrays = {f"param/{k}": np.asarray(B.to_numpy(v)) for k, v in flat.items()}
    if opt_state is not None:
        arrays.update({f"adam_m/{k}": v for k, v in opt_state["m"].items()})
        arrays.update({f"adam_v/{k}": v for k, v in opt_state["v"].items()})
    sampler_meta, sampler_arrays = sampler_state if sampler_state is not None else ({}, {})
    arrays.update(sampler_arrays)
    meta = {
        "format": FORMAT,
        "step": step,
        "adam_step": adam_step,
        "model_config": config_to_dict(config),
        "train_config": dataclasses.asdict(train_config) if train_config is not None else None,
        "sampler": sampler_meta,
        "history": history or [],
    }
    arrays["meta"] = np.array(json.dumps(jsonable(meta)))  # a 0-d unicode array: no pickle
    directory = os.path.dirname(os.path.abspath(path))
    try:
        os.makedirs(directory, exist_ok=True)
    except OSError as e:
        raise type(e)(e.errno, f"cannot create the directory of checkpoint {path}: {e.strerror}") from None
    with sigint_held():
        files.atomic_write(path, lambda f: np.savez(f, **arrays), suffix=".npz", lock=True)
    return path


# ----------------------------------------------------------------------------------------------------
# Reading, one member at a time
# ----------------------------------------------------------------------------------------------------


def _member_header(zf, info, path):
    """(shape, dtype) from a member's .npy header, without reading its data."""
    with zf.open(info) as f:
        version = np.lib.format.read_magic(f)
        if version == (1, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_1_0(f)
        elif version in ((2, 0), (3, 0)):
            shape, fortran, dtype = np.lib.format.read_array_header_2_0(f)
        else:
            raise CheckpointError(f"checkpoint {path!r}: member {info.filename} has .npy version {version}")
    if dtype.hasobject:
        raise CheckpointError(f"checkpoint {path!r}: member {info.filename} holds Python objects (refused)")
    return tuple(shape), dtype


def _read_member(zf, info, path, limit, expect=None):
    """One array, after its header and its size from the zip directory were checked against ``limit``
    bytes and, for parameters and moments, ``expect`` = the shape the config implies."""
    name = info.filename[: -len(".npy")]
    shape, dtype = _member_header(zf, info, path)
    if expect is not None:
        if shape != tuple(expect):
            raise CheckpointError(
                f"checkpoint {path!r} does not match its model config: wrong shape {name} {shape} (expected {expect})"
            )
        if dtype.name not in DTYPES:
            raise CheckpointError(f"checkpoint {path!r}: {name} has dtype {dtype}, expected one of {DTYPES}")
    nbytes = math.prod(shape) * dtype.itemsize
    if nbytes > limit or info.file_size > nbytes + HEADER_BYTES:
        raise CheckpointError(
            f"checkpoint {path!r}: member {name} declares {info.file_size:,} bytes ({nbytes:,} of data), more than "
            f"its shape allows or the limit of {limit:,}: refused before decompressing"
        )
    with zf.open(info) as f:
        return np.lib.format.read_array(f, allow_pickle=False)


def _read_meta(zf, members, path):
    if "meta" not in members:
        raise CheckpointError(f"checkpoint {path!r} has no 'meta' entry: not a minicp checkpoint")
    raw = _read_member(zf, members["meta"], path, MAX_META_BYTES)
    try:
        meta = json.loads(str(raw))
    except json.JSONDecodeError as e:
        raise CheckpointError(f"checkpoint {path!r} has unreadable metadata ({e})") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise CheckpointError(
            f"checkpoint {path!r} has format {meta.get('format') if isinstance(meta, dict) else None!r}, expected {FORMAT!r}"
        )
    return meta


def _read_all(path):
    """(meta, saved config, {member name: array}) with every size bounded before decompression."""
    try:
        with zipfile.ZipFile(path) as zf:
            members = {}
            for info in zf.infolist():
                if not info.filename.endswith(".npy") or info.filename[:-4] in members:
                    raise CheckpointError(f"checkpoint {path!r} has an unexpected member {info.filename!r}")
                members[info.filename[:-4]] = info
            meta = _read_meta(zf, members, path)
            saved_cfg = _saved_config(meta, path)
            spec = M.param_spec(saved_cfg)
            arrays = {}
            for name, info in members.items():
                if name == "meta":
                    continue
                head, _, key = name.partition("/")
                expect = spec.get(key) if head in ("param", "adam_m", "adam_v") else None
                if head in ("param", "adam_m", "adam_v") and is_rope_buffer(key, saved_cfg.layers):
                    expect = (saved_cfg.head_dim // 2,)
                arrays[name] = _read_member(zf, info, path, MAX_OTHER_BYTES, expect)
    except (zipfile.BadZipFile, EOFError, OSError, ValueError, KeyError, NotImplementedError) as e:
        if isinstance(e, CheckpointError):
            raise
        raise CheckpointError(f"checkpoint {path!r} is truncated or corrupt ({type(e).__name__}: {e})") from None
    return meta, saved_cfg, arrays


def _saved_config(meta, path):
    try:
        return config_from_dict(meta["model_config"])
    except (TypeError, ValueError, KeyError) as e:
        raise CheckpointError(f"checkpoint {path!r} carries an invalid model config ({e})") from None


def _check_group(path, head, found, spec):
    missing = [k for k in spec if k not in found]
    extra = [k for k in found if k not in spec]
    if missing or extra:
        raise CheckpointError(
            f"checkpoint {path!r} does not match its model config in {head}: "
            + "; ".join(filter(None, [missing and f"missing {missing[:5]}", extra and f"unexpected {extra[:5]}"]))
        )
    for k, value in found.items():
        try:
            finite_array(f"{head}/{k}", value)
        except ValueError as e:
            raise CheckpointError(f"checkpoint {path!r}: {e}") from None
    if head == "adam_v" and any(bool((v < 0).any()) for v in found.values()):
        raise CheckpointError(f"checkpoint {path!r}: second AdamW moments must be >= 0")


def _check_steps(meta, path):
    step, adam_step = meta.get("step", 0), meta.get("adam_step", 0)
    for name, value in (("step", step), ("adam_step", adam_step)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise CheckpointError(f"checkpoint {path!r}: {name} must be a non-negative integer, got {value!r}")
    if adam_step > step:
        raise CheckpointError(f"checkpoint {path!r}: adam_step {adam_step} is larger than step {step}")
    if not isinstance(meta.get("history", []), list) or not isinstance(meta.get("sampler", {}), dict):
        raise CheckpointError(f"checkpoint {path!r}: history must be a list and sampler a dict")
    return step, adam_step


def load_checkpoint(path, config=None):
    """Read a checkpoint written by ``save_checkpoint``; check it is complete and (if given) fits ``config``.

    Returns a dict with ``params`` (nested), ``opt_state`` (or None), ``config`` (ModelConfig),
    ``train_config`` (dict or None), ``step``, ``sampler`` (meta, arrays) and ``history``. Raises
    CheckpointError with a plain message for a missing, truncated, corrupt or mismatched file.
    """
    try:
        path = regular_file("checkpoint", path)
    except ValueError as e:
        raise CheckpointError(str(e)) from None
    meta, saved_cfg, arrays = _read_all(path)
    if config is not None and saved_cfg != config:
        diff = {
            k: (getattr(saved_cfg, k), getattr(config, k))
            for k in config_to_dict(config)
            if getattr(saved_cfg, k) != getattr(config, k)
        }
        raise CheckpointError(
            f"checkpoint {path!r} was written for a different model: "
            + ", ".join(f"{k} = {a!r} in the file, {b!r} requested" for k, (a, b) in diff.items())
        )
    step, adam_step = _check_steps(meta, path)
    spec = M.param_spec(saved_cfg)
    groups = {"param": {}, "adam_m": {}, "adam_v": {}}
    others, buffers = {}, {}
    for key, value in arrays.items():
        head, _, name = key.partition("/")
        if head == "param" and is_rope_buffer(name, saved_cfg.layers):
            buffers[name] = value
            continue
        if head in ("adam_m", "adam_v") and is_rope_buffer(name, saved_cfg.layers) and not np.any(value):
            continue  # zero moments of a RoPE buffer, written before buffers were kept out of AdamW: dropped
        (groups[head] if head in groups else others)[name if head in groups else key] = value
    for head, found in groups.items():
        if head == "param" or found:
            _check_group(path, head, found, spec)
    opt_state = None
    if groups["adam_m"] or groups["adam_v"]:
        if not (groups["adam_m"] and groups["adam_v"]):
            raise CheckpointError(f"checkpoint {path!r} has only one of the two AdamW moments")
        for k in spec:
            if not groups["param"][k].dtype == groups["adam_m"][k].dtype == groups["adam_v"][k].dtype:
                raise CheckpointError(f"checkpoint {path!r}: {k} and its AdamW moments differ in dtype")
        opt_state = {"step": adam_step, "m": groups["adam_m"], "v": groups["adam_v"]}
    params = M.unflatten(
        {
            **{k: B.asarray(groups["param"][k]) for k in spec},
            **_checked_buffers(path, buffers, groups["param"], saved_cfg),
        }
    )
    return {
        "params": params,
        "opt_state": opt_state,
        "config": saved_cfg,
        "train_config": meta.get("train_config"),
        "step": step,
        "sampler": (meta.get("sampler", {}), others),
        "history": meta.get("history", []),
    }


# ----------------------------------------------------------------------------------------------------
# RoPE buffers of official weights
# ----------------------------------------------------------------------------------------------------


def _checked_buffers(path, buffers, params, cfg):
    """The RoPE buffers of a checkpoint of official weights (fine-tuned or not), checked as
    ``load_official_state_dict`` checks them (each within one ulp of what head_dim and rope_base imply),
    by that loader itself; returns {name: buffer} with the file's values."""
    if not buffers:
        return {}
    dtype = next(iter(params.values())).dtype.name
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            loaded = interop.load_official_state_dict({**params, **buffers}, cfg, dtype=dtype)
    except (TypeError, ValueError) as e:
        raise CheckpointError(f"checkpoint {path!r}: its RoPE buffers do not fit its model config ({e})") from None
    flat = M.flatten(loaded)
    return {name: flat[name] for name in buffers}
