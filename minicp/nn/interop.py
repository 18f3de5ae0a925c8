"""Official PyTorch weights <-> minicp parameters.

minicp's parameter paths *are* the official state_dict names (``layers.3.0.fn.to_q.weight``) and
its Linear weights use torch's (out, in) layout, so loading is a checked key-for-key copy:

* accepted inputs: a ``.pt`` path or an already loaded object, either a bare state_dict or the
  checkpoint the official main writes, ``{'epoch', 'state_dict', 'optimizer'}`` (the optimizer state
  and the epoch are ignored, and a warning says so); names may carry the official wrapper's ``model.``
  prefix and/or DataParallel's ``module.``;
* every official parameter must be present with exactly the expected shape; float16 / bfloat16 tensors
  are converted exactly to float32 first (a warning names the dtype);
* the RoPE buffers ``layers.i.0.fn.pos_emb.freqs`` are not parameters, but they are part of the
  official model: each must be within one ulp of ``rope_frequencies(head_dim, rope_base)`` (else the
  error names the layer), and its values are kept, under the same name, for that layer's RoPE;
* anything else is an unexpected entry, and an error.
"""

import os
import warnings

import numpy as onp

from minicp import backend as B
from minicp.config import ModelConfig
from minicp.nn.model import flatten, param_spec, unflatten
from minicp.nn.params import is_rope_buffer
from minicp.nn.rope import rope_frequencies
from minicp.validate import finite_array, float_dtype, regular_file

CHECKPOINT_EXTRAS = ("epoch", "optimizer")  # what the official main saves next to 'state_dict'
PREFIXES = ("module.", "model.")  # DataParallel, AutoRegressiveWrapper


def _as_numpy(value):
    """torch tensors (also on GPU, also float16 / bfloat16), numpy arrays, lists -> (numpy, source dtype name).

    Half-precision tensors are widened to float32 (exact); the returned name is the original dtype."""
    if hasattr(value, "detach"):  # torch.Tensor, without importing torch
        t = value.detach().cpu()
        name = str(t.dtype).replace("torch.", "")
        if name in ("bfloat16", "float16"):
            t = t.float()  # exact: every half value is a float32 value
        return t.numpy(), name
    arr = onp.asarray(B.to_numpy(value))
    return arr, arr.dtype.name


def _check_entry(name, value, src):
    """A loaded entry must be real floating point and finite: integers, bools and complex numbers would be
    cast silently (int8 weights, a lost imaginary part), NaN would reach every logit."""
    if value.dtype.kind != "f":
        raise ValueError(f"state_dict entry {name} has dtype {src}; official weights are floating point")
    finite_array(f"state_dict entry {name}", value)


def _ulp(values, dtype_name):
    """One unit in the last place of ``values`` in the buffer's own precision (at least float32's)."""
    v = onp.abs(onp.asarray(values, dtype=onp.float64))
    ulp32 = onp.spacing(v.astype(onp.float32)).astype(onp.float64)
    if dtype_name == "bfloat16":
        return ulp32 * 2.0**16
    if dtype_name == "float16":
        return onp.spacing(v.astype(onp.float16)).astype(onp.float64)
    return ulp32


def _unwrap(obj, notes):
    """The official checkpoint {'epoch', 'state_dict', 'optimizer'} (or similar wrappers) -> the state_dict."""
    for key in ("state_dict", "model_state_dict", "model"):
        if hasattr(obj, "items") and key in obj and hasattr(obj[key], "items"):
            others = sorted(str(k) for k in obj if k != key)
            if others:
                notes.append(f"ignored checkpoint entries {', '.join(others)} (only '{key}' holds weights)")
            return obj[key]
    return obj


def _strip_prefixes(names, notes):
    """Remove ``module.`` / ``model.`` while every name carries it. Returns {new name: old name}."""
    mapping = {k: k for k in names}
    stripped = []
    changed = True
    while changed and mapping:
        changed = False
        for prefix in PREFIXES:
            if all(k.startswith(prefix) for k in mapping):
                mapping = {k[len(prefix) :]: v for k, v in mapping.items()}
                stripped.append(prefix)
                changed = True
    if stripped:
        notes.append(f"stripped the name prefix {''.join(stripped)!r}")
    return mapping


def load_official_state_dict(state_dict, config, dtype="float32"):
    """Nested minicp params from official weights.

    ``state_dict``: a mapping name -> tensor/array, the official main's checkpoint dict
    ``{'epoch', 'state_dict', 'optimizer'}``, or a path to a ``.pt`` file holding either.
    ``config``: the ``ModelConfig`` the weights were trained with. ``dtype``: "float32" or "float64".

    Returns the nested params; each layer's RoPE buffer is kept as ``layers.i.0.fn.pos_emb.freqs``.
    Raises ValueError listing missing, unexpected or mis-shaped entries and RoPE buffers that are not
    within one ulp of what the config implies. Warns (UserWarning) about what it ignored or converted.
    """
    if not isinstance(config, ModelConfig):
        raise TypeError(f"config must be a minicp.ModelConfig, got {type(config).__name__}")
    dtype = float_dtype("dtype", dtype)
    if isinstance(state_dict, (str, os.PathLike)):
        state_dict = _load_pt(state_dict)
    notes = []
    state_dict = _unwrap(state_dict, notes)
    if not hasattr(state_dict, "items"):
        raise TypeError(
            f"state_dict must be a mapping of name -> array, an official checkpoint dict or a .pt path, "
            f"got {type(state_dict).__name__}"
        )
    bad_keys = [k for k in state_dict if not isinstance(k, str)]
    if bad_keys:
        raise TypeError(f"state_dict keys must be strings, got {bad_keys[:3]!r}")
    names = _strip_prefixes(list(state_dict), notes)
    given = {}
    converted = set()
    for name, old in names.items():
        try:
            given[name], src = _as_numpy(state_dict[old])
        except (TypeError, ValueError) as e:
            raise TypeError(
                f"state_dict entry {name} is not an array ({type(state_dict[old]).__name__}: {e})"
            ) from None
        _check_entry(name, given[name], src)
        if src in ("bfloat16", "float16"):
            converted.add(src)
    if converted:
        notes.append(f"converted {' and '.join(sorted(converted))} tensors to float32 (exact), then to {dtype}")

    expected = param_spec(config)
    freqs = {k: v for k, v in given.items() if k.endswith(".pos_emb.freqs")}
    params = {k: v for k, v in given.items() if k not in freqs}
    missing = sorted(set(expected) - set(params))
    unexpected = sorted(set(params) - set(expected))
    wrong = []
    for name in sorted(set(expected) & set(params)):
        shape = tuple(params[name].shape)
        if shape != tuple(expected[name]):
            wrong.append(f"{name}: got {shape}, expected {tuple(expected[name])}")
    problems = []
    if missing:
        problems.append(f"missing {len(missing)}: {', '.join(missing[:8])}{' ...' if len(missing) > 8 else ''}")
    if unexpected:
        problems.append(
            f"unexpected {len(unexpected)}: {', '.join(unexpected[:8])}{' ...' if len(unexpected) > 8 else ''}"
        )
    if wrong:
        problems.append(f"wrong shape {len(wrong)}: {'; '.join(wrong[:8])}")

    d = config.head_dim
    theta = rope_frequencies(d, config.rope_base).astype(onp.float64)
    kept = {}
    for name, value in sorted(freqs.items()):
        if not is_rope_buffer(name, config.layers):
            problems.append(f"unexpected RoPE buffer {name}")
            continue
        layer = name.split(".")[1]
        src = (
            str(state_dict[names[name]].dtype).replace("torch.", "")
            if hasattr(state_dict[names[name]], "dtype")
            else "float32"
        )
        value = onp.asarray(value, dtype=onp.float64)
        if value.shape != theta.shape:
            problems.append(
                f"{name} (layer {layer}): RoPE buffer has shape {value.shape}, head_dim {d} implies {theta.shape}"
            )
            continue
        off = onp.abs(value - theta) > _ulp(theta, src)
        if src in ("float32", "float64"):
            # torch's float32 pow (SIMD kernels) may be one ulp off the correctly rounded power, which the
            # reciprocal turns into up to two ulps of theta: accept 1 / (power +- one ulp) as well
            power = (
                onp.float64(config.rope_base)
                ** (onp.arange(0, d - d % 2, 2, dtype=onp.float32) / onp.float32(d)).astype(onp.float64)
            ).astype(onp.float32)
            v32 = value.astype(onp.float32)
            for direction in (-onp.inf, onp.inf):
                off &= v32 != onp.float32(1.0) / onp.nextafter(power, onp.float32(direction))
            off |= v32.astype(onp.float64) != value  # a float64 buffer must hold float32 values
        if off.any():
            i = int(onp.argmax(off))
            problems.append(
                f"{name} (layer {layer}): RoPE frequencies differ by more than one ulp (of theta, or of the "
                f"float32 power base^(2i/d) it is the reciprocal of) from head_dim {d}, "
                f"base {config.rope_base} (entry {i}: {value[i]!r} vs {theta[i]!r})"
            )
            continue
        kept[name] = value.astype(onp.float32) if src != "float64" else value
    if problems:
        raise ValueError(
            f"state_dict does not match config ({config.arch}, dim {config.dim}, "
            f"layers {config.layers}): " + " | ".join(problems)
        )
    for note in notes:
        warnings.warn(f"load_official_state_dict: {note}", UserWarning, stacklevel=2)
    flat = {name: B.asarray(params[name].astype(dtype)) for name in expected}
    flat.update(kept)  # host constants: RoPE reads them, nothing trains them
    return unflatten(flat)


def _load_pt(path):
    try:
        import torch
    except ImportError as e:
        raise ValueError(f"loading {path!r} needs torch (pip install 'minicp[torch]'); or pass a dict of arrays") from e
    path = regular_file("state_dict path", path)  # a FIFO would block torch.load forever
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises many kinds (pickle, zip, runtime) for a bad file
        raise ValueError(
            f"state_dict path {path!r} is not a readable torch checkpoint ({type(e).__name__}: {e})"
        ) from None


def to_state_dict(params):
    """minicp params -> flat {official name: numpy array} (RoPE buffers only where the loader kept them)."""
    return {k: B.to_numpy(v) for k, v in flatten(params).items()}
