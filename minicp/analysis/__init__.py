"""Analysis of the attention patterns: attention-step counts, receptive fields, kernel-form patterns.

Modules by role:

    steps           one import for the attention-step counts and Tables 7/8 (re-exports the next two)
    counts          count_attention_steps and the per-architecture closed forms
    tables          Table 7, the Table 8 reconciliation, formula evaluation, printable reports
    receptive       one import for the receptive fields (re-exports the next three)
    analytic        receptive fields derived from the declared patterns; the closed forms
    intervals       interval sets vectorised over rows; ReceptiveField, the result type
    empirical       the receptive field measured by the model's autograd Jacobian
    kernel_pattern  each pattern as a dense mask, a block list and a FlexAttention-style predicate
"""

from minicp.analysis import kernel_pattern, receptive, steps
from minicp.analysis.receptive import (
    ReceptiveField,
    closed_form,
    empirical_receptive_field,
    influence,
    receptive_field,
    receptive_field_by_layer,
)
from minicp.analysis.steps import (
    TABLE8_SIZES,
    count_attention_steps,
    evaluate_formula,
    format_steps,
    format_table7,
    format_table8,
    full_attention_steps,
    table7,
    table8,
)

__all__ = [
    "kernel_pattern",
    "receptive",
    "steps",
    "count_attention_steps",
    "full_attention_steps",
    "evaluate_formula",
    "table7",
    "table8",
    "format_table7",
    "format_table8",
    "format_steps",
    "TABLE8_SIZES",
    "ReceptiveField",
    "receptive_field",
    "receptive_field_by_layer",
    "closed_form",
    "influence",
    "empirical_receptive_field",
]
