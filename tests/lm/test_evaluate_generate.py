"""Tests for minicp.lm.evaluate (both perplexities) and minicp.generate (top-k sampling, any prompt length)."""

import importlib
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from minicp import ModelConfig, forward, init_params, loss
from minicp.cli import eval as cli_eval
from minicp.cli import generate as cli_generate
from minicp.config import ARCHITECTURES, PERCEIVER_FAMILY
from minicp.lm import evaluate as E
from minicp.lm import train as T

# The module, even if the package re-exports a function ``minicp.generate`` that shadows its name.
G = importlib.import_module("minicp.lm.generate")

V = 32


def tiny(arch, **kw):
    return ModelConfig(arch=arch, vocab=V, dim=16, heads=2, layers=2, seq_len=16, **kw)


def stream(size, seed=0):
    return np.random.default_rng(seed).integers(0, V, size=size)


# ---------------------------------------------------------------------------- official perplexity


@pytest.mark.parametrize("arch", ["ecp", "perceiver_ar"])
@pytest.mark.parametrize("truncate", [True, False])
def test_official_perplexity_matches_an_explicit_window_loop(arch, truncate):
    """Independent re-reading of compute_perplexity_huggingface: a Python loop over begin_loc, one model.loss
    call per window, exp of the mean."""
    cfg = tiny(arch)
    params = init_params(cfg, seed=1)
    ids = stream(200)
    n = cfg.seq_len
    enc = ids[: len(ids) // (n + 1) * (n + 1)] if truncate else ids
    T_ = len(enc)
    nlls = []
    for begin in range(0, T_, n // 2):
        end = min(begin + n + 1, T_ + 1)
        if end - begin < n + 1:
            continue
        window = enc[begin:end]
        if len(window) < n + 1:
            continue
        nlls.append(float(loss(params, window[None], cfg)))
        if end == T_:
            break
    expected = math.exp(np.mean(nlls))
    got = E.perplexity_official(params, ids, cfg, batch=3, truncate=truncate, details=True)
    assert len(got["windows"]) == len(nlls)
    assert got["ppl"] == pytest.approx(expected, rel=1e-5)


def test_official_windows_score_tokens_twice_when_latent_is_n():
    """Official evaluation quirk (docs/official-code.md#evaluation-windows): with L = n nearly every target is scored in two windows."""
    counts = np.zeros(1000, int)
    for _, first, stop in E.official_windows(1000, 64, 64):
        counts[first:stop] += 1
    assert counts[33:960].min() == 2 and counts[1:33].max() == 1
    counts[:] = 0
    for _, first, stop in E.official_windows(1000, 64, 32):
        counts[first:stop] += 1
    assert counts[33:].max() == 1  # L = n/2: each at most once


# ---------------------------------------------------------------------------- every token once


@settings(max_examples=60, deadline=None)
@given(T_=st.integers(17, 300), n=st.integers(1, 16), data=st.data())
def test_every_token_once_windows_cover_each_target_exactly_once(T_, n, data):
    L = data.draw(st.integers(1, n))
    S = data.draw(st.integers(1, L))
    if T_ < n + 1:
        return
    counts = np.zeros(T_, int)
    for begin, first, stop in E.every_token_once_windows(T_, n, L, S):
        assert 0 <= begin and begin + n + 1 <= T_ and stop == begin + n + 1
        assert begin + n - L + 1 <= first < stop  # only the window's own L rows
        if begin > 0:
            assert first - begin >= n - S + 1 or stop == T_  # later windows: >= n - S + 1 context
        counts[first:stop] += 1
    assert counts[: n - L + 1].sum() == 0
    assert (counts[n - L + 1 :] == 1).all()


@pytest.mark.parametrize("arch", ["ecp", "perceiver_ar", "double"])
def test_every_token_once_counts_and_value(arch):
    cfg = tiny(arch)
    params = init_params(cfg, seed=2)
    ids = stream(150, seed=3)
    res = E.perplexity_every_token_once(params, ids, cfg, batch=4, details=True)
    first = cfg.seq_len - cfg.latent + 1
    assert res["tokens"] == len(ids) - first
    assert (res["counts"][first:] == 1).all() and res["counts"][:first].sum() == 0
    # the same number from a plain loop over the windows, one row at a time, NLL from the logits
    n, L = cfg.seq_len, cfg.latent
    total = 0.0
    for begin, lo, stop in res["windows"]:
        logits = np.asarray(forward(params, ids[None, begin : begin + n], cfg), np.float64)[0, -L:]
        for t in range(lo, stop):
            row = logits[t - (begin + n - L + 1)]
            total += np.log(np.exp(row - row.max()).sum()) + row.max() - row[ids[t]]
    assert res["mean_nll"] == pytest.approx(total / res["tokens"], rel=1e-6)


def test_every_token_once_on_a_causal_model_equals_per_token_prefixes():
    """Independent check for the full transformer: target t's score equals running the model on exactly its
    context ids[b(t):t], with b(t) = 0 in the first window, else the first stride multiple whose window reaches t."""
    cfg = tiny("transformer")
    params = init_params(cfg, seed=4)
    ids = stream(70, seed=5)
    n, S = cfg.seq_len, 8
    T_ = len(ids)
    total = 0.0
    for t in range(1, T_):
        b = 0 if t <= n else min(-(-(t - n) // S) * S, T_ - n - 1)
        row = np.asarray(forward(params, ids[None, b:t], cfg), np.float64)[0, -1]
        total += np.log(np.exp(row - row.max()).sum()) + row.max() - row[ids[t]]
    got = E.perplexity_every_token_once(params, ids, cfg, stride=S)
    assert got == pytest.approx(math.exp(total / (T_ - 1)), rel=1e-5)


def test_perplexity_errors():
    cfg = tiny("ecp")
    params = init_params(cfg)
    with pytest.raises(ValueError, match="fewer than one window"):
        E.perplexity_official(params, stream(10), cfg)
    with pytest.raises(ValueError, match="stride"):
        E.perplexity_every_token_once(params, stream(100), cfg, stride=17)


# ---------------------------------------------------------------------------- sampling


def test_official_top_k_count():
    assert G.top_k_count(256) == 25  # int(0.0999... * 256)
    assert G.top_k_count(28996) == 2899  # docs/official-code.md#wrapper-generation-evaluation-training
    assert G.top_k_count(5) == 1  # official would be 0 (and fail)
    assert G.top_k_count(256, filter_thres=0.0) == 256
    assert G.top_k_count(256, top_k=3) == 3


def test_filter_top_k_keeps_the_largest_and_breaks_ties_by_id():
    logits = np.array([[0.0, 5.0, 1.0, 5.0, -2.0]])
    out = G.filter_top_k(logits, 2)
    np.testing.assert_array_equal(np.isfinite(out), [[False, True, False, True, False]])
    out = G.filter_top_k(np.array([[1.0, 1.0, 1.0]]), 2)
    np.testing.assert_array_equal(np.isfinite(out), [[True, True, False]])


def test_sample_next_follows_the_softmax():
    rng = np.random.default_rng(0)
    logits = np.log(np.array([0.5, 0.3, 0.15, 0.05]))
    draws = G.sample_next(np.tile(logits, (40000, 1)), rng)
    freq = np.bincount(draws, minlength=4) / len(draws)
    np.testing.assert_allclose(freq, [0.5, 0.3, 0.15, 0.05], atol=0.01)
    draws = G.sample_next(np.tile(logits, (20000, 1)), rng, k=2)  # top-2, renormalised
    np.testing.assert_allclose(np.bincount(draws, minlength=4) / 20000, [0.625, 0.375, 0, 0], atol=0.015)
    draws = G.sample_next(np.tile(logits, (20000, 1)), rng, temperature=0.5)  # p^2, renormalised
    p2 = np.array([0.25, 0.09, 0.0225, 0.0025]) / 0.365
    np.testing.assert_allclose(np.bincount(draws, minlength=4) / 20000, p2, atol=0.015)
    assert (G.sample_next(np.tile(logits, (5, 1)), rng, temperature=0) == 0).all()


def test_generate_is_seeded_and_top1_is_greedy():
    cfg = tiny("ecp")
    params = init_params(cfg, seed=0)
    prompt = stream(5)
    a = G.generate(params, prompt, cfg, 6, seed=3)
    b = G.generate(params, prompt, cfg, 6, seed=3)
    c = G.generate(params, prompt, cfg, 6, seed=4, filter_thres=0.0)
    np.testing.assert_array_equal(a, b)
    assert a.shape == (6,) and not np.array_equal(a, c)
    greedy = G.generate(params, prompt, cfg, 6, temperature=0)
    np.testing.assert_array_equal(G.generate(params, prompt, cfg, 6, top_k=1, seed=9), greedy)


@pytest.mark.parametrize("arch", ARCHITECTURES)
@pytest.mark.parametrize("length", [1, 3, 5, 16, 21])
def test_generate_any_prompt_length_every_architecture(arch, length):
    cfg = tiny(arch)
    params = init_params(cfg, seed=0)
    prompts = stream(2 * length, seed=length).reshape(2, length)
    out = G.generate(params, prompts, cfg, 3, seed=0)
    assert out.shape == (2, 3) and out.dtype == np.int64 and out.min() >= 0 and out.max() < V


@pytest.mark.parametrize("arch", ["ecp", "transformer"])
def test_short_windows_are_the_causal_prefix_of_a_full_window(arch):
    """ECP (partial last half segment) and the full transformer run short windows as they are: the logits
    of a window of t tokens equal row t - 1 of the full n-token forward (positions start at 0 in both)."""
    cfg = tiny(arch)
    params = init_params(cfg, seed=5)
    x = stream(16, seed=6)[None]
    full = np.asarray(forward(params, x, cfg))
    for t in (1, 3, 4, 7, 9, 15):
        got = G.next_token_logits(params, x[:, :t], cfg)
        np.testing.assert_allclose(got[0], full[0, t - 1], rtol=1e-4, atol=1e-5, err_msg=f"t={t}")


def test_short_windows_are_left_padded_for_perceiver_family_and_longlora():
    w = np.array([[7, 8, 9]])
    for arch in PERCEIVER_FAMILY:
        tokens, cfg = G.window_input(w, tiny(arch), pad_id=1)
        if arch == "double":  # the official Double model runs on any length: no padding
            np.testing.assert_array_equal(tokens, w)
            continue
        assert tokens.shape == (1, 16) and (tokens[0, :13] == 1).all() and (tokens[0, 13:] == [7, 8, 9]).all()
    tokens, cfg = G.window_input(w, tiny("longlora", group=4), pad_id=0)
    np.testing.assert_array_equal(tokens, [[0, 7, 8, 9]])
    tokens, cfg = G.window_input(w, tiny("ecp", half_segment=4))
    assert tokens.shape == (1, 3) and cfg.partial_segments


def test_generate_eos_stops_and_fills():
    cfg = tiny("transformer")
    params = init_params(cfg, seed=0)
    prompts = stream(8, seed=1).reshape(2, 4)
    greedy = G.generate(params, prompts, cfg, 8, temperature=0)
    eos = int(greedy[0, 1])
    out = G.generate(params, prompts, cfg, 8, temperature=0, eos=eos)
    for row, g in zip(out, greedy):
        hit = np.flatnonzero(g == eos)
        if hit.size:
            assert (row[hit[0] :] == eos).all() and np.array_equal(row[: hit[0]], g[: hit[0]])
    assert out.shape[1] <= 8


def test_generate_rejects_bad_prompts():
    cfg = tiny("ecp")
    params = init_params(cfg)
    with pytest.raises(ValueError, match="t >= 1"):
        G.generate(params, np.zeros(0, np.int64), cfg, 2)
    with pytest.raises(ValueError, match="vocab"):
        G.generate(params, np.array([V]), cfg, 2)


# ---------------------------------------------------------------------------- command line


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    cfg = ModelConfig(arch="ecp", vocab=256, dim=16, heads=2, layers=1, seq_len=32, half_segment=8)
    path = str(tmp_path_factory.mktemp("ck") / "m.npz")
    T.save_checkpoint(path, init_params(cfg, seed=0), config=cfg, step=0)
    return path


def test_cli_eval(checkpoint, capsys):
    assert cli_eval.main([checkpoint, "--max-tokens", "2000", "--batch", "32"]) == 0
    out = capsys.readouterr().out
    assert "official recipe" in out and "every token once" in out
    values = [float(line.split(":")[1].split()[0]) for line in out.splitlines() if "perplexity" in line]
    assert len(values) == 2 and all(v > 1 for v in values)


def test_cli_generate(checkpoint, capsys):
    assert cli_generate.main([checkpoint, "--prompt", "Hello", "--tokens", "5", "--seed", "1"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("Hello") and len(out.encode()) >= len("Hello") + 1


def test_cli_dispatcher_exit_status(checkpoint, capsys):
    from minicp import cli

    assert cli.main(["eval", checkpoint, "--max-tokens", "1000", "--batch", "32"]) == 0
    assert cli.main(["generate", checkpoint, "--prompt", "ab", "--tokens", "3"]) == 0
    with pytest.raises(SystemExit, match="does not exist"):
        cli_generate.main([checkpoint + ".missing"])


def test_cli_help(capsys):
    for main in (cli_eval.main, cli_generate.main):
        with pytest.raises(SystemExit) as e:
            main(["--help"])
        assert e.value.code == 0
        assert "examples:" in capsys.readouterr().out
