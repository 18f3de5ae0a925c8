"""Two training processes on one checkpoint: nothing lost, never a silent last-writer-wins.

Each trial forks two real processes that call ``train`` on the same checkpoint file, in one of four
pairings: two fresh runs started together, two resumes of one file, a run and a second fresh run started
during it (refused), a run and a second run with ``overwrite=True`` started during it. Each child records
whether it finished, was refused ("in use by process N", or "exists" when it came after the other had
finished) or failed otherwise, and the monotonic times at which it acquired and released the checkpoint's
writer lock (``minicp.files``, wrapped in the forked child only). Then:

* every child either finished or was refused with the documented message naming the other child's pid;
  none failed otherwise (a writer dying in its rename, a half-written file);
* two children that both finished held the lock at disjoint times (so one came after the other);
* the file is exactly the result of the last run that finished: its parameters equal, bit for bit, an
  uninterrupted reference run with that run's seed and step count;
* no temporary or lock file is left.

The children differ in seed (and the resumes in their step counts), so a silent overwrite would show. CI
runs ``TRIALS`` trials per pairing (3); ``MINICP_CONCURRENCY_TRIALS=20`` runs the full count.
"""

import glob
import json
import multiprocessing
import os
import signal
import time

import numpy as np
import pytest

from minicp import ModelConfig, files, flatten
from minicp.lm.checkpoint import load_checkpoint
from minicp.lm.train import TrainConfig, train

TRIALS = int(os.environ.get("MINICP_CONCURRENCY_TRIALS", "3"))
CFG = ModelConfig(arch="ecp", vocab=16, dim=8, heads=2, layers=1, seq_len=8, half_segment=2)
DATA = np.arange(400) % 16
TCFG = TrainConfig(steps=5, batch=2, grad_accum=1, lr=1e-3, checkpoint_every=1)

pytestmark = pytest.mark.skipif(
    "fork" not in multiprocessing.get_all_start_methods(), reason="the trials fork child processes"
)


def _child(path, seed, steps, resume, overwrite, delay, report):
    signal.signal(signal.SIGINT, signal.default_int_handler)
    times = {}
    acquire, release = files._acquire, files._release

    def timed_acquire(target):
        lock = acquire(target)
        times.setdefault("acquired", time.monotonic())
        return lock

    def timed_release(lock):
        times["released"] = time.monotonic()
        release(lock)

    files._acquire, files._release = timed_acquire, timed_release  # this forked child only
    time.sleep(delay)
    outcome = {"pid": os.getpid(), "seed": seed}
    try:
        tcfg = TCFG.replace(seed=seed, steps=steps)
        result = train(CFG, DATA, tcfg, checkpoint=path, resume=resume, overwrite=overwrite, progress=False)
        outcome.update(status="finished", step=result.step)
    except files.FileInUseError as e:
        outcome.update(status="in use", message=str(e))
    except FileExistsError as e:
        outcome.update(status="exists", message=str(e))
    except BaseException as e:  # anything else is a failure of the test
        outcome.update(status="failed", message=f"{type(e).__name__}: {e}")
    outcome.update(times)
    with open(report, "w") as f:
        json.dump(outcome, f)
    os._exit(0)


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """seed -> {steps: flat params} of uninterrupted runs, and the duration of a checkpointed 5-step run."""
    out = {}
    for seed in (1, 2):
        for steps in (2, 5, 7):
            res = train(CFG, DATA, TCFG.replace(seed=seed, steps=steps), progress=False)
            out.setdefault(seed, {})[steps] = flatten(res.params)
    start = time.perf_counter()
    train(CFG, DATA, TCFG, checkpoint=str(tmp_path_factory.mktemp("timed") / "t.npz"), progress=False)
    return out, time.perf_counter() - start


PAIRINGS = {
    # name: (child A (seed, steps, resume, overwrite), child B (...), B's delay as a fraction of a run)
    "two fresh runs": ((1, 5, False, False), (2, 5, False, False), (0.0, 0.05)),
    "two resumes": ((1, 5, True, False), (1, 7, True, False), (0.0, 1.3)),
    "run + refused run": ((1, 5, False, False), (2, 5, False, False), (0.1, 1.3)),
    "run + overwrite": ((1, 5, False, False), (2, 5, False, True), (0.0, 1.5)),
}


def _trial(ctx, tmp_path, trial, pairing, duration, rng):
    path = str(tmp_path / f"c{trial}.npz")
    if pairing == "two resumes":
        train(CFG, DATA, TCFG.replace(seed=1, steps=2), checkpoint=path, progress=False)
    low, high = PAIRINGS[pairing][2]
    delays = (0.0, float(rng.uniform(low, high)) * duration)
    procs, reports = [], []
    for which, (seed, steps, resume, overwrite) in enumerate(PAIRINGS[pairing][:2]):
        report = str(tmp_path / f"r{trial}{which}.json")
        args = (path, seed, steps, resume, overwrite, delays[which], report)
        procs.append(ctx.Process(target=_child, args=args))
        reports.append(report)
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
        assert p.exitcode == 0, "a child did not finish"
    outcomes = []
    for report in reports:
        with open(report) as f:
            outcomes.append(json.load(f))
    return path, outcomes


def _judge(path, outcomes, reference, pairing):
    pids = {o["pid"] for o in outcomes}
    finished = [o for o in outcomes if o["status"] == "finished"]
    for o in outcomes:
        assert o["status"] in ("finished", "in use", "exists"), o
        if o["status"] == "in use":
            other = (pids - {o["pid"]}).pop()
            assert f"is in use by process {other}" in o["message"], o["message"]
    assert finished, outcomes  # at least one run went through
    if len(finished) == 2:  # both ran: one after the other, never at the same time
        a, b = sorted(finished, key=lambda o: o["acquired"])
        assert a["released"] <= b["acquired"], outcomes
        if pairing in ("two fresh runs", "run + refused run"):
            pytest.fail(f"a second fresh run without overwrite replaced the first: {outcomes}")
    last = max(finished, key=lambda o: o["released"])
    ck = load_checkpoint(path, CFG)
    assert ck["step"] == last["step"] and [h["step"] for h in ck["history"]] == list(range(1, ck["step"] + 1))
    expected = reference[last["seed"]][last["step"]]
    for name, value in flatten(ck["params"]).items():
        np.testing.assert_array_equal(value, expected[name])  # bit for bit: the last finished run's work
    leftovers = glob.glob(os.path.join(os.path.dirname(path), f".{os.path.basename(path)}.*"))
    assert not leftovers, leftovers
    return tuple(sorted(o["status"] for o in outcomes))


@pytest.mark.parametrize("pairing", list(PAIRINGS))
def test_concurrent_writers_lose_nothing(tmp_path, reference, pairing):
    refs, duration = reference
    ctx = multiprocessing.get_context("fork")
    rng = np.random.default_rng(len(pairing))
    tally = {}
    for trial in range(TRIALS):
        path, outcomes = _trial(ctx, tmp_path, trial, pairing, duration, rng)
        key = _judge(path, outcomes, refs, pairing)
        tally[key] = tally.get(key, 0) + 1
    print(f"{pairing}: {TRIALS} trials, outcomes {tally}")
