"""Receptive fields: which input tokens can influence each output row after k layers.

The rules and every architecture's closed form: docs/receptive-fields.md.

Attention is the only operation that mixes positions (LayerNorm, feed-forward and the residual add
work row by row; ``to_out`` mixes the heads of one row), plus Compressed Double Attention's
``projection_hist``, which mixes all history rows of layer 0. So one layer is a *dependency relation*
between its output rows and its input rows:

    dep(o) = (union over heads of the keys the pattern lets query row q(o) see)
             U {q(o)}                       the query itself
             U {res(o)}                     the residual row (the module's ``skip``)

and k layers compose: R_k(o) = union of R_{k-1}(j) over j in dep(o), starting from R_0(i) = {i}.
Everything here is derived from the *declared* patterns (``minicp.nn.attention.patterns``) and the
modules' ``skip``; nothing is hand-written per architecture except the one row mapping that is not
"one output row per query row": Compressed layer 0, whose p slots each mix all H history rows.

Two ways to compute it:

* ``method="intervals"`` (default): every set is a short sorted list of disjoint intervals, and the
  union of R_{k-1} over a range of rows is answered by a sparse table (doubling) of interval sets,
  vectorised over rows with NumPy. n = 4096 with 48 layers takes a few tens of milliseconds for any
  architecture (``benchmarks/receptive.py``).
* ``method="dense"``: boolean (rows, n) matrices from ``Pattern.mask()`` composed by matrix
  products. O(l n^3); for small n only, and an independent check of the first.

``empirical_receptive_field`` measures the same thing on a real model: the Jacobian of every output
row with respect to every embedded input row, in float64, from autograd. Masked scores have
probability exactly 0, so a structural zero is an exact zero and "can influence" is simply J != 0.

The code lives in three modules by role, all re-exported here: ``minicp.analysis.analytic``
(``receptive_field``, ``receptive_field_by_layer``, ``closed_form``), ``minicp.analysis.intervals``
(the interval sets and ``ReceptiveField``) and ``minicp.analysis.empirical`` (``influence``,
``empirical_receptive_field``).

Intervals are **closed**, ``(lo, hi)`` with lo <= hi, as docs/receptive-fields.md writes them: ECP's
row i after k layers is [m max(0, floor(i/m) - k), i].
"""

from minicp.analysis.analytic import METHODS, closed_form, receptive_field, receptive_field_by_layer
from minicp.analysis.empirical import empirical_receptive_field, influence
from minicp.analysis.intervals import ReceptiveField

__all__ = [
    "ReceptiveField",
    "receptive_field",
    "receptive_field_by_layer",
    "empirical_receptive_field",
    "influence",
    "closed_form",
    "METHODS",
]
