"""minicp: a golden NumPy reference for the attention architectures of the ECP paper.

    import minicp
    cfg = minicp.ModelConfig(arch="ecp", seq_len=512, half_segment=64)
    params = minicp.init_params(cfg, seed=0)
    logits = minicp.forward(params, tokens, cfg)
    out = minicp.attention("ecp", q, k, v, half_segment=64)      # head level, for kernel authors

The package is laid out by role (see README, "Layout"):

    minicp.nn        the reference itself: ops, one module per architecture, the model, the dense reference
    minicp.analysis  attention-step counts, receptive fields, kernel-form patterns
    minicp.golden    golden test vectors for kernel authors;  minicp.testing  comparing a kernel with them
    minicp.lm        language modelling: data, AdamW, checkpoints, training, evaluation, generation
    minicp.viz       figures and animations (matplotlib);  minicp.cli  the `minicp` command
    minicp.backend   the array module (NumPy through autograd, or CuPy)
"""

__version__ = "0.1.0"

from minicp.cli.interrupt import guard_startup as _guard  # noqa: F401  (minicp command: Ctrl-C while importing -> 130)

# isort: split

from minicp import golden, testing
from minicp.analysis import kernel_pattern, steps
from minicp.analysis.receptive import empirical_receptive_field, receptive_field
from minicp.analysis.steps import count_attention_steps
from minicp.backend import to_numpy, use_backend
from minicp.config import ARCHITECTURES, PRESETS, ModelConfig
from minicp.lm.evaluate import perplexity
from minicp.lm.generate import generate
from minicp.lm.train import TrainConfig, train
from minicp.nn.attention import attention, attention_mask, patterns
from minicp.nn.interop import load_official_state_dict
from minicp.nn.model import count_params, flatten, forward, init_params, loss, unflatten

__all__ = [
    "ARCHITECTURES",
    "PRESETS",
    "ModelConfig",
    "attention",
    "attention_mask",
    "patterns",
    "init_params",
    "forward",
    "loss",
    "count_params",
    "flatten",
    "unflatten",
    "load_official_state_dict",
    "count_attention_steps",
    "receptive_field",
    "empirical_receptive_field",
    "use_backend",
    "to_numpy",
    "train",
    "TrainConfig",
    "generate",
    "perplexity",
    "golden",
    "kernel_pattern",
    "steps",
    "testing",
]
