"""``assert_matches_reference``: run a kernel on a seeded case and judge every tensor against the reference."""

import concurrent.futures
import json
import os

import numpy as onp

from minicp.files import atomic_write_text
from minicp.testing.compare import Comparison, MismatchError, check_tolerance, compare, default_tolerances
from minicp.testing.convert import aligned_copy, to_numpy_any
from minicp.testing.dtypes import check_dtype, dtype_name
from minicp.testing.guards import digests, output_problem
from minicp.testing.reference import forget_case, shared_complete, shared_inputs
from minicp.testing.verdict import Report, judge, refused
from minicp.testing.where import describe_positions
from minicp.validate import boolean, choice

__all__ = ["LAYOUTS", "assert_matches_reference", "check_case", "judge_case", "block_groups", "write_report"]

LAYOUTS = ("bhnd", "bnhd")
GRADS = ("dq", "dk", "dv")


def block_groups(plan, rows, tensor):
    """Declared blocks of a tensor for the report: query blocks (out: output-row indices, dq: positions) or
    key blocks (dk, dv: the distinct key ranges), as [(label, head, indices)]."""
    if tensor in ("out", "dq"):
        index = (lambda r: onp.searchsorted(rows, r)) if tensor == "out" else (lambda r: r)
        return [(f"h{hd} {name}", hd, index(r)) for hd, r, _, _, name in plan]
    seen, groups, labels = set(), [], {}
    for hd, _, c, _, _name in plan:
        cols = c.tobytes()
        if (hd, cols) not in seen:
            seen.add((hd, cols))
            if cols not in labels:  # every head has the same key ranges in most patterns: described once
                labels[cols] = describe_positions(c)
            groups.append((f"h{hd} keys {labels[cols]}", hd, c))
    return groups


def case_context(arch, given, resolved, case, extra=""):
    args = ", ".join(f"{k}={v!r}" for k, v in given.items())
    defaults = ", ".join(f"{k}={v!r}" for k, v in resolved.items() if k not in given)
    rope = f", rope {case['rope']}" if case["rope"] else ""
    return (
        f"reference: minicp {arch}({args})"
        + (f" [defaults: {defaults}]" if defaults else "")
        + f", batch {case['batch']}, heads {case['heads']}, seq_len {case['seq_len']}, head_dim "
        f"{case['head_dim']}, dtype {case['dtype']}, seed {case['seed']}{rope}{extra}"
    )


def _judge_one(case, key, got, note, rtol, atol, actual_dtype, layout):
    name, got = case["case"]["dtype"], onp.asarray(got)
    actual_dtype = actual_dtype or dtype_name(got)
    problem = output_problem(key, actual_dtype, got, case[key].shape, name, layout)
    if problem is not None:  # the wrong dtype, shape or layout: no numbers to compare
        if rtol is None and atol is None:
            return refused(key, name, case[key].shape, f"{problem}\n  {note}", actual_dtype)
        d_rtol, d_atol = default_tolerances(name)
        rtol, atol = d_rtol if rtol is None else rtol, d_atol if atol is None else atol
        msg = f"{problem}\n  {note}"
        return Comparison(key, tuple(case[key].shape), actual_dtype, name, rtol, atol, False, note=note, message=msg)
    if rtol is not None or atol is not None:
        return compare(got, case[key], name=key, dtype=name, rtol=rtol, atol=atol, note=note, actual_dtype=actual_dtype)
    groups = block_groups(case["plan"], case["rows"], key)
    v = judge(key, got, case[key], None, name, budget=case["budget_" + key], groups=groups)
    v.actual_dtype = actual_dtype
    v.message += f"\n  {note}"
    return v


def judge_case(case, results, *, context="", rtol=None, atol=None, actual_dtypes=None, layout="bhnd"):
    """``Report`` of ``results`` (name -> NumPy array in (b, h, rows, d) order) against a ``reference_case``
    dict. A tensor of another dtype than the case's (``actual_dtypes``: name -> the dtype the kernel returned,
    default the array's own), complex, or of another shape fails without numbers (``minicp.testing.guards``;
    ``layout``: the kernel's, for the message). With ``rtol`` or ``atol`` the fixed element-wise test
    (``compare``) decides instead of the budgets. The tensors are judged side by side in threads (NumPy
    releases the GIL)."""
    keys = list(results)
    notes = [context + ("; gradients of sum(out * dout)" if key in GRADS else "") for key in keys]
    dtypes = [(actual_dtypes or {}).get(key) for key in keys]
    one = lambda i: _judge_one(case, keys[i], results[keys[i]], notes[i], rtol, atol, dtypes[i], layout)
    workers = min(len(keys), os.cpu_count() or 1)
    if workers > 1:
        with concurrent.futures.ThreadPoolExecutor(workers) as pool:
            verdicts = list(pool.map(one, range(len(keys))))
    else:
        verdicts = [one(i) for i in range(len(keys))]
    return Report(context, dict(zip(keys, verdicts)))


def _validate(fn, check_grads, grad_fn, array_fn, layout, report_path):
    if not callable(fn):
        raise ValueError(f"fn must be callable (q, k, v) -> out, got {type(fn).__name__}")
    try:
        check_grads = boolean("check_grads", check_grads)
    except TypeError as e:
        raise ValueError(str(e)) from None
    if check_grads and not callable(grad_fn):
        raise ValueError("check_grads=True needs grad_fn(q, k, v, dout) -> (dq, dk, dv)")
    if grad_fn is not None and not callable(grad_fn):
        raise ValueError(f"grad_fn must be callable (q, k, v, dout) -> (dq, dk, dv), got {type(grad_fn).__name__}")
    if array_fn is not None and not callable(array_fn):
        raise ValueError(f"array_fn must be callable (numpy array) -> your array type, got {type(array_fn).__name__}")
    choice("layout", layout, LAYOUTS)
    if report_path is not None and not isinstance(report_path, str):
        raise ValueError(f"report_path must be a path string or None, got {report_path!r}")
    return check_grads


def _grads_tuple(grads):
    """(out or None, (dq, dk, dv)) from what ``grad_fn`` returned: (dq, dk, dv) or (out, dq, dk, dv)."""
    if not isinstance(grads, (tuple, list)) or len(grads) not in (3, 4):
        raise ValueError(
            f"grad_fn must return (dq, dk, dv) or (out, dq, dk, dv), got {type(grads).__name__}"
            + (f" of length {len(grads)}" if isinstance(grads, (tuple, list)) else "")
        )
    return (grads[0], tuple(grads[1:])) if len(grads) == 4 else (None, tuple(grads))


def run_kernel(fn, grad_fn, case, *, check_grads, array_fn=None, layout="bhnd"):
    """Call ``fn`` (and ``grad_fn``) on the case's inputs; returns (name -> NumPy (b, h, ., d), actual dtypes).

    A ``grad_fn`` returning (out, dq, dk, dv) gives the output of its own forward, and ``fn`` is not called:
    the kernel runs once (forward + backward)."""
    __tracebackhide__ = True
    swap = (lambda a: onp.swapaxes(a, 1, 2)) if layout == "bnhd" else (lambda a: a)
    keys = ("q", "k", "v") + (("dout",) if check_grads else ())

    def prepare(key):  # the kernel's own aligned copy, or array_fn of the (contiguous) case array
        a = swap(case[key])
        return aligned_copy(a) if array_fn is None else array_fn(a if a.flags.c_contiguous else aligned_copy(a))

    shared = array_fn is not None  # array_fn may wrap the case's own memory (torch.from_numpy does)
    before = digests(case, keys) if shared else {}
    inputs = [prepare(key) for key in ("q", "k", "v")]
    rows, n = case["rows"], case["case"]["seq_len"]
    raw, grads = None, None
    if check_grads:
        raw, grads = _grads_tuple(grad_fn(*inputs, prepare("dout")))
    raw = fn(*inputs) if raw is None else raw
    after = digests(case, keys) if shared else {}
    changed = [key for key in before if after[key] != before[key]]
    if changed:
        forget_case(case)  # the cached inputs are no longer the draw
        raise ValueError(
            f"the kernel changed its input(s) {', '.join(changed)} in place; a checked kernel must leave q, k, v "
            "and dout as given (they are the seeded inputs the reference is computed from)"
        )
    dtypes = {"out": dtype_name(raw)}
    out = swap(to_numpy_any(raw))
    if out.ndim == 4 and out.shape[2] == n and len(rows) != n:
        out = out[:, :, rows]  # a dense-mask kernel returned every row
    results = {"out": out}
    for key, got in zip(GRADS, grads or ()):
        dtypes[key] = dtype_name(got)
        results[key] = swap(to_numpy_any(got))
    return results, dtypes


def check_case(case, fn, grad_fn, *, check_grads, array_fn, layout, context, rtol, atol, report_path, cache_dir):
    """Run the kernel on a ``shared_inputs`` case, then complete the case (``shared_complete``: the reference,
    computed after the kernel, ``case_inputs`` says why), judge every tensor and raise or return the report:
    what ``assert_matches_reference`` and ``assert_matches_golden`` share."""
    __tracebackhide__ = True  # pytest shows the failure message without minicp's frames
    results, dtypes = run_kernel(fn, grad_fn, case, check_grads=check_grads, array_fn=array_fn, layout=layout)
    case = shared_complete(case, cache_dir)
    report = judge_case(case, results, context=context, rtol=rtol, atol=atol, actual_dtypes=dtypes, layout=layout)
    return raise_or_return(report, report_path)


def write_report(report, path):
    """Write a check's ``Report`` to ``path`` as JSON (atomically); returns the path."""
    return atomic_write_text(path, json.dumps(_report_dict(report), indent=1))


def raise_or_return(report, report_path=None):
    """Write the JSON report if asked; raise ``MismatchError`` listing every failing tensor, else return it."""
    __tracebackhide__ = True
    if report_path is not None:
        write_report(report, report_path)
    failed = [v for v in report.verdicts.values() if not v.ok]
    if failed:
        message = "\n".join([v.message for v in failed] + [_failed_line(failed, report.verdicts)])
        err = MismatchError(message, failed[0])
        err.report = report
        raise err
    return report


def _report_dict(report):
    if all(hasattr(v, "max_share") for v in report.verdicts.values()):
        return report.to_dict()
    return {
        "ok": report.ok,
        "context": report.context,
        "tensors": {k: {"ok": v.ok, "message": v.message} for k, v in report.verdicts.items()},
    }


def assert_matches_reference(
    fn,
    arch,
    *,
    seq_len,
    heads,
    head_dim,
    batch=1,
    dtype="float32",
    seed=0,
    check_grads=False,
    grad_fn=None,
    array_fn=None,
    rtol=None,
    atol=None,
    layout="bhnd",
    rope=None,
    report_path=None,
    cache_dir=None,
    **pattern_args,
):
    """Run ``fn(q, k, v)`` on a seeded case and judge it against minicp's float64 reference.

    fn        your kernel: q, k, v -> out, (batch, heads, seq_len, head_dim) with ``layout="bhnd"`` or
              (batch, seq_len, heads, head_dim) with ``layout="bnhd"``. ``out`` may hold only the computed
              rows or all seq_len rows (the computed ones are compared). Scale d^-0.5 inside; do not
              pre-scale q. With ``rope`` ("interleaved" or "halves") fn receives unrotated q, k and must
              apply RoPE at positions 0..n-1 itself.
    arch      architecture; ``**pattern_args`` its pattern arguments (ecp: ``segment`` or ``half_segment``,
              ``partial``; perceiver_ar: ``latent``, ``layer``; double: ``latent``; s_split: ``latent``,
              ``split``; compressed: ``latent``, ``compressed``, ``layer``; longlora: ``group``, ``shift``).
    dtype     "float64", "float32", "bfloat16" or "float16": the inputs are rounded to it, and the budgets are
              those of the plain implementation in it (see minicp.testing.verdict). bfloat16 inputs arrive as
              float32 arrays holding bfloat16 values; convert them in ``array_fn``.
    array_fn  converts each NumPy input before the call (``minicp.testing.torch.arrays`` for PyTorch).
    check_grads  also judge gradients of sum(out * dout): ``grad_fn(q, k, v, dout) -> (dq, dk, dv)``, or
              ``-> (out, dq, dk, dv)`` from one forward + backward (then ``fn`` is not called again).
    rtol, atol   use the fixed element-wise test instead of the budgets.
    report_path  also write the JSON report there.

    The kernel runs on the drawn inputs before the reference is computed (or loaded from the cache).
    Every tensor is judged before anything is raised: ``MismatchError`` lists each failing tensor (per head,
    per declared block, rows over budget); ``.comparison`` is the first failing verdict, ``.report`` all.
    Returns the ``Report`` (name -> verdict) when all pass.
    """
    __tracebackhide__ = True
    check_grads = _validate(fn, check_grads, grad_fn, array_fn, layout, report_path)
    rtol, atol = check_tolerance("rtol", rtol), check_tolerance("atol", atol)
    name = dtype_name(dtype)
    check_dtype(name)
    case = shared_inputs(
        arch,
        seq_len=seq_len,
        heads=heads,
        head_dim=head_dim,
        batch=batch,
        dtype=name,
        seed=seed,
        grads=check_grads,
        rope=rope,
        **pattern_args,
    )
    given = {k: v for k, v in pattern_args.items()}
    context = case_context(arch, given, case["case"]["pattern_args"], case["case"])
    return check_case(
        case, fn, grad_fn, check_grads=check_grads, array_fn=array_fn, layout=layout, context=context, rtol=rtol,
        atol=atol, report_path=report_path, cache_dir=cache_dir,
    )  # fmt: skip


def _failed_line(failed, verdicts):
    """'(2 of 4 tensors failed; passing: ...)', the passing ones' first lines (none: no list)."""
    passing = [v.message.split("\n")[0] for v in verdicts.values() if v.ok]
    return f"({len(failed)} of {len(verdicts)} tensors failed" + (
        f"; passing: {', '.join(passing)})" if passing else ")"
    )
