"""Head-level attention of every architecture, by name.

Each architecture lives in its own module (``minicp.nn.attention.<arch>``) and provides:

* ``pattern(n, **pattern_args)`` -> ``Pattern``: the blocks it computes (``head_patterns(n, heads, ...)``
  instead when heads differ, as in LongLoRA's shifted heads);
* ``attention(q, k, v, **pattern_args, scale=None)``: the explicit, efficient computation;
* ``attention_layer(params, x, cfg, layer)`` and ``skip(x, cfg, layer)``: the official sub-layer;
* ``param_spec(cfg, layer)`` and ``pattern_kwargs(cfg, layer)``: what the model needs to build it.

This module dispatches on the name, for people who want ``minicp.attention("ecp", q, k, v, ...)``.
"""

import inspect

import numpy as onp
from autograd.tracer import getval

from minicp import backend as B
from minicp.config import ARCHITECTURES
from minicp.nn import budget
from minicp.nn.attention import compressed, double, ecp, longlora, perceiver_ar, s_split, transformer
from minicp.validate import (
    boolean,
    bounded,
    choice,
    finite_array,
    half_segment_from,
    nonnegative_int,
    positive_int,
    real,
)

MAX_POSITIONS = 2**20  # patterns are Python lists of blocks; n beyond this is a typo, not a plan
_POSITIONS = f"{__name__}.MAX_POSITIONS"  # read at every call (bounded), so assigning it raises the bound
SHIFTS = ("varlen", "roll")

MODULES = {
    "transformer": transformer,
    "perceiver_ar": perceiver_ar,
    "double": double,
    "compressed": compressed,
    "s_split": s_split,
    "ecp": ecp,
    "longlora": longlora,
}
assert tuple(MODULES) == ARCHITECTURES


def module(arch):
    """The module implementing ``arch`` (ValueError for an unknown name)."""
    if arch not in ARCHITECTURES:
        raise ValueError(f"arch {arch!r} is not one of {ARCHITECTURES}")
    return MODULES[arch]


def pattern_args_for(arch):
    """(required, optional) keyword names of ``arch``'s pattern arguments, e.g. ecp ->
    (('half_segment',), ('partial',)). ECP also accepts ``segment`` s = 2 * half_segment everywhere."""
    mod = module(arch)
    fn = mod.head_patterns if hasattr(mod, "head_patterns") else mod.pattern
    required, optional = [], []
    for p in inspect.signature(fn).parameters.values():
        if p.kind is p.KEYWORD_ONLY:
            (required if p.default is p.empty else optional).append(p.name)
    return tuple(required), tuple(optional)


def resolve_pattern_args(arch, pattern_args):
    """``pattern_args`` checked against ``arch``: ECP's segment in either spelling (``segment`` s in paper
    units or ``half_segment`` m = s / 2, one clear error when they disagree) becomes ``half_segment``;
    unknown and missing names are a ValueError that lists what the architecture takes."""
    required, optional = pattern_args_for(arch)
    args = dict(pattern_args)
    if "half_segment" in required + optional and ("segment" in args or "half_segment" in args):
        args["half_segment"] = half_segment_from(args.pop("segment", None), args.pop("half_segment", None))
    unknown = sorted(set(args) - set(required) - set(optional), key=str)
    if unknown:
        raise ValueError(
            f"unknown pattern argument(s) {unknown} for arch {arch!r}; it takes {list(required) + list(optional)}"
        )
    missing = [a for a in required if a not in args]
    if missing:
        hint = " (or segment = 2 * half_segment)" if missing == ["half_segment"] else ""
        raise ValueError(f"arch {arch!r} needs the pattern argument(s) {missing}{hint}")
    return {name: _typed(name, value) for name, value in args.items()}


def _typed(name, value):
    """One pattern argument in canonical form: bools stay bools ("no" is not False), sizes are ints."""
    if name == "partial":
        return boolean(name, value)
    if name == "shift":
        return choice(name, value, SHIFTS)
    if name == "layer":
        return nonnegative_int(name, value)
    return positive_int(name, value)


def _check_array(name, a):
    """A NumPy or CuPy array (torch tensors and lists are not accepted: convert with ``minicp.to_numpy``), finite
    where it is floating point (the shape and dtype rules are the architecture module's)."""
    a = getval(a)
    dtype = getattr(a, "dtype", None)
    if not isinstance(dtype, onp.dtype) or not hasattr(a, "ndim"):
        raise TypeError(
            f"{name} must be a NumPy (or CuPy) array, got {type(a).__module__}.{type(a).__name__}; "
            f"convert it with minicp.to_numpy"
        )
    if a.ndim == 4 and 0 in a.shape:
        raise ValueError(f"{name} of shape {tuple(a.shape)} (batch, heads, seq_len, head_dim) has an empty axis")
    if dtype.name == "float16":
        raise ValueError(
            f"{name} is float16: the reference computes in its inputs' dtype, and float16 scores q k^T overflow "
            f"(above 65504) where production kernels keep the softmax in float32; pass float32 or float64 arrays "
            f"(q.astype(np.float32)) and round the result to float16 if you need it. minicp.testing judges float16 "
            f"kernels against a float64 reference"
        )
    if dtype.kind == "f":
        finite_array(name, a, B.xp if type(a).__module__.startswith("cupy") else onp)


def attention(arch, q, k, v, *, scale=None, **pattern_args):
    """Head-level attention of one layer: q, k, v (b, h, n, d) -> (b, h, rows, d).

    ``rows`` are the query rows the architecture computes (all n, except PerceiverAR's first layer,
    which computes the L latent rows). ``scale`` multiplies q (default d^-0.5). Pattern arguments are
    the architecture's own, e.g. ``half_segment=128`` (or ``segment=256``) for ECP or ``latent=512``
    for PerceiverAR.
    """
    budget.check_attention(arch, q, pattern_args)  # the score matrices within MAX_ACTIVATION_BYTES
    mod = module(arch)
    args = resolve_pattern_args(arch, pattern_args)
    if scale is not None:
        scale = real("scale", scale)
    for name, a in (("q", q), ("k", k), ("v", v)):
        _check_array(name, a)
    return budget.finite_output("attention output", mod.attention(q, k, v, scale=scale, **args))


def patterns(arch, n, heads=1, **pattern_args):
    """One ``Pattern`` per head (a list of length ``heads``)."""
    mod = module(arch)
    n, heads = positive_int("n", n), positive_int("heads", heads)
    bounded("n", n, what="positions", limit_name=_POSITIONS, advice="use a shorter sequence")
    bounded(
        "heads", n * heads, what="query rows over all heads", limit_name=_POSITIONS, factor=16, advice="use fewer heads"
    )
    pattern_args = resolve_pattern_args(arch, pattern_args)
    try:
        if hasattr(mod, "head_patterns"):
            return mod.head_patterns(n, heads, **pattern_args)
        return [mod.pattern(n, **pattern_args)] * heads
    except TypeError as e:  # a wrongly typed argument deep inside
        raise ValueError(f"invalid pattern arguments {pattern_args} for arch {arch!r}: {e}") from e


def pattern(arch, n, **pattern_args):
    """The single ``Pattern`` of an architecture whose heads all share one (ValueError otherwise)."""
    mod = module(arch)
    if not hasattr(mod, "pattern"):
        raise ValueError(f"arch {arch!r} has different patterns per head; use patterns(arch, n, heads, ...)")
    return patterns(arch, n, 1, **pattern_args)[0]


def attention_mask(arch, n, heads=None, **pattern_args):
    """Dense boolean mask, True = query row i may attend to key j.

    (n, n) for architectures whose heads share one pattern; (heads, n, n) when ``heads`` is given
    (required for LongLoRA, whose shifted heads differ). Rows that are not computed are all False.
    """
    size = positive_int("n", n) ** 2 * (1 if heads is None else positive_int("heads", heads))
    bounded("attention_mask", size, what="mask entries (heads x n x n)", advice="use a shorter sequence or fewer heads")
    if heads is None:
        return pattern(arch, n, **pattern_args).mask()
    return onp.stack([p.mask() for p in patterns(arch, n, heads, **pattern_args)])
