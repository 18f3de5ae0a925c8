"""``to_numpy_any``: the name kernel authors use for ``minicp.backend.to_numpy``, the project's one host
converter (NumPy, autograd boxes, CuPy, PyTorch, JAX, ``__dlpack__``, ``__array__``; bfloat16 -> float32)."""

from minicp.backend import to_numpy as to_numpy_any

__all__ = ["to_numpy_any"]
