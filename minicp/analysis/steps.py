"""Attention steps: exact closed-form counts of attention score entries and the paper's Tables 7 and 8.

One import for everything about attention steps (docs/attention-steps.md); the code lives in three
modules by role:

* ``minicp.analysis.counts``: ``count_attention_steps`` and the per-architecture closed forms
  (``resolve`` / ``Sizes`` validate the sizes and fill in ModelConfig's defaults);
* ``minicp.analysis.tables``: Table 7 (``table7``, ``format_table7``, ``evaluate_formula``) and the
  Table 8 reconciliation (``table8``, ``format_table8``, ``TABLE8_SIZES``, ``TABLE8_PAPER``);
* ``minicp.analysis.report``: the per-layer report of any configuration (``format_steps``).

>>> from minicp.analysis.steps import count_attention_steps
>>> count_attention_steps("ecp", seq_len=4096, layers=48, heads=24, segment=256)
1189085184

Command line: ``minicp steps --help`` (``minicp.cli.steps``).
"""

from minicp.analysis.counts import COUNTS, SHIFTS, Sizes, count_attention_steps, full_attention_steps, resolve
from minicp.analysis.report import format_steps
from minicp.analysis.tables import (
    TABLE7_NOTATION,
    TABLE8_PAPER,
    TABLE8_SIZES,
    evaluate_formula,
    format_table7,
    format_table8,
    table7,
    table8,
)

__all__ = [
    "COUNTS",
    "SHIFTS",
    "Sizes",
    "resolve",
    "count_attention_steps",
    "full_attention_steps",
    "evaluate_formula",
    "table7",
    "format_table7",
    "TABLE7_NOTATION",
    "table8",
    "format_table8",
    "TABLE8_SIZES",
    "TABLE8_PAPER",
    "format_steps",
]
