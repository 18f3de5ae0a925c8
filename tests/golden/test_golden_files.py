"""Golden files on disk: non-regular, unreadable, truncated and malformed files; interrupted writes; the CLI's
--overwrite and symlink rules."""

import os
import pathlib
import random
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from minicp import files
from minicp import golden as G
from minicp.cli import golden as cli_golden

FILES_PY = pathlib.Path(files.__file__)  # minicp/files.py: stdlib and NumPy only
CLI_CASE = ["--arch", "ecp", "--seq-len", "16", "--half-segment", "4", "--head-dim", "4"]

# The writer child: loads minicp/files.py alone (fast start), then rewrites the target with
# versions 1, 2, 3, ... until it is killed; each version is x = full(N, version), y = arange(N) * version.
CHILD = """
import importlib.util, sys, time
import numpy as np
spec = importlib.util.spec_from_file_location("files", sys.argv[1])
files = importlib.util.module_from_spec(spec); spec.loader.exec_module(files)
target, n = sys.argv[2], 20000
print("ready", flush=True)
version = 1
while True:
    version += 1
    files.atomic_savez(target, {"x": np.full(n, version), "y": np.arange(n) * version})
    time.sleep(0.002)  # twenty writers share the machine
"""


def small(tmp_path, name="g.npz"):
    g = G.make_golden("ecp", seq_len=16, heads=1, head_dim=4, half_segment=4)
    return g, G.save_golden(g, tmp_path / name)


def test_fifo_directory_missing_and_unreadable_files_are_refused_quickly(tmp_path):
    fifo = tmp_path / "pipe.npz"
    os.mkfifo(fifo)
    t = time.perf_counter()
    with pytest.raises(ValueError, match=r"pipe\.npz: is a FIFO"):
        G.load_golden(fifo)
    assert time.perf_counter() - t < 5  # never blocks waiting for a writer
    with pytest.raises(ValueError, match="is a directory"):
        G.load_golden(tmp_path)
    with pytest.raises(ValueError, match="no such file"):
        G.load_golden(tmp_path / "absent.npz")
    _, path = small(tmp_path)
    if os.geteuid() != 0:  # root reads anything
        os.chmod(path, 0)
        with pytest.raises(ValueError, match=r"g\.npz: permission denied"):
            G.load_golden(path)
        os.chmod(path, 0o644)


def test_truncated_and_malformed_files_name_the_path_and_the_problem(tmp_path):
    _, path = small(tmp_path)
    data = pathlib.Path(path).read_bytes()
    for cut in (0, 10, len(data) // 2, len(data) - 30):
        bad = tmp_path / f"cut{cut}.npz"
        bad.write_bytes(data[:cut])
        with pytest.raises(ValueError, match=rf"cut{cut}\.npz: (cannot read|not a minicp)"):
            G.load_golden(bad)
    junk = tmp_path / "junk.npz"
    np.savez(junk, config=np.asarray("{not json"))
    with pytest.raises(ValueError, match=r"junk\.npz: 'config' is not valid JSON"):
        G.load_golden(junk)
    listed = tmp_path / "list.npz"
    np.savez(listed, config=np.asarray("[1, 2]"))
    with pytest.raises(ValueError, match="must be a JSON object"):
        G.load_golden(listed)


def test_failed_write_leaves_the_old_file_and_no_temporary(tmp_path):
    g, path = small(tmp_path)
    before = pathlib.Path(path).read_bytes()

    class Boom:
        def __array__(self, *args, **kwargs):
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        files.atomic_savez(path, {"x": np.zeros(3), "boom": Boom()})
    assert pathlib.Path(path).read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["g.npz"]


def test_stale_temporaries_of_dead_writers_are_removed_live_ones_kept(tmp_path):
    target = tmp_path / "g.npz"
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    stale = tmp_path / f".g.npz.{int(dead.stdout)}.tmp-abc.npz"
    live = tmp_path / f".g.npz.{os.getppid()}.tmp-def.npz"
    other = tmp_path / f".h.npz.{int(dead.stdout)}.tmp-ghi.npz"
    for p in (stale, live, other):
        p.write_bytes(b"partial")
    assert files.stale_temporaries(target) == [str(stale)]
    files.atomic_savez(target, {"x": np.arange(3)})
    assert not stale.exists() and live.exists() and other.exists()


def _trial(tmp_path, i):
    target = tmp_path / f"t{i}.npz"
    files.atomic_savez(target, {"x": np.full(20000, 1), "y": np.arange(20000)})
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(FILES_PY), str(target)],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),  # as a shell starts it, whatever ours ignores
    )
    return target, child


def _finish(target, child, sig, delay):
    assert child.stdout.readline().strip() == "ready"
    time.sleep(delay)
    child.send_signal(sig)
    child.wait(timeout=30)
    with np.load(target) as z:  # the old complete file or a new complete one, never a mixture
        x, y = z["x"], z["y"]
    version = int(x[0])
    assert x.shape == (20000,) and (x == version).all() and np.array_equal(y, np.arange(20000) * version)
    leftovers = [p for p in target.parent.iterdir() if p.name.startswith(f".{target.name}.")]
    assert len(leftovers) <= 1  # KeyboardInterrupt removes its temporary, except in the instant of mkstemp
    files.atomic_savez(target, {"x": np.zeros(1)})  # the next write removes a killed writer's temporary
    assert [p for p in target.parent.iterdir() if p.name.startswith(f".{target.name}.")] == []


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGINT], ids=["SIGKILL", "SIGINT"])
def test_kill_during_writes_leaves_old_or_new_complete_file(tmp_path, sig):
    rng = random.Random(sig)
    running = [_trial(tmp_path, i) for i in range(20)]  # twenty writers at once, each killed at a random time
    try:
        for target, child in running:
            _finish(target, child, sig, rng.uniform(0.0, 0.03))
    finally:  # a writer that outlived its signal never outlives the test
        for _, child in running:
            if child.poll() is None:
                child.kill()
                child.wait()


def test_cli_overwrite_and_symlink_rules(tmp_path, capsys):
    out = tmp_path / "g.npz"
    assert cli_golden.main(CLI_CASE + ["-o", str(out)]) == 0
    before = out.read_bytes()
    capsys.readouterr()
    assert cli_golden.main(CLI_CASE + ["--seed", "1", "-o", str(out)]) == 2
    err = capsys.readouterr().err
    assert "already exists" in err and "--overwrite" in err and err.count("\n") == 1
    assert out.read_bytes() == before
    assert cli_golden.main(CLI_CASE + ["--seed", "1", "--overwrite", "-o", str(out)]) == 0
    assert out.read_bytes() != before and G.load_golden(out).config["seed"] == 1
    link = tmp_path / "link.npz"
    link.symlink_to(out)
    for extra in ([], ["--overwrite"]):
        assert cli_golden.main(CLI_CASE + extra + ["-o", str(link)]) == 2
        err = capsys.readouterr().err
        assert "is a symlink" in err and err.count("\n") == 1
    assert link.is_symlink() and G.load_golden(out).config["seed"] == 1


def test_cli_errors_are_one_line(tmp_path, capsys):
    fifo = tmp_path / "p.npz"
    os.mkfifo(fifo)
    assert cli_golden.main(["--check", str(fifo)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("minicp golden: error: ") and "FIFO" in err and err.count("\n") == 1
    assert cli_golden.main(CLI_CASE + ["-o", str(tmp_path / "missing" / "g.npz")]) == 2
    assert capsys.readouterr().err.count("\n") == 1
    with pytest.raises(SystemExit) as info:
        cli_golden.main(["--arch", "nope"])
    assert info.value.code == 2
    assert capsys.readouterr().err.count("\n") == 1
