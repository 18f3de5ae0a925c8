"""TrainConfig (every option of a training run, official defaults) and the learning-rate schedule."""

import dataclasses
from dataclasses import dataclass

from minicp.validate import bounded, choice, nonnegative_int, positive_int, real

SAMPLINGS = ("chunks", "random")
LR_SCHEDULES = ("official", "halve")


@dataclass(frozen=True)
class TrainConfig:
    """Everything about a training run except the model. Defaults are the official main's."""

    steps: int = 1000  # optimiser steps
    batch: int = 8  # rows per micro-batch (official batch_size 8)
    grad_accum: int = 2  # micro-batches per step, losses summed (official gradient_accumulate_every 2)
    lr: float = 2e-4  # initial learning rate
    betas: tuple = (0.9, 0.95)  # AdamW (beta1, beta2)
    eps: float = 1e-8  # AdamW epsilon
    weight_decay: float = 0.1  # decoupled decay on Linear weights only (see decays)
    clip: float = 1.0  # global gradient-norm clip; 0 or None disables
    lr_halve_every: int = 100_000  # the learning rates drop every so many steps; 0 disables
    lr_schedule: str = "official"  # "official": the official loop's two-group drop; "halve": both groups halve
    seed: int = 0  # parameter init (init_params) and the data generator
    sampling: str = "chunks"  # 1-D streams: "chunks" (official shuffled epochs) or "random" windows
    eval_every: int = 0  # validation loss every so many steps (0: never); needs valid data
    eval_windows: int = 16  # validation chunks used for that loss
    checkpoint_every: int = 0  # also save every so many steps (0: only at the end)

    def __post_init__(self):
        set_ = lambda k, v: object.__setattr__(self, k, v)  # frozen: store the canonical values
        set_("steps", nonnegative_int("steps", self.steps))
        bounded("steps", self.steps, what="optimiser steps", limit_name="MAX_STEPS")
        for name in ("batch", "grad_accum"):
            set_(name, positive_int(name, getattr(self, name)))
        what = f"rows per optimiser step (batch {self.batch:,} x grad_accum {self.grad_accum:,})"
        bounded("batch", self.batch * self.grad_accum, what=what, limit_name="MAX_BATCH", advice="use fewer rows")
        for name in ("eval_every", "checkpoint_every", "lr_halve_every", "eval_windows", "seed"):
            set_(name, nonnegative_int(name, getattr(self, name)))
        set_("lr", real("lr", self.lr, low=0, low_open=True))
        if isinstance(self.betas, (str, bytes)) or not hasattr(self.betas, "__len__") or len(self.betas) != 2:
            raise ValueError(f"betas must be two numbers in [0, 1), got {self.betas!r}")
        set_("betas", tuple(real(f"betas[{i}]", b, low=0, high=1, high_open=True) for i, b in enumerate(self.betas)))
        set_("eps", real("eps", self.eps, low=0, low_open=True))
        set_("weight_decay", real("weight_decay", self.weight_decay, low=0))
        if self.clip is not None:
            set_("clip", real("clip", self.clip, low=0))
        choice("lr_schedule", self.lr_schedule, LR_SCHEDULES)
        choice("sampling", self.sampling, SAMPLINGS)

    def replace(self, **changes):
        return dataclasses.replace(self, **changes)


def learning_rate(tcfg, step):
    """The learning rate of 0-based step ``step`` with ``lr_schedule="halve"``: lr0 * 0.5 ** (step // period).

    This is what the official loop's comment intends, and what both groups get with ``"halve"``."""
    if not tcfg.lr_halve_every:
        return tcfg.lr
    return tcfg.lr * 0.5 ** (step // tcfg.lr_halve_every)


def learning_rates(tcfg, step):
    """(decayed group, no-decay group) learning rates of 0-based step ``step``.

    ``lr_schedule="official"`` follows the official training loop (``ECPTransformer_main.py:316-319``):
    after every ``lr_halve_every`` steps it runs, for the two groups in order (decayed first),
    ``group.lr = args.lr / 2; args.lr = args.lr / 2``. So ``args.lr`` drops by 4 each time, and after
    k drops the decayed group has 2 * lr0 / 4^k and the no-decay group lr0 / 4^k (k = 1: lr0/2 and
    lr0/4). ``"halve"`` gives both groups ``learning_rate(tcfg, step)``.
    """
    if tcfg.lr_schedule == "halve" or not tcfg.lr_halve_every:
        lr = learning_rate(tcfg, step)
        return lr, lr
    k = step // tcfg.lr_halve_every
    if k == 0:
        return tcfg.lr, tcfg.lr
    return 2 * tcfg.lr / 4**k, tcfg.lr / 4**k
