"""The whole language model: embedding -> pre-norm blocks -> logits (docs/official-code.md).

    x = token_emb[tokens]                      (b, n, D), no position embedding (RoPE only)
    for each layer k:
        x = skip(x) + Attn_k(LN(x))            the architecture's attention sub-layer
        x = x + FF(LN(x))                      FF = Linear(D, 4D) -> exact GELU -> Linear(4D, D)
    logits = Linear(LN(x))                     (b, rows, V), biased, no weight tying

``skip`` is the identity except where the stream shrinks in the first layer (PerceiverAR keeps the
last L rows, Compressed the first p + L: the quirk in docs/official-code.md#compressed-first-layer-residual).

Parameters are nested dicts (and a list of layers) whose paths are the official state_dict names:
``params["layers"][3][0]["fn"]["to_q"]["weight"]`` is ``layers.3.0.fn.to_q.weight``. ``flatten`` and
``unflatten`` convert between the two.
"""

import math

import autograd
import numpy as onp
from autograd.tracer import getval

from minicp import backend as B
from minicp.config import ModelConfig
from minicp.nn import budget, ops
from minicp.nn.attention import module as arch_module
from minicp.nn.params import check_params
from minicp.validate import float_dtype, nonnegative_int

# ----------------------------------------------------------------------------------------------------
# Parameters
# ----------------------------------------------------------------------------------------------------


def param_spec(cfg):
    """Flat dict: official state_dict name -> shape, in state_dict order."""
    D, V, F = cfg.dim, cfg.vocab, cfg.ff_mult * cfg.dim
    spec = {"token_emb.weight": (V, D)}
    mod = arch_module(cfg.arch)
    for i in range(cfg.layers):
        for name, entry in mod.param_spec(cfg, i).items():
            prefix = f"layers.{i}.0.fn.{name}"
            if entry[0] == "linear":
                _, out, inp, bias = entry
                spec[prefix + ".weight"] = (out, inp)
                if bias:
                    spec[prefix + ".bias"] = (out,)
            else:
                spec[prefix + ".weight"] = (entry[1],)
                spec[prefix + ".bias"] = (entry[1],)
        spec[f"layers.{i}.0.norm.weight"] = (D,)  # PreNorm registers fn before norm
        spec[f"layers.{i}.0.norm.bias"] = (D,)
        spec[f"layers.{i}.1.fn.net.0.weight"] = (F, D)
        spec[f"layers.{i}.1.fn.net.0.bias"] = (F,)
        spec[f"layers.{i}.1.fn.net.3.weight"] = (D, F)
        spec[f"layers.{i}.1.fn.net.3.bias"] = (D,)
        spec[f"layers.{i}.1.norm.weight"] = (D,)
        spec[f"layers.{i}.1.norm.bias"] = (D,)
    spec["to_logits.0.weight"] = (D,)
    spec["to_logits.0.bias"] = (D,)
    spec["to_logits.1.weight"] = (V, D)
    spec["to_logits.1.bias"] = (V,)
    return spec


def count_params(cfg):
    """Number of parameters (every entry of the official state_dict except the RoPE buffers)."""
    return sum(math.prod(shape) for shape in param_spec(cfg).values())


def init_params(cfg, seed=0, dtype="float32"):
    """PyTorch's default initialisation, drawn from ``numpy.random.default_rng(seed)``.

    Linear weight and bias ~ U(-1/sqrt(fan_in), 1/sqrt(fan_in)); Embedding ~ N(0, 1);
    LayerNorm weight 1, bias 0. Returns the nested parameter dict (see ``unflatten``).
    """
    check_config(cfg)
    budget.check_params_size(cfg)  # MAX_PARAMS, before anything is drawn
    dtype, seed = float_dtype("dtype", dtype), nonnegative_int("seed", seed)
    rng = onp.random.default_rng(seed)
    spec = param_spec(cfg)
    flat = {}
    for name, shape in spec.items():
        if name == "token_emb.weight":
            value = rng.standard_normal(shape)
        elif _is_layernorm(name, shape):
            value = onp.ones(shape) if name.endswith("weight") else onp.zeros(shape)
        else:
            fan_in = spec[name[: -len("bias")] + "weight"][1] if name.endswith("bias") else shape[1]
            bound = 1.0 / math.sqrt(fan_in)
            value = rng.uniform(-bound, bound, shape)
        flat[name] = B.asarray(value.astype(dtype))
    return unflatten(flat)


def _is_layernorm(name, shape):
    return name.endswith(("norm.weight", "norm.bias")) or name.startswith("to_logits.0.")


def flatten(params, prefix=""):
    """Nested params -> {dotted official name: array}."""
    flat = {}
    items = params.items() if isinstance(params, dict) else enumerate(params)
    for key, value in items:
        name = f"{prefix}{key}"
        if isinstance(value, (dict, list, tuple)):
            flat.update(flatten(value, name + "."))
        else:
            flat[name] = value
    return flat


def unflatten(flat):
    """{dotted name: array} -> nested dicts; the ``layers`` level and each layer become lists."""
    root = {}
    for name, value in flat.items():
        node, keys = root, name.split(".")
        for key in keys[:-1]:
            node = node.setdefault(key, {})
        node[keys[-1]] = value
    root["layers"] = [
        [layer[str(j)] for j in range(len(layer))]
        for _, layer in sorted(root.get("layers", {}).items(), key=lambda kv: int(kv[0]))
    ]
    return root


# ----------------------------------------------------------------------------------------------------
# Forward pass and loss
# ----------------------------------------------------------------------------------------------------


def check_config(cfg):
    if not isinstance(cfg, ModelConfig):
        raise ValueError(f"config must be a minicp.ModelConfig, got {type(cfg).__name__}")


def length_problem(cfg, t, official_broadcast=False):
    """None if a model of ``cfg`` runs on t tokens, else the reason (a sentence).

    The Perceiver family keeps the official code's fixed history H = n - L at every input length t
    (the official modules accept every t listed here, and minicp computes what they compute):

    * double: any 1 <= t <= n (t <= H: history rows only, unmasked among themselves);
    * s_split: t > H; t <= H when t divides into the N_h = H / c official history segments (of t / N_h);
    * perceiver_ar: t = n; with L = n (H = 0) any t. At t = H + 1 the official layer 0 returns one row
      and its residual ``x[:, -L:]`` has min(t, L): torch broadcasts the row onto all of them. minicp
      follows that only with ``official_broadcast=True``;
    * compressed: t = n; when p = H also any t >= H (``projection_hist`` needs all H history rows);
    * ecp: t = n; t = N_s (blocks of one token, as the official code computes it); other t only with
      ``partial_segments`` (minicp's extension; the official code fails). transformer: any t.
    """
    n, H, arch = cfg.seq_len, cfg.history, cfg.arch
    if not 1 <= t <= n:
        return f"tokens length {t} must be between 1 and seq_len {n}"
    if arch == "perceiver_ar" and H and t != n:
        if t == H + 1 and official_broadcast:
            return None
        return (
            f"tokens length {t} must equal seq_len {n} for perceiver_ar with history {H} (seq_len - latent "
            f"{cfg.latent}), as in the official model: its layer 0 keeps query rows {H}.. ({t - H} rows here) and adds "
            f"the residual x[:, -latent:] ({min(t, cfg.latent)} rows). At length H + 1 = {H + 1} the official code "
            f"broadcasts its single row onto the residual rows; pass official_broadcast=True to follow that quirk. "
            f"With latent = seq_len (no history) every length works"
        )
    if arch == "s_split" and t <= H and t % (H // cfg.split):
        return (
            f"tokens length {t}: s_split with history {H} in {H // cfg.split} segments needs t > {H} or t a multiple "
            f"of {H // cfg.split} (the official code cuts the first min(t, H) rows into num_segments equal segments)"
        )
    if arch == "compressed" and t != n and not (cfg.compressed == H and t >= H):
        return (
            f"tokens length {t} must equal seq_len {n} for compressed, as in the official model (its layer-0 "
            f"output has compressed + t - history rows, its residual x[:, :compressed + latent] min(t, compressed + "
            f"latent); they agree only for t = seq_len, or for t >= history when compressed = history)"
        )
    return None


def check_tokens(tokens, cfg, extra=0, official_broadcast=False):
    """Validate an integer token array (b, t + extra) against the config (``length_problem``); returns it as NumPy."""
    tokens = onp.asarray(B.to_numpy(tokens))
    if tokens.ndim != 2:
        raise ValueError(f"tokens must have shape (batch, seq_len{' + 1' if extra else ''}), got {tokens.shape}")
    if tokens.dtype.kind not in "iu":
        raise ValueError(f"tokens must be integers, got dtype {tokens.dtype}")
    if not isinstance(official_broadcast, bool):
        raise TypeError(f"official_broadcast must be True or False, got {official_broadcast!r}")
    problem = length_problem(cfg, tokens.shape[1] - extra, official_broadcast)
    if problem:
        raise ValueError(problem)
    if tokens.size and (tokens.min() < 0 or tokens.max() >= cfg.vocab):
        raise ValueError(f"token ids must lie in [0, vocab={cfg.vocab}), got min {tokens.min()} max {tokens.max()}")
    return tokens


def model_inputs(params, tokens, config, *, official_broadcast=False, defer_finite=False):
    """The checks every forward pass starts with: (tokens as NumPy, the config to run, finish).

    Checks the config, the parameters (layers, names, shapes, dtype, finiteness) and the tokens
    (``check_tokens``). ECP at t = N_s tokens runs as the official code runs it: N_s blocks of one token.
    ``finish()`` answers the parameters' finiteness; with ``defer_finite`` on the GPU it is read only when
    called (``minicp.nn.params``), otherwise it was checked already and ``finish`` does nothing.
    """
    check_config(config)
    budget.check_request(config, params, tokens)  # batch, empty batch, activation memory: before allocating
    if defer_finite:
        _, finish = check_params(params, config, param_spec, defer_finite=True)
    else:
        check_params(params, config, param_spec)
        finish = lambda: None  # noqa: E731
    tokens = check_tokens(tokens, config, official_broadcast=official_broadcast)
    t = tokens.shape[1]
    if config.arch == "ecp" and t != config.seq_len and config.seq_len % config.half_segment == 0:
        if t == config.num_segments:  # official: N_s blocks of t / N_s = 1 token
            config = config.replace(segment=2, half_segment=1, partial_segments=False)
    return tokens, config, finish


def feed_forward(p, x, cfg):
    """The feed-forward sub-layer's output FF(LN(x)) = Linear2(GELU(Linear1(LN(x)))): (b, n, D) -> (b, n, D)."""
    net = p["fn"]["net"]
    h = ops.layer_norm(x, p["norm"], cfg.eps)  # (b, n, D)
    h = ops.gelu(ops.linear(h, net["0"]))  # (b, n, 4D)
    return ops.linear(h, net["3"])  # (b, n, D)


def block(p, x, cfg, layer):
    """One pre-norm Transformer block of layer ``layer``: (b, n_in, D) -> (b, n_out, D)."""
    mod = arch_module(cfg.arch)
    attn, ff = p
    x = mod.skip(x, cfg, layer) + mod.attention_layer(attn["fn"], ops.layer_norm(x, attn["norm"], cfg.eps), cfg, layer)
    return x + feed_forward(ff, x, cfg)


def forward(params, tokens, config, *, official_broadcast=False):
    """Logits (b, rows, V) for integer tokens (b, t). For t = n: rows = n, except PerceiverAR (L) and
    Compressed (p + L). Shorter inputs run as the official modules run them (see ``length_problem``):
    the Perceiver family keeps its history H = n - L fixed (PerceiverAR: t - H rows, Compressed
    p + t - H), ECP at t = N_s uses blocks of one token. ``official_broadcast``: follow PerceiverAR's
    broadcast at t = H + 1 instead of rejecting that length.
    """
    tokens, config, _ = model_inputs(params, tokens, config, official_broadcast=official_broadcast)
    x = params["token_emb"]["weight"][B.asarray(tokens)]  # (b, t, D)
    for layer, p in enumerate(params["layers"]):
        x = block(p, x, config, layer)
    x = ops.layer_norm(x, params["to_logits"]["0"], config.eps)
    return ops.linear(x, params["to_logits"]["1"])  # (b, rows, V)


def log_softmax(logits):
    """log softmax over the last axis. The row max only keeps exp() in range and cancels exactly, so it
    is taken from the untraced values (autograd's max VJP would also turn float32 into float64)."""
    xp = B.xp
    shifted = logits - xp.max(getval(logits), axis=-1, keepdims=True)
    return shifted - xp.log(xp.sum(xp.exp(shifted), axis=-1, keepdims=True))


def loss_rows(config, rows):
    """L, the number of trailing positions the loss scores: the latent length, or all ``rows`` the forward
    pass returned when there are fewer (t < L, or PerceiverAR / Compressed at t < n)."""
    return min(config.latent, rows)


def loss(params, tokens, config, *, official_broadcast=False):
    """The official wrapper's loss: tokens (b, t + 1); the last L positions predict their next token.

    logits = forward(tokens[:, :t])[:, -L:], targets = tokens[:, -L:]; mean cross-entropy over b * L.
    Where the forward pass returns fewer than L rows (t < L, or PerceiverAR / Compressed at t < n),
    L is that number of rows (the official wrapper would fail on the mismatch unless the counts agree).
    """
    check_config(config)
    budget.check_request(config, params, tokens, extra=1)  # batch, empty batch, activation memory: before copying
    tokens = check_tokens(tokens, config, extra=1, official_broadcast=official_broadcast)
    b = tokens.shape[0]
    logits = forward(params, tokens[:, :-1], config, official_broadcast=official_broadcast)
    L = loss_rows(config, logits.shape[1])
    targets = B.asarray(tokens[:, -L:])  # (b, L)
    logp = log_softmax(logits[:, -L:])  # (b, L, V)
    rows, cols = B.asarray(onp.arange(b)[:, None]), B.asarray(onp.arange(L)[None, :])
    picked = logp[rows, cols, targets]  # (b, L) log p(target)
    return -B.xp.sum(picked) * (1.0 / picked.size)  # mean; float32 stays float32


def value_and_grad(params, tokens, config, *, official_broadcast=False):
    """``loss`` and its gradient with respect to ``params`` (nested like ``params``), by autograd."""
    budget.check_request(config, params, tokens, grad=True, extra=1)  # the backward pass's memory, before it runs
    return autograd.value_and_grad(loss)(params, tokens, config, official_broadcast=official_broadcast)


def unused_params(cfg):
    """Official names of the parameters that the forward pass of ``cfg`` never reads, per architecture and
    layer (each architecture module's ``unused_params``): Compressed's ``projection_hist`` after layer 0, the
    per-head kv LayerNorm where the config does not apply it. PyTorch leaves their gradient at None, so
    ``torch.optim.AdamW`` neither moves nor decays them; ``minicp.train`` does the same."""
    check_config(cfg)
    mod = arch_module(cfg.arch)
    return tuple(f"layers.{i}.0.fn.{name}" for i in range(cfg.layers) for name in mod.unused_params(cfg, i))
