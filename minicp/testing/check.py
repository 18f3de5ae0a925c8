"""``assert_matches_reference``: run a kernel on a seeded case and judge every tensor against the reference."""

import collections
import concurrent.futures
import json
import os
import warnings

import numpy as onp

from minicp.files import atomic_write_text
from minicp.testing.arrays import is_numpy, module_of, to_host
from minicp.testing.budgets import units
from minicp.testing.compare import Comparison, MismatchError, check_tolerance, compare, default_tolerances
from minicp.testing.device import check_device
from minicp.testing.dtypes import check_dtype, dtype_name
from minicp.testing.guards import output_problem
from minicp.testing.kernel_run import gpu_of, on_device, results_in, run_kernel
from minicp.testing.reference import shared_complete, shared_inputs
from minicp.testing.verdict import Report, judge, refused
from minicp.testing.where import describe_positions
from minicp.validate import boolean, choice

__all__ = [
    "LAYOUTS",
    "INCONCLUSIVE",
    "InconclusiveWarning",
    "InconclusiveError",
    "assert_matches_reference",
    "check_case",
    "judge_case",
    "block_groups",
    "write_report",
]

LAYOUTS = ("bhnd", "bnhd")
GRADS = ("dq", "dk", "dv")
INCONCLUSIVE = ("warn", "raise", "ignore")  # what an inconclusive verdict does (``assert_matches_reference``)


class InconclusiveWarning(UserWarning):
    """A check passed, but a precision bug could not be told from rounding at its size (``Report.inconclusive``)."""


class InconclusiveError(AssertionError):
    """``inconclusive="raise"``: a check passed, but a precision bug could not be told from rounding."""

    def __init__(self, message, report):
        super().__init__(message)
        self.report = report


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


_UNITS = collections.OrderedDict()  # (plan, tensor) -> judging units, for the last few plans


def units_of(case, tensor):
    """The judging units of ``tensor`` (``budgets.units`` of ``block_groups``), kept per block plan: every check
    of a shape judges the same units."""
    key = (id(case["plan"]), tensor)
    if key not in _UNITS or _UNITS[key][0] is not case["plan"]:
        _UNITS[key] = case["plan"], units(block_groups(case["plan"], case["rows"], tensor))
        while len(_UNITS) > 32:
            _UNITS.popitem(last=False)
    _UNITS.move_to_end(key)
    return _UNITS[key][1]


def case_context(arch, given, resolved, case, extra=""):
    args = ", ".join(f"{k}={v!r}" for k, v in given.items())
    defaults = ", ".join(f"{k}={v!r}" for k, v in resolved.items() if k not in given)
    rope = f", rope {case['rope']}" if case["rope"] else ""
    rope += "".join(f", {key} {case[key]}" for key in ("precision", "device") if case.get(key))
    return (
        f"reference: minicp {arch}({args})"
        + (f" [defaults: {defaults}]" if defaults else "")
        + f", batch {case['batch']}, heads {case['heads']}, seq_len {case['seq_len']}, head_dim "
        f"{case['head_dim']}, dtype {case['dtype']}, seed {case['seed']}{rope}{extra}"
    )


def _judge_one(case, key, got, note, rtol, atol, actual_dtype, layout):
    name = case["case"]["dtype"]
    xp = module_of(case[key])
    got = onp.asarray(got) if is_numpy(xp) else got
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
        expected = to_host(case[key])
        return compare(
            to_host(got), expected, name=key, dtype=name, rtol=rtol, atol=atol, note=note, actual_dtype=actual_dtype
        )
    twin = case.get("twin_out") if key == "out" else None
    v = judge(key, got, case[key], None, name, stats=case["floor_" + key], units=units_of(case, key), twin=twin)
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
    workers = min(len(keys), os.cpu_count() or 1) if is_numpy(module_of(case["q"])) else 1
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


def check_case(case, fn, grad_fn, *, check_grads, array_fn, layout, context, rtol, atol, report_path, cache_dir,
               inconclusive="warn"):  # fmt: skip
    """Run the kernel on a ``shared_inputs`` case, then complete the case (``shared_complete``: the reference,
    computed after the kernel, ``case_inputs`` says why), judge every tensor and raise or return the report:
    what ``assert_matches_reference`` and ``assert_matches_golden`` share. A host case whose kernel returned
    GPU tensors is judged on that GPU (the inputs copied there)."""
    __tracebackhide__ = True  # pytest shows the failure message without minicp's frames
    raw, dtypes = run_kernel(fn, grad_fn, case, check_grads=check_grads, array_fn=array_fn, layout=layout)
    if is_numpy(module_of(case["q"])) and rtol is None and atol is None:
        gpu = gpu_of(raw)
        if gpu is not None:
            case = on_device(case, gpu)
    case = shared_complete(case, cache_dir)
    results = results_in(raw, case, layout)
    report = judge_case(case, results, context=context, rtol=rtol, atol=atol, actual_dtypes=dtypes, layout=layout)
    return raise_or_return(report, report_path, inconclusive)


def write_report(report, path):
    """Write a check's ``Report`` to ``path`` as JSON (atomically); returns the path."""
    return atomic_write_text(path, json.dumps(_report_dict(report), indent=1))


def raise_or_return(report, report_path=None, inconclusive="warn"):
    """Write the JSON report if asked; raise ``MismatchError`` listing every failing tensor; an inconclusive
    report warns (``InconclusiveWarning``), raises ``InconclusiveError`` or passes, as ``inconclusive`` says;
    else return the report."""
    __tracebackhide__ = True
    if report_path is not None:
        write_report(report, report_path)
    failed = [v for v in report.verdicts.values() if not v.ok]
    if failed:
        message = "\n".join([v.message for v in failed] + [_failed_line(failed, report.verdicts)])
        err = MismatchError(message, failed[0])
        err.report = report
        raise err
    notes = getattr(report, "inconclusive", [])
    if notes and inconclusive == "raise":
        raise InconclusiveError("\n".join(notes + [f"({report.context})"]), report)
    if notes and inconclusive == "warn":
        warnings.warn("\n".join(notes + [f"({report.context})"]), InconclusiveWarning, stacklevel=2)
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
    device=None,
    precision=None,
    inconclusive="warn",
    draw=None,
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
    array_fn  converts each input before the call (``minicp.testing.torch.arrays`` for PyTorch): a NumPy
              array, or with ``device`` a CuPy array on that GPU.
    device    None (the host; a kernel whose results are GPU tensors is still judged on their GPU) or
              "cuda" / "cuda:<index>": the inputs are drawn on that GPU (draw 3, ``minicp.testing.device``)
              and the reference, floors and judging run there with CuPy.
    precision None, or "tf32" for a float32 kernel whose products run on TF32 tensor cores (the floors use
              TF32 products; without it such a kernel fails float32's budgets).
    inconclusive  what a passing check does when a precision bug cannot be told from rounding at its size
              (``Report.inconclusive`` says which): "warn" (``InconclusiveWarning``), "raise"
              (``InconclusiveError``) or "ignore".
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
    choice("inconclusive", inconclusive, INCONCLUSIVE)
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
        device=check_device(device),
        precision=precision,
        draw=draw,
        **pattern_args,
    )
    given = {k: v for k, v in pattern_args.items()}
    context = case_context(arch, given, case["case"]["pattern_args"], case["case"])
    return check_case(
        case, fn, grad_fn, check_grads=check_grads, array_fn=array_fn, layout=layout, context=context, rtol=rtol,
        atol=atol, report_path=report_path, cache_dir=cache_dir, inconclusive=inconclusive,
    )  # fmt: skip


def _failed_line(failed, verdicts):
    """'(2 of 4 tensors failed; passing: ...)', the passing ones' first lines (none: no list)."""
    passing = [v.message.split("\n")[0] for v in verdicts.values() if v.ok]
    return f"({len(failed)} of {len(verdicts)} tensors failed" + (
        f"; passing: {', '.join(passing)})" if passing else ")"
    )
