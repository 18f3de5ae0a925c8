"""The canonical causal Transformer attention (paper section 2, eqs. 1-3; docs/official-code.md#canonical-transformer).

    S = q k^T / sqrt(d)      (n x n)
    S[i, j] = -inf for j > i (causal mask)
    O = softmax(S) V

Every query sees every earlier key, so one layer costs n^2 score entries per head, of which
n(n+1)/2 are unmasked. This is the yardstick all other architectures are measured against.

The official repository has no full-attention model. minicp's "transformer" is the full-attention model with ECP's conventions
(docs/official-code.md#full-attention-ecp-conventions):
ECP's conventions (K = V = raw to_kv, RoPE in layer 0 only, no per-head kv LayerNorm) with a single
output projection ``to_out``. ECP with two half segments computes exactly this when its ``to_out_0``
equals ``to_out`` (tests/test_equivalences.py derives and checks that). ModelConfig's
``kv_layernorm=True`` gives PerceiverAR's conventions (docs/official-code.md#full-attention-perceiverar-conventions)
and adding ``rope_all_layers=True`` gives Double's (docs/official-code.md#full-attention-double-conventions).
"""

from minicp.nn import ops
from minicp.nn.attention import common
from minicp.nn.attention.blocks import Pattern, causal_block

NAME = "transformer"


def pattern(n):
    """One n x n block, causal."""
    return Pattern(NAME, n, (causal_block("causal", 0, n, 0, n),))


def attention(q, k, v, *, scale=None):
    """Head-level causal attention. q, k, v (b, h, n, d) -> (b, h, n, d)."""
    common.check_qkv(q, k, v)
    n = q.shape[2]
    return ops.attend(common.scale_q(q, scale), k, v, ops.causal_mask(n, n))


def pattern_kwargs(cfg, layer):
    return {}


def param_spec(cfg, layer):
    """Parameters of ``layers.i.0.fn``; ``norm`` is used only with kv_layernorm=True (docs/official-code.md#full-attention-perceiverar-conventions, docs/official-code.md#full-attention-double-conventions)."""
    return common.projection_params(cfg)


def attention_layer(p, x, cfg, layer):
    """Causal self-attention sub-layer: x (b, n, D) -> (b, n, D)."""
    q, k, v = common.project(p, x, cfg, layer)
    return ops.linear(ops.merge_heads(attention(q, k, v, scale=1.0)), p["to_out"])


def skip(x, cfg, layer):
    return x


def unused_params(cfg, layer):
    """Names under ``layers.i.0.fn`` that this layer's forward pass never reads (their gradient is None in
    PyTorch, and AdamW leaves them alone): the per-head LayerNorm where the config does not apply it."""
    return common.unused_kv_norm(cfg)
