"""Check your own attention kernel against minicp, with failure messages you can act on.

    import minicp.testing as mt
    mt.assert_matches_reference(my_attention, "ecp", seq_len=1024, heads=8, head_dim=64,
                                half_segment=128, dtype="float32")

calls ``my_attention(q, k, v)`` on seeded reference inputs and compares its output (and, with
``check_grads=True``, the gradients from your ``grad_fn``) with minicp's float64 reference. On a
mismatch it raises ``MismatchError`` (an ``AssertionError``) that says which tensor, its shape and
dtype, the max absolute and relative errors, the worst element (index, expected, actual), the
tolerances, the fraction of elements out of tolerance and the index range where they lie.

Arrays are accepted from NumPy, CuPy, and anything with ``__dlpack__`` or ``__array__`` (PyTorch,
JAX, ...) without minicp importing those libraries (``to_numpy_any``).

Default tolerances (``TOLERANCES``), for the test ``|actual - expected| <= atol + rtol * |expected|``
elementwise (``numpy.isclose``), where *expected* is the float64 reference computed from exactly the
inputs your kernel received (already rounded to ``dtype``), so only your kernel's arithmetic counts:

==========  ======  ======  ================================================================================
dtype       rtol    atol    why
==========  ======  ======  ================================================================================
float64     1e-10   1e-12   a float64 kernel differs from the reference only by summation order (~1e-15);
                            the margin covers long reductions
float32     1e-4    1e-5    float32 eps is 1.2e-7; softmax over n keys and dot products over d accumulate
                            O(sqrt(n)) ulps, about 1e-6 relative at n = 4096. 1e-4 leaves room and still
                            catches every mask or indexing bug (those are O(1e-2) or larger). TF32 matmuls
                            (10-bit mantissa) need bfloat16-like tolerances instead
bfloat16    2e-2    2e-2    8-bit mantissa, eps 7.8e-3: storing the result alone costs up to 3.9e-3
                            relative; P rounded to bf16 before P @ V adds a few ulps more
float16     2e-3    2e-3    11-bit mantissa, eps 9.8e-4: rounding the output costs up to 4.9e-4; kernels
                            with float32 accumulation land well inside
==========  ======  ======  ================================================================================

Measured margins (examples/ecp_sdpa_torch.py, ECP n = 4096, s = 256, 8 heads, d = 64, batch 2, outputs
and all three gradients): PyTorch SDPA on an H200 (flash / memory-efficient kernels) and compiled
FlexAttention with minicp's ``mask_mod`` use at most 20% (float32), 33% (bfloat16) and 51% (float16)
of these tolerances; CPU SDPA at most 7%, 40% and 57%. Every planted mask or RoPE bug exceeds them
by factors of 10^3 or more.

Gradients can be larger than outputs (dv sums dout over every query that sees a key, dq and dk scale
with the score gradients), so ``assert_matches_reference`` multiplies ``atol`` for each gradient by
``max(1, rms(expected))``: an absolute allowance in units of the tensor's own typical size, which
changes nothing for the O(0.1) gradients of the default inputs (``GRAD_ATOL_SCALE``; the messages
say when it applied). Pass ``rtol``/``atol`` to override everything.
"""
from dataclasses import dataclass, field

import numpy as onp

__all__ = ["TOLERANCES", "MismatchError", "Comparison", "default_tolerances", "dtype_name", "to_numpy_any",
           "compare", "assert_close", "reference_case", "assert_matches_reference"]

# dtype name -> (rtol, atol)
TOLERANCES = {
    "float64": (1e-10, 1e-12),
    "float32": (1e-4, 1e-5),
    "bfloat16": (2e-2, 2e-2),
    "float16": (2e-3, 2e-3),
}
GRAD_ATOL_SCALE = "atol x max(1, rms(expected))"


class MismatchError(AssertionError):
    """A tensor differs from the reference. ``.comparison`` holds the numbers (a ``Comparison``)."""

    def __init__(self, message, comparison=None):
        super().__init__(message)
        self.comparison = comparison


# ----------------------------------------------------------------------------------------------------
# dtypes and conversion
# ----------------------------------------------------------------------------------------------------

_ALIASES = {"f64": "float64", "double": "float64", "fp64": "float64", "f32": "float32", "float": "float32",
            "fp32": "float32", "single": "float32", "bf16": "bfloat16", "f16": "float16", "fp16": "float16",
            "half": "float16"}


def dtype_name(x):
    """Plain name ('float32', 'bfloat16', ...) of a dtype, a dtype-like string, or an array's dtype.

    Works for NumPy, CuPy, PyTorch (``torch.bfloat16`` -> 'bfloat16'), JAX/ml_dtypes without importing them.
    """
    dt = x if isinstance(x, (type, onp.dtype, str)) else getattr(x, "dtype", x)
    if isinstance(dt, str):
        name = dt
    else:
        try:
            name = onp.dtype(dt).name
        except TypeError:
            name = str(dt)
    name = name.lower().replace("torch.", "").replace("jnp.", "")
    return _ALIASES.get(name, name)


def default_tolerances(dtype):
    """(rtol, atol) for a dtype name or dtype object; ValueError for a dtype with no default."""
    name = dtype_name(dtype)
    if name not in TOLERANCES:
        raise ValueError(f"dtype {dtype!r} has no default tolerance; pass rtol and atol, or one of {sorted(TOLERANCES)}")
    return TOLERANCES[name]


def to_numpy_any(x):
    """A host NumPy array from NumPy, CuPy, PyTorch, JAX, or anything with ``__dlpack__``/``__array__``.

    Order of attempts: NumPy arrays and scalars as they are; an autograd box is unwrapped; CuPy
    (``.get()``); ``.detach()`` if present (PyTorch tensors that require grad); ``numpy.from_dlpack``;
    on failure (another device, or a dtype NumPy lacks such as bfloat16) ``.cpu()`` and then
    ``.float()`` / ``.astype('float32')`` if present and try again; finally ``numpy.asarray`` (``__array__``).
    bfloat16 values come back as float32 (exactly). Nothing is imported. Returns a copy the caller owns.
    """
    x = getattr(x, "_value", x)                                  # autograd ArrayBox
    if isinstance(x, onp.ndarray):
        return _std(x.copy())
    if isinstance(x, (onp.generic, int, float, bool)):
        return onp.asarray(x)
    if type(x).__module__.startswith("cupy") and callable(getattr(x, "get", None)):
        return _std(x.get())
    if callable(getattr(x, "detach", None)):
        x = x.detach()                                           # torch: tensors that require grad
    errors = []
    a = _from_dlpack(x, errors)
    if a is None and callable(getattr(x, "cpu", None)):         # torch/JAX on an accelerator
        try:
            x = x.cpu()
            a = _from_dlpack(x, errors)
        except Exception as e:  # pragma: no cover - depends on the library
            errors.append(f"cpu(): {type(e).__name__}: {e}")
    if a is None:                                                # a dtype NumPy lacks, e.g. bfloat16
        widened = None
        try:
            if callable(getattr(x, "float", None)):
                widened = x.float()
            elif callable(getattr(x, "astype", None)):
                widened = x.astype("float32")
        except Exception as e:
            errors.append(f"float(): {type(e).__name__}: {e}")
        if widened is not None:
            a = _from_dlpack(widened, errors)
    if a is not None:
        return _std(a)
    try:
        return _std(onp.array(x, copy=True))                     # __array__
    except Exception as e:
        errors.append(f"__array__: {type(e).__name__}: {e}")
    raise ValueError(f"cannot convert {type(x).__name__} to a NumPy array ({'; '.join(errors)})")


def _from_dlpack(x, errors):
    if not hasattr(x, "__dlpack__"):
        return None
    try:
        return onp.array(onp.from_dlpack(x), copy=True)
    except Exception as e:
        errors.append(f"from_dlpack: {type(e).__name__}: {e}")
        return None


def _std(a):
    """Non-standard NumPy dtypes (ml_dtypes' bfloat16, kind 'V') -> float32."""
    if a.dtype.kind not in "biufc":
        try:
            return a.astype(onp.float32)
        except (TypeError, ValueError):
            raise ValueError(f"cannot convert an array of dtype {a.dtype} to float32") from None
    return a


# ----------------------------------------------------------------------------------------------------
# Comparison
# ----------------------------------------------------------------------------------------------------

@dataclass
class Comparison:
    """Everything ``compare`` measured. ``ok`` is True when every element is within tolerance."""
    name: str
    shape: tuple
    actual_dtype: str
    dtype: str
    rtol: float
    atol: float
    ok: bool
    size: int = 0
    n_bad: int = 0
    n_nan: int = 0
    max_abs: float = 0.0
    max_abs_index: tuple = ()
    max_rel: float = 0.0
    worst_index: tuple = ()
    worst_expected: float = 0.0
    worst_actual: float = 0.0
    worst_ratio: float = 0.0
    bad_ranges: list = field(default_factory=list)
    note: str = ""
    message: str = ""

    @property
    def bad_fraction(self):
        return self.n_bad / self.size if self.size else 0.0


def _fmt_index(idx):
    return "(" + ", ".join(str(int(i)) for i in idx) + ")"


def _check_name(name):
    if not isinstance(name, str) or not name:
        raise ValueError(f"name must be a non-empty string naming the tensor, got {name!r}")


def _check_tol(label, value):
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float, onp.floating)) or not value >= 0:
        raise ValueError(f"{label} must be a non-negative number, got {value!r}")
    return float(value)


def compare(actual, expected, *, name="tensor", dtype=None, rtol=None, atol=None, note="", actual_dtype=None):
    """Compare ``actual`` with ``expected`` elementwise; returns a ``Comparison`` (never raises on mismatch).

    ``dtype`` picks the default tolerances (default: the dtype of ``actual`` as given, so a torch
    bfloat16 tensor gets the bfloat16 tolerances); ``rtol``/``atol`` override them. ``note`` is appended
    to the message (e.g. how atol was scaled). NaNs in the same places in both count as equal.
    ``actual_dtype`` labels actual's dtype in the message when it was converted before the call.
    """
    _check_name(name)
    rtol, atol = _check_tol("rtol", rtol), _check_tol("atol", atol)
    actual_dtype = dtype_name(actual) if actual_dtype is None else dtype_name(actual_dtype)
    tol_dtype = dtype_name(dtype) if dtype is not None else actual_dtype
    if rtol is None or atol is None:
        if tol_dtype not in TOLERANCES:
            raise ValueError(f"dtype {tol_dtype!r} (of {name}) has no default tolerance; pass dtype=, or rtol and atol")
        d_rtol, d_atol = TOLERANCES[tol_dtype]
        rtol = d_rtol if rtol is None else rtol
        atol = d_atol if atol is None else atol
    a = to_numpy_any(actual)
    e = to_numpy_any(expected)
    head = f"{name}: "
    tol_text = f"rtol={rtol:.1e}, atol={atol:.1e} (dtype {tol_dtype})"
    if a.shape != e.shape:
        msg = (f"{head}shape mismatch: actual {tuple(a.shape)} vs expected {tuple(e.shape)}"
               f" (actual dtype {actual_dtype})" + (f"\n  {note}" if note else ""))
        return Comparison(name, tuple(e.shape), actual_dtype, tol_dtype, rtol, atol, False, size=int(e.size),
                          note=note, message=msg)
    if a.dtype.kind not in "biuf" or e.dtype.kind not in "biuf":
        raise ValueError(f"{name}: only real numeric arrays can be compared, got {a.dtype} and {e.dtype}")
    a64, e64 = a.astype(onp.float64), e.astype(onp.float64)
    with onp.errstate(invalid="ignore", over="ignore", divide="ignore"):
        diff = onp.abs(a64 - e64)
        allowed = atol + rtol * onp.abs(e64)
        both_nan = onp.isnan(a64) & onp.isnan(e64)
        same_inf = onp.isinf(a64) & (a64 == e64)
        diff = onp.where(both_nan | same_inf, 0.0, diff)
        diff = onp.where(onp.isnan(diff), onp.inf, diff)                 # NaN on one side only: infinitely wrong
        bad = diff > allowed
        ratio = onp.where(allowed > 0, diff / onp.where(allowed > 0, allowed, 1.0), onp.where(diff > 0, onp.inf, 0.0))
        rel = onp.where(onp.abs(e64) > 0, diff / onp.where(onp.abs(e64) > 0, onp.abs(e64), 1.0), onp.where(diff > 0, onp.inf, 0.0))
    size = int(a.size)
    c = Comparison(name, tuple(e.shape), actual_dtype, tol_dtype, rtol, atol, not bool(bad.any()), size=size,
                   n_bad=int(bad.sum()), n_nan=int((onp.isnan(a64) & ~both_nan).sum()), note=note)
    if size:
        i_abs = onp.unravel_index(int(onp.argmax(diff)), diff.shape)
        i_worst = onp.unravel_index(int(onp.argmax(ratio)), ratio.shape)
        big = rtol * onp.abs(e64) >= atol                                      # where rtol, not atol, decides
        if not big.any():
            big = onp.abs(e64) > 0
        c.max_abs, c.max_abs_index = float(diff[i_abs]), tuple(int(i) for i in i_abs)
        c.max_rel = float(rel[big].max()) if big.any() else 0.0
        c.worst_index = tuple(int(i) for i in i_worst)
        c.worst_expected, c.worst_actual = float(e64[i_worst]), float(a64[i_worst])
        c.worst_ratio = float(ratio[i_worst])
        if c.n_bad:
            where = onp.nonzero(bad)
            c.bad_ranges = [(int(ax.min()), int(ax.max())) for ax in where]
    shape_text = f"shape {c.shape}, actual dtype {actual_dtype}, expected dtype {e.dtype.name}"
    if c.ok:
        c.message = (f"{head}OK, {shape_text}; max abs err {c.max_abs:.3e}, max rel err {c.max_rel:.3e} "
                     f"within {tol_text}")
    else:
        lines = [
            f"{head}{c.n_bad} of {size} elements ({100 * c.bad_fraction:.3g}%) are out of tolerance",
            f"  {shape_text}",
            f"  tolerance: |actual - expected| <= atol + rtol * |expected| with {tol_text}",
            f"  max abs err {c.max_abs:.4g} at {_fmt_index(c.max_abs_index)}; "
            f"max rel err {c.max_rel:.4g} (over elements where rtol * |expected| >= atol)",
            f"  worst element {_fmt_index(c.worst_index)}: expected {c.worst_expected:.8g}, actual {c.worst_actual:.8g} "
            f"(error {c.worst_ratio:.3g}x the allowed {atol + rtol * abs(c.worst_expected):.3g})",
            "  bad elements lie in " + " x ".join(f"[{lo}..{hi}]" for lo, hi in c.bad_ranges)
            + " (index range per axis)",
        ]
        if c.n_nan:
            lines.append(f"  {c.n_nan} NaN(s) in actual where expected is not NaN")
        if note:
            lines.append(f"  {note}")
        c.message = "\n".join(lines)
    return c


def assert_close(actual, expected, *, name, dtype=None, rtol=None, atol=None):
    """Raise ``MismatchError`` (an AssertionError) with a readable report unless actual ~= expected.

    ``name`` names the tensor in the message. ``dtype`` selects default tolerances (``TOLERANCES``;
    default: actual's own dtype); ``rtol``/``atol`` override them. Accepts NumPy, CuPy, PyTorch, JAX
    arrays (see ``to_numpy_any``). Returns the ``Comparison`` when it passes.
    """
    c = compare(actual, expected, name=name, dtype=dtype, rtol=rtol, atol=atol)
    if not c.ok:
        raise MismatchError(c.message, c)
    return c


# ----------------------------------------------------------------------------------------------------
# Whole-kernel check against the reference
# ----------------------------------------------------------------------------------------------------

def reference_case(arch, *, seq_len, heads, head_dim, batch=1, dtype="float32", seed=0, grads=False, **pattern_args):
    """The inputs and float64 reference of ``assert_matches_reference`` (and of ``minicp golden``).

    Returns a dict: ``q, k, v`` (batch, heads, seq_len, head_dim) and ``dout`` (batch, heads, rows,
    head_dim) in the storage dtype of ``dtype`` (bfloat16 -> float32 arrays holding bfloat16 values),
    ``rows`` (token positions of the output rows), and ``out`` (plus ``dq, dk, dv`` with ``grads``) in
    float64, computed from exactly those rounded inputs. Draw order: ``numpy.random.default_rng(seed)``
    gives q, k, v (standard normal, float64), then dout.
    """
    from minicp import golden
    return golden.reference_arrays(arch, seq_len=seq_len, heads=heads, head_dim=head_dim, batch=batch,
                                   dtype=dtype, seed=seed, grads=grads, **pattern_args)


def _rms(a):
    a = onp.asarray(a, dtype=onp.float64)
    return float(onp.sqrt(onp.mean(a * a))) if a.size else 0.0


def assert_matches_reference(fn, arch, *, seq_len, heads, head_dim, batch=1, dtype="float32", seed=0,
                             check_grads=False, grad_fn=None, array_fn=None, rtol=None, atol=None,
                             **pattern_args):
    """Run ``fn(q, k, v)`` on seeded inputs and compare with minicp's float64 reference.

    fn        your kernel: q, k, v (batch, heads, seq_len, head_dim) -> out. ``out`` may be
              (batch, heads, rows, head_dim) with only the computed rows (what ``minicp.attention``
              returns; rows < seq_len only for PerceiverAR's first layer) or all seq_len rows, of which
              the computed rows are compared. The default scale d^-0.5 applies: do not pre-scale q.
    arch      architecture name; ``**pattern_args`` its pattern arguments (ecp: ``half_segment``,
              ``partial``; perceiver_ar: ``latent``, ``layer``; double: ``latent``; s_split:
              ``latent``, ``split``; compressed: ``latent``, ``compressed``, ``layer``; longlora:
              ``group``, ``shift``; transformer: none).
    dtype     "float64", "float32", "bfloat16" or "float16": inputs are rounded to it and the default
              tolerances follow it. bfloat16 inputs arrive as float32 arrays holding bfloat16 values
              (NumPy has no bfloat16); convert them in ``array_fn``.
    array_fn  converts each NumPy input before the call, e.g. ``torch.from_numpy`` or
              ``lambda a: torch.from_numpy(a).to("cuda", torch.bfloat16)``. Default: NumPy arrays.
    check_grads  also compare gradients of ``sum(out * dout)`` for a seeded dout: needs
              ``grad_fn(q, k, v, dout) -> (dq, dk, dv)`` (dout has the reference output's row count,
              in the same array type as the inputs).
    rtol, atol   override the defaults (``TOLERANCES``); without an explicit atol, the gradients'
              atol is scaled by max(1, rms(expected)).

    Raises ``MismatchError`` naming the first tensor that fails (out, then dq, dk, dv); returns a dict
    name -> ``Comparison`` when all pass.
    """
    if not callable(fn):
        raise ValueError(f"fn must be callable (q, k, v) -> out, got {type(fn).__name__}")
    if not isinstance(check_grads, bool):
        raise ValueError(f"check_grads must be True or False, got {check_grads!r}")
    if check_grads and not callable(grad_fn):
        raise ValueError("check_grads=True needs grad_fn(q, k, v, dout) -> (dq, dk, dv)")
    if grad_fn is not None and not callable(grad_fn):
        raise ValueError(f"grad_fn must be callable (q, k, v, dout) -> (dq, dk, dv), got {type(grad_fn).__name__}")
    if array_fn is not None and not callable(array_fn):
        raise ValueError(f"array_fn must be callable (numpy array) -> your array type, got {type(array_fn).__name__}")
    _check_tol("rtol", rtol), _check_tol("atol", atol)
    tol_dtype = dtype_name(dtype)
    if tol_dtype not in TOLERANCES:
        raise ValueError(f"dtype must be one of {sorted(TOLERANCES)}, got {dtype!r}")

    case = reference_case(arch, seq_len=seq_len, heads=heads, head_dim=head_dim, batch=batch, dtype=tol_dtype,
                          seed=seed, grads=check_grads, **pattern_args)
    convert = array_fn or (lambda a: a.copy())
    inputs = [convert(case[key]) for key in ("q", "k", "v")]
    rows, n = case["rows"], int(seq_len)
    results = {}
    args_text = ", ".join(f"{key}={val!r}" for key, val in pattern_args.items())
    context = (f"reference: minicp {arch}({args_text}), batch {batch}, heads {heads}, seq_len {n}, "
               f"head_dim {head_dim}, dtype {tol_dtype}, seed {seed}")

    raw = fn(*inputs)
    out_dtype = dtype_name(raw)
    out = to_numpy_any(raw)
    expected = case["out"]
    note = context
    if out.ndim == 4 and out.shape[2] == n and expected.shape[2] != n:
        out = out[:, :, rows]                                  # a dense-mask kernel returned every row
        note += f"\n  (out: compared rows {rows[0]}..{rows[-1]} of the {n} returned; the others are not computed)"
    results["out"] = _compare_or_raise(out, expected, "out", tol_dtype, rtol, atol, note, out_dtype)

    if check_grads:
        grads = grad_fn(*inputs, convert(case["dout"]))
        if not isinstance(grads, (tuple, list)) or len(grads) != 3:
            raise ValueError(f"grad_fn must return (dq, dk, dv), got {type(grads).__name__}"
                             + (f" of length {len(grads)}" if isinstance(grads, (tuple, list)) else ""))
        for key, got in zip(("dq", "dk", "dv"), grads):
            exp = case[key]
            g_atol, g_note = atol, context + "; gradients of sum(out * dout)"
            if atol is None:
                scale = max(1.0, _rms(exp))
                g_atol = TOLERANCES[tol_dtype][1] * scale
                g_note += f"\n  (gradient: {GRAD_ATOL_SCALE} = {TOLERANCES[tol_dtype][1]:.1e} x {scale:.3g})"
            results[key] = _compare_or_raise(got, exp, key, tol_dtype, rtol, g_atol, g_note)
    return results


def _compare_or_raise(actual, expected, name, dtype, rtol, atol, note, actual_dtype=None):
    c = compare(actual, expected, name=name, dtype=dtype, rtol=rtol, atol=atol, note=note, actual_dtype=actual_dtype)
    if not c.ok:
        raise MismatchError(c.message, c)
    return c
