"""autograd on CuPy arrays: boxes, a vector space, and an array module that traces.

autograd knows NumPy arrays only. Three registrations make ``autograd.grad`` run on the GPU:

* ``ArrayBox.register(cupy.ndarray)``: a traced CuPy array is boxed like a NumPy one, so ``+``, ``*``,
  slicing and ``.reshape`` on it record the tape (autograd's primitives call NumPy's functions, and NumPy
  hands CuPy arrays to CuPy through ``__array_function__`` / ``__array_ufunc__``);
* ``VSpace.register(cupy.ndarray, CupyVSpace)``: zeros, ones and inner products of gradients are CuPy
  arrays on the device, so nothing is ever copied to the host;
* ``TracingModule(cupy)``: the array module ``backend.xp`` on the GPU. A call whose arguments hold a box
  goes through ``autograd.numpy`` (recorded); any other call goes straight to CuPy (no overhead).

autograd's own wrappers and VJPs assume NumPy in a few places, which ``install`` mends for CuPy values
only (NumPy values keep autograd's own code, so the CPU path is untouched):

* ``concatenate`` and ``stack``: autograd's versions end in ``.view(numpy.ndarray)`` / ``numpy.array``;
  here they are one primitive over ``cupy.concatenate`` whose VJP slices the gradient;
* the VJPs of ``sum``/``max``-style reductions add ``numpy.zeros`` to the gradient, ``where`` builds
  ``numpy.zeros``, ``reshape``/``ravel`` pass ``order=None`` (CuPy refuses it), and indexing scatters
  with ``numpy.add.at``: each gets a CuPy-safe VJP, chosen when the value is a CuPy array;
* ``special.erf`` (readable GELU): a primitive over ``cupyx.scipy.special.erf``.

The reference (``minicp.nn``) then runs on the GPU as it is, autograd's own VJPs and ``ops.attend``'s
computing with CuPy. The fast engine's primitives (``minicp.fast``) have hand-written VJPs written against
the backend's plain array module, so their backward passes are CuPy kernels too.
"""

import math

import autograd.numpy as anp
import numpy as onp
from autograd import core
from autograd.extend import Box, SparseObject, VSpace, defvjp, defvjp_argnum, primitive
from autograd.numpy import numpy_vjps
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


_vspaces = {}


def _cached_vspace(value):
    """The vector space of ``value``, one object per (shape, dtype): autograd asks for it thousands of
    times per backward pass, and the object only holds the shape and the dtype."""
    key = (tuple(value.shape), value.dtype)
    vs = _vspaces.get(key)
    if vs is None:
        vs = _vspaces[key] = CupyVSpace(value)
    return vs


def _holds_box(args, kwargs):
    for a in args:
        if isinstance(a, Box):
            return True
        if isinstance(a, (list, tuple)) and any(isinstance(e, Box) for e in a):
            return True
    return any(isinstance(v, Box) for v in kwargs.values())


# ----------------------------------------------------------------------------------------------------
# CuPy-safe replacements for the NumPy-only parts of autograd
# ----------------------------------------------------------------------------------------------------

_cp = None  # the cupy module, set by install()


@primitive
def concatenate_args(axis, *arrays):
    """cupy.concatenate(arrays, axis) as an autograd primitive (arrays are positional: each can be a box)."""
    return _cp.concatenate(arrays, axis)


def _concatenate_vjp(argnum, ans, args, kwargs):
    axis, arrays = args[0] % ans.ndim, args[1:]
    sizes = [a.shape[axis] for a in arrays]
    start = sum(sizes[: argnum - 1])
    index = (slice(None),) * axis + (slice(start, start + sizes[argnum - 1]),)
    return lambda g: g[index]


defvjp_argnum(concatenate_args, _concatenate_vjp)


def concatenate(arrays, axis=0):
    return concatenate_args(axis, *arrays)


def stack(arrays, axis=0):
    arrays = list(arrays)
    ndim = len(arrays[0].shape) + 1
    axis = axis % ndim
    expand = (slice(None),) * axis + (None,)
    return concatenate_args(axis, *[a[expand] for a in arrays])


@primitive
def erf(x):
    return _special.erf(x)


_special = None  # cupyx.scipy.special, set by install()
defvjp(erf, lambda ans, x: lambda g: g * (2.0 / math.sqrt(math.pi)) * _cp.exp(-x * x))


def _repeat_to_match_shape(g, shape, dtype, axis, keepdims):
    """autograd's helper for reduction VJPs, without its ``+ numpy.zeros(shape)`` for CuPy gradients."""
    if not isinstance(g, _cp.ndarray):
        return _numpy_repeat(g, shape, dtype, axis, keepdims)
    if shape == ():
        return g, 1
    axes = range(len(shape)) if axis is None else [axis] if onp.ndim(axis) == 0 else list(axis)
    axes = [a % len(shape) for a in axes]
    kept = tuple(1 if i in axes else s for i, s in enumerate(shape))
    reps = int(onp.prod([shape[a] for a in axes]))
    return _cp.reshape(g, kept) + _cp.zeros(shape, dtype=dtype), reps


_numpy_repeat = numpy_vjps.repeat_to_match_shape


def _reshape_back(x, order):
    shape = anp.shape(x)
    return lambda g: anp.reshape(g, shape) if order is None else anp.reshape(g, shape, order=order)


def _untake(x, idx, vs):
    """The gradient of ``A[idx]``: ``x`` added at ``idx`` into zeros, lazily (autograd's sparse object)."""

    def mut_add(A):
        _cp.add.at(A, idx, x)
        return A

    return SparseObject(vs, mut_add)


def _for_cupy_values(fun, *vjpmakers):
    """Give ``fun`` the VJPs ``vjpmakers`` when its value is a CuPy array; NumPy values keep the old ones."""
    old = core.primitive_vjps[fun]
    defvjp(fun, *vjpmakers)
    new = core.primitive_vjps[fun]

    def vjp_argnums(argnums, ans, args, kwargs):
        return (new if isinstance(ans, _cp.ndarray) else old)(argnums, ans, args, kwargs)

    core.primitive_vjps[fun] = vjp_argnums


def _mend_autograd():
    numpy_vjps.repeat_to_match_shape = _repeat_to_match_shape  # looked up at call time by the reductions' VJPs
    _for_cupy_values(anp.reshape, lambda ans, x, shape, order=None: _reshape_back(x, order))
    _for_cupy_values(anp.ravel, lambda ans, x, order=None: _reshape_back(x, order))
    _for_cupy_values(
        getattr(anp, "_original_where", anp.where),  # anp.where is a plain wrapper of this primitive
        None,
        lambda ans, c, x=None, y=None: lambda g: _cp.where(c, g, _cp.zeros_like(g)),
        lambda ans, c, x=None, y=None: lambda g: _cp.where(c, _cp.zeros_like(g), g),
    )
    getitem = ArrayBox.__getitem__.__func__ if hasattr(ArrayBox.__getitem__, "__func__") else ArrayBox.__getitem__
    _for_cupy_values(getitem, lambda ans, A, idx: lambda g: _untake(g, idx, CupyVSpace(A)))


class TracingModule:
    """``cupy`` for plain arrays, ``autograd.numpy`` for calls that hold an autograd box."""

    def __init__(self, cupy):
        self._cupy = cupy
        self.__name__ = "minicp.backend.autograd_cupy(cupy)"

    _own = {"concatenate": concatenate, "stack": stack}  # autograd's versions are NumPy-only

    def __getattr__(self, name):
        plain = getattr(self._cupy, name)
        traced = self._own.get(name) or getattr(anp, name, None)
        if traced is None or not callable(plain) or isinstance(plain, type):
            value = plain
        else:

            def value(*args, **kwargs):
                return traced(*args, **kwargs) if _holds_box(args, kwargs) else plain(*args, **kwargs)

            value.__name__ = name
        setattr(self, name, value)  # cache: the next lookup is a plain attribute
        return value


class TracingSpecial:
    """``cupyx.scipy.special`` for plain arrays; ``erf`` of a box is the primitive above."""

    def __init__(self, special):
        self._special = special

    def erf(self, x, out=None):
        if isinstance(x, Box):
            return erf(x)
        return self._special.erf(x) if out is None else self._special.erf(x, out=out)

    def __getattr__(self, name):
        return getattr(self._special, name)


def install(cupy, special):
    """Register CuPy arrays with autograd (once per process); return the tracing array and special modules."""
    global _cp, _special
    if "cupy" not in _installed:
        _cp, _special = cupy, special
        CupyVSpace.cupy = cupy
        ArrayBox.register(cupy.ndarray)
        VSpace.register(cupy.ndarray, _cached_vspace)
        _mend_autograd()
        _installed.add("cupy")
    return TracingModule(cupy), TracingSpecial(special)
