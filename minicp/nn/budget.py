"""What a request would cost, estimated from the config and the input shape before anything is allocated,
and the bounds the public entry points hold it to (docs/inputs.md#bounded-work).

A request over a bound fails at once with a ValueError naming the computed size, the limit and how to raise
it. The limits are attributes of ``minicp.validate`` (``MAX_PARAMS``, ``MAX_ACTIVATION_BYTES``,
``MAX_BATCH``, ...), read at every call: ``minicp.validate.MAX_ACTIVATION_BYTES = 2**36`` raises one for the
rest of the session.

Activation memory of ``forward`` / ``loss`` / ``value_and_grad`` for b rows of t tokens, itemsize z, with
s_k the stream length entering layer k, S_k the score entries one head of layer k computes
(``score_entries``), F = ff_mult D, r the output rows and P the parameter count:

    forward   = z (b (20 max_k s_k D + 3 h max_k S_k + 1 max_k s_k F + 2 r V) + P)        one layer at a time
    gradient  = z (b (24 (sum_k s_k + t) D + 5 h sum_k S_k + 4 sum_k s_k F + 8 r V) + P)   every layer kept

The counts of arrays alive at the peak (``FORWARD``, ``GRADIENT``) were fitted to tracemalloc peaks of 156
runs (seven architectures, the fast and the readable path, scores- and logits-dominated shapes) and rounded up: over
them the estimate is 1.1 to 20 times the measured forward peak (ECP's blocked inference path keeps fewer score
entries alive than it computes) and 1.0 to 3.7 times the gradient's. tests/lm/test_bounds.py keeps a sample
of them: estimate >= measured, and within those factors.
"""

from autograd.tracer import getval, isbox

from minicp import backend as B
from minicp import validate as V
from minicp.config import ModelConfig

# How many arrays of each size are alive at the peak (fitted to tracemalloc peaks, then rounded up):
FORWARD = dict(
    stream=20, scores=3, hidden=1, logits=2, params=1
)  # one layer at a time (the reference's softmax: 3 score arrays)
GRADIENT = dict(stream=24, scores=5, hidden=4, logits=8, params=1)  # summed over the layers (kept for backward)
SCORES = 3  # head level: score-sized arrays of one attention call (scores, exponentials, probabilities)


def exact_param_count(cfg):
    """Parameters of ``cfg`` (the official state_dict without its RoPE buffers), in closed form: the same
    number as ``count_params``, for any layer count in constant time."""
    D, F, d = cfg.dim, cfg.ff_mult * cfg.dim, cfg.head_dim
    attention = 2 * d + D * D + (2 * D if cfg.separate_kv else D) * D + D * D + D  # norm, to_q, to_kv, out
    if cfg.arch == "compressed":
        attention += cfg.compressed * cfg.history + cfg.compressed  # projection_hist
    if cfg.arch == "ecp":
        attention += D * D + D  # to_out_0
    layer = attention + 2 * D + F * D + F + D * F + D + 2 * D  # + norm, feed-forward, norm
    return cfg.vocab * D + cfg.layers * layer + 2 * D + cfg.vocab * D + cfg.vocab


def _ecp_entries(t, m):
    full, r = divmod(t, m)
    if full == 0:
        return t * t
    return m * m + (full - 1) * 2 * m * m + r * (m + r)


def score_entries(cfg, t, layer):
    """Score entries one head of layer ``layer`` computes on t input tokens (every materialised entry, masked
    ones included; the closed forms of ``minicp.analysis.counts``, at the length the layer really sees)."""
    arch, H = cfg.arch, cfg.history
    if arch == "transformer":
        return t * t
    if arch == "ecp":
        return t * t if t == cfg.num_segments else _ecp_entries(t, min(cfg.half_segment, t))
    if arch == "longlora":
        g = cfg.group
        padded = -(-t // g) * g
        return padded * g
    hist = min(t, H)
    rows = t - hist  # latent rows of layer 0 (the official modules keep H fixed)
    if arch == "perceiver_ar":
        return rows * t if layer == 0 or H == 0 else rows * rows
    if arch == "double":
        return hist * hist + rows * t
    if arch == "s_split":
        return hist * cfg.split + rows * t if hist == H else hist * hist + rows * t
    if arch == "compressed":
        p = cfg.compressed
        return hist * hist + rows * t if layer == 0 else p * p + rows * (p + rows)
    raise ValueError(f"arch {arch!r} is not known to the budget")


def _rows(cfg, t, layer):
    """Length of the stream entering ``layer`` for t input tokens (PerceiverAR and Compressed shrink it)."""
    if layer == 0:
        return t
    latent_rows = t - min(t, cfg.history)
    if cfg.arch == "perceiver_ar":
        return latent_rows if cfg.history else t
    if cfg.arch == "compressed":
        return cfg.compressed + latent_rows
    return t


def activation_bytes(cfg, batch, t, itemsize=4, grad=False):
    """Estimated peak bytes of ``forward`` (``grad=False``) or ``value_and_grad`` (``grad=True``) for
    ``batch`` rows of ``t`` tokens with ``itemsize``-byte floats (formula in the module docstring)."""
    c = GRADIENT if grad else FORWARD
    D, F, h = cfg.dim, cfg.ff_mult * cfg.dim, cfg.heads
    first, later = _rows(cfg, t, 0), _rows(cfg, t, 1)  # every layer after the first is alike
    entries = [score_entries(cfg, t, 0), score_entries(cfg, t, 1)]
    if grad:
        rows, scores = first + (cfg.layers - 1) * later + t, h * (entries[0] + (cfg.layers - 1) * entries[1])
        hidden = first + (cfg.layers - 1) * later
    else:
        widest = max(first, later) if cfg.layers > 1 else first
        rows, hidden = widest, widest
        scores = h * (max(entries) if cfg.layers > 1 else entries[0])
    per_row = c["stream"] * rows * D + c["scores"] * scores + c["hidden"] * hidden * F + c["logits"] * later * cfg.vocab
    return itemsize * (batch * per_row + c["params"] * exact_param_count(cfg))


def check_params_size(cfg):
    """``init_params``: ValueError when the config ``cfg`` has more than ``MAX_PARAMS`` parameters."""
    count = exact_param_count(cfg)
    what = f"parameters ({count * 4 / 2**30:,.1f} GiB in float32)"
    V.bounded("init_params", count, what=what, limit_name="MAX_PARAMS", advice="use a smaller config")


def _itemsize(params):
    try:
        return int(getval(getval(params)["token_emb"]["weight"]).dtype.itemsize)
    except (TypeError, KeyError, AttributeError):
        return 4  # check_params will name what is wrong


def check_request(cfg, params, tokens, *, grad=False, extra=0):
    """``forward`` / ``loss`` / ``value_and_grad``: batch and length of ``tokens`` (b, t + extra) within
    ``MAX_BATCH``, a batch of at least one row, and the estimated activation memory within
    ``MAX_ACTIVATION_BYTES``; all before anything is allocated. Does nothing for arguments that the entry
    point's own checks will refuse (a wrong type, a wrong number of dimensions)."""
    shape = getattr(tokens, "shape", None)
    if not isinstance(cfg, ModelConfig) or shape is None or len(shape) != 2:
        return
    b, t = int(shape[0]), int(shape[1]) - extra
    if b == 0:
        raise ValueError(f"tokens hold an empty batch (shape {tuple(shape)}): give at least one row")
    V.bounded("batch", b, what="rows", limit_name="MAX_BATCH", advice="split the batch")
    if 1 <= t <= cfg.seq_len:  # otherwise length_problem names the rule
        check_activations(cfg, b, t, _itemsize(params), grad)


def check_activations(cfg, batch, t, itemsize=4, grad=False, name=None):
    """ValueError when ``activation_bytes`` is over ``MAX_ACTIVATION_BYTES``; ``name``: the entry point the
    message names (default: forward, or value_and_grad with ``grad``)."""
    size = activation_bytes(cfg, batch, t, itemsize, grad)
    what = (
        f"bytes of activations (about {size / 2**30:,.1f} GiB for {cfg.arch} on batch {batch} x {t} tokens, dim "
        f"{cfg.dim}, heads {cfg.heads}, layers {cfg.layers})"
    )
    name = name or ("value_and_grad" if grad else "forward")
    V.bounded(name, size, what=what, limit_name="MAX_ACTIVATION_BYTES", advice="use a smaller batch or sequence")


# ----------------------------------------------------------------------------------------------------
# Head level: minicp.attention and the testing entry points
# ----------------------------------------------------------------------------------------------------

_HEAD_ARGS = {"partial": "partial_segments"}  # head-level pattern argument -> ModelConfig field


def head_level_entries(arch, n, pattern_args):
    """Score entries one head computes at head level (``minicp.attention(arch, ...)`` on n positions), or
    None when the arguments are not valid (the architecture's own checks then say why)."""
    args = {_HEAD_ARGS.get(k, k): v for k, v in pattern_args.items()}
    layer = args.pop("layer", 0)
    try:
        cfg = ModelConfig(arch=arch, seq_len=n, heads=1, dim=1, **args)
        return score_entries(cfg, n, layer)
    except (TypeError, ValueError):
        return None


def check_attention(arch, q, pattern_args):
    """``minicp.attention``: the score matrices of one call (SCORES arrays of b h S entries in q's dtype)
    within ``MAX_ACTIVATION_BYTES``, before they are built."""
    shape = getattr(getval(q), "shape", None)
    itemsize = getattr(getattr(getval(q), "dtype", None), "itemsize", None)
    if shape is None or len(shape) != 4 or itemsize is None:
        return
    b, h, n, _ = (int(x) for x in shape)
    entries = head_level_entries(arch, n, pattern_args)
    if entries is None:
        return
    size = SCORES * b * h * entries * itemsize
    what = f"bytes of score matrices ({b * h * entries:,} score entries for q {tuple(shape)}, with their softmax)"
    V.bounded("attention", size, what=what, limit_name="MAX_ACTIVATION_BYTES", advice="split the batch or heads")


def check_case_size(arch, seq_len, heads, head_dim, batch, dtype, grads, pattern_args):
    """``minicp.testing`` (``case_inputs``, so ``assert_matches_reference`` and ``reference_case``): the case's
    arrays (inputs in ``dtype``, the float64 reference and the passes' float64 copies) within
    ``MAX_ACTIVATION_BYTES`` and its score entries within ``MAX_SCORE_ENTRIES``, before anything is drawn."""
    sizes = (seq_len, heads, head_dim, batch)
    if not all(isinstance(x, int) and not isinstance(x, bool) and x > 0 for x in sizes):
        return  # case_inputs names the argument
    itemsize = 2 if dtype in ("float16", "bfloat16") else 4 if dtype == "float32" else 8
    elements = batch * heads * seq_len * head_dim
    size = elements * (4 * itemsize + 8 * (4 if grads else 1) + 3 * 8)
    case = f"{arch}, batch {batch} x heads {heads} x seq_len {seq_len} x head_dim {head_dim}"
    what = f"bytes of inputs and float64 reference (about {size / 2**30:,.1f} GiB for {case})"
    V.bounded("case", size, what=what, limit_name="MAX_ACTIVATION_BYTES", advice="use fewer heads or a shorter case")
    entries = head_level_entries(arch, seq_len, pattern_args)
    if entries is not None:
        what = f"score entries of float64 reference ({case})"
        V.bounded("case", batch * heads * entries, what=what, limit_name="MAX_SCORE_ENTRIES", advice="use fewer heads")


# ----------------------------------------------------------------------------------------------------
# Results: never NaN or inf without an error
# ----------------------------------------------------------------------------------------------------


def finite_output(name, value):
    """``value`` after ``validate.finite_result`` (NonFiniteError naming ``name``, the first bad entry and the
    likely overflow). Traced values (inside ``value_and_grad``) pass unchecked: the loss and gradients are
    checked once the backward pass is queued (``finite_gradients``)."""
    if isbox(value):
        return value
    V.finite_result(name, value)
    return value


def finite_gradients(value, flat_grads):
    """``value_and_grad``'s loss and gradients ({official name: array}) checked: one test for all of them
    (one read on the GPU), then the first non-finite one named."""
    V.finite_result("loss", getval(value))
    if not B.all_finite(list(flat_grads.values())):
        for name, g in flat_grads.items():
            V.finite_result(f"gradient of {name}", g)
