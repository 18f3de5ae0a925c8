"""The twin's whole model (``TwinModel``) and its public entry points: ``build``, ``build_attention_layer``
and the official wrapper loss ``wrapper_loss`` (docs/official-code.md#wrapper-generation-evaluation-training).

Letters: b batch, n input length, D = dim, V vocab, L latent, H = n - L history, p compressed length.
"""

import torch
import torch.nn.functional as F
from torch import nn

from minicp.torch_twin.attention import ARCHITECTURES, PERCEIVER_FAMILY, make_attention
from minicp.torch_twin.layers import FeedForward, PreNorm, RotaryFreqs


class TwinModel(nn.Module):
    """token_emb -> l x [x = attn(LN(x)) + residual; x = FF(LN(x)) + x] -> LN -> Linear(D, V).

    The residual of layer 0 is ``x[:, -L:]`` for PerceiverAR and ``x[:, 0:p+L]`` for Compressed (the
    Compressed first-layer residual quirk, docs/official-code.md#compressed-first-layer-residual);
    everywhere else it is x. Logits: PerceiverAR (b, L, V), Compressed (b, p+L, V), others (b, n, V).
    """

    def __init__(self, arch, *, vocab, dim, heads, layers, seq_len, latent, compressed, split, half_segment):
        super().__init__()
        self.arch, self.vocab, self.dim, self.heads, self.num_layers = arch, vocab, dim, heads, layers
        self.seq_len, self.latent, self.history = seq_len, latent, seq_len - latent
        self.compressed, self.split, self.half_segment = compressed, split, half_segment
        self.token_emb = nn.Embedding(vocab, dim)
        pos_emb = RotaryFreqs(dim // heads)  # one instance shared by all layers (not a top-level key)
        self.layers = nn.ModuleList()
        for k in range(layers):
            attn = make_attention(
                arch,
                dim=dim,
                heads=heads,
                seq_len=seq_len,
                latent=latent,
                compressed=compressed,
                split=split,
                half_segment=half_segment,
                layer_index=k,
                pos_emb=pos_emb,
            )
            self.layers.append(nn.ModuleList([PreNorm(dim, attn), PreNorm(dim, FeedForward(dim))]))
        self.to_logits = nn.Sequential(nn.LayerNorm(dim), nn.Linear(dim, vocab))

    def forward(self, tokens):
        # tokens (b, n); n may be shorter than seq_len: the layers then compute what the official ones do
        # (fixed history; torch's broadcasting included)
        x = self.token_emb(tokens)  # (b, n, D)
        for k, (attn, ff) in enumerate(self.layers):
            out = attn(x)
            if k == 0 and self.arch == "perceiver_ar":
                x = out + x[:, -self.latent :]  # (b, L, D)
            elif k == 0 and self.arch == "compressed":
                x = out + x[:, 0 : self.compressed + self.latent]  # (b, p+L, D), residual quirk
            else:
                x = out + x
            x = ff(x) + x
        return self.to_logits(x)  # (b, rows, V)


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
        split = max(1, history // 2) if split is None else split
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


def build(
    arch,
    *,
    vocab,
    dim,
    heads,
    layers,
    seq_len,
    latent=None,
    compressed=None,
    split=None,
    half_segment=None,
    dtype=torch.float64,
    seed=0,
    perturb_norms=True,
):
    """The whole model of ``arch`` in eval mode; ``model(tokens (b, n) long) -> logits``.

    arch: "transformer" (the full-attention transformer with ECP conventions), "perceiver_ar", "double",
    "compressed", "s_split", "ecp".
    latent L (default n/2 for the Perceiver family, n otherwise; the ecp/transformer forward ignores it),
    compressed p (default n // 4), split = s-Split history segment LENGTH c (default H / 2; official
    num_segments = H / c), half_segment = ECP block m (default n / 8; official num_segments = n / m).
    """
    latent, compressed, split, half_segment = _resolve(arch, seq_len, latent, compressed, split, half_segment)
    model = _seeded(
        seed,
        lambda: TwinModel(
            arch,
            vocab=vocab,
            dim=dim,
            heads=heads,
            layers=layers,
            seq_len=seq_len,
            latent=latent,
            compressed=compressed,
            split=split,
            half_segment=half_segment,
        ),
    )
    if perturb_norms:
        _perturb_layernorms(model, seed)
    return model.to(dtype).eval()


def build_attention_layer(
    arch,
    *,
    dim,
    heads,
    seq_len,
    latent=None,
    compressed=None,
    split=None,
    half_segment=None,
    layer_index=0,
    dtype=torch.float32,
    seed=0,
    perturb_norms=True,
):
    """One attention sub-layer (the ``fn`` inside PreNorm); ``layer(x (b, n_in, D)) -> (b, n_out, D)``.

    Its output is before the residual. n_in = ``layer.input_len``: n, except PerceiverAR layers >= 1 (L)
    and Compressed layers >= 1 (p + L). n_out: L for PerceiverAR, p + L for Compressed, else n_in.
    """
    latent, compressed, split, half_segment = _resolve(arch, seq_len, latent, compressed, split, half_segment)
    layer = _seeded(
        seed,
        lambda: make_attention(
            arch,
            dim=dim,
            heads=heads,
            seq_len=seq_len,
            latent=latent,
            compressed=compressed,
            split=split,
            half_segment=half_segment,
            layer_index=layer_index,
            pos_emb=None,
        ),
    )
    if perturb_norms:
        _perturb_layernorms(layer, seed)
    return layer.to(dtype).eval()


def wrapper_loss(model, x, latent):
    """The official AutoRegressiveWrapper loss (docs/official-code.md#wrapper-and-loss). x (b, n+1) long.

    Input x[:, :n]; the last ``latent`` logit rows predict targets x[:, -latent:]; mean cross-entropy over
    b * latent, no ignore_index.
    """
    logits = model(x[:, :-1])[:, -latent:]  # (b, L, V)
    targets = x[:, -latent:]  # (b, L)
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1))
