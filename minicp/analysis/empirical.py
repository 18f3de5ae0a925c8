"""The empirical receptive field: the Jacobian of a real model, from autograd.

``influence`` gives max |d out[o] / d x[j]| over channels for every output row o and embedded input
row j, in float64; masked scores have probability exactly 0, so a structural zero is an exact zero
and "can influence" is simply J != 0 (``empirical_receptive_field``). The test suite compares it
with the analytic ``minicp.analysis.analytic.receptive_field`` for every architecture.
"""

import autograd
import autograd.numpy as anp
import numpy as onp

from minicp import backend as B
from minicp.analysis.analytic import receptive_field
from minicp.analysis.intervals import ReceptiveField
from minicp.config import ModelConfig
from minicp.nn import model as M
from minicp.validate import nonnegative_int, positive_int


def _to_float64(tree):
    if isinstance(tree, dict):
        return {k: _to_float64(v) for k, v in tree.items()}
    if isinstance(tree, (list, tuple)):
        return [_to_float64(v) for v in tree]
    return onp.asarray(B.to_numpy(tree), dtype=onp.float64)


def _checked_tokens(tokens, config, seed):
    """(1, n) token ids: the given ones (shape (n,) or (1, n)) or random ids drawn with ``seed``."""
    n = config.seq_len
    if tokens is None:
        seed = None if seed is None else nonnegative_int("seed", seed)
        tokens = onp.random.default_rng(seed).integers(0, config.vocab, size=(1, n))
    tokens = onp.asarray(tokens)
    if tokens.ndim == 1:
        tokens = tokens[None]
    if tokens.shape != (1, n):
        raise ValueError(f"tokens must have shape ({n},) or (1, {n}) (= seq_len), got {tokens.shape}")
    return M.check_tokens(tokens, config)


def _jacobian_max(p, x0, config, k, chunk):
    """(rows, n): max over channels of |d h_k[o, :] / d x0[j, :]|, h_k the stream after k blocks.

    Reverse mode with one one-hot cotangent per (output row o, channel c), ``chunk`` of them per pass:
    the batch axis of X carries the cotangents, so one ``autograd.grad`` gives ``chunk`` Jacobian rows.
    """
    n, D = x0.shape
    rows = config.stream_len(k) if k else n
    pairs = [(o, c) for o in range(rows) for c in range(D)]
    result = onp.zeros((rows, n))
    for start in range(0, len(pairs), chunk):
        batch = pairs[start : start + chunk]
        cot = onp.zeros((len(batch), rows, D))
        cot[onp.arange(len(batch)), [o for o, _ in batch], [c for _, c in batch]] = 1.0

        def f(X, cot=cot):
            h = X
            for layer in range(k):
                h = M.block(p["layers"][layer], h, config, layer)
            return anp.sum(h * cot)

        G = autograd.grad(f)(onp.repeat(x0[None], len(batch), axis=0))  # (batch, n, D)
        mag = onp.abs(G).max(axis=2)  # (batch, n)
        for (o, _), row in zip(batch, mag):
            result[o] = onp.maximum(result[o], row)
    return result


def influence(params, config, *, layers=None, tokens=None, seed=0, chunk=512):
    """max |d out[row, :] / d x[j, :]| over channels: (rows, n) float64, x = token_emb[tokens].

    The model runs its first ``layers`` blocks (default: all of them) from the embedded tokens, in
    float64 on the NumPy backend; the final LayerNorm and logits work row by row and are left out.
    ``tokens`` (n,) or (1, n) integers (default: random ids drawn with ``seed``). The full Jacobian is
    computed with reverse mode, one cotangent per (output row, channel), batched ``chunk`` at a time.
    """
    if not isinstance(config, ModelConfig):
        raise ValueError(f"config must be a ModelConfig, got {type(config).__name__}")
    if not isinstance(params, dict) or "layers" not in params or "token_emb" not in params:
        raise ValueError("params must be the nested dict of minicp.init_params(config)")
    k = len(params["layers"]) if layers is None else nonnegative_int("layers", layers)
    if k > len(params["layers"]):
        raise ValueError(f"layers {k} exceeds the {len(params['layers'])} layers in params")
    chunk = positive_int("chunk", chunk)
    tokens = _checked_tokens(tokens, config, seed)
    with B.backend("numpy"):
        p = _to_float64(params)
        x0 = p["token_emb"]["weight"][tokens[0]]  # (n, D)
        return _jacobian_max(p, x0, config, k, chunk)


def empirical_receptive_field(params, config, *, layers=None, tokens=None, seed=0):
    """The receptive field measured on the model: input position j influences output row o iff some
    entry of d out[o] / d x[j] is non-zero (exactly, in float64). Same result type as
    ``receptive_field``; see ``influence`` for the arguments."""
    mag = influence(params, config, layers=layers, tokens=tokens, seed=seed)
    k = len(params["layers"]) if layers is None else layers
    # the row -> token map, from the analytic side (it does not depend on the weights)
    positions = receptive_field(config, layers=k).positions
    return ReceptiveField.from_mask(mag > 0, positions, config.arch, k, config)
