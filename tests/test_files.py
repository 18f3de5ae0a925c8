"""minicp.files: file modes from the umask, the writer lock (other processes, threads, forks, SIGKILLed
holders), and write errors that name the file."""

import errno
import multiprocessing
import os
import stat
import subprocess
import sys
import textwrap
import threading

import numpy as np
import pytest

from minicp import ModelConfig, files, golden, init_params
from minicp.lm.checkpoint import load_checkpoint, save_checkpoint
from minicp.lm.train import TrainConfig, train

CFG = ModelConfig(arch="ecp", vocab=16, dim=8, heads=2, layers=1, seq_len=8, half_segment=2)
DATA = np.arange(300) % 16
TCFG = TrainConfig(steps=2, batch=2, grad_accum=1, lr=1e-3)

HOLDER = """
import sys, time
from minicp import files
with files.locked(sys.argv[1]):
    print("locked", flush=True)
    time.sleep(60)
"""


@pytest.fixture
def holder(tmp_path):
    """A separate process holding the writer lock of tmp_path / 'c.npz' until killed."""
    path = str(tmp_path / "c.npz")
    proc = subprocess.Popen([sys.executable, "-c", HOLDER, path], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "locked"
    yield path, proc
    proc.kill()
    proc.wait()


@pytest.mark.parametrize("umask", [0o022, 0o077, 0o002])
def test_written_files_get_the_umask_mode(tmp_path, umask):
    old = os.umask(umask)
    try:
        written = [
            files.atomic_savez(tmp_path / "a.npz", {"x": np.arange(3)}),
            files.atomic_write_text(tmp_path / "r.json", "{}"),
            save_checkpoint(tmp_path / "c.npz", init_params(CFG), config=CFG),
            golden.save_golden(
                golden.make_golden("ecp", seq_len=8, heads=1, head_dim=2, half_segment=2), tmp_path / "g.npz"
            ),
        ]
        train(CFG, DATA, TCFG, checkpoint=str(tmp_path / "t.npz"), progress=False)
    finally:
        os.umask(old)
    for path in [*written, tmp_path / "t.npz"]:
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o666 & ~umask, path
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.npz", "c.npz", "g.npz", "r.json", "t.npz"]


def test_a_second_writer_is_refused_naming_the_holder_and_touches_nothing(holder):
    path, proc = holder
    message = f"{path} is in use by process {proc.pid}"
    with pytest.raises(files.FileInUseError, match=message):
        train(CFG, DATA, TCFG, checkpoint=path, progress=False)
    with pytest.raises(files.FileInUseError, match=message):
        save_checkpoint(path, init_params(CFG), config=CFG)
    g = golden.make_golden("ecp", seq_len=8, heads=1, head_dim=2, half_segment=2)
    with pytest.raises(files.FileInUseError, match=message):
        golden.save_golden(g, path)
    assert sorted(os.listdir(os.path.dirname(path))) == [".c.npz.lock"]  # the holder's lock file only


def test_a_killed_holder_leaves_a_lock_file_the_next_writer_takes_and_removes(holder):
    path, proc = holder
    proc.kill()  # SIGKILL: the kernel drops the flock; the file with its pid stays
    proc.wait()
    assert os.path.exists(files.lock_path(path))
    train(CFG, DATA, TCFG, checkpoint=path, progress=False)
    assert load_checkpoint(path)["step"] == 2 and os.listdir(os.path.dirname(path)) == ["c.npz"]


def test_lock_is_reentrant_in_its_thread_and_refused_to_other_threads(tmp_path):
    path = str(tmp_path / "c.npz")
    errors = []

    def other():
        try:
            with files.locked(path):
                pass
        except files.FileInUseError as e:
            errors.append(str(e))

    with files.locked(path):
        save_checkpoint(path, init_params(CFG), config=CFG)  # the same thread: re-entrant
        thread = threading.Thread(target=other)
        thread.start()
        thread.join()
    assert len(errors) == 1 and f"in use by process {os.getpid()} (this process" in errors[0]
    with files.locked(path):  # released: free again
        pass
    assert os.listdir(tmp_path) == ["c.npz"]


@pytest.mark.skipif("fork" not in multiprocessing.get_all_start_methods(), reason="needs fork")
def test_a_forked_child_does_not_own_its_parents_lock(tmp_path):
    path = str(tmp_path / "c.npz")
    ctx = multiprocessing.get_context("fork")

    def child():
        try:
            with files.locked(path):
                os._exit(1)  # would wrongly re-enter the parent's lock
        except files.FileInUseError as e:
            os._exit(0 if f"in use by process {os.getppid()}" in str(e) else 2)

    with files.locked(path):
        proc = ctx.Process(target=child)
        proc.start()
        proc.join(30)
    assert proc.exitcode == 0


def test_write_errors_name_the_file_and_keep_the_old_one(tmp_path, monkeypatch):
    path = str(tmp_path / "c.npz")
    save_checkpoint(path, init_params(CFG), config=CFG, step=1)
    before = open(path, "rb").read()

    def full(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(files.os, "fsync", full)
    with pytest.raises(OSError, match=rf"cannot write {path}: No space left on device; its previous content") as e:
        save_checkpoint(path, init_params(CFG, seed=1), config=CFG, step=2)
    assert e.value.errno == errno.ENOSPC
    monkeypatch.undo()
    assert open(path, "rb").read() == before and os.listdir(tmp_path) == ["c.npz"]


FILE_TOO_LARGE = """
import resource, signal, sys
import numpy as np
from minicp import files
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # the write fails with EFBIG instead of killing the process
resource.setrlimit(resource.RLIMIT_FSIZE, (4096, 4096))
try:
    files.atomic_savez(sys.argv[1], {"x": np.zeros(100_000)}, compressed=False)
except OSError as e:
    print(e)
"""


def test_a_real_write_failure_names_the_file(tmp_path):
    path = str(tmp_path / "big.npz")
    files.atomic_savez(path, {"x": np.arange(3)})
    out = subprocess.run([sys.executable, "-c", textwrap.dedent(FILE_TOO_LARGE), path], capture_output=True, text=True)
    assert (
        out.stdout.strip()
        == f"[Errno 27] cannot write {path}: File too large; its previous content (if any) is unchanged"
    )
    np.testing.assert_array_equal(np.load(path)["x"], np.arange(3))
    assert os.listdir(tmp_path) == ["big.npz"]  # the failed writer removed its temporary


def test_stale_temporaries_of_dead_writers_only(tmp_path):
    path = tmp_path / "x.npz"
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    stale = tmp_path / f".x.npz.{int(dead.stdout)}.tmp-0a1b.npz"
    live = tmp_path / f".x.npz.{os.getpid()}.tmp-2c3d.npz"
    for p in (stale, live):
        p.write_bytes(b"partial")
    assert files.stale_temporaries(path) == [str(stale)]
    assert files.remove_stale_temporaries(path) == [str(stale)]
    assert live.exists() and not stale.exists()
