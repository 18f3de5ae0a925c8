"""Tests for minicp.viz: every figure is made, is a readable image, names its maker, and figures/README.md
lists it; bad arguments raise ValueError naming the parameter."""
import gc
import warnings
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("matplotlib")
PIL = pytest.importorskip("PIL.Image")

from minicp import viz  # noqa: E402
from minicp.cli import figures as cli_figures

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def made(tmp_path_factory):
    out = tmp_path_factory.mktemp("figures")
    return out, viz.make_all(out, quick=True)


def test_make_all_writes_every_figure(made):
    out, paths = made
    assert sorted(p.name for p in paths) == sorted(viz.FIGURES)
    for path in paths:
        with PIL.open(path) as im:
            assert im.size[0] > 200 and im.size[1] > 150
            frames = getattr(im, "n_frames", 1)
            if path.suffix == ".gif":
                assert frames >= 3, f"{path.name} should be animated"
            im.seek(frames - 1)
            pixels = np.asarray(im.convert("RGB"))
            assert pixels.std() > 10, f"{path.name} looks blank"


def test_every_figure_names_its_maker():
    small = {viz.ecp_receptive_animation: dict(n=32, half_segment=8),
             viz.ecp_half_segments_animation: dict(num_half_segments=3, layers=2)}
    for name, (fn, kwargs, _) in viz.FIGURES.items():
        obj = fn(**small.get(fn, kwargs))
        fig = getattr(obj, "_fig", obj)                    # an animation keeps its figure as _fig
        texts = [t.get_text() for t in fig.texts]
        assert any(t.startswith("made by minicp.viz." + fn.__name__) for t in texts), name
        with warnings.catch_warnings():                    # an animation never rendered warns when freed
            warnings.simplefilter("ignore", UserWarning)
            del obj, fig
            gc.collect()


def test_readme_lists_every_figure():
    readme = (ROOT / "figures" / "README.md").read_text()
    for name, (fn, _, _) in viz.FIGURES.items():
        assert f"`{name}`" in readme and f"minicp.viz.{fn.__name__}" in readme


def test_cli_only(tmp_path, capsys):
    assert cli_figures.main(["--out", str(tmp_path), "--only", "table8.png", "--quick"]) == 0
    assert (tmp_path / "table8.png").exists() and not (tmp_path / "patterns.png").exists()
    assert "wrote" in capsys.readouterr().out


def test_cli_dispatch():
    from minicp.cli import COMMANDS
    assert COMMANDS["figures"][0] == "minicp.cli.figures"


@pytest.mark.parametrize("call, word", [
    (lambda: viz.patterns_figure(n=33), "sizes"),
    (lambda: viz.patterns_figure(n=200), "n"),
    (lambda: viz.patterns_figure(group=0), "group"),
    (lambda: viz.receptive_fields_figure(layers=0), "layers"),
    (lambda: viz.receptive_fields_figure(n=500), "n"),
    (lambda: viz.ecp_receptive_animation(n=30, half_segment=8), "half_segment"),
    (lambda: viz.ecp_receptive_animation(n=512, half_segment=8), "n"),
    (lambda: viz.ecp_half_segments_animation(num_half_segments=1), "num_half_segments"),
    (lambda: viz.ecp_half_segments_animation(output=9), "output"),
    (lambda: viz.steps_scaling_figure(layers=0), "layers"),
    (lambda: viz.steps_scaling_figure(seq_lens=[0]), "seq_lens"),
    (lambda: viz.make_all("/tmp/never", only=["nope.png"]), "only"),
    (lambda: viz.make_all("/tmp/never", quick="yes"), "quick"),
])
def test_errors_name_the_parameter(call, word):
    with pytest.raises(ValueError, match=word):
        call()
