"""Check your own attention kernel against minicp, with verdicts that say how much of the budget was used, and where.

    import minicp.testing as mt
    mt.assert_matches_reference(my_attention, "ecp", seq_len=1024, heads=8, head_dim=64,
                                segment=256, dtype="float32")

calls ``my_attention(q, k, v)`` on seeded reference inputs (``reference_case``) and judges its output
(and, with ``check_grads=True``, the gradients from your ``grad_fn``) against minicp's float64
reference, computed block by block at the pattern's own cost and cached per case (in memory, and verified
by sha256 digests on disk: ``minicp.testing.cache``). Every tensor is judged before anything is raised;
``MismatchError`` (an ``AssertionError``) lists each failing tensor with its share of the budgets, per
head, per declared block, and the rows over budget (strided rows are recognised); ``report_path=`` also
writes the report as JSON. An output of another dtype than the case's (a bfloat16 case: bfloat16, or
float32 holding bfloat16 values), complex, or of another shape or layout fails without numbers, and a
kernel that changes the inputs it shares is refused (``minicp.testing.guards``); docs/tolerances.md states
what a check verifies and what it trusts.

The budgets (``minicp.testing.budgets``, docs/tolerances.md): the kernel's error against the float64
reference is measured in units of the error of the *plain implementation in the kernel's dtype* on the
largest element (``C_MAX``), and of the *production implementation* (how fused GPU kernels round: float32
softmax state, probabilities rounded before P @ V) on the rms (``C_RMS``; ``C_OUT`` for the output in
bfloat16/float16, also judged by its rows' scale errors, ``C_PAR``), for the tensor and for each declared
block. So long reductions, RoPE at large positions and the dtype set the floor, and low-precision
accumulation that raises the rms fails. Where a precision bug (the online softmax's accumulator, maximum or
sum kept in the dtype) would pass too, the verdict is *inconclusive* and says so (``InconclusiveWarning``).
Where the reference is +inf, -inf or NaN the kernel must match it exactly. ``device="cuda"`` keeps the
whole check on a GPU (CuPy; ``minicp.testing.device``); ``precision="tf32"`` declares TF32 products.

Arrays are accepted from NumPy, CuPy, and anything with ``__dlpack__`` or ``__array__`` (PyTorch,
JAX, ...) without minicp importing those libraries (``to_numpy_any``). PyTorch adapters (layouts,
dtypes, devices, gradients): ``minicp.testing.torch``. Edge cases for ``pytest.mark.parametrize``:
``cases(arch)``. In pytest, the plugin ``minicp.testing.pytest_plugin`` (installed with minicp) gives
the ``minicp_check`` fixture, the ``minicp_cases`` marker and ``--minicp-cache`` / ``--minicp-report``.

Fixed element-wise tolerances (``TOLERANCES``), for ``compare``/``assert_close`` and for
``assert_matches_reference(..., rtol=, atol=)``: ``|actual - expected| <= atol + rtol * |expected|``:

==========  ======  ======  ================================================================================
dtype       rtol    atol    why
==========  ======  ======  ================================================================================
float64     1e-10   1e-12   a float64 kernel differs from the reference only by summation order (~1e-15);
                            the margin covers long reductions
float32     1e-4    1e-5    float32 eps is 1.2e-7; softmax over n keys and dot products over d accumulate
                            O(sqrt(n)) ulps, about 1e-6 relative at n = 4096; TF32 matmuls need more
bfloat16    2e-2    2e-2    8-bit mantissa, eps 7.8e-3: storing the result alone costs up to 3.9e-3
                            relative; P rounded to bf16 before P @ V adds a few ulps more
float16     2e-3    2e-3    11-bit mantissa, eps 9.8e-4: rounding the output costs up to 4.9e-4; kernels
                            with float32 accumulation land well inside
==========  ======  ======  ================================================================================

These fixed tolerances do not follow reduction length (long causal dk/dv, RoPE at large positions fail
them with correct kernels) and cannot see error spread thinly; prefer the budgets.
"""

from minicp.testing.budgets import C_MAX, C_OUT, C_PAR, C_RMS, FLOOR_ULPS
from minicp.testing.cache import clear_cache
from minicp.testing.cases import Case, cases
from minicp.testing.check import (
    INCONCLUSIVE,
    LAYOUTS,
    InconclusiveError,
    InconclusiveWarning,
    assert_matches_reference,
    judge_case,
)
from minicp.testing.compare import TOLERANCES, Comparison, MismatchError, assert_close, compare, default_tolerances
from minicp.testing.convert import to_numpy_any
from minicp.testing.dtypes import DTYPES, STORAGE, dtype_name, round_to_bfloat16, to_storage
from minicp.testing.reference import reference_arrays, reference_case
from minicp.testing.rope import ROPE_STYLES
from minicp.testing.verdict import Report, TensorVerdict, judge

__all__ = [
    "TOLERANCES",
    "MismatchError",
    "Comparison",
    "default_tolerances",
    "dtype_name",
    "to_numpy_any",
    "compare",
    "assert_close",
    "reference_case",
    "reference_arrays",
    "assert_matches_reference",
    "judge",
    "judge_case",
    "Report",
    "TensorVerdict",
    "C_MAX",
    "C_RMS",
    "C_OUT",
    "C_PAR",
    "FLOOR_ULPS",
    "INCONCLUSIVE",
    "InconclusiveWarning",
    "InconclusiveError",
    "DTYPES",
    "STORAGE",
    "LAYOUTS",
    "ROPE_STYLES",
    "round_to_bfloat16",
    "to_storage",
    "clear_cache",
    "cases",
    "Case",
]
