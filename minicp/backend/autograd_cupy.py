"""autograd on CuPy arrays: boxes, a vector space, and an array module that traces.

autograd knows NumPy arrays only. Three registrations make ``autograd.grad`` run on the GPU:

* ``ArrayBox.register(cupy.ndarray)``: a traced CuPy array is boxed like a NumPy one, so ``+``, ``*``,
  slicing and ``.reshape`` on it record the tape (autograd's primitives call NumPy's functions, and NumPy
  hands CuPy arrays to CuPy through ``__array_function__`` / ``__array_ufunc__``);
* ``VSpace.register(cupy.ndarray, CupyVSpace)``: zeros, ones and inner products of gradients are CuPy
  arrays on the device, so nothing is ever copied to the host;
* ``TracingModule(cupy)``: the array module ``backend.xp`` on the GPU. A call whose arguments hold a box
  goes through ``autograd.numpy`` (recorded); any other call goes straight to CuPy (no overhead).

The heavy operations (linear, LayerNorm, GELU, RoPE, embedding, cross-entropy, attention) are autograd
primitives with hand-written VJPs written against the backend's array module (``minicp.nn.fused``,
``minicp.nn.ops.attend``), so their backward passes are CuPy kernels too.
"""

import autograd.numpy as anp
import numpy as onp
from autograd.extend import Box, VSpace
from autograd.numpy.numpy_boxes import ArrayBox
from autograd.numpy.numpy_vspaces import ArrayVSpace

_installed = set()


class CupyVSpace(ArrayVSpace):
    """The vector space of a CuPy array: same shape and dtype, zeros and ones on the device."""

    cupy = None  # set by install()

    def __init__(self, value):
        self.shape = tuple(value.shape)
        self.dtype = onp.dtype(value.dtype)

    def zeros(self):
        return self.cupy.zeros(self.shape, dtype=self.dtype)

    def ones(self):
        return self.cupy.ones(self.shape, dtype=self.dtype)

    def standard_basis(self):
        for idx in onp.ndindex(*self.shape):
            vect = self.zeros()
            vect[idx] = 1
            yield vect

    def randn(self):
        return self.cupy.asarray(onp.random.randn(*self.shape).astype(self.dtype))

    def _inner_prod(self, x, y):
        return float(self.cupy.vdot(x.ravel(), y.ravel()).real)


def _holds_box(args, kwargs):
    for a in args:
        if isinstance(a, Box):
            return True
        if isinstance(a, (list, tuple)) and any(isinstance(e, Box) for e in a):
            return True
    return any(isinstance(v, Box) for v in kwargs.values())


class TracingModule:
    """``cupy`` for plain arrays, ``autograd.numpy`` for calls that hold an autograd box."""

    def __init__(self, cupy):
        self._cupy = cupy
        self.__name__ = "minicp.backend.autograd_cupy(cupy)"

    def __getattr__(self, name):
        plain = getattr(self._cupy, name)
        traced = getattr(anp, name, None)
        if traced is None or not callable(plain) or isinstance(plain, type):
            value = plain
        else:

            def value(*args, **kwargs):
                return traced(*args, **kwargs) if _holds_box(args, kwargs) else plain(*args, **kwargs)

            value.__name__ = name
        setattr(self, name, value)  # cache: the next lookup is a plain attribute
        return value


def install(cupy):
    """Register CuPy arrays with autograd (once per process) and return the tracing array module."""
    if "cupy" not in _installed:
        CupyVSpace.cupy = cupy
        ArrayBox.register(cupy.ndarray)
        VSpace.register(cupy.ndarray, CupyVSpace)
        _installed.add("cupy")
    return TracingModule(cupy)
