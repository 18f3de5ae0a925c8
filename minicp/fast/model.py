"""The whole model on the fast engine: ``minicp.nn.model``'s forward pass, loss and gradient, with the
fast engine's primitives where it has them and the reference's own code everywhere else.

    x = embedding(token_emb, tokens)                    one primitive (dW: rows summed per id)
    for each layer k:
        x = skip(x) + Attn_k(layer_norm(x))             ECP: ``ecp.sublayer``, one primitive, where it applies;
                                                        otherwise the architecture's reference sub-layer
        x = feed_forward(x)                             LN, Linear, GELU, Linear and the residual: one primitive
    logits = linear(layer_norm(x))
    loss = cross_entropy(logits[:, -L:], targets)       one primitive

``plan(config)`` says which of these runs for a config, and why. Everything the model does besides computing
(checking the config, the parameters and the tokens; ECP at t = N_s tokens) is the reference's own code
(``minicp.nn.model.model_inputs``).
"""

import numpy as onp
from autograd import value_and_grad as autograd_value_and_grad

from minicp import backend as B
from minicp.fast import ecp, feed_forward, primitives
from minicp.nn import budget
from minicp.nn import model as reference
from minicp.nn.attention import module as arch_module
from minicp.nn.rope import rope_tables

_after_backward = None  # inside value_and_grad: the forward passes' parameter checks, read after the backward


def ecp_sublayer_applies(cfg, n):
    """True when the layer's attention is the fast engine's ECP sub-layer (see ``ecp.sublayer_applies``)."""
    return cfg.arch == "ecp" and ecp.sublayer_applies(cfg, n)


def plan(cfg, n=None):
    """{part: how the fast engine computes it} for a model of ``cfg`` on n tokens (default seq_len)."""
    n = cfg.seq_len if n is None else n
    if ecp_sublayer_applies(cfg, n):
        attention = "one primitive: the ECP sub-layer with its core's routes (minicp/fast/ecp.py)"
    elif cfg.arch == "ecp":
        attention = (
            f"the reference's code (minicp/nn/attention/ecp.py): the fast sub-layer needs K = V, no kv LayerNorm "
            f"and seq_len a multiple of 2 or more half segments ({n} tokens, half segment {cfg.half_segment})"
        )
    else:
        attention = f"the reference's code (minicp/nn/attention/{cfg.arch}.py): the fast engine has no {cfg.arch} route"
    return {
        "embedding": "one primitive (minicp/fast/primitives.py)",
        "layer norms": "one primitive each (minicp/fast/primitives.py)",
        "attention": attention,
        "feed-forward": "one primitive with the residual (minicp/fast/feed_forward.py)",
        "logits and loss": "linear and cross-entropy primitives (minicp/fast/primitives.py)",
    }


def attention_layer(p, x, cfg, layer):
    """The attention sub-layer of the normalised stream x (b, n, D): the fast ECP sub-layer where it applies,
    else the architecture's reference ``attention_layer``."""
    n = x.shape[1]
    if not ecp_sublayer_applies(cfg, n):
        return arch_module(cfg.arch).attention_layer(p, x, cfg, layer)
    tables = None
    if cfg.rope_in_layer(layer):
        freqs = p.get("pos_emb", {}).get("freqs")
        tables = rope_tables(onp.arange(n), cfg.head_dim, x.dtype, cfg.rope_base, freqs)
    weights = [p[name]["weight"] for name in ("to_q", "to_kv")]
    weights += [p[name][key] for name in ("to_out_0", "to_out") for key in ("weight", "bias")]
    return ecp.sublayer(x, *weights, tables, cfg.heads, cfg.half_segment, cfg.rope_style)


def block(p, x, cfg, layer):
    """One pre-norm block: (b, n_in, D) -> (b, n_out, D), as ``minicp.nn.model.block``."""
    attn, ff = p
    normed = primitives.layer_norm(x, attn["norm"]["weight"], attn["norm"]["bias"], cfg.eps)
    x = arch_module(cfg.arch).skip(x, cfg, layer) + attention_layer(attn["fn"], normed, cfg, layer)
    norm, net = ff["norm"], ff["fn"]["net"]
    args = norm["weight"], norm["bias"], net["0"]["weight"], net["0"]["bias"], net["3"]["weight"], net["3"]["bias"]
    return feed_forward.feed_forward(x, *args, cfg.eps)


def forward(params, tokens, config, *, official_broadcast=False):
    """Logits (b, rows, V), as ``minicp.nn.model.forward``."""
    tokens, config, finish = reference.model_inputs(
        params, tokens, config, official_broadcast=official_broadcast, defer_finite=True
    )
    x = primitives.embedding(params["token_emb"]["weight"], B.asarray(tokens))  # (b, t, D)
    for layer, p in enumerate(params["layers"]):
        x = block(p, x, config, layer)
    norm = params["to_logits"]["0"]
    x = primitives.layer_norm(x, norm["weight"], norm["bias"], config.eps)
    out = params["to_logits"]["1"]
    logits = primitives.linear(x, out["weight"], out["bias"])  # (b, rows, V)
    if _after_backward is not None:  # inside value_and_grad: read once the backward pass is queued too (GPU)
        _after_backward.append(finish)
    else:
        finish()
    return logits


def loss(params, tokens, config, *, official_broadcast=False):
    """The official wrapper's loss, as ``minicp.nn.model.loss``."""
    reference.check_config(config)
    budget.check_request(config, params, tokens, extra=1)  # batch, empty batch, activation memory: before copying
    tokens = reference.check_tokens(tokens, config, extra=1, official_broadcast=official_broadcast)
    logits = forward(params, tokens[:, :-1], config, official_broadcast=official_broadcast)
    L = reference.loss_rows(config, logits.shape[1])
    targets = B.asarray(tokens[:, -L:])  # (b, L)
    return primitives.cross_entropy(logits if L == logits.shape[1] else logits[:, -L:], targets)


def value_and_grad(params, tokens, config, *, official_broadcast=False):
    """``loss`` and its gradient (nested like ``params``), traced with respect to the flat tuple of parameter
    arrays: autograd gives every container it traces (each dict and list of ``params``) a gradient of its own,
    built from zeros and added into its parent's, one zeros array and one addition per parameter per level; on a
    GPU each is a kernel launch. Same values, summed in the same order per parameter. The forward pass's
    parameter check is read after the backward pass is queued (on a GPU, no wait in between)."""
    budget.check_request(config, params, tokens, grad=True, extra=1)  # the backward pass's memory, before it runs
    flat = reference.flatten(params)
    names = list(flat)

    def of_leaves(leaves):
        return loss(
            reference.unflatten(dict(zip(names, leaves))), tokens, config, official_broadcast=official_broadcast
        )

    global _after_backward
    previous, _after_backward = _after_backward, []
    try:
        value, grads = autograd_value_and_grad(of_leaves)(tuple(flat.values()))
        checks = _after_backward
    finally:
        _after_backward = previous
    for check in checks:
        check()
    return value, reference.unflatten(dict(zip(names, grads)))
