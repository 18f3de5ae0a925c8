"""Sampling from a trained model: the official wrapper's top-k sampling, for prompts of any length (docs/official-code.md#wrapper-generation-evaluation-training).

Each new token, as the official ``AutoRegressiveWrapper.generate``:

    window = the last n tokens of (prompt + generated so far)
    logits = model(window)[:, -1]                          the row of the last token
    keep the k largest logits, k = int((1 - filter_thres) * V), the others -inf   (official top_k)
    probs = softmax(kept / temperature); draw one token; stop when every row has drawn ``eos``

``filter_thres = 0.9`` keeps the top 10% (V = 256: k = 25, because 1 - 0.9 = 0.0999... in floating
point; V = 28996: k = 2899). ``top_k`` sets k directly; ``filter_thres=0`` keeps everything; k is at least
1 (the official code would fail with k = 0 for V < 10). Ties at the k-th logit keep the lower token ids.
``temperature=0`` means greedy decoding (an extension). Draws come from one explicit
``numpy.random.Generator`` (``seed`` or ``rng``), vectorised over the batch of prompts.

Prompts shorter than n. The official wrapper feeds ``prompt[-n:]`` as it is, so its ``generate`` runs
wherever the official model accepts the window length t (``minicp.model.length_problem``), and minicp
then computes exactly the official next-token logits:

* ``double``: every t (t <= H = n - L: history rows only, unmasked, as the official code);
* ``s_split``: t > H, or t <= H a multiple of the official num_segments N_h = H / c;
* ``perceiver_ar`` with L = n, and every Perceiver model with L = n: every t;
* ``compressed`` with p = H: t >= H; ``ecp``: t = N_s (blocks of one token).

Where the official ``generate`` fails, minicp extends it:

* ``ecp`` (the official code fails for t != n, N_s): the window runs as it is, on the shorter sequence.
  When its length is not a multiple of the half segment m (or is shorter than 2m) the model runs with
  ``partial_segments=True``: the last, partial half segment attends to the previous full one and
  causally to itself, exactly as the rows of a full window would. Positions are 0..t-1, as for every window.
* ``transformer``: runs on the shorter sequence.
* ``longlora``: S2-Attn needs a multiple of the group size g, so the window is LEFT-padded with ``pad_id``
  to the next multiple of g. Causal attention keeps the pads from seeing the real tokens, but the real
  tokens do see the pads (at most g - 1 of them) and are shifted by that many positions.
* Perceiver family at a length the official model rejects (``perceiver_ar`` with L < n, ``compressed``
  with p < H, ``s_split`` at t <= H not dividing into segments): the window is LEFT-padded with ``pad_id``
  to exactly n tokens. The last row is still the last real token. The pads are real context to the
  model (it was not trained with padding). PerceiverAR's broadcast quirk at t = H + 1 (see
  ``minicp.model.forward``) is not followed here: that window is padded too.

``pad_id`` defaults to 0, the official wrapper's ``pad_value`` (byte 0, NUL, never occurs in text).
"""

import numpy as np

from minicp import backend as B
from minicp import engines
from minicp.config import PERCEIVER_FAMILY
from minicp.lm.progress import progress_bar
from minicp.nn import budget
from minicp.nn import model as M
from minicp.nn.params import host_array
from minicp.validate import boolean, bounded, finite_array, integer, nonnegative_int, positive_int, real


def top_k_count(vocab, filter_thres=0.9, top_k=None):
    """k of the official top-k: ``int((1 - filter_thres) * vocab)`` clamped to [1, vocab], or ``top_k``
    (a positive integer; above ``vocab`` keeps all). ``filter_thres`` lies in [0, 1)."""
    vocab = positive_int("vocab", vocab)
    filter_thres = real("filter_thres", filter_thres, low=0, high=1, high_open=True)
    if top_k is not None:
        return min(vocab, positive_int("top_k", top_k))  # more than V keeps all V
    return max(1, min(vocab, int((1 - filter_thres) * vocab)))


def filter_top_k(logits, k):
    """Keep the k largest logits of each row (ties: lower ids first), set the rest to -inf. (b, V) float64."""
    logits = np.asarray(logits, dtype=np.float64)
    if k >= logits.shape[-1]:
        return logits.copy()
    keep = np.argsort(-logits, axis=-1, kind="stable")[:, :k]  # (b, k)
    out = np.full_like(logits, -np.inf)
    rows = np.arange(logits.shape[0])[:, None]
    out[rows, keep] = logits[rows, keep]
    return out


def sample_next(logits, rng, *, temperature=1.0, k=None):
    """One token per row from logits (b, V): top-k filter, softmax(logits / T), inverse-CDF draw. (b,) int64."""
    logits = np.asarray(logits, dtype=np.float64)
    if logits.ndim != 2 or logits.shape[1] < 1:
        raise ValueError(f"logits must have shape (batch, vocab), got {logits.shape}")
    finite_array("logits", logits)  # a NaN row would silently draw token 0
    temperature = real("temperature", temperature, low=0)
    if k is not None:
        logits = filter_top_k(logits, positive_int("k", k))
    if temperature == 0:
        return np.argmax(logits, axis=-1).astype(np.int64)
    with np.errstate(over="ignore"):
        z = logits / temperature
    if np.isinf(z[np.isfinite(logits)]).any():  # a tiny T overflows: shift first (the limit is greedy)
        z = (logits - logits.max(axis=-1, keepdims=True)) / temperature
    z = z - z.max(axis=-1, keepdims=True)
    p = np.exp(z)
    cdf = np.cumsum(p, axis=-1)
    u = rng.random((logits.shape[0], 1)) * cdf[:, -1:]  # one uniform per row
    return np.minimum((cdf <= u).sum(axis=-1), logits.shape[-1] - 1).astype(np.int64)


def window_input(window, config, pad_id=0):
    """What the model reads for a window (b, t), t <= n: (tokens, config) following the rules above."""
    b, t = window.shape
    n, arch = config.seq_len, config.arch
    if arch in PERCEIVER_FAMILY:
        width = t if M.length_problem(config, t) is None else n  # as the official model where it runs
    elif arch == "longlora":
        width = -(-t // config.group) * config.group
    else:
        width = t
    if width > t:
        window = np.concatenate([np.full((b, width - t), pad_id, dtype=window.dtype), window], axis=1)
    if arch == "ecp" and t != n and n % config.half_segment == 0 and t == config.num_segments:
        return window, config  # official: N_s blocks of one token
    if arch == "ecp" and (t % config.half_segment or t < 2 * config.half_segment) and not config.partial_segments:
        config = config.replace(partial_segments=True)
    return window, config


def next_token_logits(params, window, config, pad_id=0, engine=None):
    """Logits (b, V) for the token after each row of ``window`` (b, t), 1 <= t <= n (``engine``: see
    ``minicp.engines``; None: the default for loops, "fast")."""
    tokens, cfg = window_input(window, config, pad_id)
    logits = engines.forward(params, tokens, cfg, engine=engines.resolve(engine, "loop")[0])
    return np.asarray(B.to_numpy(logits[:, -1]), dtype=np.float64)


def generate(
    params,
    prompt,
    config,
    max_new_tokens,
    *,
    temperature=1.0,
    top_k=None,
    filter_thres=0.9,
    seed=0,
    rng=None,
    eos=None,
    pad_id=0,
    progress=False,
    engine=None,
):
    """Continue ``prompt`` ((t,) or (b, t) token ids, t >= 1) by up to ``max_new_tokens`` tokens.

    Returns only the new tokens, shaped like the prompt ((steps,) or (b, steps)). With ``eos``, a row that
    drew ``eos`` keeps emitting ``eos`` and generation stops once every row has. See the module docstring
    for top-k, temperature and how prompts shorter than n are handled. ``progress``: a tqdm bar on stderr.
    ``engine``: "reference" or "fast" (None: an enclosing ``minicp.engine`` block's, else "fast"; see
    ``minicp.engines``). Every argument is checked first (ValueError / TypeError naming it; docs/inputs.md).
    """
    max_new_tokens, seq, single = _check_request(config, max_new_tokens, prompt)
    engine, _ = engines.resolve(engine, "loop")
    temperature = real("temperature", temperature, low=0)
    pad_id, eos = (
        _token_id("pad_id", pad_id, config.vocab),
        None if eos is None else _token_id("eos", eos, config.vocab),
    )
    M.check_params(params, config, M.param_spec)  # once, before the first token
    progress = boolean("progress", progress)
    if rng is None:
        rng = np.random.default_rng(nonnegative_int("seed", seed))
    elif not isinstance(rng, np.random.Generator):
        raise TypeError(f"rng must be a numpy.random.Generator, got {type(rng).__name__}")
    k = top_k_count(config.vocab, filter_thres, top_k)
    seq = seq.astype(np.int64)
    done = np.zeros(len(seq), dtype=bool)
    new = []
    bar = progress_bar(max_new_tokens, progress, "generate", "tok")
    for _ in range(max_new_tokens):
        logits = next_token_logits(params, seq[:, -config.seq_len :], config, pad_id, engine)
        tok = sample_next(logits, rng, temperature=temperature, k=k)
        if eos is not None:
            tok = np.where(done, eos, tok)
            done |= tok == eos
        new.append(tok)
        bar.update(1)
        seq = np.concatenate([seq, tok[:, None]], axis=1)
        if eos is not None and done.all():
            break
    bar.close()
    out = np.stack(new, axis=1) if new else np.zeros((len(seq), 0), dtype=np.int64)
    return out[0] if single else out


def _token_id(name, value, vocab):
    value = integer(name, value)
    if not 0 <= value < vocab:
        raise ValueError(f"{name} {value} must be a token id in [0, vocab={vocab})")
    return value


def _check_request(config, max_new_tokens, prompt):
    """(max_new_tokens, prompt as (b, t) int64, whether it was 1-D), or a clear error."""
    if not isinstance(config, M.ModelConfig):
        raise TypeError(f"config must be a minicp.ModelConfig, got {type(config).__name__}")
    max_new_tokens = nonnegative_int("max_new_tokens", max_new_tokens)
    prompt = host_array("prompt", prompt)
    single = prompt.ndim == 1
    seq = prompt[None, :] if single else prompt
    if seq.ndim != 2 or seq.shape[0] < 1 or seq.shape[1] < 1 or seq.dtype.kind not in "iu":
        raise ValueError(
            f"prompt must be integer token ids of shape (t,) or (batch, t) with t >= 1, got "
            f"{prompt.dtype} {prompt.shape}"
        )
    if seq.min() < 0 or seq.max() >= config.vocab:
        raise ValueError(f"prompt ids must lie in [0, vocab={config.vocab}), got min {seq.min()} max {seq.max()}")
    advice = "generate fewer tokens or prompts per call"
    what = f"generated tokens ({max_new_tokens:,} new tokens x {len(seq):,} prompts)"
    bounded("max_new_tokens", max_new_tokens * len(seq), what=what, limit_name="MAX_GENERATED_TOKENS", advice=advice)
    bounded(
        "max_new_tokens", max_new_tokens * len(seq) * config.seq_len, what="generated tokens x seq_len", advice=advice
    )
    budget.check_activations(
        config, len(seq), config.seq_len, name="generate"
    )  # the windows' forward passes, before the first
    return max_new_tokens, seq.astype(np.int64), single
