"""A PyTorch twin of the official ECP models, used as a test oracle for minicp.

This is an independent re-implementation, written from /work/shared/SPEC.md (sections 1, 2.0-2.5 and 3),
of what the authors' PyTorch code (MetaMain/ECPTransformer, ``models/``) computes in eval mode. It shares
no code with the official files. It exists so that minicp's NumPy kernels can be held against a second,
separately written implementation, and so that benchmarks have a vectorised PyTorch baseline.

What it reproduces (SPEC section 1):

* the official ``state_dict`` key names and shapes, so official checkpoints load key-for-key
  (``model.load_state_dict(official_model.state_dict())``);
* K = V from one ``to_kv``; interleaved-pair RoPE (computed in the module dtype) in layer 0 only, except
  Double Attention (every layer); queries scaled by d**-0.5 after RoPE; masked scores filled with
  ``-finfo(dtype).max``; per-head kv LayerNorm after RoPE (PerceiverAR, Double, Compressed, s-Split; ECP
  owns one but never uses it); PreNorm blocks; exact-erf GELU feed-forward; LayerNorm + biased logits;
* the official quirks: PerceiverAR's shortened stream, Compressed's sequence-axis ``projection_hist`` and
  its layer-0 residual ``x[:, 0:p+L]`` (SPEC bug B1), ECP's separate ``to_out_0`` for the first block.

Eval semantics only: there is no dropout anywhere (the FeedForward keeps an ``nn.Identity`` where the
official code has ``nn.Dropout`` so that the ``net.3`` key index matches).

Weights. ``build`` creates every module in the same order as the official constructors, with PyTorch's
default initialisers, under ``torch.manual_seed(seed)`` (the global RNG state is restored afterwards), then
casts to ``dtype``. So with ``perturb_norms=False`` the twin's weights equal those of the official model
built on the CPU right after ``torch.manual_seed(seed)``. ``perturb_norms=True`` (default) then adds small
noise to every LayerNorm weight and bias, so that a test comparing against the twin would notice two
LayerNorms swapped.

Public functions::

    build(arch, *, vocab, dim, heads, layers, seq_len, latent=None, compressed=None, split=None,
          half_segment=None, dtype=torch.float64, seed=0, perturb_norms=True) -> nn.Module
    build_attention_layer(arch, *, dim, heads, seq_len, latent=None, compressed=None, split=None,
          half_segment=None, layer_index=0, dtype=torch.float32, seed=0, perturb_norms=True) -> nn.Module
    wrapper_loss(model, x, latent) -> scalar tensor

Letters: b batch, h heads, n input length, D = dim, d = D // h, L latent, H = n - L history,
p compressed length, c s-Split history segment length, m ECP block (the paper's half segment),
N_s = n / m ECP blocks. Head-level tensors are (b, h, n, d) (the official code folds b and h into one
axis; the numbers are the same).
"""
import torch
import torch.nn.functional as F
from torch import nn

ARCHITECTURES = ("transformer", "perceiver_ar", "double", "compressed", "s_split", "ecp")
PERCEIVER_FAMILY = ("perceiver_ar", "double", "compressed", "s_split")


# ----------------------------------------------------------------------------------------------------
# Small pieces shared by every attention layer
# ----------------------------------------------------------------------------------------------------

class RotaryFreqs(nn.Module):
    """Holds the RoPE inverse frequencies theta_i = 1 / 10000^(2i/d), i = 0..d//2-1, as buffer ``freqs``.

    The values are computed in float32 (as the official code does) and follow the module's dtype when it
    is cast. One instance is shared by every layer of a model, so its buffer appears under each layer's
    ``pos_emb.freqs`` key.
    """

    def __init__(self, dim_head):
        super().__init__()
        exponents = torch.arange(0, dim_head, 2, dtype=torch.float32)[: dim_head // 2] / dim_head
        self.register_buffer("freqs", 1.0 / torch.pow(10000.0, exponents))   # (d//2,)

    def angles(self, n, device=None):
        """Angles (n, 2*(d//2)): angle[p, 2i] = angle[p, 2i+1] = p * theta_i, in the buffer's dtype."""
        positions = torch.arange(n, device=device).to(self.freqs.dtype)        # (n,)
        per_pair = positions[:, None] * self.freqs[None, :]                     # (n, d//2)
        return per_pair.repeat_interleave(2, dim=-1)                            # (n, 2*(d//2)), interleaved


def apply_rope(x, angles):
    """Interleaved-pair RoPE: (x_2i, x_2i+1) -> (x_2i cos - x_2i+1 sin, x_2i+1 cos + x_2i sin).

    x (..., n, d), angles (n, r) with r = 2*(d//2); an odd last channel passes through unchanged.
    """
    angles = angles.to(device=x.device, dtype=x.dtype)      # cos / sin in the tensor's dtype, as official
    r = angles.shape[-1]
    x_rot, x_pass = x[..., :r], x[..., r:]
    pairs = x_rot.unflatten(-1, (r // 2, 2))                                    # (..., n, r/2, 2)
    partner = torch.stack((-pairs[..., 1], pairs[..., 0]), dim=-1).flatten(-2)  # (-x_2i+1, x_2i) per pair
    rotated = x_rot * angles.cos() + partner * angles.sin()
    return torch.cat((rotated, x_pass), dim=-1)


def tail_causal_mask(rows, cols, device=None):
    """Boolean (rows, cols) mask, True = hidden: query row i sees every key j <= (cols - rows) + i.

    With cols == rows this is the plain causal mask. With cols > rows the first cols - rows key columns
    (history, or ECP's previous block) are fully visible and the last ``rows`` columns are causal, which is
    how every official file masks its latent (or block) queries.
    """
    i = torch.arange(rows, device=device)[:, None]
    j = torch.arange(cols, device=device)[None, :]
    return j > (cols - rows) + i


def attend(q, kv, mask=None):
    """softmax(q kv^T [masked]) kv, with K = V = kv. q (..., i, d), kv (..., j, d) -> (..., i, d).

    q is already scaled. Hidden scores are filled with -finfo(dtype).max, as the official code does
    (no row is ever fully hidden, so this equals using -inf).
    """
    scores = q @ kv.transpose(-1, -2)                                           # (..., i, j)
    if mask is not None:
        scores = scores.masked_fill(mask, -torch.finfo(scores.dtype).max)
    return scores.softmax(dim=-1) @ kv                                          # (..., i, d)


class _Attention(nn.Module):
    """Parameters and helpers common to all six attention layers.

    Registration order (norm, pos_emb, to_q, to_kv, then the output projections a subclass adds) follows
    the official constructors, so state_dict order and seeded initial values match them.
    """

    def __init__(self, *, dim, heads, layer_index, pos_emb=None):
        super().__init__()
        assert dim % heads == 0, f"dim {dim} must split into {heads} heads"
        self.heads = heads
        self.dim_head = dim // heads
        self.scale = self.dim_head ** -0.5
        self.layer_index = layer_index
        self.norm = nn.LayerNorm(self.dim_head)       # per-head kv LayerNorm (unused by ECP and transformer)
        self.pos_emb = pos_emb if pos_emb is not None else RotaryFreqs(self.dim_head)
        self.to_q = nn.Linear(dim, dim, bias=False)
        self.to_kv = nn.Linear(dim, dim, bias=False)  # one projection: K is V

    def split_heads(self, t):
        b, n, _ = t.shape
        return t.view(b, n, self.heads, self.dim_head).transpose(1, 2)          # (b, n, D) -> (b, h, n, d)

    def merge_heads(self, t):
        b, h, n, d = t.shape
        return t.transpose(1, 2).reshape(b, n, h * d)                           # (b, h, n, d) -> (b, n, D)

    def project(self, x):
        """q, kv (b, h, n, d) from x (b, n, D)."""
        return self.split_heads(self.to_q(x)), self.split_heads(self.to_kv(x))

    def rope_angles(self, n, device):
        return self.pos_emb.angles(n, device)


# ----------------------------------------------------------------------------------------------------
# The six attention layers (the ``fn`` inside ``layers.i.0``)
# ----------------------------------------------------------------------------------------------------

class FullAttention(_Attention):
    """SPEC 2.0 C1: plain causal attention with ECP's conventions (RoPE layer 0, raw K = V, no kv LN).

    Equals the official ECP with num_segments = 2 and to_out_0 := to_out. (b, n, D) -> (b, n, D).
    """

    def __init__(self, *, dim, heads, seq_len, layer_index=0, pos_emb=None):
        super().__init__(dim=dim, heads=heads, layer_index=layer_index, pos_emb=pos_emb)
        self.seq_len = seq_len
        self.input_len = seq_len
        self.to_out = nn.Linear(dim, dim)

    def forward(self, x):
        n = x.shape[1]
        q, kv = self.project(x)                                                 # (b, h, n, d) each
        if self.layer_index == 0:
            ang = self.rope_angles(n, x.device)
            q, kv = apply_rope(q, ang), apply_rope(kv, ang)
        q = q * self.scale
        out = attend(q, kv, tail_causal_mask(n, n, x.device))                   # (b, h, n, d)
        return self.to_out(self.merge_heads(out))


class PerceiverARAttention(_Attention):
    """SPEC 2.1. Layer 0: (b, n, D) -> (b, L, D), the L latent queries (positions H..n-1) see all H history
    keys and the latent keys causally. Layers >= 1: (b, L, D) -> (b, L, D), causal."""

    def __init__(self, *, dim, heads, seq_len, latent, layer_index=0, pos_emb=None):
        super().__init__(dim=dim, heads=heads, layer_index=layer_index, pos_emb=pos_emb)
        self.seq_len, self.latent, self.history = seq_len, latent, seq_len - latent
        self.input_len = seq_len if layer_index == 0 else latent
        self.w_out = nn.Linear(dim, dim)

    def forward(self, x):
        n = x.shape[1]
        q, kv = self.project(x)
        if self.layer_index == 0:
            H = self.history
            q = q[:, :, H:]                                                     # (b, h, L, d): latent queries
            ang = self.rope_angles(n, x.device)
            q, kv = apply_rope(q, ang[H:]), apply_rope(kv, ang)                 # queries keep positions H..n-1
        q = q * self.scale
        kv = self.norm(kv)                                                      # LN_d after RoPE: K = V
        out = attend(q, kv, tail_causal_mask(q.shape[2], kv.shape[2], x.device))  # (b, h, L, d)
        return self.w_out(self.merge_heads(out))


class DoubleAttention(_Attention):
    """SPEC 2.2. (b, n, D) -> (b, n, D). RoPE in every layer. History rows attend to all H history keys
    (no mask); latent rows see all history and the latent keys causally; one shared ``to_out``."""

    def __init__(self, *, dim, heads, seq_len, latent, layer_index=0, pos_emb=None):
        super().__init__(dim=dim, heads=heads, layer_index=layer_index, pos_emb=pos_emb)
        self.seq_len, self.latent, self.history = seq_len, latent, seq_len - latent
        self.input_len = seq_len
        self.to_out = nn.Linear(dim, dim)

    def history_attention(self, q_hist, kv_hist):
        return attend(q_hist, kv_hist)                                          # (b, h, H, d), bidirectional

    def forward(self, x):
        n = x.shape[1]
        H = self.history
        q, kv = self.project(x)
        if self.rope_here():
            ang = self.rope_angles(n, x.device)
            q, kv = apply_rope(q, ang), apply_rope(kv, ang)
        q = q * self.scale
        kv = self.norm(kv)                                                      # (b, h, n, d), K = V
        out_hist = self.history_attention(q[:, :, :H], kv[:, :, :H])            # (b, h, H, d)
        out_lat = attend(q[:, :, H:], kv, tail_causal_mask(max(n - H, 0), n, x.device))  # (b, h, L, d)
        out = torch.cat((out_hist, out_lat), dim=2)                             # (b, h, n, d); n <= H: history only
        return self.to_out(self.merge_heads(out))

    def rope_here(self):
        return True                                                             # Double: every layer


class SSplitAttention(DoubleAttention):
    """SPEC 2.4. As Double, but RoPE in layer 0 only and the history is cut into H / c contiguous segments
    of c rows; each history row attends (no mask) to the keys of its own segment only."""

    def __init__(self, *, dim, heads, seq_len, latent, split, layer_index=0, pos_emb=None):
        super().__init__(dim=dim, heads=heads, seq_len=seq_len, latent=latent,
                         layer_index=layer_index, pos_emb=pos_emb)
        assert self.history % split == 0, f"history {self.history} must divide into segments of {split}"
        self.split = split
        self.num_segments = self.history // split                               # official num_segments

    def history_attention(self, q_hist, kv_hist):
        b, h, H, d = q_hist.shape                                               # H = min(input length, history)
        if H == 0:
            return q_hist                                                       # latent = seq_len: no history
        s = self.num_segments
        assert H % s == 0, f"{H} history rows do not split into {s} segments"
        c = H // s                                                              # = split at full length
        out = attend(q_hist.reshape(b, h, s, c, d), kv_hist.reshape(b, h, s, c, d))  # (b, h, s, c, d)
        return out.reshape(b, h, H, d)

    def rope_here(self):
        return self.layer_index == 0


class CompressedAttention(_Attention):
    """SPEC 2.3. Layer 0: (b, n, D) -> (b, p+L, D); layers >= 1: (b, p+L, D) -> (b, p+L, D).

    The first ``hist`` rows (H in layer 0, p afterwards) attend to the first ``hist`` keys with no mask;
    the latent rows see those and the latent keys causally. In layer 0 the history attention output
    (b, H, D) is compressed along the sequence axis to (b, p, D) by ``projection_hist`` = Linear(H, p)
    before ``w_out``. ``projection_hist`` exists in every layer but only layer 0 uses it.
    """

    def __init__(self, *, dim, heads, seq_len, latent, compressed, layer_index=0, pos_emb=None):
        super().__init__(dim=dim, heads=heads, layer_index=layer_index, pos_emb=pos_emb)
        self.seq_len, self.latent, self.history = seq_len, latent, seq_len - latent
        self.compressed = compressed
        self.input_len = seq_len if layer_index == 0 else compressed + latent
        self.w_out = nn.Linear(dim, dim)
        self.projection_hist = nn.Linear(self.history, compressed)

    def forward(self, x):
        n = x.shape[1]
        hist = self.history if self.layer_index == 0 else self.compressed
        q, kv = self.project(x)
        if self.layer_index == 0:
            ang = self.rope_angles(n, x.device)                                 # history queries 0..H-1,
            q, kv = apply_rope(q, ang), apply_rope(kv, ang)                     # latent queries H..n-1
        q = q * self.scale
        kv = self.norm(kv)
        out_hist = attend(q[:, :, :hist], kv[:, :, :hist])                      # (b, h, hist, d), no mask
        out_lat = attend(q[:, :, hist:], kv, tail_causal_mask(max(n - hist, 0), n, x.device))  # (b, h, L, d)
        out_hist = self.merge_heads(out_hist)                                   # (b, hist, D)
        if self.layer_index == 0:
            # O_c[:, r, :] = sum_j Wp[r, j] O_h[:, j, :] + bp[r]: a Linear over the sequence axis
            out_hist = self.projection_hist(out_hist.transpose(1, 2)).transpose(1, 2)  # (b, p, D)
        out = torch.cat((out_hist, self.merge_heads(out_lat)), dim=1)           # (b, p+L, D)
        return self.w_out(out)


class ECPAttention(_Attention):
    """SPEC 2.5. (b, n, D) -> (b, n, D), blockwise in O(n m).

    Rows are cut into N_s blocks of m. Block 0 attends to itself causally and goes through ``to_out_0``;
    block t >= 1 attends to cat(block t-1, block t) (2m keys, the right half causal) and goes through
    ``to_out``. K = V = the raw (rotated in layer 0) kv: ``norm`` is owned but unused, as official.
    Like the official code, the block count N_s is fixed and the block length is n_in / N_s.
    """

    def __init__(self, *, dim, heads, seq_len, half_segment, layer_index=0, pos_emb=None):
        super().__init__(dim=dim, heads=heads, layer_index=layer_index, pos_emb=pos_emb)
        assert seq_len % half_segment == 0 and seq_len // half_segment >= 2, (
            f"seq_len {seq_len} must be at least 2 blocks of half_segment {half_segment}")
        self.seq_len, self.half_segment = seq_len, half_segment
        self.num_segments = seq_len // half_segment                             # official num_segments N_s
        self.input_len = seq_len
        self.to_out = nn.Linear(dim, dim)
        self.to_out_0 = nn.Linear(dim, dim)

    def forward(self, x):
        n = x.shape[1]
        N = self.num_segments
        assert n % N == 0, f"input length {n} must split into {N} blocks"
        m = n // N
        q, kv = self.project(x)
        if self.layer_index == 0:
            ang = self.rope_angles(n, x.device)                                 # global positions 0..n-1
            q, kv = apply_rope(q, ang), apply_rope(kv, ang)
        q = q * self.scale
        b, h, _, d = q.shape
        q_blocks = q.reshape(b, h, N, m, d)
        kv_blocks = kv.reshape(b, h, N, m, d)
        # block 0: m x m causal
        out0 = attend(q_blocks[:, :, 0], kv_blocks[:, :, 0], tail_causal_mask(m, m, x.device))  # (b, h, m, d)
        # blocks 1..N-1: keys = previous block (all visible) then own block (causal)
        pair_kv = torch.cat((kv_blocks[:, :, :-1], kv_blocks[:, :, 1:]), dim=3)  # (b, h, N-1, 2m, d)
        out1 = attend(q_blocks[:, :, 1:], pair_kv, tail_causal_mask(m, 2 * m, x.device))  # (b, h, N-1, m, d)
        out1 = out1.reshape(b, h, n - m, d)
        return torch.cat((self.to_out_0(self.merge_heads(out0)), self.to_out(self.merge_heads(out1))), dim=1)


# ----------------------------------------------------------------------------------------------------
# Blocks and the model
# ----------------------------------------------------------------------------------------------------

class PreNorm(nn.Module):
    """fn(LN_D(x)); the caller adds the residual. ``fn`` is registered before ``norm``, as official."""

    def __init__(self, dim, fn):
        super().__init__()
        self.fn = fn
        self.norm = nn.LayerNorm(dim)

    def forward(self, x):
        return self.fn(self.norm(x))


class FeedForward(nn.Module):
    """Linear(D, 4D) -> exact GELU -> (dropout slot, Identity here) -> Linear(4D, D)."""

    def __init__(self, dim, mult=4):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(dim, dim * mult), nn.GELU(), nn.Identity(), nn.Linear(dim * mult, dim))

    def forward(self, x):
        return self.net(x)


def _make_attention(arch, *, dim, heads, seq_len, latent, compressed, split, half_segment, layer_index, pos_emb):
    common = dict(dim=dim, heads=heads, seq_len=seq_len, layer_index=layer_index, pos_emb=pos_emb)
    if arch == "transformer":
        return FullAttention(**common)
    if arch == "perceiver_ar":
        return PerceiverARAttention(latent=latent, **common)
    if arch == "double":
        return DoubleAttention(latent=latent, **common)
    if arch == "s_split":
        return SSplitAttention(latent=latent, split=split, **common)
    if arch == "compressed":
        return CompressedAttention(latent=latent, compressed=compressed, **common)
    if arch == "ecp":
        return ECPAttention(half_segment=half_segment, **common)
    raise ValueError(f"unknown arch {arch!r}; expected one of {ARCHITECTURES}")


class TwinModel(nn.Module):
    """token_emb -> l x [x = attn(LN(x)) + residual; x = FF(LN(x)) + x] -> LN -> Linear(D, V).

    The residual of layer 0 is ``x[:, -L:]`` for PerceiverAR and ``x[:, 0:p+L]`` for Compressed (bug B1);
    everywhere else it is x. Logits: PerceiverAR (b, L, V), Compressed (b, p+L, V), others (b, n, V).
    """

    def __init__(self, arch, *, vocab, dim, heads, layers, seq_len, latent, compressed, split, half_segment):
        super().__init__()
        self.arch, self.vocab, self.dim, self.heads, self.num_layers = arch, vocab, dim, heads, layers
        self.seq_len, self.latent, self.history = seq_len, latent, seq_len - latent
        self.compressed, self.split, self.half_segment = compressed, split, half_segment
        self.token_emb = nn.Embedding(vocab, dim)
        pos_emb = RotaryFreqs(dim // heads)          # one instance shared by all layers (not a top-level key)
        self.layers = nn.ModuleList()
        for k in range(layers):
            attn = _make_attention(arch, dim=dim, heads=heads, seq_len=seq_len, latent=latent,
                                   compressed=compressed, split=split, half_segment=half_segment,
                                   layer_index=k, pos_emb=pos_emb)
            self.layers.append(nn.ModuleList([PreNorm(dim, attn), PreNorm(dim, FeedForward(dim))]))
        self.to_logits = nn.Sequential(nn.LayerNorm(dim), nn.Linear(dim, vocab))

    def forward(self, tokens):
        b, n = tokens.shape          # n may be shorter than seq_len: the layers then compute what the
        x = self.token_emb(tokens)   # official ones do (fixed history; torch's broadcasting included)                                              # (b, n, D)
        for k, (attn, ff) in enumerate(self.layers):
            out = attn(x)
            if k == 0 and self.arch == "perceiver_ar":
                x = out + x[:, -self.latent:]                                   # (b, L, D)
            elif k == 0 and self.arch == "compressed":
                x = out + x[:, 0:self.compressed + self.latent]                 # (b, p+L, D), bug B1
            else:
                x = out + x
            x = ff(x) + x
        return self.to_logits(x)                                                # (b, rows, V)


# ----------------------------------------------------------------------------------------------------
# Public entry points
# ----------------------------------------------------------------------------------------------------

def _resolve(arch, seq_len, latent, compressed, split, half_segment):
    """Fill in the defaults and check the shape constraints; returns (latent, compressed, split, half_segment)."""
    if arch not in ARCHITECTURES:
        raise ValueError(f"unknown arch {arch!r}; expected one of {ARCHITECTURES}")
    n = seq_len
    if latent is None:
        latent = n // 2 if arch in PERCEIVER_FAMILY else n
    if not 1 <= latent <= n:
        raise ValueError(f"latent must be in [1, {n}], got {latent}")
    history = n - latent
    if arch == "compressed":
        compressed = n // 4 if compressed is None else compressed
        if history < 1 or compressed < 1:
            raise ValueError(f"compressed needs history >= 1 and compressed >= 1 (H={history}, p={compressed})")
    if arch == "s_split":
        split = (max(1, history // 2) if split is None else split)
        if split < 1 or history % split:
            raise ValueError(f"s_split needs split c >= 1 dividing history H={history}, got c={split}")
    if arch == "ecp":
        half_segment = n // 8 if half_segment is None else half_segment
        if half_segment < 1 or n % half_segment or n // half_segment < 2:
            raise ValueError(f"ecp needs seq_len {n} = N_s * half_segment with N_s >= 2, got m={half_segment}")
    return latent, compressed, split, half_segment


def _seeded(seed, make):
    """Run make() under torch.manual_seed(seed) without disturbing the caller's global RNG state."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return make()


def _perturb_layernorms(module, seed, scale=0.1):
    """weight += scale * N(0,1), bias += scale * N(0,1) for every LayerNorm, from a private generator."""
    gen = torch.Generator().manual_seed(seed + 7919)
    with torch.no_grad():
        for sub in module.modules():
            if isinstance(sub, nn.LayerNorm):
                sub.weight.add_(scale * torch.randn(sub.weight.shape, generator=gen, dtype=sub.weight.dtype))
                sub.bias.add_(scale * torch.randn(sub.bias.shape, generator=gen, dtype=sub.bias.dtype))


def build(arch, *, vocab, dim, heads, layers, seq_len, latent=None, compressed=None, split=None,
          half_segment=None, dtype=torch.float64, seed=0, perturb_norms=True):
    """The whole model of ``arch`` in eval mode; ``model(tokens (b, n) long) -> logits``.

    arch: "transformer" (SPEC C1), "perceiver_ar", "double", "compressed", "s_split", "ecp".
    latent L (default n/2 for the Perceiver family, n otherwise; the ecp/transformer forward ignores it),
    compressed p (default n // 4), split = s-Split history segment LENGTH c (default H / 2; official
    num_segments = H / c), half_segment = ECP block m (default n / 8; official num_segments = n / m).
    """
    latent, compressed, split, half_segment = _resolve(arch, seq_len, latent, compressed, split, half_segment)
    model = _seeded(seed, lambda: TwinModel(arch, vocab=vocab, dim=dim, heads=heads, layers=layers,
                                            seq_len=seq_len, latent=latent, compressed=compressed,
                                            split=split, half_segment=half_segment))
    if perturb_norms:
        _perturb_layernorms(model, seed)
    return model.to(dtype).eval()


def build_attention_layer(arch, *, dim, heads, seq_len, latent=None, compressed=None, split=None,
                          half_segment=None, layer_index=0, dtype=torch.float32, seed=0, perturb_norms=True):
    """One attention sub-layer (the ``fn`` inside PreNorm); ``layer(x (b, n_in, D)) -> (b, n_out, D)``.

    Its output is before the residual. n_in = ``layer.input_len``: n, except PerceiverAR layers >= 1 (L)
    and Compressed layers >= 1 (p + L). n_out: L for PerceiverAR, p + L for Compressed, else n_in.
    """
    latent, compressed, split, half_segment = _resolve(arch, seq_len, latent, compressed, split, half_segment)
    layer = _seeded(seed, lambda: _make_attention(arch, dim=dim, heads=heads, seq_len=seq_len, latent=latent,
                                                  compressed=compressed, split=split, half_segment=half_segment,
                                                  layer_index=layer_index, pos_emb=None))
    if perturb_norms:
        _perturb_layernorms(layer, seed)
    return layer.to(dtype).eval()


def wrapper_loss(model, x, latent):
    """The official AutoRegressiveWrapper loss (SPEC 3). x (b, n+1) long.

    Input x[:, :n]; the last ``latent`` logit rows predict targets x[:, -latent:]; mean cross-entropy over
    b * latent, no ignore_index.
    """
    logits = model(x[:, :-1])[:, -latent:]                                      # (b, L, V)
    targets = x[:, -latent:]                                                    # (b, L)
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1))
