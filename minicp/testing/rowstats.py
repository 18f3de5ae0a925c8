"""Row statistics of errors, computed where the arrays live (NumPy or CuPy), from which every verdict follows.

Arrays are (b, h, rows, d). A *row* is one (head, row) pair; its statistics sum or take the maximum over
the batch and the head dimension, so every share of a tensor, a head or a block of rows comes from these
small (h, rows) arrays without another pass over the tensor:

    max   max |X - R|                          (the largest error of the row)
    sq    sum (X - R)^2                        (the rms of any set of rows follows)
    par   sum_b <X - R, R>^2 / <R, R>          (the error's component along the reference row: a row
                                                scaled by (1 + delta) has par = delta^2 <R, R>)

``floor_stats`` keeps, per row, the plain implementation's ``max`` (F), the production implementation's
``sq`` and ``par`` (G), and the reference's own ``sum R^2`` and ``max |R|``: the five rows of a floor
array (``FLOOR_ROWS``).
"""

from minicp.testing.arrays import is_numpy, module_of

__all__ = ["FLOOR_ROWS", "error_stats", "floor_stats", "row_view"]

FLOOR_ROWS = ("f_max", "g_sq", "g_par", "r_sq", "r_max")


def row_view(x):
    """x (b, h, rows, d) as (h, rows, b, d), a view."""
    return x.transpose(1, 2, 0, 3)


def error_stats(actual, reference, *, parallel=False):
    """{"max", "sq"[, "par"]}: (h, rows) float64 arrays of |actual - reference| per row (``actual`` any float
    dtype; non-finite errors are left to the caller: they show in ``max``). On the host one head at a time
    through float64 temporaries of one head; on a GPU every head at once."""
    xp = module_of(reference)
    if not is_numpy(xp):
        return _stats(xp, actual, reference, parallel)
    b, H, R, d = reference.shape
    mx, sq = xp.empty((H, R)), xp.empty((H, R))
    par = xp.empty((H, R)) if parallel else None
    for hd in range(H):
        one = _stats(xp, actual[:, hd : hd + 1], reference[:, hd : hd + 1], parallel)
        mx[hd], sq[hd] = one["max"][0], one["sq"][0]
        if parallel:
            par[hd] = one["par"][0]
    return dict({"max": mx, "sq": sq}, **({"par": par} if parallel else {}))


def _stats(xp, actual, reference, parallel):
    """``error_stats`` of (b, h, rows, d) arrays in one pass over all their heads."""
    e = xp.subtract(actual, reference, dtype=xp.float64)
    ev = row_view(e)
    out = {
        "max": xp.abs(ev).max(axis=(2, 3)) if e.size else xp.zeros(ev.shape[:2]),
        "sq": xp.einsum("hrbd,hrbd->hr", ev, ev),
    }
    if parallel:
        rr = xp.einsum("bhrd,bhrd->bhr", reference, reference)
        er = xp.einsum("bhrd,bhrd->bhr", e, reference)
        out["par"] = xp.sum(xp.where(rr > 0, er * er / xp.where(rr > 0, rr, 1.0), 0.0), axis=0)
    return out


def floor_stats(reference, plain, production):
    """(5, h, rows) float64 of the floors of one tensor (``FLOOR_ROWS``): the plain implementation's row maxima,
    the production implementation's row sums of squares and row-parallel parts, the reference's row sums
    of squares and row maxima. Non-finite reference entries are left out (their errors count as 0)."""
    xp = module_of(reference)
    finite = bool(xp.isfinite(reference).all())
    r = reference if finite else xp.where(xp.isfinite(reference), reference, 0.0)

    def clean(x):
        if finite:
            return x
        return xp.where(xp.isfinite(reference), x, 0.0)

    g = error_stats(clean(production), r, parallel=True)
    f = g if production is plain else error_stats(clean(plain), r)
    rv = row_view(r)
    r_sq = xp.einsum("hrbd,hrbd->hr", rv, rv)
    r_max = xp.abs(rv).max(axis=(2, 3)) if r.size else xp.zeros(r_sq.shape)
    stats = xp.stack([f["max"], g["sq"], g["par"], r_sq, r_max])
    return xp.where(xp.isfinite(stats), stats, 0.0)  # an overflowing floor error counts as 0
