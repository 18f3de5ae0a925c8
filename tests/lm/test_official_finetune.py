"""Fine-tuning official weights: the checkpoint keeps their RoPE buffers, loads, evaluates, generates and
resumes bit for bit; a buffer that was tampered with is refused on load as the official-weights loader
refuses it. The weights come from the PyTorch twin's state_dict (the official layout, buffers included)."""

import json
import warnings

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from minicp import ModelConfig, flatten, forward, load_official_state_dict, torch_twin  # noqa: E402
from minicp.cli import main  # noqa: E402
from minicp.lm.checkpoint import CheckpointError, load_checkpoint  # noqa: E402
from minicp.lm.evaluate import perplexity  # noqa: E402
from minicp.lm.generate import generate  # noqa: E402
from minicp.lm.train import TrainConfig, train  # noqa: E402

CFG = ModelConfig(arch="ecp", vocab=256, dim=8, heads=2, layers=2, seq_len=16, half_segment=4)
DATA = (np.arange(2000) * 7) % 256
TCFG = TrainConfig(steps=4, batch=2, grad_accum=1, lr=1e-3)
FREQS = "layers.1.0.fn.pos_emb.freqs"


@pytest.fixture(scope="module")
def official():
    twin = torch_twin.build("ecp", vocab=256, dim=8, heads=2, layers=2, seq_len=16, half_segment=4, seed=3)
    state = {k: v.clone() for k, v in twin.state_dict().items()}
    # a buffer one float32 step away from minicp's own frequencies (as torch's pow may round): it is kept
    state[FREQS][1] = float(np.nextafter(np.float32(state[FREQS][1].item()), np.float32(1)))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return load_official_state_dict(state, CFG)


def test_fine_tuned_checkpoint_loads_evaluates_generates_and_resumes(tmp_path, official):
    path = str(tmp_path / "ft.npz")
    full = train(CFG, DATA, TCFG, params=official, progress=False)  # uninterrupted, no file
    assert flatten(full.params)[FREQS][1] == flatten(official)[FREQS][1]  # buffers are constants
    assert set(full.opt_state["m"]) == set(flatten(official)) - {k for k in flatten(official) if "pos_emb" in k}
    train(CFG, DATA, TCFG.replace(steps=2), params=official, checkpoint=path, progress=False)
    ck = load_checkpoint(path, CFG)
    assert flatten(ck["params"])[FREQS].dtype == flatten(official)[FREQS].dtype  # as the loader kept it
    np.testing.assert_array_equal(flatten(ck["params"])[FREQS], flatten(official)[FREQS])
    resumed = train(CFG, DATA, TCFG, checkpoint=path, resume=True, progress=False)
    for name, value in flatten(full.params).items():
        np.testing.assert_array_equal(flatten(resumed.params)[name], value)  # bit for bit
    ck = load_checkpoint(path, CFG)
    tokens = DATA[:16][None]
    np.testing.assert_array_equal(forward(ck["params"], tokens, CFG), forward(full.params, tokens, CFG))
    assert np.isfinite(perplexity(ck["params"], DATA[:200], CFG))
    assert generate(ck["params"], DATA[:5], CFG, 3).shape == (3,)


def test_fine_tuned_checkpoint_through_the_command_line(tmp_path, official, capsys):
    path = str(tmp_path / "ft.npz")
    train(CFG, DATA, TCFG, params=official, checkpoint=path, progress=False)
    corpus = tmp_path / "text.txt"
    corpus.write_text("".join(chr(97 + int(t) % 26) for t in DATA[:1500]))
    assert main(["eval", path, "--corpus", str(corpus), "--no-progress"]) == 0
    assert main(["generate", path, "--prompt", "ab", "--tokens", "4", "--no-progress"]) == 0
    assert "error" not in capsys.readouterr().err


def _rewrite(path, name, change):
    with np.load(path, allow_pickle=False) as f:
        arrays = {k: f[k] for k in f.files}
    arrays[name] = change(arrays[name])
    np.savez(path, **arrays)


def test_tampered_rope_buffer_is_refused_on_load(tmp_path, official):
    path = str(tmp_path / "ft.npz")
    train(CFG, DATA, TCFG.replace(steps=1), params=official, checkpoint=path, progress=False)
    _rewrite(path, f"param/{FREQS}", lambda f: f * np.float32(1 + 3e-6))
    with pytest.raises(CheckpointError, match=r"RoPE buffers.*layers\.1\.0\.fn\.pos_emb\.freqs \(layer 1\).*one ulp"):
        load_checkpoint(path)
    _rewrite(path, f"param/{FREQS}", lambda f: f[:-1])
    with pytest.raises(CheckpointError, match=r"wrong shape param/layers\.1\.0\.fn\.pos_emb\.freqs"):
        load_checkpoint(path)


def test_moments_of_rope_buffers_written_by_earlier_versions_are_dropped(tmp_path, official):
    path = str(tmp_path / "old.npz")
    train(CFG, DATA, TCFG.replace(steps=1), params=official, checkpoint=path, progress=False)
    with np.load(path, allow_pickle=False) as f:
        arrays = {k: f[k] for k in f.files}
    for head in ("adam_m", "adam_v"):  # what minicp wrote before buffers were kept out of AdamW
        arrays[f"{head}/{FREQS}"] = np.zeros_like(arrays[f"param/{FREQS}"])
    np.savez(path, **arrays)
    ck = load_checkpoint(path, CFG)
    assert FREQS not in ck["opt_state"]["m"] and json.loads(str(arrays["meta"]))["step"] == 1
