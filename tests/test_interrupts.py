"""SIGKILL and SIGINT at random points of training, checkpointing and validation leave every checkpoint
either the previous complete version or the new complete one, and a resumed run ends bit for bit where an
uninterrupted run ends.

Each trial forks a child (cheap: minicp is already imported) that trains a tiny model for STEPS steps,
saving after every step and computing the validation loss after every step, and kills it after a random
delay spread over the whole run. Then: the file is absent (killed before the first save) or loads and
is self-consistent (step k with k history entries); resuming takes over the killed writer's lock, removes
its temporary files and its lock file, and finishes with the parameters of the uninterrupted reference run.

Two models: an ECP model from init_params, and a Compressed model fine-tuned from weights in the official
layout (RoPE buffers in the checkpoint; ``projection_hist`` unused after layer 0 and so never moved by AdamW).
"""

import glob
import multiprocessing
import os
import signal
import time

import numpy as np
import pytest

from minicp import ModelConfig, flatten, init_params, load_official_state_dict
from minicp.lm.checkpoint import load_checkpoint
from minicp.lm.train import TrainConfig, train
from minicp.nn.rope import rope_frequencies

TRIALS = 20
STEPS = 5
MODELS = {
    "ecp": ModelConfig(arch="ecp", vocab=16, dim=8, heads=2, layers=1, seq_len=8, half_segment=2),
    "official compressed": ModelConfig(arch="compressed", vocab=16, dim=8, heads=2, layers=2, seq_len=8, latent=4),
}
CFG = MODELS["ecp"]
START = {}  # model name -> starting params (None: init_params)
DATA = np.arange(400) % 16
VALID = (np.arange(60) * 7) % 16
TCFG = TrainConfig(steps=STEPS, batch=2, grad_accum=1, lr=1e-3, eval_every=1, eval_windows=2, checkpoint_every=1)

pytestmark = pytest.mark.skipif(
    "fork" not in multiprocessing.get_all_start_methods(), reason="the trials fork a child process"
)


def _start(model):
    """The starting parameters of ``model``: None (init_params), or for "official ..." a state_dict in the
    official layout (parameters and the RoPE buffer of every layer, as the official modules save them) loaded
    by load_official_state_dict. Built without torch: a forked child must not inherit torch's threads."""
    if model not in START:
        START[model] = None
        if model.startswith("official"):
            cfg = MODELS[model]
            state = flatten(init_params(cfg, seed=11))
            for layer in range(cfg.layers):
                state[f"layers.{layer}.0.fn.pos_emb.freqs"] = rope_frequencies(cfg.head_dim)
            START[model] = load_official_state_dict(state, cfg)
    return START[model]


def _run(path, model="ecp", progress=False, tcfg=TCFG):
    resume = os.path.exists(path)
    params = None if resume else _start(model)
    cfg = MODELS[model]
    return train(cfg, DATA, tcfg, valid=VALID, params=params, checkpoint=path, resume=resume, progress=progress)


def _child(path, model):
    signal.signal(signal.SIGINT, signal.default_int_handler)  # Ctrl-C raises KeyboardInterrupt, as in a shell
    try:
        _run(path, model)
    except KeyboardInterrupt:
        os._exit(130)
    os._exit(0)


def _consistent(path, cfg):
    """None when there is no file yet, else its step; the file must load and agree with itself."""
    if not os.path.exists(path):
        return None
    ck = load_checkpoint(path, cfg)  # raises CheckpointError for a half-written or corrupt file
    assert [h["step"] for h in ck["history"]] == list(range(1, ck["step"] + 1))
    assert ck["opt_state"]["step"] == ck["step"]
    return ck["step"]


@pytest.fixture(scope="module")
def references(tmp_path_factory):
    out = {}
    for model in MODELS:
        path = str(tmp_path_factory.mktemp("ref") / "ref.npz")
        start = time.perf_counter()
        out[model] = _run(path, model), time.perf_counter() - start
    return out


@pytest.mark.parametrize("model", list(MODELS))
@pytest.mark.parametrize("signum", [signal.SIGKILL, signal.SIGINT], ids=["SIGKILL", "SIGINT"])
def test_random_interrupts_leave_complete_files(tmp_path, references, signum, model):
    ref, duration = references[model]
    cfg = MODELS[model]
    ctx = multiprocessing.get_context("fork")
    rng = np.random.default_rng(signum)
    outcomes = {"no file yet": 0, "complete": 0, "finished": 0, "temp file left": 0}
    for trial in range(TRIALS):
        path = str(tmp_path / f"t{trial}.npz")
        if trial % 2:  # every other trial interrupts a resumed run
            _run(path, model, tcfg=TCFG.replace(steps=2))  # two steps written, so the child starts by resuming
        before = _consistent(path, cfg)
        child = ctx.Process(target=_child, args=(path, model))
        child.start()
        time.sleep(rng.uniform(0, 1.3 * duration))
        if child.is_alive():
            os.kill(child.pid, signum)
        child.join(30)
        assert child.exitcode is not None, "the child did not stop"
        after = _consistent(path, cfg)
        assert after is None or before is None or after >= before
        outcomes["no file yet" if after is None else "finished" if after == STEPS else "complete"] += 1
        outcomes["temp file left"] += bool(glob.glob(str(tmp_path / f".t{trial}.npz.*.tmp-*")))
        result = _run(path, model)  # resume: finish the run (and remove what a killed writer left)
        assert not glob.glob(str(tmp_path / f".t{trial}.npz.*")), "a temporary or lock file was left behind"
        for name, value in flatten(ref.params).items():
            np.testing.assert_array_equal(flatten(result.params)[name], value)  # bit for bit
        for name, value in ref.opt_state["m"].items():
            np.testing.assert_array_equal(result.opt_state["m"][name], value)
        assert result.step == STEPS and [h["loss"] for h in result.history] == [h["loss"] for h in ref.history]
    if model.startswith("official"):  # unused after layer 0: never moved; buffers kept as loaded
        for name in ("layers.1.0.fn.projection_hist.weight", "layers.1.0.fn.pos_emb.freqs"):
            np.testing.assert_array_equal(flatten(result.params)[name], flatten(_start(model))[name])
    print(f"{model}, {signal.Signals(signum).name}: {TRIALS} trials, {outcomes}")
    assert outcomes["complete"] + outcomes["no file yet"] > 0  # some trials did interrupt mid-run
