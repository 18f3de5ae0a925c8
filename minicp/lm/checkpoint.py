"""Training checkpoints: one ``.npz`` file, no pickle, written atomically.

A checkpoint holds the parameters under their official state_dict names (``param/<name>``), the AdamW
moments (``adam_m/<name>``, ``adam_v/<name>``), the data sampler's arrays, and one JSON string ``meta``
(format version, step, ModelConfig, TrainConfig, sampler state with the generator's bit-generator
state, loss history). ``save_checkpoint`` writes a temporary file in the same directory, fsyncs it and
renames it over the target, so a crash never leaves half a file; ``load_checkpoint`` reads with
``allow_pickle=False`` and raises ``CheckpointError`` (a ValueError) for anything missing, truncated,
corrupt or mismatched.
"""

import dataclasses
import json
import os
import tempfile
import zipfile

import numpy as np

from minicp import backend as B
from minicp.config import ModelConfig
from minicp.nn import model as M

FORMAT = "minicp-checkpoint-1"


def _jsonable(obj):
    if isinstance(obj, dict):
        return {k: _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
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


def save_checkpoint(
    path, params, opt_state=None, *, config, train_config=None, step=0, sampler_state=None, history=None
):
    """Write a checkpoint atomically: a temporary file in the same directory, fsync, then rename."""
    flat = M.flatten(params)
    arrays = {f"param/{k}": np.asarray(B.to_numpy(v)) for k, v in flat.items()}
    if opt_state is not None:
        arrays.update({f"adam_m/{k}": v for k, v in opt_state["m"].items()})
        arrays.update({f"adam_v/{k}": v for k, v in opt_state["v"].items()})
    sampler_meta, sampler_arrays = sampler_state if sampler_state is not None else ({}, {})
    arrays.update(sampler_arrays)
    meta = {
        "format": FORMAT,
        "step": int(step),
        "adam_step": int(opt_state["step"]) if opt_state is not None else 0,
        "model_config": config_to_dict(config),
        "train_config": dataclasses.asdict(train_config) if train_config is not None else None,
        "sampler": sampler_meta,
        "history": history or [],
    }
    arrays["meta"] = np.array(json.dumps(_jsonable(meta)))  # a 0-d unicode array: no pickle
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".tmp-" + os.path.basename(path), suffix=".npz", dir=directory)
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(f, **arrays)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise
    return path


def load_checkpoint(path, config=None):
    """Read a checkpoint written by ``save_checkpoint``; check it is complete and (if given) fits ``config``.

    Returns a dict with ``params`` (nested), ``opt_state`` (or None), ``config`` (ModelConfig),
    ``train_config`` (dict or None), ``step``, ``sampler`` (meta, arrays) and ``history``. Raises
    CheckpointError with a plain message for a missing, truncated, corrupt or mismatched file.
    """
    if not os.path.isfile(path):
        raise CheckpointError(f"checkpoint {path!r} does not exist")
    try:
        with np.load(path, allow_pickle=False) as f:
            arrays = {k: f[k] for k in f.files}
    except (zipfile.BadZipFile, EOFError, OSError, ValueError, KeyError) as e:
        raise CheckpointError(f"checkpoint {path!r} is truncated or corrupt ({type(e).__name__}: {e})") from None
    if "meta" not in arrays:
        raise CheckpointError(f"checkpoint {path!r} has no 'meta' entry: not a minicp checkpoint")
    try:
        meta = json.loads(str(arrays.pop("meta")))
    except json.JSONDecodeError as e:
        raise CheckpointError(f"checkpoint {path!r} has unreadable metadata ({e})") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise CheckpointError(
            f"checkpoint {path!r} has format {meta.get('format') if isinstance(meta, dict) else None!r}, expected {FORMAT!r}"
        )
    try:
        saved_cfg = config_from_dict(meta["model_config"])
    except (TypeError, ValueError, KeyError) as e:
        raise CheckpointError(f"checkpoint {path!r} carries an invalid model config ({e})") from None
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
    spec = M.param_spec(saved_cfg)
    groups = {"param": {}, "adam_m": {}, "adam_v": {}}
    others = {}
    for key, value in arrays.items():
        head, _, name = key.partition("/")
        (groups[head] if head in groups else others)[name if head in groups else key] = value
    for head, found in groups.items():
        if head != "param" and not found:
            continue
        missing = [k for k in spec if k not in found]
        extra = [k for k in found if k not in spec]
        bad = [
            f"{k} {found[k].shape} (expected {spec[k]})"
            for k in spec
            if k in found and tuple(found[k].shape) != tuple(spec[k])
        ]
        if missing or extra or bad:
            raise CheckpointError(
                f"checkpoint {path!r} does not match its model config in {head}: "
                + "; ".join(
                    filter(
                        None,
                        [
                            missing and f"missing {missing[:5]}",
                            extra and f"unexpected {extra[:5]}",
                            bad and f"wrong shape {bad[:5]}",
                        ],
                    )
                )
            )
    opt_state = None
    if groups["adam_m"]:
        if not groups["adam_v"]:
            raise CheckpointError(f"checkpoint {path!r} has first AdamW moments but no second ones")
        opt_state = {"step": int(meta.get("adam_step", 0)), "m": groups["adam_m"], "v": groups["adam_v"]}
    params = M.unflatten({k: B.asarray(groups["param"][k]) for k in spec})
    return {
        "params": params,
        "opt_state": opt_state,
        "config": saved_cfg,
        "train_config": meta.get("train_config"),
        "step": int(meta.get("step", 0)),
        "sampler": (meta.get("sampler", {}), others),
        "history": meta.get("history", []),
    }
