"""Tests for minicp.train: AdamW (closed form and torch), parameter groups, clipping, schedule,
gradient accumulation, determinism, exact resume and checkpoint safety. Tiny models only."""

import json
import os

import numpy as np
import pytest

from minicp import ModelConfig, flatten, init_params, loss
from minicp.cli import train as cli_train
from minicp.lm import train as T
from minicp.nn import model as M

TINY = ModelConfig(arch="ecp", vocab=32, dim=16, heads=2, layers=2, seq_len=16, half_segment=4)
FAST = T.TrainConfig(steps=4, batch=2, grad_accum=2, lr=1e-2, lr_halve_every=3)


def stream(size=400, seed=0, vocab=32):
    return np.random.default_rng(seed).integers(0, vocab, size=size)


def flat_np(params):
    return {k: np.asarray(v) for k, v in flatten(params).items()}


def assert_same_params(a, b):
    fa, fb = flat_np(a), flat_np(b)
    assert fa.keys() == fb.keys()
    for k in fa:
        np.testing.assert_array_equal(fa[k], fb[k], err_msg=k)


# ---------------------------------------------------------------------------- AdamW


def test_adamw_one_step_closed_form():
    """Step 1: m_hat = g, v_hat = g^2, so p1 = p0 (1 - lr wd) - lr g / (|g| + eps) (decayed names only)."""
    rng = np.random.default_rng(0)
    p0 = {
        "layers.0.0.fn.to_q.weight": rng.standard_normal((3, 4)),
        "layers.0.0.fn.to_out.bias": rng.standard_normal(3),
        "token_emb.weight": rng.standard_normal((5, 4)),
        "to_logits.0.weight": rng.standard_normal(4),
    }
    g = {k: rng.standard_normal(v.shape) for k, v in p0.items()}
    lr, wd, eps = 0.01, 0.1, 1e-8
    p = {k: v.copy() for k, v in p0.items()}
    state = T.adamw_init(p)
    T.adamw_step(p, g, state, lr=lr, betas=(0.9, 0.95), eps=eps, weight_decay=wd)
    for k in p0:
        decay = 1 - lr * wd if k == "layers.0.0.fn.to_q.weight" else 1.0
        expected = p0[k] * decay - lr * g[k] / (np.abs(g[k]) + eps)
        np.testing.assert_allclose(p[k], expected, rtol=1e-12, atol=1e-15, err_msg=k)
        np.testing.assert_allclose(state["m"][k], 0.1 * g[k], rtol=1e-12)
        np.testing.assert_allclose(state["v"][k], 0.05 * g[k] ** 2, rtol=1e-12)
    assert state["step"] == 1


def test_adamw_matches_torch_over_several_steps():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(1)
    spec = M.param_spec(TINY)
    p = {k: rng.standard_normal(s) for k, s in spec.items()}
    tp = {k: torch.tensor(v, requires_grad=True) for k, v in p.items()}
    groups = [
        {"params": [tp[k] for k in sorted(spec) if T.decays(k, spec[k])], "weight_decay": 0.1},
        {"params": [tp[k] for k in sorted(spec) if not T.decays(k, spec[k])], "weight_decay": 0.0},
    ]
    opt = torch.optim.AdamW(groups, lr=3e-3, betas=(0.9, 0.95), eps=1e-8)
    state = T.adamw_init(p)
    for step in range(5):
        g = {k: rng.standard_normal(s) * (step + 1) for k, s in spec.items()}
        for k in spec:
            tp[k].grad = torch.tensor(g[k])
        opt.step()
        T.adamw_step(p, g, state, lr=3e-3, betas=(0.9, 0.95), eps=1e-8, weight_decay=0.1)
    for k in spec:
        np.testing.assert_allclose(p[k], tp[k].detach().numpy(), rtol=1e-13, atol=1e-15, err_msg=k)


def test_decay_groups_match_official_configure_optimizers():
    """Official rule: decay the weights of nn.Linear modules; biases, LayerNorm and Embedding weights not."""
    torch = pytest.importorskip("torch")
    from minicp import torch_twin

    for arch in torch_twin.ARCHITECTURES:
        cfg = ModelConfig(arch=arch, vocab=11, dim=8, heads=2, layers=2, seq_len=16)
        twin = torch_twin.build(
            arch,
            vocab=11,
            dim=8,
            heads=2,
            layers=2,
            seq_len=16,
            latent=cfg.latent,
            compressed=cfg.compressed,
            split=cfg.split,
            half_segment=cfg.half_segment,
            perturb_norms=False,
        )
        official = {
            f"{mn}.{pn}" if mn else pn
            for mn, m in twin.named_modules()
            for pn, _ in m.named_parameters(recurse=False)
            if pn == "weight" and isinstance(m, torch.nn.Linear)
        }
        ours = {k for k, s in M.param_spec(cfg).items() if T.decays(k, s)}
        assert ours == official, arch
    assert T.decays("layers.0.0.fn.projection_hist.weight", (4, 8))


def test_clip_grad_norm():
    g = {"a": np.array([3.0, 0.0]), "b": np.array([[0.0, 4.0]])}
    norm = T.clip_grad_norm(g, 1.0)
    assert norm == pytest.approx(5.0)
    coef = 1.0 / (5.0 + 1e-6)
    np.testing.assert_allclose(g["a"], [3.0 * coef, 0.0])
    np.testing.assert_allclose(g["b"], [[0.0, 4.0 * coef]])
    small = {"a": np.array([0.3, 0.4])}
    T.clip_grad_norm(small, 1.0)
    np.testing.assert_array_equal(small["a"], [0.3, 0.4])  # below the threshold: untouched
    big = {"a": np.array([30.0, 40.0])}
    T.clip_grad_norm(big, 0)
    np.testing.assert_array_equal(big["a"], [30.0, 40.0])  # 0 = off


def test_clip_matches_torch():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(2)
    g = {str(i): rng.standard_normal((3, 5)) * 2 for i in range(4)}
    ts = [torch.zeros(3, 5, dtype=torch.float64, requires_grad=True) for _ in g]
    for t, v in zip(ts, g.values()):
        t.grad = torch.tensor(v)
    total = torch.nn.utils.clip_grad_norm_(ts, 1.0)
    norm = T.clip_grad_norm(g, 1.0)
    assert norm == pytest.approx(float(total), rel=1e-12)
    for t, v in zip(ts, g.values()):
        np.testing.assert_allclose(v, t.grad.numpy(), rtol=1e-12)


def test_learning_rate_halves_after_every_period():
    tc = T.TrainConfig()
    assert T.learning_rate(tc, 0) == T.learning_rate(tc, 99_999) == 2e-4
    assert T.learning_rate(tc, 100_000) == 1e-4  # official: after step i = 99999
    assert T.learning_rate(tc, 250_000) == 5e-5
    assert T.learning_rate(tc.replace(lr_halve_every=0), 10**7) == 2e-4


def test_official_defaults():
    tc = T.TrainConfig()
    assert (tc.lr, tc.betas, tc.eps, tc.weight_decay, tc.clip) == (2e-4, (0.9, 0.95), 1e-8, 0.1, 1.0)
    assert (tc.batch, tc.grad_accum, tc.lr_halve_every, tc.sampling) == (8, 2, 100_000, "chunks")
    with pytest.raises(ValueError, match="sampling"):
        T.TrainConfig(sampling="bogus")
    with pytest.raises(ValueError, match="batch"):
        T.TrainConfig(batch=0)


# ---------------------------------------------------------------------------- gradients


def test_accumulation_sums_micro_batch_losses_and_grads():
    params = init_params(TINY, seed=0)
    rng = np.random.default_rng(3)
    b1, b2 = rng.integers(0, 32, (2, 17)), rng.integers(0, 32, (2, 17))
    total, grads = T.accumulated_loss_and_grad(params, [b1, b2], TINY)
    l1, g1 = T.loss_and_grad(params, b1, TINY)
    l2, g2 = T.loss_and_grad(params, b2, TINY)
    assert total == pytest.approx(l1 + l2)
    for k in grads:
        np.testing.assert_allclose(grads[k], g1[k] + g2[k], rtol=1e-6, atol=1e-7)


def test_training_stays_float32():
    tokens = stream()
    res = T.train(TINY, tokens, FAST.replace(steps=2), progress=False)
    _, grads = T.loss_and_grad(res.params, tokens[:34].reshape(2, 17), TINY)
    assert all(v.dtype == np.float32 for v in flat_np(res.params).values())
    assert all(v.dtype == np.float32 for v in grads.values())
    assert all(v.dtype == np.float32 for v in res.opt_state["m"].values())
    assert np.asarray(loss(res.params, tokens[:34].reshape(2, 17), TINY)).dtype == np.float32


def test_training_reduces_the_loss():
    tokens = np.tile(np.arange(8), 60)  # a trivially predictable stream
    res = T.train(TINY, tokens, T.TrainConfig(steps=25, batch=4, grad_accum=1, lr=1e-2), progress=False)
    assert res.history[-1]["loss"] < 0.5 * res.history[0]["loss"]


# ---------------------------------------------------------------------------- determinism and resume


def test_same_seed_same_run_other_seed_other_run():
    tokens = stream()
    a = T.train(TINY, tokens, FAST, progress=False)
    b = T.train(TINY, tokens, FAST, progress=False)
    c = T.train(TINY, tokens, FAST.replace(seed=1), progress=False)
    assert_same_params(a.params, b.params)
    assert not np.array_equal(flat_np(a.params)["token_emb.weight"], flat_np(c.params)["token_emb.weight"])


@pytest.mark.parametrize("data_kind", ["chunks", "random", "rows", "function"])
def test_resume_is_bit_for_bit(tmp_path, data_kind):
    """2N steps in one go == N steps, checkpoint, resume, N more steps (params, moments, history)."""
    tokens = stream(200)  # 11 chunks: epochs wrap inside batches
    tc = FAST.replace(steps=6, sampling="random" if data_kind == "random" else "chunks")
    data = {
        "chunks": tokens,
        "random": tokens,
        "rows": tokens[: 17 * 11].reshape(11, 17),
        "function": lambda rng, b: rng.integers(0, 32, (b, 17)),
    }[data_kind]
    straight = T.train(TINY, data, tc, progress=False)
    path = str(tmp_path / "run.npz")
    half = T.train(TINY, data, tc.replace(steps=3), checkpoint=path, progress=False)
    assert half.step == 3
    resumed = T.train(TINY, data, tc, checkpoint=path, resume=True, progress=False)
    assert resumed.step == 6
    assert_same_params(straight.params, resumed.params)
    for k in straight.opt_state["m"]:
        np.testing.assert_array_equal(straight.opt_state["m"][k], resumed.opt_state["m"][k])
        np.testing.assert_array_equal(straight.opt_state["v"][k], resumed.opt_state["v"][k])
    assert [h["loss"] for h in straight.history] == [h["loss"] for h in resumed.history]
    final = T.load_checkpoint(path, TINY)
    assert final["step"] == 6 and final["opt_state"]["step"] == 6
    assert_same_params(final["params"], straight.params)


# ---------------------------------------------------------------------------- checkpoints


def test_checkpoint_round_trip_without_pickle(tmp_path):
    path = str(tmp_path / "c.npz")
    T.train(TINY, stream(), FAST.replace(steps=2), checkpoint=path, progress=False)
    with np.load(path, allow_pickle=False) as f:
        meta = json.loads(str(f["meta"]))
        assert all(f[k].dtype != object for k in f.files)
        names = {k[len("param/") :] for k in f.files if k.startswith("param/")}
    assert names == set(M.param_spec(TINY))
    assert meta["step"] == 2 and meta["model_config"]["half_segment"] == 4
    assert T.config_from_dict(meta["model_config"]) == TINY
    assert [p for p in os.listdir(tmp_path) if p != "c.npz"] == []  # no temporary file left behind
    ck = T.load_checkpoint(path)
    assert ck["config"] == TINY and ck["train_config"]["batch"] == 2


def _snapshot(path):
    with open(path, "rb") as f:
        return f.read()


def test_truncated_or_corrupt_checkpoint_gives_clear_error_and_is_not_overwritten(tmp_path):
    path = str(tmp_path / "c.npz")
    T.train(TINY, stream(), FAST.replace(steps=1), checkpoint=path, progress=False)
    good = _snapshot(path)
    for broken in (good[: len(good) // 2], b"not a zip file at all", good[:100] + b"\0" * 50 + good[150:]):
        with open(path, "wb") as f:
            f.write(broken)
        with pytest.raises(T.CheckpointError, match="truncated or corrupt|unreadable|does not match|not a minicp"):
            T.train(TINY, stream(), FAST, checkpoint=path, resume=True, progress=False)
        assert _snapshot(path) == broken  # nothing overwritten
    with pytest.raises(T.CheckpointError, match="does not exist"):
        T.load_checkpoint(str(tmp_path / "missing.npz"))


def test_mismatched_checkpoint_is_refused(tmp_path):
    path = str(tmp_path / "c.npz")
    T.train(TINY, stream(), FAST.replace(steps=1), checkpoint=path, progress=False)
    before = _snapshot(path)
    with pytest.raises(T.CheckpointError, match="dim = 16 in the file, 32 requested"):
        T.train(TINY.replace(dim=32), stream(), FAST, checkpoint=path, resume=True, progress=False)
    with pytest.raises(T.CheckpointError, match="lr = 0.01 in the file"):
        T.train(TINY, stream(), FAST.replace(lr=0.5), checkpoint=path, resume=True, progress=False)
    with pytest.raises(FileExistsError, match="--resume"):
        T.train(TINY, stream(), FAST, checkpoint=path, progress=False)  # fresh run onto an existing file
    assert _snapshot(path) == before
    # a file whose arrays do not fit its own config (e.g. edited by hand)
    with np.load(path, allow_pickle=False) as f:
        arrays = {k: f[k] for k in f.files}
    arrays["param/token_emb.weight"] = np.zeros((3, 3), np.float32)
    bad = str(tmp_path / "bad.npz")
    np.savez(bad, **arrays)
    with pytest.raises(T.CheckpointError, match="wrong shape"):
        T.load_checkpoint(bad)


def test_overwrite_starts_afresh(tmp_path):
    path = str(tmp_path / "c.npz")
    T.train(TINY, stream(), FAST.replace(steps=1), checkpoint=path, progress=False)
    T.train(TINY, stream(), FAST.replace(steps=2), checkpoint=path, overwrite=True, progress=False)
    assert T.load_checkpoint(path)["step"] == 2


def test_validation_loss_is_recorded():
    tokens = stream()
    res = T.train(TINY, tokens, FAST.replace(eval_every=2, eval_windows=3), valid=stream(100, seed=9), progress=False)
    assert [("valid_loss" in h) for h in res.history] == [False, True, False, True]


# ---------------------------------------------------------------------------- command line


def test_cli_train_then_resume(tmp_path, capsys):
    path = str(tmp_path / "cli.npz")
    args = [
        "--dim",
        "16",
        "--heads",
        "2",
        "--layers",
        "1",
        "--seq-len",
        "32",
        "--half-segment",
        "8",
        "--batch",
        "2",
        "--grad-accum",
        "1",
        "--eval-every",
        "0",
        "--no-progress",
        "--eval-batch",
        "64",
        "--checkpoint",
        path,
    ]
    cli_train.main(args + ["--steps", "1"])
    out = capsys.readouterr().out
    assert "official recipe" in out and "every token once" in out
    with pytest.raises(SystemExit, match="exists"):
        cli_train.main(args + ["--steps", "2"])
    cli_train.main(["--checkpoint", path, "--steps", "2", "--resume", "--no-progress", "--eval-batch", "64"])
    ck = T.load_checkpoint(path)  # options (batch 2, no accumulation) came from the file
    assert ck["step"] == 2 and ck["train_config"]["batch"] == 2 and ck["train_config"]["grad_accum"] == 1
    with pytest.raises(SystemExit, match="lr = 0.0002 in the file"):
        cli_train.main(["--checkpoint", path, "--steps", "3", "--resume", "--lr", "0.1", "--no-progress"])


def test_cli_help_has_examples(capsys):
    with pytest.raises(SystemExit) as e:
        cli_train.main(["--help"])
    assert e.value.code == 0
    text = capsys.readouterr().out
    assert "examples:" in text and "--resume" in text and "--preset" in text


@pytest.mark.parametrize("when", ["callback", "sampling"])
def test_ctrl_c_saves_a_resumable_checkpoint(tmp_path, when):
    """KeyboardInterrupt between steps (in the callback) or while drawing data: the checkpoint holds the last
    completed step and resuming reproduces the uninterrupted run exactly."""
    data_rng_calls = {"n": 0}

    def sample(rng, b):
        data_rng_calls["n"] += 1
        if when == "sampling" and data_rng_calls["n"] == 6:  # inside step 3 (2 micro-batches per step)
            raise KeyboardInterrupt
        return rng.integers(0, 32, (b, 17))

    def stop_after_two(step, info, params):
        if when == "callback" and step == 2:
            raise KeyboardInterrupt

    straight = T.train(TINY, lambda rng, b: rng.integers(0, 32, (b, 17)), FAST.replace(steps=5), progress=False)
    path = str(tmp_path / "c.npz")
    with pytest.raises(KeyboardInterrupt):
        T.train(TINY, sample, FAST.replace(steps=5), checkpoint=path, progress=False, callback=stop_after_two)
    assert T.load_checkpoint(path)["step"] == 2
    resumed = T.train(
        TINY,
        lambda rng, b: rng.integers(0, 32, (b, 17)),
        FAST.replace(steps=5),
        checkpoint=path,
        resume=True,
        progress=False,
    )
    assert_same_params(straight.params, resumed.params)


def test_backward_stays_float32():
    """Every intermediate cotangent of the float32 training loss should be float32 (speed: half the bytes,
    sgemm instead of dgemm). Records the dtype of every VJP output while autograd runs the backward."""
    import autograd.core as core

    seen = []
    original = core.VJPNode.__init__

    def init(self, value, fun, args, kwargs, parent_argnums, parents):
        original(self, value, fun, args, kwargs, parent_argnums, parents)
        vjp, name = self.vjp, getattr(fun, "__name__", str(fun))

        def recorded(g):
            out = tuple(vjp(g))
            seen.extend((name, getattr(x, "dtype", None)) for x in out)
            return out

        self.vjp = recorded

    core.VJPNode.__init__ = init
    try:
        T.loss_and_grad(init_params(TINY), stream(34).reshape(2, 17), TINY)
    finally:
        core.VJPNode.__init__ = original
    upcast = sorted({name for name, dtype in seen if dtype == np.float64})
    assert not upcast, f"float64 cotangents from the VJPs of: {upcast}"
