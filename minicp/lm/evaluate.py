"""Perplexity two ways: exactly as the official code computes it, and every token once (docs/official-code.md#wrapper-generation-evaluation-training; docs/official-code.md#evaluation-protocol).

Both read one token stream of T tokens through windows of n + 1 tokens. A window starting at ``begin``
feeds tokens ``begin .. begin + n - 1`` to the model, and model row j (input position begin + j)
predicts target ``begin + j + 1``. The model produces logits for its last L rows only (L = latent: n for
ECP / transformer / LongLoRA, n / 2 by default for the Perceiver family), so a window can score at most
the targets ``begin + n - L + 1 .. begin + n``.

``perplexity_official`` (``compute_perplexity_huggingface`` in the official main):

    windows start at 0, n//2, n, 3n//2, ...; a window is used only if all n + 1 tokens exist
    (begin + n + 1 <= T); window score = the wrapper loss = mean CE over ALL its L targets;
    ppl = exp(mean over windows of the window means)

The recipe it copies (Hugging Face's strided perplexity) scores only the targets a window adds; the
official code computes ``trg_len`` for that and never uses it. Consequences: with L = n (ECP) every target
is scored in about two windows, once with n/2 .. n tokens of context and once with only 1 .. n/2; with
L = n/2 it is scored once with >= n/2 context; with L < n/2 some targets are never scored. So the official
number depends on L, and it is not comparable across architectures with different L. The official main
also truncates the test split to a multiple of n + 1 before it builds the stream (``truncate=True``
here), and it selects its best model on the test split.

``perplexity_every_token_once`` (the corrected variant) scores every target from index ``n - L + 1`` (the
first one a full window can reach; index 1 when L = n) to ``T - 1`` exactly once, each with the most
context the windowing allows: windows start at 0, S, 2S, ... (stride S, default ``min(L, n // 2)``) plus
one last window flush with the end of the stream; every window scores only the targets that no earlier
window scored (the first window all of its L). Each target after the first window therefore has at least
n - S + 1 tokens of context (n/2 + 1 with the default stride, for every L >= n/2), so the numbers are
comparable across architectures. ppl = exp(total NLL / number of scored targets): a per-token average,
not a mean of window means. Smaller strides give more context and cost n / S forward passes per n tokens.

Both functions evaluate windows in batches (``batch`` windows per forward pass) and accumulate in float64.
"""

import math
import sys

import numpy as np

from minicp import backend as B
from minicp import engines
from minicp.lm.progress import progress_bar
from minicp.nn import model as M
from minicp.nn.params import host_array
from minicp.validate import NonFiniteError, boolean, choice, positive_int

# ----------------------------------------------------------------------------------------------------
# Which targets each window scores
# ----------------------------------------------------------------------------------------------------


def official_windows(T, n, latent):
    """[(begin, first, stop)]: window tokens begin .. begin + n, scoring targets first .. stop - 1 (all L)."""
    out = []
    for begin in range(0, T, n // 2 or 1):
        if begin + n + 1 > T:
            continue
        out.append((begin, begin + n - latent + 1, begin + n + 1))
        if begin + n + 1 == T:
            break
    return out


def every_token_once_windows(T, n, latent, stride=None):
    """[(begin, first, stop)] such that targets n - L + 1 .. T - 1 are each scored by exactly one window.

    Windows begin at 0, S, 2S, ... and one last window ends at the stream's end; each scores the targets
    after the previous window's last one, all within its own last L rows.
    """
    L = latent
    S = min(L, max(1, n // 2)) if stride is None else positive_int("stride", stride)
    if not 1 <= S <= L:
        raise ValueError(f"stride must be between 1 and latent L = {L}, got {stride!r}")
    if T < n + 1:
        raise ValueError(f"the stream has {T} tokens, fewer than one window of seq_len + 1 = {n + 1}")
    out, scored_to = [], n - L + 1  # next target not yet scored
    begin = 0
    while True:
        begin = min(begin, T - n - 1)  # the last window is flush with the end
        stop = begin + n + 1
        if stop > scored_to:
            out.append((begin, max(scored_to, begin + n - L + 1), stop))
            scored_to = stop
        if stop == T:
            return out
        begin += S


# ----------------------------------------------------------------------------------------------------
# Scoring
# ----------------------------------------------------------------------------------------------------


def window_nll(params, windows, config, engine=None):
    """Per-target negative log-likelihoods (b, L) of rows ``windows`` (b, n + 1), float64.

    Target column j is token ``windows[:, n - L + 1 + j]``; this is the wrapper loss before its mean.
    ``engine``: see ``minicp.engines`` (None: the default for loops, "fast").
    """
    windows = np.asarray(windows)
    L = config.latent
    logits = engines.forward(params, windows[:, :-1], config, engine=engines.resolve(engine, "loop")[0])
    logits = np.asarray(B.to_numpy(logits))[:, -L:].astype(np.float64)
    logits -= logits.max(axis=-1, keepdims=True)
    logz = np.log(np.exp(logits).sum(axis=-1))
    targets = windows[:, -L:]
    picked = np.take_along_axis(logits, targets[..., None], axis=-1)[..., 0]
    return logz - picked


def _exp(mean_nll):
    """exp(mean NLL), or a NonFiniteError when that overflows float64 (mean NLL above 709.78 nats per token)."""
    if not math.isfinite(mean_nll) or mean_nll > math.log(np.finfo(np.float64).max):
        raise NonFiniteError(
            f"the perplexity exp({mean_nll!r}) overflows float64 (largest 1.8e308): the model gives this text a "
            f"mean negative log-likelihood of {mean_nll!r} nats per token, almost no probability; compare that mean "
            f"NLL instead"
        )
    return math.exp(mean_nll)


def _request(params, config, batch, progress):
    """Check the arguments every perplexity takes; returns (batch, progress)."""
    if not isinstance(config, M.ModelConfig):
        raise TypeError(f"config must be a minicp.ModelConfig, got {type(config).__name__}")
    M.check_params(params, config, M.param_spec)
    return positive_int("batch", batch), boolean("progress", progress)


def _stream(ids, n, truncate):
    truncate = boolean("truncate", truncate)
    ids = host_array("ids", ids)
    if ids.ndim != 1 or ids.dtype.kind not in "iu":
        raise ValueError(f"ids must be a 1-D integer token stream, got {ids.dtype} {ids.shape}")
    if truncate:
        ids = ids[: len(ids) // (n + 1) * (n + 1)]
    if len(ids) < n + 1:
        raise ValueError(f"the stream has {len(ids)} tokens, fewer than one window of seq_len + 1 = {n + 1}")
    return ids


def _batches(windows, batch, progress, what):
    """Batches of ``batch`` windows, with a tqdm bar (stderr) over the windows when ``progress``."""
    bar = progress_bar(len(windows), progress, f"perplexity ({what})", "window")
    for start in range(0, len(windows), batch):
        yield windows[start : start + batch]
        bar.update(len(windows[start : start + batch]))
    bar.close()


def perplexity_official(params, ids, config, *, batch=8, truncate=True, details=False, progress=False, engine=None):
    """The official main's perplexity: exp(mean over half-overlapping windows of each window's mean CE).

    ``truncate`` cuts the stream to a multiple of n + 1 first, as the official test set does. With
    ``details`` returns a dict (ppl, mean_nll, window_means, windows) instead of the number. ``engine``: see
    ``minicp.engines`` (None: an enclosing ``minicp.engine`` block's, else "fast").
    """
    batch, progress = _request(params, config, batch, progress)
    engine, _ = engines.resolve(engine, "loop")
    details = boolean("details", details)
    n, L = config.seq_len, config.latent
    ids = _stream(ids, n, truncate)
    windows = official_windows(len(ids), n, L)
    means = []
    for chunk in _batches(windows, batch, progress, "official"):
        rows = np.stack([ids[b : b + n + 1] for b, _, _ in chunk])
        means.extend(window_nll(params, rows, config, engine).mean(axis=1))
    mean = float(np.mean(means))
    if details:
        return {"ppl": _exp(mean), "mean_nll": mean, "window_means": np.asarray(means), "windows": windows}
    return _exp(mean)


def perplexity_every_token_once(
    params, ids, config, *, stride=None, batch=8, details=False, progress=False, engine=None
):
    """exp(mean NLL) with every target n - L + 1 .. T - 1 scored exactly once (see the module docstring).

    With ``details`` returns a dict (ppl, mean_nll, tokens, windows, counts) where ``counts[t]`` is how
    many times target t was scored (1 for every scored target, 0 before the first reachable one).
    ``engine``: see ``perplexity_official``.
    """
    batch, progress = _request(params, config, batch, progress)
    engine, _ = engines.resolve(engine, "loop")
    details = boolean("details", details)
    n, L = config.seq_len, config.latent
    ids = _stream(ids, n, truncate=False)
    T = len(ids)
    windows = every_token_once_windows(T, n, L, stride)
    total, count = 0.0, 0
    counts = np.zeros(T, dtype=np.int64) if details else None
    for chunk in _batches(windows, batch, progress, "every token once"):
        nll = window_nll(params, np.stack([ids[b : b + n + 1] for b, _, _ in chunk]), config, engine)  # (b, L)
        for row, (b, first, stop) in zip(nll, chunk):
            # column j of row scores target b + n - L + 1 + j; keep targets first .. stop - 1
            keep = row[first - (b + n - L + 1) :]
            total += float(keep.sum())
            count += len(keep)
            if counts is not None:
                counts[first:stop] += 1
    mean = total / count
    if details:
        return {"ppl": _exp(mean), "mean_nll": mean, "tokens": count, "windows": windows, "counts": counts}
    return _exp(mean)


def perplexities(params, ids, config, *, batch=8, stride=None, progress=False, engine=None):
    """Both numbers: {"official": ..., "every_token_once": ...}."""
    return {
        "official": perplexity_official(params, ids, config, batch=batch, progress=progress, engine=engine),
        "every_token_once": perplexity_every_token_once(
            params, ids, config, batch=batch, stride=stride, progress=progress, engine=engine
        ),
    }


METHODS = ("every_token_once", "official")


def perplexity(params, ids, config, *, method="every_token_once", batch=8, stride=None, progress=False, engine=None):
    """Perplexity of ``ids`` (a 1-D token stream) under the model.

    ``method="every_token_once"`` (default): each target scored once with the most context the windowing
    allows, comparable across architectures. ``method="official"``: the official main's half-overlapping
    windows, mean of window means (depends on the latent length L). See the module docstring for both.
    ``engine``: "reference" or "fast" (None: an enclosing ``minicp.engine`` block's, else "fast"; see
    ``minicp.engines``).
    """
    method = choice("method", method, METHODS)
    if method == "every_token_once":
        return perplexity_every_token_once(
            params, ids, config, batch=batch, stride=stride, progress=progress, engine=engine
        )
    if stride is not None:
        raise ValueError("stride applies to method='every_token_once' only; the official windows move by n/2")
    return perplexity_official(params, ids, config, batch=batch, progress=progress, engine=engine)


def print_perplexities(
    params, ids, config, *, batch=8, stride=None, split="valid", file=None, progress=False, engine=None
):
    """Print both perplexities with a one-line explanation each; returns them (``progress``: tqdm on stderr)."""
    file = sys.stdout if file is None else file
    res = perplexities(params, ids, config, batch=batch, stride=stride, progress=progress, engine=engine)
    n, L = config.seq_len, config.latent
    S = min(L, max(1, n // 2)) if stride is None else stride
    print(
        f"{split} perplexity, official recipe   : {res['official']:.4f}  (windows every n/2 = {n // 2}, "
        f"mean of window means over all L = {L} targets; depends on L)",
        file=file,
    )
    print(
        f"{split} perplexity, every token once  : {res['every_token_once']:.4f}  (stride {S}, each target "
        f"scored once with >= {n - S + 1} tokens of context after the first window)",
        file=file,
    )
    return res
