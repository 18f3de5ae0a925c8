"""Training: AdamW as the official main, checkpoints in .npz, exact resume (docs/official-code.md#wrapper-generation-evaluation-training).

The optimiser is in ``minicp/lm/optim.py`` and the checkpoint format in ``minicp/lm/checkpoint.py``; this
module is the loop, the data sampler and ``minicp train``.

One optimiser step of the official training loop (``ECPTransformer_main.py``), reproduced here:

    for each of ``grad_accum`` micro-batches of ``batch`` rows (n + 1 tokens each):
        g += grad of the wrapper loss (mean CE over b * L)   losses are SUMMED, not averaged
    g *= min(1, clip / (||g||_2 + 1e-6))                     torch.nn.utils.clip_grad_norm_(..., 1.0)
    AdamW step (torch.optim.AdamW semantics, below)
    every lr_halve_every steps the learning rates drop (official: see ``learning_rates``)

AdamW is exactly ``torch.optim.AdamW`` (decoupled weight decay; the update is written out in ``minicp.lm.optim``).

Parameter groups as the official ``configure_optimizers``: weight decay ``wd`` (0.1) on the weights of
Linear layers (every 2-D ``*.weight`` except the embedding, which includes Compressed's
``projection_hist``), no decay on biases, LayerNorm weights and the embedding. Official defaults: lr 2e-4,
betas (0.9, 0.95), eps 1e-8, wd 0.1, micro-batches of 8, ``gradient_accumulate_every`` 2, clip 1.0, lr
halved every 100k steps. Every one of them is a ``TrainConfig`` field.

Data. ``train`` takes either a 1-D token stream (cut into non-overlapping chunks of n + 1 tokens, visited
in a fresh random order every epoch, as the official WikitextDataset/DataLoader(shuffle=True); or random
windows with ``sampling="random"``), a 2-D array of ready-made rows (num, n + 1), or a function
``sample(rng, batch) -> (batch, n + 1)`` (e.g. the lag-copy task). All randomness comes from one explicit
``numpy.random.Generator`` seeded from ``TrainConfig.seed``; a batch that runs past the end of an epoch
continues with the first rows of the next one, so every micro-batch is full.

What is left out, on purpose: dropout (minicp is a deterministic reference; the official runs use p = 0.05
on attention probabilities and after the FF GELU) and the official test-set model selection (docs/official-code.md#evaluation-protocol).

Checkpoints (``minicp.lm.checkpoint``) hold the parameters, the AdamW moments, the data order and generator
state and the loss history, so N steps + resume + N steps gives the same parameters, bit for bit, as 2N
steps in one go (on the same machine and NumPy build). Every argument is checked first (docs/inputs.md).
"""

import contextlib
import dataclasses
import os
import time
import warnings
from dataclasses import dataclass

import numpy as np

from minicp import backend as B
from minicp import engines, files
from minicp.config import ModelConfig

# checkpoints and the optimiser live in their own modules; their names stay importable from here
from minicp.lm.checkpoint import (  # noqa: F401
    FORMAT,
    CheckpointError,
    check_writable,
    config_from_dict,
    config_to_dict,
    jsonable,
    load_checkpoint,
    remove_stale_temps,
    save_checkpoint,
    sigint_held,
)
from minicp.lm.optim import adamw_init, adamw_step, clip_grad_norm, decays  # noqa: F401
from minicp.lm.progress import progress_bar
from minicp.lm.sampler import Sampler, make_rng  # noqa: F401  (importable from here too)
from minicp.lm.schedule import LR_SCHEDULES, SAMPLINGS, TrainConfig, learning_rate, learning_rates  # noqa: F401
from minicp.nn import budget
from minicp.nn import model as M
from minicp.nn.params import host_array
from minicp.validate import NonFiniteError, boolean, finite_result

# ----------------------------------------------------------------------------------------------------
# Loss and gradient
# ----------------------------------------------------------------------------------------------------


def loss_and_grad(params, tokens, config, engine=None):
    """Wrapper loss (mean CE over b * L) and its gradient as a flat {name: array} dict (autograd), computed by
    ``engine`` (see ``minicp.engines``; None: the default for loops, "fast"), with the parameters the forward
    pass never reads left out (``M.unused_params``: PyTorch's ``grad is None``) and so are RoPE buffers
    (constants, not parameters)."""
    value, grads = engines.value_and_grad(params, tokens, config, engine=engines.resolve(engine, "loop")[0])
    keep = set(M.param_spec(config)) - set(M.unused_params(config))
    return float(value), {k: np.asarray(B.to_numpy(g)) for k, g in M.flatten(grads).items() if k in keep}


def accumulated_loss_and_grad(params, micro_batches, config, engine=None):
    """Official gradient accumulation: the micro-batch losses are SUMMED (``loss.backward()`` per micro-batch,
    no division), so the gradient is the sum of the micro-batch gradients. Returns (loss sum, flat grads)."""
    loss_sum, grads = 0.0, None
    for tokens in micro_batches:
        value, g = loss_and_grad(params, tokens, config, engine)
        loss_sum += value
        if grads is None:
            grads = g
        else:
            for k in grads:
                grads[k] += g[k]
    return loss_sum, grads


# ----------------------------------------------------------------------------------------------------
# The training loop
# ----------------------------------------------------------------------------------------------------


@dataclass
class TrainResult:
    params: dict  # nested parameters (official names)
    opt_state: dict  # {"step", "m", "v"} with flat {name: array} moments
    step: int  # optimiser steps done in all (a resumed run counts the steps before it too)
    history: list  # one dict per step: step, loss (mean over its micro-batches), lr, grad_norm
    # (before clipping), valid_loss (every eval_every steps)
    tokens_per_s: float  # training tokens (rows * n, all micro-batches) per second in this call
    steps_this_call: int = 0  # optimiser steps done by this call (step minus where a resumed run started)
    seconds: float = 0.0  # wall-clock time of this call's steps


def validation_loss(params, config, rows, batch=8, engine=None):
    """Mean wrapper loss over ``rows`` (num, n + 1), in batches (each batch's mean weighted by its size)."""
    engine, _ = engines.resolve(engine, "loop")
    total, count = 0.0, 0
    for start in range(0, len(rows), batch):
        chunk = rows[start : start + batch]
        total += float(engines.loss(params, chunk, config, engine=engine)) * len(chunk)
        count += len(chunk)
    return total / count


def train(
    config,
    data,
    tcfg=None,
    *,
    valid=None,
    params=None,
    checkpoint=None,
    resume=False,
    overwrite=False,
    progress=True,
    callback=None,
    engine=None,
):
    """Train ``config`` on ``data`` for ``tcfg.steps`` optimiser steps; returns a TrainResult.

    config:     ModelConfig.
    data:       1-D token stream, 2-D rows (num, n + 1), or ``sample(rng, batch) -> (batch, n + 1)``.
    tcfg:       TrainConfig (official defaults when None).
    valid:      validation stream or rows, for ``eval_every`` (the first ``eval_windows`` chunks).
    params:     starting parameters (default ``init_params(config, seed=tcfg.seed)``); not with resume.
    checkpoint: .npz path, written every ``checkpoint_every`` steps, at the end and on Ctrl-C (then the
                KeyboardInterrupt says which step was saved). Its writer lock is held for the whole call:
                a second run on the same file gets ``minicp.files.FileInUseError`` and touches nothing.
    resume:     continue from ``checkpoint`` (its params, moments, step, data generator and history);
                ``tcfg.steps`` is the total, so a run resumed at step N does steps N..steps-1.
    overwrite:  allow a fresh run to replace an existing checkpoint (refused otherwise).
    progress:   tqdm progress bar (loss, lr, tokens/s).
    callback:   ``callback(step, info, params)`` after every step (info = the history entry); return True to stop.
    engine:     "reference" or "fast": which engine computes the loss and its gradient (None: an enclosing
                ``minicp.engine`` block's, else "fast"; ``minicp.which_engine(config, purpose="loop")`` says
                what runs). The choice changes only the order of summation, not the recipe.
    """
    tcfg, checkpoint, resume, overwrite, progress = _checked_arguments(
        config, tcfg, checkpoint, resume, overwrite, progress, callback
    )
    engine, _ = engines.resolve(engine, "loop")
    # The checkpoint's writer lock, held until the run returns: a second run on the same file stops here
    # ("in use by process N") before it has read, removed or written anything.
    if checkpoint is not None:
        _make_directory(checkpoint)
    with files.locked(checkpoint) if checkpoint is not None else contextlib.nullcontext():
        return _train(config, data, tcfg, valid, params, checkpoint, resume, overwrite, progress, callback, engine)


def _train(config, data, tcfg, valid, params, checkpoint, resume, overwrite, progress, callback, engine):
    """``train`` after its arguments were checked, holding the checkpoint's lock."""
    sampler = Sampler(data, config.seq_len, make_rng(tcfg.seed), tcfg.sampling, vocab=config.vocab)
    valid_rows = _validation_rows(valid, config, tcfg.eval_windows)
    if resume:
        params, opt_state, start, history = _resumed(config, tcfg, checkpoint, params, sampler)
    else:
        params, opt_state, start, history = _fresh(config, tcfg, checkpoint, params, overwrite)
    if checkpoint is not None:
        remove_stale_temps(checkpoint)  # what killed writers left, after the decision to start or resume
    flat = {k: np.array(B.to_numpy(v)) for k, v in M.flatten(params).items()}  # our own, writable copies

    def save(step):
        if checkpoint is not None:
            save_checkpoint(
                checkpoint,
                M.unflatten(flat),
                opt_state,
                config=config,
                train_config=tcfg,
                step=step,
                sampler_state=sampler.state(),
                history=history,
            )

    bar = progress_bar(tcfg.steps, progress and tcfg.steps > start, f"train {config.arch}", "step", start, leave=True)
    tokens = tcfg.grad_accum * tcfg.batch * config.seq_len
    t0, done, step = time.perf_counter(), 0, start
    before = sampler.state()  # the data state at the start of the step in progress
    try:
        while step < tcfg.steps:
            grads, info = _gradients(flat, sampler, config, tcfg, step, engine)
            with sigint_held():  # the update, the step count and the history move together, or not at all
                adamw_step(
                    flat,
                    grads,
                    opt_state,
                    lr=info["lr"],
                    lr_no_decay=info["lr_no_decay"],
                    betas=tcfg.betas,
                    eps=tcfg.eps,
                    weight_decay=tcfg.weight_decay,
                )
                _check_diverged(flat, step + 1, info)
                step += 1
                before = sampler.state()
                done += 1
                history.append(info)  # before the validation loss, so an interrupt there keeps the entry
            if tcfg.eval_every and valid_rows is not None and (step % tcfg.eval_every == 0 or step == tcfg.steps):
                info["valid_loss"] = validation_loss(M.unflatten(flat), config, valid_rows, tcfg.batch, engine)
            _show(bar, info, done * tokens / (time.perf_counter() - t0))
            if tcfg.checkpoint_every and step % tcfg.checkpoint_every == 0 and step < tcfg.steps:
                save(step)
            if callback is not None and callback(step, info, M.unflatten(flat)):
                break
    except KeyboardInterrupt:
        # Ctrl-C: keep what the last completed step left, so that resuming continues the run exactly. The
        # data of the interrupted step is drawn again (its sampler state is put back); the in-place update
        # runs with Ctrl-C held, so it is either complete (and counted) or not started.
        if checkpoint is not None:
            sampler.restore(*before)
            save(step)
            raise KeyboardInterrupt(f"saved step {step} to {checkpoint}") from None
        raise
    finally:
        bar.close()
    elapsed = time.perf_counter() - t0
    if done or not resume:  # a resumed run that had nothing left to do leaves its file alone
        save(step)
    return TrainResult(
        params=M.unflatten({k: B.asarray(v) for k, v in flat.items()}),
        opt_state=opt_state,
        step=step,
        history=history,
        tokens_per_s=done * tokens / elapsed if done else 0.0,
        steps_this_call=done,
        seconds=elapsed,
    )


def _checked_arguments(config, tcfg, checkpoint, resume, overwrite, progress, callback):
    tcfg = TrainConfig() if tcfg is None else tcfg
    if not isinstance(tcfg, TrainConfig):
        raise TypeError(f"tcfg must be a minicp.TrainConfig, got {type(tcfg).__name__}")
    if not isinstance(config, ModelConfig):
        raise TypeError(f"config must be a minicp.ModelConfig, got {type(config).__name__}")
    resume, overwrite, progress = (
        boolean(k, v) for k, v in (("resume", resume), ("overwrite", overwrite), ("progress", progress))
    )
    if callback is not None and not callable(callback):
        raise TypeError(f"callback must be callable, got {type(callback).__name__}")
    budget.check_activations(config, tcfg.batch, config.seq_len, grad=True)  # a micro-batch's gradient (float32)
    if checkpoint is not None:
        checkpoint = check_writable(checkpoint)
    return tcfg, checkpoint, resume, overwrite, progress


def _make_directory(checkpoint):
    """The checkpoint's directory, created if missing (its lock file lives there)."""
    directory = os.path.dirname(os.path.abspath(checkpoint))
    try:
        os.makedirs(directory, exist_ok=True)
    except OSError as e:
        raise type(e)(e.errno, f"cannot create the directory of checkpoint {checkpoint}: {e.strerror}") from None


def _fresh(config, tcfg, checkpoint, params, overwrite):
    """(params, AdamW state, start step 0, empty history) of a new run; refuses to overwrite silently."""
    if checkpoint is not None and os.path.exists(checkpoint) and not overwrite:
        raise FileExistsError(
            f"checkpoint {checkpoint!r} exists: resume it (resume=True / --resume) "
            f"or replace it (overwrite=True / --overwrite)"
        )
    params = M.init_params(config, seed=tcfg.seed) if params is None else params
    M.check_params(params, config, M.param_spec)
    flat = M.flatten(params)  # the RoPE buffers of official weights are constants: no moments
    opt_state = adamw_init({k: np.asarray(B.to_numpy(flat[k])) for k in M.param_spec(config)})
    return params, opt_state, 0, []


def _gradients(flat, sampler, config, tcfg, step, engine):
    """One step's summed micro-batch gradients, clipped, and its history entry (before the update)."""
    lr, lr_no_decay = learning_rates(tcfg, step)
    micro = [sampler.next(tcfg.batch) for _ in range(tcfg.grad_accum)]
    on_backend = M.unflatten({k: B.asarray(v) for k, v in flat.items()})  # CuPy: to the device
    try:
        loss_sum, grads = accumulated_loss_and_grad(on_backend, micro, config, engine)
    except NonFiniteError as e:  # before the update: the parameters and the checkpoint keep step `step`
        raise NonFiniteError(f"training stopped at step {step + 1} (nothing of it applied): {e}") from None
    norm = clip_grad_norm(grads, tcfg.clip)
    info = {"step": step + 1, "loss": loss_sum / tcfg.grad_accum, "lr": lr, "lr_no_decay": lr_no_decay}
    info["grad_norm"] = norm
    return grads, info


def _validation_rows(valid, config, windows):
    """The first ``windows`` rows (n + 1 tokens) of a validation stream or row array, or None."""
    if valid is None:
        return None
    n = config.seq_len
    v = host_array("valid", valid)
    if v.ndim not in (1, 2) or v.dtype.kind not in "iu" or (v.ndim == 2 and v.shape[1] != n + 1):
        raise ValueError(
            f"valid must be a 1-D token stream or rows (num, seq_len + 1 = {n + 1}), got {v.dtype} {v.shape}"
        )
    rows = (v[: len(v) // (n + 1) * (n + 1)].reshape(-1, n + 1) if v.ndim == 1 else v)[:windows]
    if len(rows) == 0:
        raise ValueError(f"validation data holds no complete row of seq_len + 1 = {n + 1} tokens")
    if rows.min() < 0 or rows.max() >= config.vocab:
        raise ValueError(f"valid token ids must lie in [0, vocab={config.vocab})")
    return rows


def _resumed(config, tcfg, checkpoint, params, sampler):
    """(params, opt_state, step, history) of the run saved in ``checkpoint``; its sampler state restored."""
    if checkpoint is None:
        raise ValueError("resume=True needs a checkpoint path")
    if params is not None:
        raise ValueError("give either params or resume=True, not both")
    ck = load_checkpoint(checkpoint, config)  # raises before anything is written
    if ck["opt_state"] is None:
        raise CheckpointError(f"checkpoint {checkpoint!r} holds no optimiser state, so it cannot be resumed")
    if ck["train_config"] is not None:
        try:
            saved = TrainConfig(**{**ck["train_config"], "betas": tuple(ck["train_config"]["betas"])})
        except (TypeError, ValueError, KeyError) as e:
            raise CheckpointError(f"checkpoint {checkpoint!r} carries invalid training options ({e})") from None
        keep = ("steps", "eval_every", "eval_windows", "checkpoint_every")  # may change between runs
        changed = [k for k in dataclasses.asdict(tcfg) if k not in keep and getattr(saved, k) != getattr(tcfg, k)]
        if changed:
            raise CheckpointError(
                f"checkpoint {checkpoint!r} was trained with different options: "
                + ", ".join(f"{k} = {getattr(saved, k)!r} in the file, {getattr(tcfg, k)!r} requested" for k in changed)
            )
    meta, arrays = ck["sampler"]
    if meta:
        sampler.restore(meta, arrays)
    else:  # written by save_checkpoint without sampler state: the data order starts afresh from tcfg.seed
        warnings.warn(f"checkpoint {checkpoint!r} has no sampler state; the data order restarts", UserWarning, 2)
    return ck["params"], ck["opt_state"], ck["step"], ck["history"]


def _check_diverged(flat, step, info):
    """After an update: the summed loss and every parameter finite, else a NonFiniteError naming the first
    bad entry (an update that overflowed: a learning rate too large for the dtype)."""
    if not np.isfinite(info["loss"]):
        raise NonFiniteError(f"training diverged: the loss of step {step} is {info['loss']} (lower lr?)")
    if not all(np.isfinite(value).all() for value in flat.values()):
        for name, value in flat.items():
            finite_result(f"training diverged at step {step} (lower lr?): parameter {name}", value)


def _show(bar, info, rate):
    post = {"loss": f"{info['loss']:.4f}", "lr": f"{info['lr']:.2g}", "tok/s": f"{rate:.0f}"}
    if "valid_loss" in info:
        post["valid"] = f"{info['valid_loss']:.4f}"
    bar.set_postfix(post, refresh=False)
    bar.update(1)
