"""Figures: attention patterns, receptive fields (paper Figures 1(b-d) and 6) and attention steps (Tables 7-8).

Every function returns a matplotlib ``Figure`` (or a ``FuncAnimation``) built on its own Agg canvas,
so nothing here touches pyplot's global state: the same call works in a script, a test and a notebook
(show an animation there with ``HTML(anim.to_jshtml())``). ``make_all`` writes every file of
``figures/`` (atomically); ``minicp figures`` (``minicp.cli.figures``) is its command line. Each image
carries a footer naming the call that drew it.

=================================  ========================================================================
function                           what it draws
=================================  ========================================================================
``patterns_figure``                the declared pattern of every architecture, side by side
``pattern_figure``                 one architecture's pattern, any sizes, with a legend
``receptive_fields_figure``        every architecture's receptive field after 1, 2, 3 layers
``ecp_receptive_animation``        Figure 1(b-d): ECP's sparse layer-1 pattern, then the field after 2, 3, ...
``ecp_half_segments_animation``    Figure 6: half segments across layers, one output block's context in yellow
``steps_scaling_figure``           attention steps versus n for every architecture (log-log) and % of full
``table8_figure``                  Table 8: the paper's numbers against the code-faithful counts
``lag_copy_figure``                notebook 04's lag-copy accuracy against the receptive-field prediction
=================================  ========================================================================

Modules: ``style`` (matplotlib, colours, atomic saving), ``patterns``, ``receptive`` (with the ECP
animations), ``steps``, ``training`` (the lag-copy figure). Needs matplotlib and pillow (``pip install 'minicp[viz]'``).
"""

from pathlib import Path

from minicp.viz.patterns import pattern_figure, patterns_figure
from minicp.viz.receptive import ecp_half_segments_animation, ecp_receptive_animation, receptive_fields_figure
from minicp.viz.steps import steps_scaling_figure, table8_figure
from minicp.viz.style import ARCH_LABELS, BOTH, CONTEXT, EDGE, EMPTY, GREY, LEAK, MASKED, OUTPUT, SHIFTED, VISIBLE, save  # noqa: F401
from minicp.viz.training import lag_copy_figure, lag_copy_record_figure, predicted_copy_accuracy

__all__ = [
    "pattern_figure",
    "patterns_figure",
    "receptive_fields_figure",
    "ecp_receptive_animation",
    "ecp_half_segments_animation",
    "steps_scaling_figure",
    "table8_figure",
    "lag_copy_figure",
    "predicted_copy_accuracy",
    "make_all",
    "FIGURES",
    "ARCH_LABELS",
]

# file name -> (function, keyword arguments, what it shows)
RECORD = "04_training_results.json"  # notebook 04's full run (MINICP_FULL=1), in the figures folder

FIGURES = {
    "patterns.png": (patterns_figure, {}, "the declared attention pattern of every architecture, side by side"),
    "receptive_fields.png": (receptive_fields_figure, {}, "every architecture's receptive field after 1-3 layers"),
    "ecp_receptive_field.gif": (
        ecp_receptive_animation,
        {},
        "paper Figure 1(b-d): ECP's sparse layer-1 pattern, then the receptive field after 2, 3, ... layers",
    ),
    "ecp_half_segments.gif": (
        ecp_half_segments_animation,
        {},
        "paper Figure 6: half segments across layers; the context accumulated by one output block in yellow",
    ),
    "attention_steps_scaling.png": (
        steps_scaling_figure,
        {},
        "attention steps versus sequence length for every architecture (log-log) and as % of full attention",
    ),
    "table8.png": (table8_figure, {}, "Table 8: the paper's numbers against the code-faithful counts"),
    "lag_copy_accuracy.png": (
        lag_copy_record_figure,
        {"record": RECORD},
        "notebook 04's full lag-copy run (from 04_training_results.json beside it) against the receptive field",
    ),
}

# make_all(quick=True): smaller animations (tests)
QUICK_KWARGS = {
    ecp_receptive_animation: dict(n=32, half_segment=8),
    ecp_half_segments_animation: dict(num_half_segments=4, layers=3),
}


def make_all(out_dir="figures", quick=False, only=None, skipped=None):
    """Write every figure of ``FIGURES`` to ``out_dir`` (created if missing), each atomically; returns the paths.

    ``quick``: smaller animations and half the resolution, for tests. ``only``: file names to make. A figure
    drawn from a recorded run (``lag_copy_accuracy.png`` from ``04_training_results.json`` in ``out_dir``) is
    left out when the record is missing; ``skipped``, a list, then receives (file name, reason).
    """
    if not isinstance(quick, bool):
        raise ValueError(f"quick must be True or False, got {quick!r}")
    if only is not None and (isinstance(only, str) or not all(isinstance(x, str) for x in only)):
        raise ValueError(f"only must be a list of file names, got {only!r}")
    names = list(FIGURES) if only is None else list(only)
    unknown = [name for name in names if name not in FIGURES]
    if unknown:
        raise ValueError(f"only: unknown figure(s) {unknown}; choose from {list(FIGURES)}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for name in names:
        fn, kwargs, _ = FIGURES[name]
        kwargs = {**kwargs, **(QUICK_KWARGS.get(fn, {}) if quick else {})}
        if "record" in kwargs:
            kwargs["record"] = out / kwargs["record"]
            if not kwargs["record"].exists():
                if skipped is not None:
                    skipped.append((name, f"no {kwargs['record'].name} in {out} (notebook 04 with MINICP_FULL=1)"))
                continue
        written.append(save(fn(**kwargs), out / name, fps=1, dpi=50 if quick else None))
    return written
