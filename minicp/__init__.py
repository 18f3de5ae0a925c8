"""minicp: a golden NumPy reference for the attention architectures of the ECP paper.

    import minicp
    cfg = minicp.ModelConfig(arch="ecp", seq_len=512, half_segment=64)
    params = minicp.init_params(cfg, seed=0)
    logits = minicp.forward(params, tokens, cfg)
    out = minicp.attention("ecp", q, k, v, half_segment=64)      # head level, for kernel authors
"""
__version__ = "0.1.0"

from minicp.backend import to_numpy, use_backend
from minicp.config import ARCHITECTURES, PRESETS, ModelConfig
from minicp import attention                       # callable: minicp.attention(arch, q, k, v, ...)
from minicp.attention import attention_mask, patterns
from minicp.interop import load_official_state_dict
from minicp.model import count_params, flatten, forward, init_params, loss, unflatten
from minicp.steps import count_attention_steps
from minicp.receptive import empirical_receptive_field, receptive_field
# sub-modules users reach as attributes: minicp.testing.assert_matches_reference, minicp.golden, ...
from minicp import golden, kernel_pattern, steps, testing

__all__ = [
    "ARCHITECTURES", "PRESETS", "ModelConfig", "attention", "attention_mask", "patterns",
    "init_params", "forward", "loss", "count_params", "flatten", "unflatten", "load_official_state_dict",
    "count_attention_steps", "receptive_field", "empirical_receptive_field", "use_backend", "to_numpy",
    "golden", "kernel_pattern", "steps", "testing",
]
