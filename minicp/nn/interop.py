"""Official PyTorch weights <-> minicp parameters.

minicp's parameter paths *are* the official state_dict names (``layers.3.0.fn.to_q.weight``) and
its Linear weights use torch's (out, in) layout, so loading is a checked key-for-key copy:

* every official parameter must be present with exactly the expected shape;
* the RoPE buffers ``layers.i.0.fn.pos_emb.freqs`` are not parameters: they are checked against the
  frequencies minicp would use (a mismatch means a different head dim or base) and then dropped;
* anything else is an unexpected entry, and an error.
"""
import os

import numpy as onp

from minicp import backend as B
from minicp.nn.model import flatten, param_spec, unflatten


def _as_numpy(value):
    """torch tensors (also on GPU), numpy arrays, lists -> numpy."""
    if hasattr(value, "detach"):                    # torch.Tensor, without importing torch
        value = value.detach().cpu().numpy()
    return onp.asarray(B.to_numpy(value))


def load_official_state_dict(state_dict, config, dtype="float32"):
    """Nested minicp params from an official state_dict (a mapping name -> array, or a ``.pt`` path).

    Raises ValueError listing missing, unexpected or mis-shaped entries.
    """
    if isinstance(state_dict, (str, os.PathLike)):
        state_dict = _load_pt(state_dict)
    if not hasattr(state_dict, "items"):
        raise ValueError(f"state_dict must be a mapping of name -> array or a .pt path, got {type(state_dict).__name__}")
    expected = param_spec(config)
    given = {k[len("module."):] if k.startswith("module.") else k: v for k, v in state_dict.items()}  # DataParallel prefix
    freqs = {k: v for k, v in given.items() if k.endswith(".pos_emb.freqs")}
    params = {k: v for k, v in given.items() if k not in freqs}

    missing = sorted(set(expected) - set(params))
    unexpected = sorted(set(params) - set(expected))
    wrong = []
    for name in sorted(set(expected) & set(params)):
        shape = tuple(_as_numpy(params[name]).shape)
        if shape != tuple(expected[name]):
            wrong.append(f"{name}: got {shape}, expected {tuple(expected[name])}")
    problems = []
    if missing:
        problems.append(f"missing {len(missing)}: {', '.join(missing[:8])}{' ...' if len(missing) > 8 else ''}")
    if unexpected:
        problems.append(f"unexpected {len(unexpected)}: {', '.join(unexpected[:8])}{' ...' if len(unexpected) > 8 else ''}")
    if wrong:
        problems.append(f"wrong shape {len(wrong)}: {'; '.join(wrong[:8])}")
    d = config.head_dim
    theta = 1.0 / (config.rope_base ** (onp.arange(0, d - d % 2, 2) / d))
    for name, value in freqs.items():
        value = _as_numpy(value).astype(onp.float64)
        if value.shape != theta.shape or not onp.allclose(value, theta, rtol=1e-5):
            problems.append(f"{name}: RoPE frequencies do not match head_dim {d} and base {config.rope_base}")
            break
    if problems:
        raise ValueError(f"state_dict does not match config ({config.arch}, dim {config.dim}, "
                         f"layers {config.layers}): " + " | ".join(problems))
    return unflatten({name: B.asarray(_as_numpy(params[name]).astype(dtype)) for name in expected})


def _load_pt(path):
    try:
        import torch
    except ImportError as e:
        raise ValueError(f"loading {path!r} needs torch (pip install 'minicp[torch]'); or pass a dict of arrays") from e
    if not os.path.exists(path):
        raise ValueError(f"state_dict path {path!r} does not exist")
    obj = torch.load(path, map_location="cpu", weights_only=True)
    # checkpoints sometimes wrap the weights: {"model_state_dict": ...} or {"state_dict": ...}
    for key in ("model_state_dict", "state_dict", "model"):
        if isinstance(obj, dict) and key in obj and hasattr(obj[key], "items"):
            obj = obj[key]
    return obj


def to_state_dict(params):
    """minicp params -> flat {official name: numpy array} (no RoPE buffers)."""
    return {k: B.to_numpy(v) for k, v in flatten(params).items()}
