"""A stand-in for CuPy made of NumPy, so that the GPU paths of minicp.testing run (and are tested) on the CPU.

``FakeCupy`` answers every attribute with NumPy's, wrapping array results in ``FakeArray`` (a NumPy subclass
with CuPy's ``get``), so that ``minicp.testing.arrays.module_of`` sees a GPU array all the way through.
The few CuPy-only pieces minicp uses (``ElementwiseKernel`` for the rounding kernels, ``cuda.runtime``,
``cuda.Device``, ``lib.stride_tricks.as_strided`` without ``writeable``) are given NumPy bodies.
"""

import types

import numpy as np

from minicp.testing import arrays, dtypes


class FakeArray(np.ndarray):
    """A NumPy array that says it lives on the fake GPU."""

    def get(self):
        return np.array(self, copy=True).view(np.ndarray)


def wrap(x):
    if isinstance(x, np.ndarray) and not isinstance(x, FakeArray):
        return x.view(FakeArray)
    if isinstance(x, tuple):
        return tuple(wrap(v) for v in x)
    return x


def unwrap(x):
    return x.view(np.ndarray) if isinstance(x, FakeArray) else x


def _kernel(in_params, out_params, body, name):
    rounding = {"minicp_round_bf16": dtypes.round_to_bfloat16, "minicp_round_tf32": arrays._round_tf32(np)}[name]
    return lambda x: wrap(rounding(unwrap(x)))


class _Device:
    def __init__(self, index):
        self.id = index

    def use(self):
        return None


class FakeCupy(types.ModuleType):
    """NumPy dressed as CuPy."""

    ndarray = FakeArray

    def __init__(self):
        super().__init__("cupy")
        self.cuda = types.SimpleNamespace(runtime=types.SimpleNamespace(getDeviceCount=lambda: 1), Device=_Device)
        self.lib = types.SimpleNamespace(stride_tricks=types.SimpleNamespace(as_strided=self._as_strided))
        self.ElementwiseKernel = _kernel

    @staticmethod
    def _as_strided(x, shape=None, strides=None):
        return wrap(np.lib.stride_tricks.as_strided(x, shape, strides, writeable=True))

    def __getattr__(self, name):
        attr = getattr(np, name)
        if callable(attr) and not isinstance(attr, type):
            return lambda *a, **k: wrap(attr(*a, **k))
        return attr


def install(monkeypatch):
    """Make ``minicp.testing`` use a ``FakeCupy`` as its CuPy; returns it."""
    fake = FakeCupy()
    monkeypatch.setitem(arrays._CUPY, "cupy", fake)
    return fake
