"""PyTorch adapters for ``assert_matches_reference`` / ``assert_matches_golden`` (imports torch).

    import minicp.testing as mt
    from minicp.testing import torch as mtt
    mt.assert_matches_reference(my_attn, "ecp", seq_len=1024, heads=8, head_dim=64, segment=256,
                                dtype="bfloat16", check_grads=True, **mtt.adapters(my_attn, "bfloat16"))

``arrays`` converts the NumPy inputs (exact for bfloat16), ``grad_fn`` turns a differentiable kernel into
``(q, k, v, dout) -> (dq, dk, dv)``; ``adapters`` gives both as keyword arguments. Layouts are handled by
``assert_matches_reference(layout="bnhd")``: the adapters never transpose.
"""

import numpy as onp
import torch

from minicp.testing.arrays import is_numpy, module_of
from minicp.testing.dtypes import check_dtype

__all__ = ["TORCH_DTYPES", "torch_dtype", "arrays", "grad_fn", "adapters", "module_device"]

TORCH_DTYPES = {
    "float64": torch.float64,
    "float32": torch.float32,
    "bfloat16": torch.bfloat16,
    "float16": torch.float16,
}


def torch_dtype(dtype):
    """torch dtype of a minicp dtype name (or a torch dtype)."""
    return dtype if isinstance(dtype, torch.dtype) else TORCH_DTYPES[check_dtype(dtype)]


def arrays(dtype="float32", device="cpu"):
    """``array_fn``: a NumPy array, or a CuPy array of a GPU check (read through DLPack, no copy), -> torch
    tensor of ``dtype`` on ``device`` (bfloat16 inputs convert exactly)."""
    tdt = torch_dtype(dtype)

    def convert(a):
        host = is_numpy(module_of(a))
        t = torch.from_numpy(onp.asarray(a)) if host else torch.from_dlpack(a)
        return t.to(device=device if host else t.device, dtype=tdt)

    return convert


def grad_fn(fn, rows=None, with_out=False):
    """``grad_fn(q, k, v, dout) -> (dq, dk, dv)`` for a differentiable torch ``fn(q, k, v)``.

    ``rows``: for a kernel returning all n rows where the architecture computes fewer (PerceiverAR's first
    layer), the computed rows that dout belongs to (``minicp.analysis.kernel_pattern.rows``).
    ``with_out``: return (out, dq, dk, dv), the output of the same forward, so that a check runs the
    kernel once."""

    def grads(q, k, v, dout):
        q, k, v = (t.detach().requires_grad_(True) for t in (q, k, v))
        out = fn(q, k, v)
        if rows is not None:
            out = out[:, :, torch.as_tensor(rows)]
        g = torch.autograd.grad(out, (q, k, v), grad_outputs=dout)
        return (out.detach(), *g) if with_out else g

    return grads


def module_device(fn):
    """The device of a torch ``nn.Module``'s first parameter or buffer ("cuda:0", "cpu"), or None."""
    for tensors in (getattr(fn, "parameters", None), getattr(fn, "buffers", None)):
        if callable(tensors):
            for t in tensors():
                return str(t.device)
    return None


def adapters(fn, dtype="float32", device=None, rows=None):
    """dict(array_fn=..., grad_fn=..., device=...) for ``assert_matches_reference(fn, ..., **adapters(fn,
    dtype))``; the grad_fn returns the output of its forward too, so that the kernel runs once per check.

    ``device``: where the kernel runs ("cpu", "cuda", "cuda:1"); None takes the device of ``fn``'s parameters
    when it is an ``nn.Module``, else the CPU. On a GPU the check runs there too: the inputs are drawn on it
    and handed over through DLPack, and the reference is computed there (``minicp.testing.device``)."""
    device = device if device is not None else module_device(fn) or "cpu"
    check_device = None if torch.device(device).type == "cpu" else str(torch.device(device))
    return {"array_fn": arrays(dtype, device), "grad_fn": grad_fn(fn, rows, with_out=True), "device": check_device}
