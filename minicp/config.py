"""ModelConfig: one frozen, validated description of a model, plus the paper's configurations.

Names (the paper and the official code disagree on "segment", so minicp never says it loosely):

=============  ======================================================================================
``seq_len``    n, tokens the model reads (``sequence_len`` in the official code)
``latent``     L, the trained (latent) positions: the last L of the stream. ECP/full/S2 default L = n
``history``    H = n - L (derived)
``compressed`` p, Compressed Double Attention's compressed history length
``split``      c, s-Split's history segment length (official ``num_segments`` = H / c)
``segment``    s, ECP's segment **in paper units**; ``half_segment`` m = s / 2 is the official code's
               block, and its ``num_segments`` N_s = n / m = 2n / s
``group``      g, LongLoRA S2-Attn group size (official: n / 4); shifted heads move by g / 2
=============  ======================================================================================

Departures from the official code are explicit fields (``None`` means "what the official code does
for this architecture"): ``separate_kv``, ``kv_layernorm``, ``rope_all_layers``, ``rope_style``,
``compressed_residual``, ``partial_segments``.
"""

import dataclasses
from dataclasses import dataclass

from minicp.validate import boolean, positive_int, real

ARCHITECTURES = ("transformer", "perceiver_ar", "double", "compressed", "s_split", "ecp", "longlora")

# What the official code does, per architecture (docs/official-code.md). longlora follows LongLoRA's LLaMA
# attention (separate K and V, halves-style RoPE in every layer); "transformer" is the full-attention model with ECP's conventions
# (docs/official-code.md#full-attention-ecp-conventions): ECP's
# conventions with a single output projection.
_OFFICIAL = {
    #                 separate_kv kv_layernorm rope_all_layers rope_style
    "transformer": (False, False, False, "interleaved"),
    "perceiver_ar": (False, True, False, "interleaved"),
    "double": (False, True, True, "interleaved"),
    "compressed": (False, True, False, "interleaved"),
    "s_split": (False, True, False, "interleaved"),
    "ecp": (False, False, False, "interleaved"),
    "longlora": (True, False, True, "halves"),
}
PERCEIVER_FAMILY = ("perceiver_ar", "double", "compressed", "s_split")


@dataclass(frozen=True)
class ModelConfig:
    arch: str = "ecp"  # one of ARCHITECTURES
    vocab: int = 256  # V, token ids are 0..V-1
    dim: int = 128  # D, model width
    heads: int = 4  # h, D must divide into h heads of d = D / h
    layers: int = 4  # l
    seq_len: int = 512  # n
    latent: int = None  # L (None: n for ecp/transformer/longlora, n/2 for the Perceiver family)
    compressed: int = None  # p (compressed only; None: n // 4 as the official main)
    split: int = None  # c (s_split only; None: H / 2)
    segment: int = None  # s = 2m (ecp only; None: n / 4, i.e. N_s = 8)
    half_segment: int = None  # m; give segment or half_segment, not both
    group: int = None  # g (longlora only; None: n / 4 as LongLoRA)
    shift: str = "varlen"  # longlora shifted heads: "varlen" (no leak) or "roll" (official wrap)
    ff_mult: int = 4  # feed-forward width = ff_mult * D
    separate_kv: bool = None  # K and V from one (2D, D) to_kv instead of K = V
    kv_layernorm: bool = None  # per-head LayerNorm on the key/value tensor
    rope_all_layers: bool = None  # RoPE in every layer instead of layer 0 only
    rope_style: str = None  # "interleaved" (official) or "halves" (LLaMA)
    compressed_residual: str = "official"  # "official" (x[:, :p+L], docs/official-code.md#compressed-first-layer-residual) or "paper" (latent gets x[:, H:])
    partial_segments: bool = False  # ecp: allow n not divisible by m (partial last half segment)
    rope_base: float = 10000.0
    eps: float = 1e-5  # LayerNorm epsilon

    def __post_init__(self):
        set_ = lambda k, v: object.__setattr__(self, k, v)  # frozen: fill derived defaults once
        if self.arch not in ARCHITECTURES:
            raise ValueError(f"arch {self.arch!r} is not one of {ARCHITECTURES}")
        for name in ("vocab", "dim", "heads", "layers", "seq_len", "ff_mult"):
            set_(name, positive_int(name, getattr(self, name)))
        set_("rope_base", real("rope_base", self.rope_base, low=0, low_open=True))
        set_("eps", real("eps", self.eps, low=0))
        set_("partial_segments", boolean("partial_segments", self.partial_segments))
        if self.dim % self.heads:
            raise ValueError(f"dim {self.dim} is not divisible by heads {self.heads}")
        n, arch = self.seq_len, self.arch
        official = dict(zip(("separate_kv", "kv_layernorm", "rope_all_layers", "rope_style"), _OFFICIAL[arch]))
        for key, value in official.items():
            if getattr(self, key) is None:
                set_(key, value)
            elif key != "rope_style":
                set_(key, boolean(key, getattr(self, key)))
        if self.rope_style not in ("interleaved", "halves"):
            raise ValueError(f"rope_style {self.rope_style!r} is not 'interleaved' or 'halves'")
        if self.rope_style == "halves" and self.head_dim % 2:
            raise ValueError(f"rope_style 'halves' needs an even head dim, got dim/heads = {self.head_dim}")
        if self.compressed_residual not in ("official", "paper"):
            raise ValueError(f"compressed_residual {self.compressed_residual!r} is not 'official' or 'paper'")
        if self.shift not in ("varlen", "roll"):
            raise ValueError(f"shift {self.shift!r} is not 'varlen' or 'roll'")

        # latent / history
        if self.latent is None:
            set_("latent", n // 2 if arch in PERCEIVER_FAMILY else n)
        positive_int("latent", self.latent)
        if self.latent > n:
            raise ValueError(f"latent {self.latent} must be at most seq_len {n}")
        if arch == "compressed" and self.latent >= n:
            raise ValueError(
                f"latent {self.latent} must be smaller than seq_len {n} for compressed (history H = n - L >= 1 "
                f"to compress; perceiver_ar, double and s_split accept latent = seq_len)"
            )

        # per-architecture sizes; a size given to an architecture that has no use for it is an error
        self._only_for("compressed", "compressed")
        self._only_for("split", "s_split")
        self._only_for("group", "longlora")
        if arch != "ecp" and (self.segment is not None or self.half_segment is not None):
            raise ValueError(f"segment/half_segment apply to arch 'ecp' only, not {arch!r}")
        if arch == "compressed":
            if self.compressed is None:
                set_("compressed", max(1, min(n // 4, self.history)))
            positive_int("compressed", self.compressed)
            if self.compressed > self.history:
                raise ValueError(
                    f"compressed {self.compressed} must be at most history {self.history} (= seq_len - latent)"
                )
        if arch == "s_split":
            if self.split is None:
                set_("split", max(1, self.history // 2 if self.history % 2 == 0 else self.history))  # H = 0: unused
            positive_int("split", self.split)
            if self.history % self.split:
                raise ValueError(f"history {self.history} (= seq_len - latent) is not divisible by split {self.split}")
        if arch == "ecp":
            self._resolve_segments()
        if arch == "longlora":
            if self.group is None:
                set_("group", n // 4 if n % 4 == 0 else n)
            positive_int("group", self.group)
            if self.group % 2:
                raise ValueError(f"group {self.group} must be even (shifted heads move by group / 2)")
            if n % self.group:
                raise ValueError(f"seq_len {n} is not divisible by group {self.group}")

    def _only_for(self, field, arch):
        if getattr(self, field) is not None and self.arch != arch:
            raise ValueError(f"{field} applies to arch {arch!r} only, not {self.arch!r}")

    def _resolve_segments(self):
        set_ = lambda k, v: object.__setattr__(self, k, v)
        n = self.seq_len
        if self.segment is not None and self.half_segment is not None:
            if self.segment != 2 * self.half_segment:
                raise ValueError(
                    f"segment {self.segment} must equal 2 * half_segment {self.half_segment}; give one of them"
                )
        elif self.segment is not None:
            positive_int("segment", self.segment)
            if self.segment % 2:
                raise ValueError(f"segment {self.segment} must be even (the official block is half a segment)")
            set_("half_segment", self.segment // 2)
        elif self.half_segment is None:
            set_("half_segment", max(1, n // 8))
        positive_int("half_segment", self.half_segment)
        set_("segment", 2 * self.half_segment)
        m = self.half_segment
        if n % m and not self.partial_segments:
            raise ValueError(
                f"seq_len {n} is not divisible by half_segment {m} (set partial_segments=True for a partial last block)"
            )
        if n < 2 * m and not self.partial_segments:
            raise ValueError(f"seq_len {n} must hold at least two half segments of {m} (official num_segments >= 2)")

    # ---- derived sizes -------------------------------------------------------------------------------
    @property
    def history(self):
        """H = n - L."""
        return self.seq_len - self.latent

    @property
    def head_dim(self):
        """d = D / h."""
        return self.dim // self.heads

    @property
    def num_segments(self):
        """ECP: the official code's num_segments N_s = n / m (a partial last block counts as one)."""
        return -(-self.seq_len // self.half_segment) if self.arch == "ecp" else None

    def stream_len(self, layer):
        """Length of the residual stream entering layer ``layer`` (0-based)."""
        if layer == 0:
            return self.seq_len
        if self.arch == "perceiver_ar":
            return self.latent
        if self.arch == "compressed":
            return self.compressed + self.latent
        return self.seq_len

    @property
    def out_len(self):
        """Rows of the final stream (and of the logits ``forward`` returns)."""
        return self.stream_len(1) if self.arch in ("perceiver_ar", "compressed") else self.seq_len

    def rope_in_layer(self, layer):
        return self.rope_all_layers or layer == 0

    def replace(self, **changes):
        """A copy with some fields changed, validated again. Derived defaults are recomputed."""
        fields = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        fields.update(changes)
        return ModelConfig(**fields)

    @classmethod
    def preset(cls, name, **overrides):
        """One of the paper's configurations (see ``PRESETS``), optionally with fields overridden."""
        if name not in PRESETS:
            raise ValueError(f"preset {name!r} is not one of: {', '.join(sorted(PRESETS))}")
        return cls(**{**PRESETS[name], **overrides})


# ----------------------------------------------------------------------------------------------------
# The paper's configurations (vocab 28996 = BERT-base-cased word pieces, as the official main)
# ----------------------------------------------------------------------------------------------------


def _presets():
    p = {}
    bert = 28996
    # Table 1, configuration A: n 1024, D 512, h 8, l 8; s-Split c = 256 (c = 128 for L = 768); Compressed p = 128
    for L in (256, 512, 768):
        base = dict(vocab=bert, dim=512, heads=8, layers=8, seq_len=1024, latent=L)
        p[f"table1-A-perceiver_ar-L{L}"] = dict(base, arch="perceiver_ar")
        p[f"table1-A-double-L{L}"] = dict(base, arch="double")
        p[f"table1-A-s_split-L{L}"] = dict(base, arch="s_split", split=128 if L == 768 else 256)
        p[f"table1-A-compressed-L{L}"] = dict(base, arch="compressed", compressed=128)
    # Table 1, configurations B and C: n 2048, D 768, h 6, l 6, L 1024, s-Split c = 512; C: Compressed p = 256
    for c in ("B", "C"):
        base = dict(vocab=bert, dim=768, heads=6, layers=6, seq_len=2048, latent=1024)
        p[f"table1-{c}-perceiver_ar"] = dict(base, arch="perceiver_ar")
        p[f"table1-{c}-double"] = dict(base, arch="double")
        p[f"table1-{c}-s_split"] = dict(base, arch="s_split", split=512)
        p[f"table1-{c}-compressed"] = dict(base, arch="compressed", compressed=256 if c == "C" else 512)
    # Table 2: ECP with 12/18/24 layers, D 768 (d 128); n 2048 with segment 512 as the official main
    for layers in (12, 18, 24):
        p[f"table2-ecp-{layers}L"] = dict(
            arch="ecp", vocab=bert, dim=768, heads=6, layers=layers, seq_len=2048, segment=512
        )
    # Table 6: ECP on Wikitext-103, 6 layers, D 768; SL in {1024, 2048} x S in {512, 256, 128}
    for n in (1024, 2048):
        for s in (512, 256, 128):
            p[f"table6-ecp-SL{n}-S{s}"] = dict(arch="ecp", vocab=bert, dim=768, heads=6, layers=6, seq_len=n, segment=s)
    # Table 8: n 4096, l 48, h 24, s 256, p 256, L = n / 2 (D chosen as 24 heads x 64)
    t8 = dict(vocab=bert, dim=1536, heads=24, layers=48, seq_len=4096)
    p["table8-transformer"] = dict(t8, arch="transformer")
    p["table8-perceiver_ar"] = dict(t8, arch="perceiver_ar", latent=2048)
    p["table8-double"] = dict(t8, arch="double", latent=2048)
    p["table8-compressed"] = dict(t8, arch="compressed", latent=2048, compressed=256)
    p["table8-s_split"] = dict(t8, arch="s_split", latent=2048, split=256)
    p["table8-ecp"] = dict(t8, arch="ecp", segment=256)
    p["table8-longlora"] = dict(t8, arch="longlora", group=256)
    # A small model that trains in minutes on 2 cores (the benchmarks' and tutorials' default)
    p["tiny-ecp"] = dict(arch="ecp", vocab=256, dim=128, heads=4, layers=4, seq_len=512, half_segment=64)
    return p


PRESETS = _presets()


# The architecture-specific sizes used wherever every architecture is built at one sequence length n (the
# tour, the benchmarks, the notebooks): half the stream is latent, Compressed keeps p = n/4 rows of
# history, s-Split cuts the history into segments of c = n/4, ECP's segment is s = n/4 (half segment
# m = n/8, so N_s = 8 as the official default), S2-Attn groups have g = n/4.
SIZE_RULES = {
    "transformer": lambda n: {},
    "perceiver_ar": lambda n: dict(latent=n // 2),
    "double": lambda n: dict(latent=n // 2),
    "compressed": lambda n: dict(latent=n // 2, compressed=n // 4),
    "s_split": lambda n: dict(latent=n // 2, split=n // 4),
    "ecp": lambda n: dict(segment=n // 4),
    "longlora": lambda n: dict(group=n // 4),
}
assert tuple(SIZE_RULES) == ARCHITECTURES


def sized_config(arch, seq_len, **fields):
    """``ModelConfig(arch, seq_len=n)`` with the sizes of ``SIZE_RULES``; ``fields`` override any of them
    (e.g. ``sized_config("ecp", 8192, segment=512, dim=512)``)."""
    if arch not in SIZE_RULES:
        raise ValueError(f"arch {arch!r} is not one of {ARCHITECTURES}")
    n = positive_int("seq_len", seq_len)
    sizes = SIZE_RULES[arch](n)
    if arch == "ecp" and ("half_segment" in fields or "segment" in fields):
        sizes.pop("segment")
    return ModelConfig(arch=arch, seq_len=n, **{**sizes, **fields})
