"""minicp: a golden NumPy reference for the attention architectures of the ECP paper.

    import minicp
    cfg = minicp.ModelConfig(arch="ecp", seq_len=512, half_segment=64)
    params = minicp.init_params(cfg, seed=0)
    logits = minicp.forward(params, tokens, cfg)                  # the readable reference (minicp/nn)
    logits = minicp.forward(params, tokens, cfg, engine="fast")   # the fast engine, tested equal to it
    out = minicp.attention("ecp", q, k, v, half_segment=64)      # head level, always the readable file

The package is laid out by role (see README, "Layout"):

    minicp.nn        the reference itself: ops, one module per architecture, the model, the dense reference
    minicp.fast      the fast engine: fused primitives, blocked CPU cores, thread pool, CUDA kernels
    minicp.engines   the one switch between them: engine=..., minicp.engine(...), minicp.which_engine(...)
    minicp.analysis  attention-step counts, receptive fields, kernel-form patterns
    minicp.golden    golden test vectors for kernel authors;  minicp.testing  comparing a kernel with them
    minicp.lm        language modelling: data, AdamW, checkpoints, training, evaluation, generation
    minicp.viz       figures and animations (matplotlib);  minicp.cli  the `minicp` command
    minicp.backend   the array module (NumPy through autograd, or CuPy)

``minicp.testing`` and ``minicp.golden`` are imported on first use (``import minicp`` stays quick).
"""

import importlib

__version__ = "0.1.0"

from minicp.cli.interrupt import guard_startup as _guard  # noqa: F401  (minicp command: Ctrl-C while importing -> 130)

# isort: split

from minicp.analysis import kernel_pattern, steps
from minicp.analysis.receptive import empirical_receptive_field, receptive_field
from minicp.analysis.steps import count_attention_steps
from minicp.backend import to_numpy, use_backend
from minicp.config import ARCHITECTURES, PRESETS, ModelConfig
from minicp.engines import ENGINES, engine, forward, loss, value_and_grad, which_engine
from minicp.lm.evaluate import perplexity
from minicp.lm.generate import generate
from minicp.lm.train import TrainConfig, train
from minicp.nn.attention import attention, attention_mask, patterns
from minicp.nn.interop import load_official_state_dict
from minicp.nn.model import count_params, flatten, init_params, unflatten

_LAZY = ("golden", "testing")


def __getattr__(name):
    """``minicp.golden`` and ``minicp.testing``, imported when first asked for."""
    if name in _LAZY:
        return importlib.import_module(f"minicp.{name}")
    raise AttributeError(f"module 'minicp' has no attribute {name!r}")


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
    "value_and_grad",
    "ENGINES",
    "engine",
    "which_engine",
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
