"""Head-level attention of every architecture, by name.

Each architecture lives in its own module (``minicp.nn.attention.<arch>``) and provides:

* ``pattern(n, **pattern_args)`` -> ``Pattern``: the blocks it computes (``head_patterns(n, heads, ...)``
  instead when heads differ, as in LongLoRA's shifted heads);
* ``attention(q, k, v, **pattern_args, scale=None)``: the explicit, efficient computation;
* ``attention_layer(params, x, cfg, layer)`` and ``skip(x, cfg, layer)``: the official sub-layer;
* ``param_spec(cfg, layer)`` and ``pattern_kwargs(cfg, layer)``: what the model needs to build it.

This module dispatches on the name, for people who want ``minicp.attention("ecp", q, k, v, ...)``.
"""

import numpy as onp

from minicp.config import ARCHITECTURES
from minicp.nn.attention import compressed, double, ecp, longlora, perceiver_ar, s_split, transformer

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


def attention(arch, q, k, v, *, scale=None, **pattern_args):
    """Head-level attention of one layer: q, k, v (b, h, n, d) -> (b, h, rows, d).

    ``rows`` are the query rows the architecture computes (all n, except PerceiverAR's first layer,
    which computes the L latent rows). ``scale`` multiplies q (default d^-0.5). Pattern arguments are
    the architecture's own, e.g. ``half_segment=128`` for ECP or ``latent=512`` for PerceiverAR.
    """
    return module(arch).attention(q, k, v, scale=scale, **pattern_args)


def patterns(arch, n, heads=1, **pattern_args):
    """One ``Pattern`` per head (a list of length ``heads``)."""
    mod = module(arch)
    if hasattr(mod, "head_patterns"):
        return mod.head_patterns(n, heads, **pattern_args)
    return [mod.pattern(n, **pattern_args)] * heads


def pattern(arch, n, **pattern_args):
    """The single ``Pattern`` of an architecture whose heads all share one (ValueError otherwise)."""
    mod = module(arch)
    if not hasattr(mod, "pattern"):
        raise ValueError(f"arch {arch!r} has different patterns per head; use patterns(arch, n, heads, ...)")
    return mod.pattern(n, **pattern_args)


def attention_mask(arch, n, heads=None, **pattern_args):
    """Dense boolean mask, True = query row i may attend to key j.

    (n, n) for architectures whose heads share one pattern; (heads, n, n) when ``heads`` is given
    (required for LongLoRA, whose shifted heads differ). Rows that are not computed are all False.
    """
    if heads is None:
        return pattern(arch, n, **pattern_args).mask()
    return onp.stack([p.mask() for p in patterns(arch, n, heads, **pattern_args)])
