"""AdamW on flat parameter dicts {official state_dict name: array}, as ``torch.optim.AdamW`` computes it.

For step t = 1, 2, ... (decoupled weight decay):

    p = p * (1 - lr * wd)                    only for parameters where ``decays(name, shape)``
    m = m + (1 - beta1) * (g - m)            (torch: exp_avg.lerp_(g, 1 - beta1))
    v = beta2 * v + (1 - beta2) * g * g
    p = p - lr / (1 - beta1^t) * m / (sqrt(v) / sqrt(1 - beta2^t) + eps)

A parameter whose gradient is None (or absent from the gradient dict) is skipped altogether, as
``torch.optim.AdamW`` skips a parameter whose ``.grad`` is None: no decay, no moment update. PyTorch leaves the
gradient of a parameter the forward pass never reads at None (Compressed's ``projection_hist`` after layer 0,
an unused kv LayerNorm: ``minicp.nn.model.unused_params``), and ``minicp.train`` passes no gradient for those.

plus ``clip_grad_norm`` (torch.nn.utils.clip_grad_norm_). Used by minicp.train. The arrays may be NumPy or
CuPy; with ``engine="fast"`` and CuPy arrays each function is a few multi-tensor CUDA kernels for all
parameters (``minicp.fast.cuda.multi``: the same operations in the same order) instead of a loop over them.
"""

import math

import numpy as np

from minicp.engines import ENGINES
from minicp.fast.cuda import multi as cuda_multi
from minicp.validate import choice


def decays(name, shape):
    """True if ``name`` gets weight decay: Linear weights (2-D ``*.weight``), not the Embedding, LN or biases."""
    return name.endswith(".weight") and len(shape) == 2 and name != "token_emb.weight"


def adamw_init(flat_params):
    """Optimiser state: zero first and second moments for every parameter, step 0."""
    return {
        "step": 0,
        "m": {k: np.zeros_like(v) for k, v in flat_params.items()},
        "v": {k: np.zeros_like(v) for k, v in flat_params.items()},
    }


def adamw_step(
    flat_params,
    flat_grads,
    state,
    *,
    lr,
    betas=(0.9, 0.95),
    eps=1e-8,
    weight_decay=0.1,
    lr_no_decay=None,
    engine="reference",
):
    """One torch.optim.AdamW step, in place on ``flat_params`` and ``state`` (plain NumPy or CuPy arrays).

    Weight decay is applied to the names for which ``decays`` is true. The two official parameter
    groups may have different learning rates: ``lr`` for the decayed group, ``lr_no_decay`` (default
    ``lr``) for the rest (see ``minicp.lm.train.learning_rates``). Python-float scalars keep
    float32 arrays in float32 (NEP 50). The arithmetic follows torch's single-tensor implementation
    operation by operation, so float64 runs agree with it to rounding. Parameters whose gradient is None or
    missing are left exactly as they are (torch's ``grad is None``); their moments stay as they were.
    """
    engine = choice("engine", engine, ENGINES)
    beta1, beta2 = betas
    state["step"] += 1
    t = state["step"]
    bias1 = 1.0 - beta1**t
    bias2_sqrt = math.sqrt(1.0 - beta2**t)
    lr_no_decay = lr if lr_no_decay is None else lr_no_decay
    names = [k for k in flat_params if flat_grads.get(k) is not None]  # torch skips grad=None
    hyper = {}  # name -> (decay factor, step size) of its parameter group
    for name in names:
        decayed = decays(name, flat_params[name].shape)
        group_lr = lr if decayed else lr_no_decay
        hyper[name] = (1.0 - group_lr * weight_decay if weight_decay and decayed else 1.0, group_lr / bias1)
    tensors = [[flat_params[k] for k in names], [flat_grads[k] for k in names]]
    tensors += [[state["m"][k] for k in names], [state["v"][k] for k in names]]
    if engine == "fast" and cuda_multi.applies(*tensors):  # CuPy: one kernel for all, the same update as below
        decay, step = zip(*(hyper[k] for k in names))
        cuda_multi.adamw_(*tensors, decay, step, beta1=beta1, beta2=beta2, bias2_sqrt=bias2_sqrt, eps=eps)
        return flat_params, state
    for name, p, g, m, v in zip(names, *tensors):
        decay, step_size = hyper[name]
        if decay != 1.0:
            p *= decay  # decoupled decay
        m += (g - m) * (1.0 - beta1)  # lerp(m, g, 1 - beta1)
        v *= beta2
        v += (1.0 - beta2) * g * g
        denom = np.sqrt(v) / bias2_sqrt + eps  # np.sqrt of a CuPy array runs on the GPU
        p -= step_size * (m / denom)
    return flat_params, state


def clip_grad_norm(flat_grads, max_norm, engine="reference"):
    """torch.nn.utils.clip_grad_norm_: scale all gradients by min(1, max_norm / (norm + 1e-6)).

    Returns the global L2 norm before clipping (squared norms per parameter in its dtype, summed in float64;
    on CuPy each parameter's sum of squares is accumulated in float64, all in one kernel). In place. None
    entries (parameters without a gradient) are left out, as torch leaves them out.
    """
    flat_grads = {k: g for k, g in flat_grads.items() if g is not None}
    grads = list(flat_grads.values())
    if choice("engine", engine, ENGINES) == "fast" and cuda_multi.applies(grads):  # CuPy: two kernels for all
        return float(cuda_multi.clip_(grads, max_norm))  # the one read back, after the scaling is queued
    squares = [np.vdot(g, g).astype(np.float64) for g in grads]  # on the arrays' device
    norm = math.sqrt(float(sum(squares)))  # one device-to-host read
    if max_norm:
        coef = min(1.0, max_norm / (norm + 1e-6))
        if coef < 1.0:
            for g in flat_grads.values():
                g *= coef
    return norm
