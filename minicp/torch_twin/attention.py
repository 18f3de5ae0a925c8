"""The six attention layers of the twin (the ``fn`` inside ``layers.i.0``), one class per official file
(docs/official-code.md#architectures), and ``make_attention`` choosing one by name.

Letters: b batch, h heads, n input length, D = dim, d = D // h, L latent, H = n - L history,
p compressed length, c s-Split history segment length, m ECP block (the paper's half segment),
N_s = n / m ECP blocks.
"""

import torch
from torch import nn

from minicp.torch_twin.layers import AttentionBase, apply_rope, attend, tail_causal_mask

ARCHITECTURES = ("transformer", "perceiver_ar", "double", "compressed", "s_split", "ecp")
PERCEIVER_FAMILY = ("perceiver_ar", "double", "compressed", "s_split")


class FullAttention(AttentionBase):
    """Plain causal attention with ECP's conventions (RoPE layer 0, raw K = V, no kv LN): the full-attention
    transformer with ECP conventions (docs/official-code.md#full-attention-ecp-conventions).

    Equals the official ECP with num_segments = 2 and to_out_0 := to_out. (b, n, D) -> (b, n, D).
    """

    def __init__(self, *, dim, heads, seq_len, layer_index=0, pos_emb=None):
        super().__init__(dim=dim, heads=heads, layer_index=layer_index, pos_emb=pos_emb)
        self.seq_len = seq_len
        self.input_len = seq_len
        self.to_out = nn.Linear(dim, dim)

    def forward(self, x):
        n = x.shape[1]
        q, kv = self.project(x)  # (b, h, n, d) each
        if self.layer_index == 0:
            ang = self.rope_angles(n, x.device)
            q, kv = apply_rope(q, ang), apply_rope(kv, ang)
        q = q * self.scale
        out = attend(q, kv, tail_causal_mask(n, n, x.device))  # (b, h, n, d)
        return self.to_out(self.merge_heads(out))


class PerceiverARAttention(AttentionBase):
    """The official PerceiverAR (docs/official-code.md#perceiverar).

    Layer 0: (b, n, D) -> (b, L, D), the L latent queries (positions H..n-1) see all H history keys and the
    latent keys causally. Layers >= 1: (b, L, D) -> (b, L, D), causal."""

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
            q = q[:, :, H:]  # (b, h, L, d): latent queries
            ang = self.rope_angles(n, x.device)
            q, kv = apply_rope(q, ang[H:]), apply_rope(kv, ang)  # queries keep positions H..n-1
        q = q * self.scale
        kv = self.norm(kv)  # LN_d after RoPE: K = V
        out = attend(q, kv, tail_causal_mask(q.shape[2], kv.shape[2], x.device))  # (b, h, L, d)
        return self.w_out(self.merge_heads(out))


class DoubleAttention(AttentionBase):
    """The official Double Attention (docs/official-code.md#double).

    (b, n, D) -> (b, n, D). RoPE in every layer. History rows attend to all H history keys (no mask); latent
    rows see all history and the latent keys causally; one shared ``to_out``."""

    def __init__(self, *, dim, heads, seq_len, latent, layer_index=0, pos_emb=None):
        super().__init__(dim=dim, heads=heads, layer_index=layer_index, pos_emb=pos_emb)
        self.seq_len, self.latent, self.history = seq_len, latent, seq_len - latent
        self.input_len = seq_len
        self.to_out = nn.Linear(dim, dim)

    def history_attention(self, q_hist, kv_hist):
        return attend(q_hist, kv_hist)  # (b, h, H, d), bidirectional

    def forward(self, x):
        n = x.shape[1]
        H = self.history
        q, kv = self.project(x)
        if self.rope_here():
            ang = self.rope_angles(n, x.device)
            q, kv = apply_rope(q, ang), apply_rope(kv, ang)
        q = q * self.scale
        kv = self.norm(kv)  # (b, h, n, d), K = V
        out_hist = self.history_attention(q[:, :, :H], kv[:, :, :H])  # (b, h, H, d)
        out_lat = attend(q[:, :, H:], kv, tail_causal_mask(max(n - H, 0), n, x.device))  # (b, h, L, d)
        out = torch.cat((out_hist, out_lat), dim=2)  # (b, h, n, d); n <= H: history only
        return self.to_out(self.merge_heads(out))

    def rope_here(self):
        return True  # Double: every layer


class SSplitAttention(DoubleAttention):
    """The official s-Split Double Attention (docs/official-code.md#s-split).

    As Double, but RoPE in layer 0 only and the history is cut into H / c contiguous segments of c rows;
    each history row attends (no mask) to the keys of its own segment only."""

    def __init__(self, *, dim, heads, seq_len, latent, split, layer_index=0, pos_emb=None):
        super().__init__(dim=dim, heads=heads, seq_len=seq_len, latent=latent, layer_index=layer_index, pos_emb=pos_emb)
        assert self.history % split == 0, f"history {self.history} must divide into segments of {split}"
        self.split = split
        self.num_segments = self.history // split  # official num_segments

    def history_attention(self, q_hist, kv_hist):
        b, h, H, d = q_hist.shape  # H = min(input length, history)
        if H == 0:
            return q_hist  # latent = seq_len: no history
        s = self.num_segments
        assert H % s == 0, f"{H} history rows do not split into {s} segments"
        c = H // s  # = split at full length
        out = attend(q_hist.reshape(b, h, s, c, d), kv_hist.reshape(b, h, s, c, d))  # (b, h, s, c, d)
        return out.reshape(b, h, H, d)

    def rope_here(self):
        return self.layer_index == 0


class CompressedAttention(AttentionBase):
    """The official Compressed Double Attention (docs/official-code.md#compressed-double).

    Layer 0: (b, n, D) -> (b, p+L, D); layers >= 1: (b, p+L, D) -> (b, p+L, D).

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
            ang = self.rope_angles(n, x.device)  # history queries 0..H-1,
            q, kv = apply_rope(q, ang), apply_rope(kv, ang)  # latent queries H..n-1
        q = q * self.scale
        kv = self.norm(kv)
        out_hist = attend(q[:, :, :hist], kv[:, :, :hist])  # (b, h, hist, d), no mask
        out_lat = attend(q[:, :, hist:], kv, tail_causal_mask(max(n - hist, 0), n, x.device))  # (b, h, L, d)
        out_hist = self.merge_heads(out_hist)  # (b, hist, D)
        if self.layer_index == 0:
            # O_c[:, r, :] = sum_j Wp[r, j] O_h[:, j, :] + bp[r]: a Linear over the sequence axis
            out_hist = self.projection_hist(out_hist.transpose(1, 2)).transpose(1, 2)  # (b, p, D)
        out = torch.cat((out_hist, self.merge_heads(out_lat)), dim=1)  # (b, p+L, D)
        return self.w_out(out)


class ECPAttention(AttentionBase):
    """The official ECP attention (docs/official-code.md#ecp). (b, n, D) -> (b, n, D), blockwise in O(n m).

    Rows are cut into N_s blocks of m. Block 0 attends to itself causally and goes through ``to_out_0``;
    block t >= 1 attends to cat(block t-1, block t) (2m keys, the right half causal) and goes through
    ``to_out``. K = V = the raw (rotated in layer 0) kv: ``norm`` is owned but unused, as official.
    Like the official code, the block count N_s is fixed and the block length is n_in / N_s.
    """

    def __init__(self, *, dim, heads, seq_len, half_segment, layer_index=0, pos_emb=None):
        super().__init__(dim=dim, heads=heads, layer_index=layer_index, pos_emb=pos_emb)
        assert seq_len % half_segment == 0 and seq_len // half_segment >= 2, (
            f"seq_len {seq_len} must be at least 2 blocks of half_segment {half_segment}"
        )
        self.seq_len, self.half_segment = seq_len, half_segment
        self.num_segments = seq_len // half_segment  # official num_segments N_s
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
            ang = self.rope_angles(n, x.device)  # global positions 0..n-1
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


def make_attention(arch, *, dim, heads, seq_len, latent, compressed, split, half_segment, layer_index, pos_emb):
    common = {"dim": dim, "heads": heads, "seq_len": seq_len, "layer_index": layer_index, "pos_emb": pos_emb}
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
