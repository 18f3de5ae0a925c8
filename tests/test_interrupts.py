"""SIGKILL and SIGINT at random points of training, checkpointing and validation leave every checkpoint
either the previous complete version or the new complete one, and a resumed run ends bit for bit where an
uninterrupted run ends.

Each trial forks a child (cheap: minicp is already imported) that trains a tiny model for STEPS steps,
saving after every step and computing the validation loss after every step, and kills it after a random
delay spread over the whole run. Then: the file is absent (killed before the first save) or loads and
is self-consistent (step k with k history entries); resuming removes the killed writer's temporary files
and finishes with the parameters of the uninterrupted reference run.
"""

import glob
import multiprocessing
import os
import signal
import time

import numpy as np
import pytest

from minicp import ModelConfig, flatten
from minicp.lm.checkpoint import load_checkpoint
from minicp.lm.train import TrainConfig, train

TRIALS = 20
STEPS = 5
CFG = ModelConfig(arch="ecp", vocab=16, dim=8, heads=2, layers=1, seq_len=8, half_segment=2)
DATA = np.arange(400) % 16
VALID = (np.arange(60) * 7) % 16
TCFG = TrainConfig(steps=STEPS, batch=2, grad_accum=1, lr=1e-3, eval_every=1, eval_windows=2, checkpoint_every=1)

pytestmark = pytest.mark.skipif(
    "fork" not in multiprocessing.get_all_start_methods(), reason="the trials fork a child process"
)


def _run(path, progress=False):
    return train(CFG, DATA, TCFG, valid=VALID, checkpoint=path, resume=os.path.exists(path), progress=progress)


def _child(path):
    signal.signal(signal.SIGINT, signal.default_int_handler)  # Ctrl-C raises KeyboardInterrupt, as in a shell
    try:
        _run(path)
    except KeyboardInterrupt:
        os._exit(130)
    os._exit(0)


def _consistent(path):
    """None when there is no file yet, else its step; the file must load and agree with itself."""
    if not os.path.exists(path):
        return None
    ck = load_checkpoint(path, CFG)  # raises CheckpointError for a half-written or corrupt file
    assert [h["step"] for h in ck["history"]] == list(range(1, ck["step"] + 1))
    assert ck["opt_state"]["step"] == ck["step"]
    return ck["step"]


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    path = str(tmp_path_factory.mktemp("ref") / "ref.npz")
    start = time.perf_counter()
    result = _run(path)
    return result, time.perf_counter() - start


@pytest.mark.parametrize("signum", [signal.SIGKILL, signal.SIGINT], ids=["SIGKILL", "SIGINT"])
def test_random_interrupts_leave_complete_files(tmp_path, reference, signum):
    ref, duration = reference
    ctx = multiprocessing.get_context("fork")
    rng = np.random.default_rng(signum)
    outcomes = {"no file yet": 0, "complete": 0, "finished": 0, "temp file left": 0}
    for trial in range(TRIALS):
        path = str(tmp_path / f"t{trial}.npz")
        if trial % 2:  # every other trial interrupts a resumed run
            _run_partly(ctx, path)
        before = _consistent(path)
        child = ctx.Process(target=_child, args=(path,))
        child.start()
        time.sleep(rng.uniform(0, 1.3 * duration))
        if child.is_alive():
            os.kill(child.pid, signum)
        child.join(30)
        assert child.exitcode is not None, "the child did not stop"
        after = _consistent(path)
        assert after is None or before is None or after >= before
        outcomes["no file yet" if after is None else "finished" if after == STEPS else "complete"] += 1
        outcomes["temp file left"] += bool(glob.glob(str(tmp_path / f".t{trial}.npz.*.tmp-*")))
        result = _run(path)  # resume: finish the run (and remove what a killed writer left)
        assert not glob.glob(str(tmp_path / f".t{trial}.npz.*")), "a temporary or lock file was left behind"
        for name, value in flatten(ref.params).items():
            np.testing.assert_array_equal(flatten(result.params)[name], value)  # bit for bit
        for name, value in ref.opt_state["m"].items():
            np.testing.assert_array_equal(result.opt_state["m"][name], value)
        assert result.step == STEPS and [h["loss"] for h in result.history] == [h["loss"] for h in ref.history]
    print(f"{signal.Signals(signum).name}: {TRIALS} trials, {outcomes}")
    assert outcomes["complete"] + outcomes["no file yet"] > 0  # some trials did interrupt mid-run


def _run_partly(ctx, path):
    """Two steps written, so the next child starts by resuming."""
    train(CFG, DATA, TCFG.replace(steps=2), valid=VALID, checkpoint=path, progress=False)
