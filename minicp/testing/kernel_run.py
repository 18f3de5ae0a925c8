"""Running a kernel on a case: its inputs handed over (host copies, ``array_fn``, or GPU copies), its results
read back in the case's array module (NumPy, or CuPy through DLPack), and a host case moved to the GPU that
the kernel's results live on."""

from minicp.testing.arrays import cupy_module, is_numpy, module_of
from minicp.testing.convert import aligned_copy, to_numpy_any
from minicp.testing.device import device_array, device_module, on_gpu
from minicp.testing.dtypes import dtype_name
from minicp.testing.guards import digests
from minicp.testing.reference import INPUTS, forget_case

__all__ = ["run_kernel", "results_in", "gpu_of", "on_device"]

GRADS = ("dq", "dk", "dv")


def _grads_tuple(grads):
    """(out or None, (dq, dk, dv)) from what ``grad_fn`` returned: (dq, dk, dv) or (out, dq, dk, dv)."""
    if not isinstance(grads, (tuple, list)) or len(grads) not in (3, 4):
        raise ValueError(
            f"grad_fn must return (dq, dk, dv) or (out, dq, dk, dv), got {type(grads).__name__}"
            + (f" of length {len(grads)}" if isinstance(grads, (tuple, list)) else "")
        )
    return (grads[0], tuple(grads[1:])) if len(grads) == 4 else (None, tuple(grads))


def run_kernel(fn, grad_fn, case, *, check_grads, array_fn=None, layout="bhnd"):
    """Call ``fn`` (and ``grad_fn``) on the case's inputs; returns (name -> the kernel's own result, actual
    dtypes). ``results`` converts them.

    A ``grad_fn`` returning (out, dq, dk, dv) gives the output of its own forward, and ``fn`` is not called:
    the kernel runs once (forward + backward). On the host the kernel gets aligned copies, or ``array_fn`` of
    the case's own arrays, whose sha256 digests must be unchanged after the call; on a GPU it gets copies
    (cheap there), which must equal the case's arrays after the call."""
    __tracebackhide__ = True
    xp = module_of(case["q"])
    host = is_numpy(xp)
    keys = ("q", "k", "v") + (("dout",) if check_grads else ())
    handed = {}

    def prepare(key):  # the kernel's own copy, or array_fn of the (contiguous) case array
        a = xp.swapaxes(case[key], 1, 2) if layout == "bnhd" else case[key]
        if not host:
            handed[key] = a = xp.ascontiguousarray(a).copy()
            return a if array_fn is None else array_fn(a)
        return aligned_copy(a) if array_fn is None else array_fn(a if a.flags.c_contiguous else aligned_copy(a))

    shared = host and array_fn is not None  # array_fn may wrap the case's own memory (torch.from_numpy does)
    before = digests(case, keys) if shared else {}
    inputs = [prepare(key) for key in ("q", "k", "v")]
    raw, grads = None, None
    if check_grads:
        raw, grads = _grads_tuple(grad_fn(*inputs, prepare("dout")))
    raw = fn(*inputs) if raw is None else raw
    if host:
        after = digests(case, keys) if shared else {}
        changed = [key for key in before if after[key] != before[key]]
    else:
        swap = (lambda a: xp.swapaxes(a, 1, 2)) if layout == "bnhd" else (lambda a: a)
        changed = [key for key in handed if not bool(xp.array_equal(swap(handed[key]), case[key]))]
    if changed:
        forget_case(case)  # the cached inputs are no longer the draw
        raise ValueError(
            f"the kernel changed its input(s) {', '.join(changed)} in place; a checked kernel must leave q, k, v "
            "and dout as given (they are the seeded inputs the reference is computed from)"
        )
    results = dict({"out": raw}, **dict(zip(GRADS, grads or ())))
    return results, {key: dtype_name(x) for key, x in results.items()}


def results_in(results, case, layout):
    """The kernel's results as arrays of the case's module (NumPy, or CuPy through DLPack) in (b, h, ., d)
    order; a dense-mask kernel's output of every row cut to the computed ones."""
    xp = module_of(case["q"])
    convert = to_numpy_any if is_numpy(xp) else (lambda x: device_array(x, xp))
    swap = (lambda a: xp.swapaxes(a, 1, 2)) if layout == "bnhd" else (lambda a: a)
    rows, n = case["rows"], case["case"]["seq_len"]
    out = {}
    for key, x in results.items():
        a = swap(convert(x))
        if key == "out" and a.ndim == 4 and a.shape[2] == n and len(rows) != n:
            a = a[:, :, rows if is_numpy(xp) else xp.asarray(rows)]  # a dense-mask kernel returned every row
        out[key] = a
    return out


def gpu_of(results):
    """ "cuda:<index>" of the first result on a GPU that CuPy can read, or None."""
    for x in results.values():
        if on_gpu(x):
            try:
                cupy_module()
            except RuntimeError:
                return None
            dev = getattr(x, "device", None)
            index = getattr(dev, "index", None) if not isinstance(dev, int) else dev
            index = getattr(dev, "id", index)
            return f"cuda:{int(index or 0)}"
    return None


def on_device(case, device):
    """A host case moved to ``device``, as ``shared_inputs`` would draw it there: its inputs copied, its block
    plan kept, and a reference it may already hold left behind (``shared_complete`` computes one on the device,
    a case of its own in the in-process cache). The case itself when it is there already."""
    if case["case"].get("device") == device:
        return case
    xp = device_module(device)
    moved = {key: xp.asarray(case[key]) for key in INPUTS}
    return dict(moved, rows=case["rows"], plan=case["plan"], case=dict(case["case"], device=device))
