"""Attention steps: exact closed-form counts of attention score entries (docs/attention-steps.md).

An *attention step* is one entry of a score matrix q k^T (paper section 6: "each attention step
indicates calculation of one attention entry"). minicp counts two things:

* ``computed``: every entry of every score matrix the explicit implementation materialises, masked
  entries included (what a kernel without block skipping pays for);
* ``unmasked``: the entries that survive the mask (what a perfectly block-sparse kernel pays for).

Counts are closed forms in Python integers (exact, constant time, any n), summed over heads and
layers. The test suite checks them against the score matrices that ``minicp.nn.model.forward`` really
builds (``ops.record_scores``) and against the dense masks of ``minicp.nn.attention.patterns``.

Per head and layer (n input length, L latent, H = n - L history, p compressed, c s-Split segment,
m = s / 2 ECP half segment, N_s = n / m, g LongLoRA group, u = g / 2):

==============  ==========  ==========================  ============================================
arch            layer       computed                    unmasked
==============  ==========  ==========================  ============================================
transformer     all         n^2                         n(n+1)/2
perceiver_ar    0           L n                         L H + L(L+1)/2
perceiver_ar    >= 1        L^2                         L(L+1)/2
double          all         L n + H^2                   L H + L(L+1)/2 + H^2
compressed      0           L n + H^2                   L H + L(L+1)/2 + H^2
compressed      >= 1        L(p+L) + p^2                L p + L(L+1)/2 + p^2
s_split         all         L n + H c                   L H + L(L+1)/2 + H c
ecp             all         m(2n - m)                   n(m+1)/2 + m(n-m)
longlora        unshifted   n g                         n(g+1)/2
longlora roll   shifted     n g                         n(g+1)/2
longlora varlen shifted     n g - g^2/2                 (n/g - 1) g(g+1)/2 + u(u+1)
==============  ==========  ==========================  ============================================

ECP with ``partial=True`` (n = F m + r, 0 < r < m; the last half segment has r rows and sees the
last full half segment plus itself causally), per head and layer:

    computed  = m^2 + (F-1) 2m^2 + r(m+r)
    unmasked  = m(m+1)/2 + (F-1)(m^2 + m(m+1)/2) + r m + r(r+1)/2
    (F = 0, i.e. n < m: one causal n x n block, n^2 and n(n+1)/2.)

The Tables 7 and 8 built on these counts live in ``minicp.analysis.tables``; ``minicp.analysis.steps``
re-exports both modules. Command line: ``minicp steps --help``.
"""

from dataclasses import dataclass

from minicp.config import ARCHITECTURES, PERCEIVER_FAMILY, ModelConfig
from minicp.validate import boolean, bounded, choice, half_segment_from, positive_int

MAX_LISTED_LAYERS = 10**6  # per_layer=True returns a list of l ints

COUNTS = ("computed", "unmasked")
SHIFTS = ("varlen", "roll")


# ----------------------------------------------------------------------------------------------------
# Resolving the sizes (validation and defaults come from ModelConfig)
# ----------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Sizes:
    """The sizes one count depends on, defaults filled in and validated (``resolve`` builds it)."""

    arch: str
    n: int  # seq_len
    l: int  # layers
    h: int  # heads
    L: int  # latent
    p: int = None  # compressed (compressed only)
    c: int = None  # split (s_split only)
    m: int = None  # half segment (ecp only); the paper's segment is s = 2m
    partial: bool = False  # ecp: n need not be a multiple of m
    g: int = None  # group (longlora only)
    shift: str = None  # longlora only

    @property
    def H(self):
        return self.n - self.L

    def describe(self):
        """Short text such as ``ecp n=4096 l=48 h=24 s=256 (m=128)``."""
        parts = [self.arch, f"n={self.n}", f"l={self.l}", f"h={self.h}"]
        if self.arch in PERCEIVER_FAMILY:
            parts += [f"L={self.L}", f"H={self.H}"]
        if self.p is not None:
            parts.append(f"p={self.p}")
        if self.c is not None:
            parts.append(f"c={self.c} ({self.H // self.c} history segments)")
        if self.m is not None:
            parts.append(
                f"s={2 * self.m} (half segment m={self.m}, {-(-self.n // self.m)} blocks"
                + (", partial last" if self.n % self.m else "")
                + ")"
            )
        if self.g is not None:
            parts.append(f"g={self.g} shift={self.shift}")
        return " ".join(parts)


def _from_config(cfg):
    arch = cfg.arch
    return Sizes(
        arch=arch,
        n=cfg.seq_len,
        l=cfg.layers,
        h=cfg.heads,
        L=cfg.latent,
        p=cfg.compressed if arch == "compressed" else None,
        c=cfg.split if arch == "s_split" else None,
        m=cfg.half_segment if arch == "ecp" else None,
        partial=bool(cfg.partial_segments) if arch == "ecp" else False,
        g=cfg.group if arch == "longlora" else None,
        shift=cfg.shift if arch == "longlora" else None,
    )


def _flag(name, value):
    """``validate.boolean``, raising ValueError (as this module always has) for a value that is no bool."""
    try:
        return boolean(name, value)
    except TypeError as err:
        raise ValueError(str(err)) from None


def _refuse_sizes_with_config(**sizes):
    """A ModelConfig brings its own sizes: any size keyword away from its default is an error."""
    defaults = dict(layers=1, heads=1, shift="varlen", partial=False)
    given = [name for name, value in sizes.items() if value != defaults.get(name)]
    if given:
        raise ValueError(
            f"{', '.join(given)} must not be given together with a ModelConfig "
            f"(use config.replace({given[0]}=...) instead)"
        )


def resolve(
    arch_or_config,
    *,
    seq_len=None,
    layers=1,
    heads=1,
    latent=None,
    compressed=None,
    split=None,
    segment=None,
    half_segment=None,
    group=None,
    shift="varlen",
    partial=False,
):
    """Validate the arguments of ``count_attention_steps`` and fill in ModelConfig's defaults -> ``Sizes``.

    ECP's segment may be given as ``segment`` s (paper units, even) or ``half_segment`` m = s / 2, or
    both when they agree (``minicp.validate.half_segment_from``). Raises ValueError naming the
    offending parameter.
    """
    if isinstance(arch_or_config, ModelConfig):
        _refuse_sizes_with_config(
            seq_len=seq_len,
            layers=layers,
            heads=heads,
            latent=latent,
            compressed=compressed,
            split=split,
            segment=segment,
            half_segment=half_segment,
            group=group,
            shift=shift,
            partial=partial,
        )
        return _from_config(arch_or_config)

    arch = choice("arch", arch_or_config, ARCHITECTURES)
    if seq_len is None:
        raise ValueError("seq_len is required when the first argument is an architecture name")
    n = positive_int("seq_len", seq_len)
    layers, heads = positive_int("layers", layers), positive_int("heads", heads)
    latent, compressed, split, group = (
        None if value is None else positive_int(name, value)
        for name, value in (("latent", latent), ("compressed", compressed), ("split", split), ("group", group))
    )
    half_segment = half_segment_from(segment, half_segment, required=False)
    if latent is not None and arch not in PERCEIVER_FAMILY and latent != n:
        raise ValueError(
            f"latent applies to {', '.join(PERCEIVER_FAMILY)} only: every one of the n positions "
            f"of {arch!r} attends (got latent {latent}, seq_len {n})"
        )
    shift = choice("shift", shift, SHIFTS)
    if shift != "varlen" and arch != "longlora":
        raise ValueError(f"shift applies to arch 'longlora' only, not {arch!r}")
    if _flag("partial", partial) and arch != "ecp":
        raise ValueError(f"partial applies to arch 'ecp' only, not {arch!r}")
    try:
        cfg = ModelConfig(
            arch=arch,
            seq_len=n,
            layers=layers,
            heads=heads,
            dim=2 * heads,
            latent=latent,
            compressed=compressed,
            split=split,
            half_segment=half_segment,
            group=group,
            shift=shift,
            partial_segments=partial,
        )
    except ValueError as err:  # speak this function's language, not ModelConfig's
        raise ValueError(str(err).replace("set partial_segments=True", "pass partial=True")) from None
    return _from_config(cfg)


# ----------------------------------------------------------------------------------------------------
# Closed forms
# ----------------------------------------------------------------------------------------------------


def _tri(k):
    """Unmasked entries of a causal k x k block: k(k+1)/2."""
    return k * (k + 1) // 2


def _ecp_per_head(n, m, computed):
    """ECP, one head and layer: ATTN m x m, PAR m x 2m per later half segment, a partial last r x (m + r)."""
    full, r = divmod(n, m)
    if full == 0:  # shorter than one half segment: plain causal
        return n * n if computed else _tri(n)
    if computed:
        return m * m + (full - 1) * 2 * m * m + r * (m + r)
    return _tri(m) + (full - 1) * (m * m + _tri(m)) + r * m + _tri(r)


def _longlora_per_layer(z, computed):
    """LongLoRA, all heads of one layer: heads 0 .. h//2 - 1 unshifted (n/g groups), heads h//2 .. h - 1 shifted."""
    n, g, u = z.n, z.g, z.g // 2
    unshifted = n * g if computed else n * (g + 1) // 2
    if z.shift == "roll":
        shifted = unshifted
    else:  # groups [0,u), (n/g - 1) full groups, [n-u, n)
        shifted = n * g - g * g // 2 if computed else (n // g - 1) * _tri(g) + 2 * _tri(u)
    return (z.h // 2) * unshifted + (z.h - z.h // 2) * shifted  # heads h//2 onwards are shifted


def layer_counts(z, count):
    """(first layer, every later layer) entries, summed over the h heads, as exact ints."""
    n, L, H, h = z.n, z.L, z.H, z.h
    computed = count == "computed"
    arch = z.arch
    if arch == "transformer":
        first = rest = n * n if computed else _tri(n)
    elif arch == "perceiver_ar":
        first = L * n if computed else L * H + _tri(L)
        rest = L * L if computed else _tri(L)
    elif arch == "double":
        first = rest = L * n + H * H if computed else L * H + _tri(L) + H * H
    elif arch == "compressed":
        p = z.p
        first = L * n + H * H if computed else L * H + _tri(L) + H * H
        rest = L * (p + L) + p * p if computed else L * p + _tri(L) + p * p
    elif arch == "s_split":
        first = rest = L * n + H * z.c if computed else L * H + _tri(L) + H * z.c
    elif arch == "ecp":
        first = rest = _ecp_per_head(n, z.m, computed)
    elif arch == "longlora":
        per_layer = _longlora_per_layer(z, computed)
        return per_layer, per_layer
    else:
        raise AssertionError(arch)
    return h * first, h * rest


def count_attention_steps(
    arch_or_config,
    *,
    seq_len=None,
    layers=1,
    heads=1,
    latent=None,
    compressed=None,
    split=None,
    segment=None,
    half_segment=None,
    group=None,
    shift="varlen",
    count="computed",
    per_layer=False,
    partial=False,
):
    """Exact number of attention score entries of a whole model (all heads, all layers).

    ``arch_or_config``: an architecture name (one of ``minicp.ARCHITECTURES``) with the sizes as keywords,
    or a ``ModelConfig`` (then give no sizes: its own are used). Sizes and defaults are ModelConfig's:

    * ``seq_len`` n (required with a name), ``layers`` l, ``heads`` h;
    * ``latent`` L (PerceiverAR family; default n / 2), ``compressed`` p (default n // 4, at most H),
      ``split`` c (s-Split history segment, must divide H = n - L; default H / 2);
    * ECP: ``segment`` s in paper units or ``half_segment`` m = s / 2 (the official code's block;
      default m = n // 8; both may be given if s = 2m); n must be a multiple of m unless ``partial=True``;
    * LongLoRA: ``group`` g (even, divides n; default n / 4), ``shift`` "varlen" (default, no leak) or
      "roll" (official wrap-around); heads h//2 .. h-1 are shifted (LongLoRA's ``num_heads//2:``).

    ``count``: "computed" (entries of every materialised score matrix, masked ones included) or
    "unmasked" (entries that survive the mask). ``per_layer=True`` returns a list of l ints (all heads
    of each layer) instead of the total. Constant time for the total; every bad combination raises
    ValueError naming the parameter.

    >>> count_attention_steps("ecp", seq_len=4096, layers=48, heads=24, segment=256)
    1189085184
    """
    count = choice("count", count, COUNTS)
    per_layer = _flag("per_layer", per_layer)
    z = resolve(
        arch_or_config,
        seq_len=seq_len,
        layers=layers,
        heads=heads,
        latent=latent,
        compressed=compressed,
        split=split,
        segment=segment,
        half_segment=half_segment,
        group=group,
        shift=shift,
        partial=partial,
    )
    first, rest = layer_counts(z, count)
    if per_layer:
        bounded(
            "layers",
            z.l,
            what="per-layer list entries",
            limit_name=f"{__name__}.MAX_LISTED_LAYERS",
            advice="use per_layer=False",
        )
        return [first] + [rest] * (z.l - 1)
    return first + (z.l - 1) * rest


def full_attention_steps(seq_len, layers=1, heads=1, count="computed"):
    """The yardstick: a causal Transformer of the same n, l, h (computed l h n^2)."""
    return count_attention_steps("transformer", seq_len=seq_len, layers=layers, heads=heads, count=count)
