"""Hostile checkpoint files: each is refused with a CheckpointError naming the problem, quickly."""

import io
import json
import os
import subprocess
import sys
import time
import warnings
import zipfile

import numpy as np
import pytest

from minicp import ModelConfig, flatten, init_params, unflatten
from minicp.lm.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from minicp.lm.train import TrainConfig, train

CFG = ModelConfig(arch="ecp", vocab=16, dim=8, heads=2, layers=1, seq_len=8, half_segment=2)
DATA = np.arange(300) % 16
TCFG = TrainConfig(steps=2, batch=2, grad_accum=1, lr=1e-3)


@pytest.fixture
def good(tmp_path):
    path = str(tmp_path / "good.npz")
    train(CFG, DATA, TCFG, checkpoint=path, progress=False)
    with np.load(path, allow_pickle=False) as f:
        return path, {k: f[k] for k in f.files}


def _write(path, arrays, meta_changes=None):
    arrays = dict(arrays)
    if meta_changes:
        meta = json.loads(str(arrays["meta"]))
        for key, value in meta_changes.items():
            node = meta
            *head, last = key.split(".")
            for k in head:
                node = node[k]
            node[last] = value
        arrays["meta"] = np.array(json.dumps(meta))
    np.savez(path, **arrays)
    return path


@pytest.mark.parametrize(
    "change,message",
    [
        ({"param/token_emb.weight": lambda a: a.astype(np.int64)}, "dtype int64"),
        ({"param/token_emb.weight": lambda a: a.astype(np.float16)}, "dtype float16"),
        ({"param/token_emb.weight": lambda a: np.full(a.shape, "x")}, "dtype <U1"),
        ({"param/to_logits.1.bias": lambda a: np.where(np.arange(a.size) == 3, np.nan, a).astype(a.dtype)}, "finite"),
        ({"adam_v/to_logits.1.bias": lambda a: -np.ones_like(a)}, ">= 0"),
    ],
)
def test_bad_arrays_are_refused(tmp_path, good, change, message):
    _, arrays = good
    arrays = {k: (change[k](v) if k in change else v) for k, v in arrays.items()}
    with pytest.raises(CheckpointError, match=message):
        load_checkpoint(_write(str(tmp_path / "bad.npz"), arrays))


@pytest.mark.parametrize(
    "meta,message",
    [
        ({"step": -5}, "step must be a non-negative integer"),
        ({"adam_step": 1e6}, "adam_step must be a non-negative integer"),
        ({"adam_step": 10**6}, "adam_step 1000000 is larger than step"),
        ({"history": "x"}, "history must be a list"),
    ],
)
def test_bad_metadata_is_refused(tmp_path, good, meta, message):
    with pytest.raises(CheckpointError, match=message):
        load_checkpoint(_write(str(tmp_path / "bad.npz"), good[1], meta))


def test_sampler_position_out_of_range_is_refused(tmp_path, good):
    path = _write(str(tmp_path / "bad.npz"), good[1], {"sampler.pos": 10**9})
    t0 = time.perf_counter()
    with pytest.raises(CheckpointError, match="sampler pos 1000000000"):
        train(CFG, DATA, TCFG.replace(steps=3), checkpoint=path, resume=True, progress=False)
    assert time.perf_counter() - t0 < 5


def test_decompression_bomb_is_refused_before_decompressing(tmp_path, good):
    """A member whose zip directory declares far more bytes than its shape allows: refused from the header."""
    path = str(tmp_path / "bomb.npz")
    _, arrays = good
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for name, value in arrays.items():
            buf = io.BytesIO()
            np.lib.format.write_array(buf, value, allow_pickle=False)
            data = buf.getvalue()
            if name == "param/token_emb.weight":
                data += b"\0" * (40 << 20)  # 40 MB of zeros: about 40 kB compressed
            zf.writestr(name + ".npy", data)
    assert os.path.getsize(path) < 2 << 20
    t0 = time.perf_counter()
    with pytest.raises(CheckpointError, match="refused before decompressing"):
        load_checkpoint(path)
    assert time.perf_counter() - t0 < 2


def test_fifo_and_directory_are_refused(tmp_path):
    fifo = str(tmp_path / "fifo.npz")
    os.mkfifo(fifo)
    with pytest.raises(CheckpointError, match="not a regular file"):
        load_checkpoint(fifo)  # would block forever in open()
    with pytest.raises(CheckpointError, match="is a directory"):
        load_checkpoint(str(tmp_path))
    with pytest.raises(ValueError, match="is a directory"):
        train(CFG, DATA, TCFG, checkpoint=str(tmp_path), progress=False)  # before training, not after


def test_checkpoint_without_sampler_state_resumes(tmp_path):
    path = str(tmp_path / "plain.npz")
    res = train(CFG, DATA, TCFG, progress=False)
    save_checkpoint(path, res.params, res.opt_state, config=CFG, train_config=TCFG, step=res.step)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        out = train(CFG, DATA, TCFG.replace(steps=3), checkpoint=path, resume=True, progress=False)
    assert out.step == 3 and any("no sampler state" in str(w.message) for w in caught)


def test_stale_temp_files_are_removed_on_start_live_ones_kept(tmp_path):
    path = str(tmp_path / "c.npz")
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    stale = tmp_path / f".c.npz.{int(dead.stdout)}.tmp-abc123.npz"  # its writer is gone
    live = tmp_path / f".c.npz.{os.getpid()}.tmp-def456.npz"  # its writer (this process) is alive
    other = tmp_path / f".d.npz.{int(dead.stdout)}.tmp-abc123.npz"  # another target's
    for name in (stale, live, other):
        name.write_bytes(b"half a file")
    train(CFG, DATA, TCFG, checkpoint=path, progress=False)
    assert not stale.exists() and live.exists() and other.exists() and load_checkpoint(path)["step"] == 2
    assert sorted(os.listdir(tmp_path)) == sorted(["c.npz", live.name, other.name])  # no lock file left


def test_save_refuses_bad_params(tmp_path):
    params = flatten(init_params(CFG))
    params["token_emb.weight"] = params["token_emb.weight"].astype(np.int64)
    with pytest.raises(ValueError, match="dtype not in"):
        save_checkpoint(str(tmp_path / "x.npz"), unflatten(params), config=CFG)
    assert not list(tmp_path.iterdir())


def test_checkpoint_in_a_directory_that_does_not_exist_yet(tmp_path):
    path = tmp_path / "runs" / "a" / "c.npz"
    train(CFG, DATA, TCFG, checkpoint=str(path), progress=False)
    assert load_checkpoint(str(path))["step"] == 2 and os.listdir(path.parent) == ["c.npz"]
