"""Tests for minicp.viz: every figure is made, is a readable image, names its maker, and figures/README.md
lists it; bad arguments raise ValueError naming the parameter."""

import gc
import shutil
import warnings
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("matplotlib")
PIL = pytest.importorskip("PIL.Image")

from minicp import viz  # noqa: E402
from minicp.cli import figures as cli_figures

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def made(tmp_path_factory):
    out = tmp_path_factory.mktemp("figures")
    shutil.copy(ROOT / "figures" / viz.RECORD, out)  # the recorded run lag_copy_accuracy.png is drawn from
    return out, viz.make_all(out, quick=True)


def test_a_figure_of_a_recorded_run_is_left_out_without_its_record(tmp_path):
    skipped = []
    assert viz.make_all(tmp_path, only=["lag_copy_accuracy.png"], skipped=skipped) == []
    assert skipped == [("lag_copy_accuracy.png", f"no {viz.RECORD} in {tmp_path} (notebook 04 with MINICP_FULL=1)")]


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
    small = {
        viz.ecp_receptive_animation: dict(n=32, half_segment=8),
        viz.ecp_half_segments_animation: dict(num_half_segments=3, layers=2),
    }
    for name, (fn, kwargs, _) in viz.FIGURES.items():
        kwargs = {k: ROOT / "figures" / v if k == "record" else v for k, v in kwargs.items()}
        obj = fn(**small.get(fn, kwargs))
        fig = getattr(obj, "_fig", obj)  # an animation keeps its figure as _fig
        texts = [t.get_text() for t in fig.texts]
        assert any(t.startswith("made by minicp.viz." + fn.__name__) for t in texts), name
        with warnings.catch_warnings():  # an animation never rendered warns when freed
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


@pytest.mark.parametrize(
    "call, word",
    [
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
    ],
)
def test_errors_name_the_parameter(call, word):
    with pytest.raises(ValueError, match=word):
        call()


def _legend_labels(fig):
    return [t.get_text() for legend in fig.legends for t in legend.get_texts()]


def test_pattern_figure_legend_and_boundary():
    fig = viz.pattern_figure("perceiver_ar", 24, latent=8)
    labels = _legend_labels(fig)
    assert {"visible (unmasked score)", "computed but masked", "never computed", "history | latent boundary"} <= set(
        labels
    )
    ax = fig.axes[0]
    dashed = [ln for ln in ax.lines if ln.get_linestyle() == "--"]
    # H = 24 - 8 = 16: one vertical (key) and one horizontal (query) line at 15.5
    assert sorted(tuple(ln.get_xdata()) + tuple(ln.get_ydata()) for ln in dashed) == sorted(
        [(15.5, 15.5, 0, 1), (0, 1, 15.5, 15.5)]
    )
    later = viz.pattern_figure("compressed", 24, latent=8, compressed=4, layer=1)
    assert "slots | latent boundary" in _legend_labels(later)
    assert not [ln for ln in viz.pattern_figure("ecp", 24, half_segment=4).axes[0].lines if ln.get_linestyle() == "--"]
    assert not [
        ln
        for ln in viz.pattern_figure("perceiver_ar", 24, latent=8, layer=1).axes[0].lines
        if ln.get_linestyle() == "--"
    ]


def test_receptive_fields_legend_explains_white():
    labels = _legend_labels(
        viz.receptive_fields_figure(n=16, layers=2, latent=8, compressed=4, split=4, half_segment=4, group=4)
    )
    assert "past token, never reached" in labels and "future token, not reached" in labels


def test_layer_colours_distinct():
    from minicp.viz.style import layer_colours

    cols = np.array(layer_colours(8))
    gaps = np.linalg.norm(cols[1:] - cols[:-1], axis=1)  # neighbouring layers, RGB in [0, 1]
    assert gaps.min() > 0.3, gaps
    assert len({tuple(c) for c in np.round(cols, 3)}) == 8
    assert len(layer_colours(12)) == 12


def test_patterns_figure_fonts_legible_at_github_width():
    fig = viz.patterns_figure()
    scale = 880 / (fig.get_figwidth() * 72)  # px per point when shown 880 px wide
    sizes = [
        t.get_fontsize()
        for t in fig.findobj(lambda a: hasattr(a, "get_fontsize") and hasattr(a, "get_text"))
        if t.get_text().strip()
    ]
    assert min(sizes) * scale >= 10, min(sizes) * scale


def test_make_all_is_atomic(tmp_path):
    target = tmp_path / "elsewhere.png"
    target.write_bytes(b"keep")
    (tmp_path / "table8.png").symlink_to(target)
    viz.make_all(tmp_path, quick=True, only=["table8.png"])
    assert target.read_bytes() == b"keep"  # the symlink was replaced, not written through
    assert not (tmp_path / "table8.png").is_symlink()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["elsewhere.png", "table8.png"]  # no temp files left
