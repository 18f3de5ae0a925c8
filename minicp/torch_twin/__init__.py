"""A PyTorch twin of the official ECP models, used as a test oracle for minicp.

This is an independent re-implementation, written from the official-code notes (docs/official-code.md: the
shared pieces, the architectures, the wrapper and training), of what the authors' PyTorch code
(MetaMain/ECPTransformer, ``models/``) computes in eval mode. It shares no code with the official files.
It exists so that minicp's NumPy kernels can be held against a second, separately written implementation,
and so that benchmarks have a vectorised PyTorch baseline.

What it reproduces (docs/official-code.md#shared-pieces):

* the official ``state_dict`` key names and shapes, so official checkpoints load key-for-key
  (``model.load_state_dict(official_model.state_dict())``);
* K = V from one ``to_kv``; interleaved-pair RoPE (computed in the module dtype) in layer 0 only, except
  Double Attention (every layer); queries scaled by d**-0.5 after RoPE; masked scores filled with
  ``-finfo(dtype).max``; per-head kv LayerNorm after RoPE (PerceiverAR, Double, Compressed, s-Split; ECP
  owns one but never uses it); PreNorm blocks; exact-erf GELU feed-forward; LayerNorm + biased logits;
* the official quirks: PerceiverAR's shortened stream, Compressed's sequence-axis ``projection_hist`` and
  its layer-0 residual ``x[:, 0:p+L]`` (the Compressed first-layer residual quirk,
  docs/official-code.md#compressed-first-layer-residual), ECP's separate ``to_out_0`` for the first block.

Eval semantics only: there is no dropout anywhere (the FeedForward keeps an ``nn.Identity`` where the
official code has ``nn.Dropout`` so that the ``net.3`` key index matches).

Weights. ``build`` creates every module in the same order as the official constructors, with PyTorch's
default initialisers, under ``torch.manual_seed(seed)`` (the global RNG state is restored afterwards), then
casts to ``dtype``. So with ``perturb_norms=False`` the twin's weights equal those of the official model
built on the CPU right after ``torch.manual_seed(seed)``. ``perturb_norms=True`` (default) then adds small
noise to every LayerNorm weight and bias, so that a test comparing against the twin would notice two
LayerNorms swapped.

Modules: ``layers`` (RoPE, mask, K = V attention, PreNorm, FeedForward), ``attention`` (the six attention
layers), ``model`` (``TwinModel`` and the entry points). Public functions::

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

from minicp.torch_twin.attention import (
    ARCHITECTURES,
    PERCEIVER_FAMILY,
    CompressedAttention,
    DoubleAttention,
    ECPAttention,
    FullAttention,
    PerceiverARAttention,
    SSplitAttention,
    make_attention,
)
from minicp.torch_twin.layers import (
    FeedForward,
    PreNorm,
    RotaryFreqs,
    apply_rope,
    attend,
    tail_causal_mask,
)
from minicp.torch_twin.model import (
    TwinModel,
    build,
    build_attention_layer,
    wrapper_loss,
)

__all__ = [
    "ARCHITECTURES",
    "PERCEIVER_FAMILY",
    "CompressedAttention",
    "DoubleAttention",
    "ECPAttention",
    "FeedForward",
    "FullAttention",
    "PerceiverARAttention",
    "PreNorm",
    "RotaryFreqs",
    "SSplitAttention",
    "TwinModel",
    "apply_rope",
    "attend",
    "build",
    "build_attention_layer",
    "make_attention",
    "tail_causal_mask",
    "wrapper_loss",
]
