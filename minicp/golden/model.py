"""Model-level golden cases: tokens, every parameter (official names), logits, loss and its gradients."""

import autograd
import numpy as onp

from minicp import backend as B
from minicp.config import ModelConfig
from minicp.golden.config import model_file_config
from minicp.golden.make import Golden, minicp_version
from minicp.nn.model import flatten, forward, init_params, loss, param_spec, unflatten
from minicp.testing.dtypes import check_dtype, to_storage
from minicp.validate import nonnegative_int, positive_int

__all__ = ["make_model_golden", "model_recomputed"]


def make_model_golden(config, *, batch=1, dtype="float32", seed=0):
    """Model-level golden case for a ``ModelConfig``: tokens, parameters, logits, loss and its gradients."""
    if not isinstance(config, ModelConfig):
        raise ValueError(f"config must be a minicp.ModelConfig, got {type(config).__name__}")
    b = positive_int("batch", batch)
    seed = nonnegative_int("seed", seed)
    name = check_dtype(dtype)
    with B.backend("numpy"):
        flat64 = flatten(init_params(config, seed=seed, dtype="float64"))
        stored = {key: to_storage(val, name) for key, val in flat64.items()}
        params = unflatten({key: val.astype(onp.float64) for key, val in stored.items()})
        tokens = onp.random.default_rng(seed + 1).integers(0, config.vocab, (b, config.seq_len + 1), dtype=onp.int64)
        logits = onp.asarray(forward(params, tokens[:, :-1], config))
        value, grads = autograd.value_and_grad(lambda p: loss(p, tokens, config))(params)
    grads = flatten(grads)
    arrays = {"tokens": tokens, "logits": to_storage(logits, name), "loss": to_storage(onp.float64(value), name)}
    for key in stored:
        arrays[f"param/{key}"] = stored[key]
    for key in stored:
        arrays[f"grad/{key}"] = to_storage(onp.asarray(grads[key]), name)
    cfg = dict(model_file_config(config, b, name, seed), minicp_version=minicp_version())
    cfg["arrays"] = {key: [list(a.shape), a.dtype.name] for key, a in arrays.items()}
    return Golden(arrays, cfg)


def model_recomputed(g, config, grads):
    """logits, loss (and grad/<name> with ``grads``) recomputed in float64 from the stored parameters."""
    spec = param_spec(config)
    tokens = g["tokens"]
    params = unflatten({key: g[f"param/{key}"].astype(onp.float64) for key in spec})
    with B.backend("numpy"):
        out = {"logits": onp.asarray(forward(params, tokens[:, :-1], config))}
        if grads:
            value, grad = autograd.value_and_grad(lambda p: loss(p, tokens, config))(params)
            out.update({f"grad/{key}": onp.asarray(val) for key, val in flatten(grad).items()})
        else:
            value = loss(params, tokens, config)
    out["loss"] = onp.asarray(float(value))
    return out
