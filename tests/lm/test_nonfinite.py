"""No NaN or inf leaves a public function from finite inputs without an error that names the tensor, the first
bad index and the likely cause: head-level attention, forward, loss, value_and_grad, perplexity, generate
and train. Every input here is finite; the overflows are built on purpose (huge but finite weights)."""

import numpy as np
import pytest

import minicp
from minicp import (  # the public functions: they check their results
    ModelConfig,
    flatten,
    forward,
    loss,
    unflatten,
    value_and_grad,
)
from minicp.cli import main
from minicp.lm.checkpoint import load_checkpoint, save_checkpoint
from minicp.lm.evaluate import perplexity
from minicp.lm.generate import generate
from minicp.lm.train import TrainConfig, train
from minicp.validate import NonFiniteError, finite_result

CFG = ModelConfig(arch="ecp", vocab=8, dim=8, heads=2, layers=1, seq_len=8, half_segment=2)
TOKENS = (np.arange(18).reshape(2, 9) * 3) % 8  # targets include odd tokens


def with_logit_bias(bias, dtype="float32"):
    """Parameters whose logits are exactly ``bias`` (the output weights zeroed): finite, as large as asked."""
    flat = flatten(minicp.init_params(CFG, dtype=dtype))
    flat["to_logits.1.weight"] = np.zeros_like(flat["to_logits.1.weight"])
    flat["to_logits.1.bias"] = np.asarray(bias, dtype=dtype)
    return unflatten(flat)


def test_finite_result_names_tensor_index_and_cause():
    a = np.ones((2, 3), np.float32)
    a[1, 2] = np.inf
    with pytest.raises(NonFiniteError, match=r"x is not finite: inf at index \(1, 2\) \(of shape \(2, 3\)\).*"
                       r"overflow in float32 \(largest finite value 3.4e38\); use float64"):  # fmt: skip
        finite_result("x", a)
    with pytest.raises(NonFiniteError, match="overflow in float16.*use float32"):
        finite_result("y", np.array([np.nan], np.float16))
    with pytest.raises(NonFiniteError, match="overflow in float64: the inputs are too large"):
        finite_result("z", np.array([1.0, -np.inf]))
    assert isinstance(NonFiniteError("m"), ValueError) and isinstance(NonFiniteError("m"), FloatingPointError)


def test_head_level_attention_overflow_in_float32():
    q = np.full((1, 1, 8, 4), 1e20, np.float32)  # q k^T = 4e40: beyond float32
    with pytest.raises(
        NonFiniteError, match=r"attention output is not finite: nan at index \(0, 0, 0, 0\).*float32.*use float64"
    ):
        minicp.attention("transformer", q, q, q)
    out = minicp.attention("transformer", q.astype(np.float64), q.astype(np.float64), q.astype(np.float64))
    assert np.isfinite(out).all()  # the remedy the message gives works


def test_head_level_float16_is_refused_with_the_reason_and_the_remedy():
    rng = np.random.default_rng(0)
    q, k, v = (rng.standard_normal((1, 2, 64, 8)).astype(np.float16) * 40 for _ in range(3))
    with pytest.raises(ValueError, match=r"q is float16: .*overflow.*softmax in float32.*pass float32 or float64"):
        minicp.attention("ecp", q, k, v, half_segment=16)
    out = minicp.attention("ecp", *(a.astype(np.float32) for a in (q, k, v)), half_segment=16)
    assert np.isfinite(out).all()  # the remedy the message gives works


def test_forward_logits_overflow():
    params = with_logit_bias([3e38] * 4 + [-3e38] * 4)
    flat = flatten(params)
    flat["to_logits.1.weight"][0, 0] = 1e38  # finite weights whose logits overflow float32
    with pytest.raises(NonFiniteError, match=r"logits is not finite.*float32.*use float64"):
        forward(unflatten(flat), TOKENS[:, :-1], CFG)


def test_loss_and_gradient_overflow_with_finite_logits():
    params = with_logit_bias([3e38, -3e38] * 4)  # log-softmax: -3e38 - 3e38 overflows float32
    assert np.isfinite(forward(params, TOKENS[:, :-1], CFG)).all()
    with pytest.raises(NonFiniteError, match=r"loss is not finite: inf.*float32.*use float64"):
        loss(params, TOKENS, CFG)
    with pytest.raises(NonFiniteError, match=r"(loss|gradient of \S+) is not finite.*float32.*use float64"):
        value_and_grad(params, TOKENS, CFG)
    params64 = with_logit_bias([3e38, -3e38] * 4, "float64")
    assert np.isfinite(float(loss(params64, TOKENS, CFG)))  # the remedy works


def test_perplexity_overflow_is_a_clear_error():
    params = with_logit_bias([0.0] + [-1000.0] * 7)  # every token but 0 has probability e^-1000
    with pytest.raises(
        NonFiniteError, match=r"perplexity exp\(1000\.\d+\) overflows float64.*mean negative log-likelihood"
    ):
        perplexity(params, np.ones(100, np.int64), CFG)
    with pytest.raises(NonFiniteError, match="perplexity"):
        perplexity(params, np.ones(100, np.int64), CFG, method="official")


def test_perplexity_overflow_on_the_command_line(tmp_path, capsys):
    cfg = CFG.replace(vocab=256)
    path = str(tmp_path / "c.npz")
    flat = flatten(minicp.init_params(cfg))
    flat["to_logits.1.weight"][:] = 0
    flat["to_logits.1.bias"][:] = -1000.0
    flat["to_logits.1.bias"][0] = 0.0
    save_checkpoint(path, unflatten(flat), config=cfg)
    corpus = tmp_path / "t.txt"
    corpus.write_text("abc " * 400)
    with pytest.raises(SystemExit) as e:
        main(["eval", path, "--corpus", str(corpus), "--no-progress"])
    err = capsys.readouterr().err
    lines = err.strip().splitlines()  # a header line on stderr, then the one error line
    assert e.value.code == 2 and lines[-1].startswith("error: the perplexity") and "overflows float64" in lines[-1]
    assert sum(line.startswith("error") for line in lines) == 1 and "Traceback" not in err


def test_generate_with_overflowing_logits():
    params = with_logit_bias([3e38] * 8)
    flat = flatten(params)
    flat["to_logits.1.weight"][3, 0] = 1e38
    with pytest.raises(NonFiniteError, match="logits is not finite"):
        generate(unflatten(flat), [1, 2], CFG, 3)


def test_training_that_overflows_stops_naming_the_step_and_keeps_the_last_good_checkpoint(tmp_path):
    path = str(tmp_path / "c.npz")
    tcfg = TrainConfig(steps=6, batch=2, grad_accum=1, lr=1e37, clip=0, checkpoint_every=1)
    data = np.arange(400) % 8
    with pytest.raises(NonFiniteError, match=r"(training stopped at step|training diverged at step) (\d+)") as e:
        train(CFG, data, tcfg, checkpoint=path, progress=False)
    ck = load_checkpoint(path, CFG)  # the last good state, complete
    stopped = int(str(e.value).split(" step ")[1].split()[0].rstrip(":"))
    assert ck["step"] < stopped and all(np.isfinite(v).all() for v in flatten(ck["params"]).values())
