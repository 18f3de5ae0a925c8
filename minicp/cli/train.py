"""``minicp train``: train a small language model on a text corpus, with checkpoints and a final perplexity."""

import argparse
import dataclasses
import sys

from minicp.cli.options import (
    add_engine_argument,
    add_model_arguments,
    command,
    fail,
    model_config_from_args,
    report_engine,
)
from minicp.lm.checkpoint import CheckpointError, load_checkpoint
from minicp.lm.data import load_tokens
from minicp.lm.evaluate import print_perplexities
from minicp.lm.train import LR_SCHEDULES, SAMPLINGS, TrainConfig, train
from minicp.nn import model as M

TRAIN_EXAMPLES = """\
examples:
  minicp train                                   # tiny ECP (D 128, 4 layers, n 512, m 64) on the Python docs
  minicp train --steps 2000 --checkpoint ecp.npz # save to ecp.npz (atomically) at the end and on Ctrl-C
  minicp train --checkpoint ecp.npz --resume --steps 4000    # continue that run up to step 4000
  minicp train --arch perceiver_ar --latent 256 --checkpoint par.npz
  minicp train --corpus my_book.txt --dim 256 --layers 6
  minicp eval ecp.npz                            # perplexities (official and every-token-once)
  minicp generate ecp.npz --prompt "The with statement"

The corpus is tokenized as UTF-8 bytes (vocabulary 256) and cut 90/5/5 into train/valid/test.
Optimiser: AdamW as the official code (lr 2e-4, betas 0.9/0.95, weight decay 0.1 on Linear weights,
clip 1.0, two micro-batches of 8 with summed losses, lr halved every 100k steps). No dropout.
"""


def _parser():
    p = argparse.ArgumentParser(
        prog="minicp train",
        description="Train a small language model with minicp "
        "(NumPy + autograd, CPU) and report its validation perplexity.",
        epilog=TRAIN_EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--corpus",
        default="pydoc",
        help="'pydoc' (the Python docs, ship with Python; default), "
        "a path to a UTF-8 text file, or wikitext:<dir> for WikiText-103 raw",
    )
    add_model_arguments(p)
    t = p.add_argument_group("training (defaults: the official main; with --resume: the checkpoint's own)")
    d = TrainConfig()
    t.add_argument(
        "--steps",
        type=int,
        default=None,
        help=f"total optimiser steps (default {d.steps}; "
        f"tiny-ecp takes about 1.4 s per step of 2 x 8 x 512 tokens on 2 CPU cores)",
    )
    t.add_argument("--batch", type=int, default=None, help=f"rows per micro-batch (default {d.batch})")
    t.add_argument(
        "--grad-accum", type=int, default=None, help=f"micro-batches per step, losses summed (default {d.grad_accum})"
    )
    t.add_argument("--lr", type=float, default=None, help=f"learning rate (default {d.lr})")
    t.add_argument(
        "--weight-decay", type=float, default=None, help=f"AdamW decay on Linear weights (default {d.weight_decay})"
    )
    t.add_argument("--clip", type=float, default=None, help=f"gradient-norm clip, 0 = off (default {d.clip})")
    t.add_argument(
        "--lr-halve-every",
        type=int,
        default=None,
        help=f"drop the learning rates every so many steps, 0 = never (default {d.lr_halve_every})",
    )
    t.add_argument(
        "--lr-schedule",
        choices=LR_SCHEDULES,
        default=None,
        help="official: the official loop's drop (decayed group 2 lr/4^k, others lr/4^k after k drops); halve: both halve (default official)",
    )
    t.add_argument("--seed", type=int, default=None, help="seed for the initial weights and the data order (default 0)")
    t.add_argument(
        "--sampling",
        choices=SAMPLINGS,
        default=None,
        help="shuffled non-overlapping chunks (official, default) or random windows",
    )
    t.add_argument(
        "--eval-every", type=int, default=None, help="validation loss every so many steps, 0 = never (default 100)"
    )
    t.add_argument(
        "--checkpoint",
        default=None,
        help="checkpoint file (.npz); written at the end, every --checkpoint-every steps and on Ctrl-C",
    )
    t.add_argument(
        "--checkpoint-every", type=int, default=None, help="also save every so many steps (default: only at the end)"
    )
    t.add_argument("--resume", action="store_true", help="continue the run saved in --checkpoint up to --steps")
    t.add_argument("--overwrite", action="store_true", help="start afresh even if --checkpoint exists")
    t.add_argument(
        "--no-progress",
        action="store_true",
        help="no progress bars (training and the final evaluation; they go to stderr)",
    )
    t.add_argument(
        "--eval-batch", type=int, default=8, help="windows per forward pass in the final perplexity (default 8)"
    )
    add_engine_argument(t)
    return p


def _configs(p, args):
    """(ModelConfig, TrainConfig): from the checkpoint when resuming, else from the flags; flags win."""
    options = dataclasses.asdict(TrainConfig(eval_every=100))
    if args.resume:
        if args.checkpoint is None:
            p.error("--resume needs --checkpoint")
        try:
            ck = load_checkpoint(args.checkpoint)
        except CheckpointError as e:
            fail(str(e))
        config = ck["config"]
        options.update(ck["train_config"] or {})  # continue with the run's own options
    else:
        config = model_config_from_args(args)
    for name in options:  # flags given on the command line win
        value = getattr(args, name, None)
        if value is not None:
            options[name] = value
    if config.vocab < 256:
        fail(f"byte corpora need vocab >= 256, the model has {config.vocab}")
    try:
        return config, TrainConfig(**{**options, "betas": tuple(options["betas"])})
    except ValueError as e:
        fail(str(e))


@command
def main(argv=None):
    """`minicp train`: train a model on a text corpus, with a progress bar, checkpoints and a final perplexity.

    Returns 0 (the exit status); errors exit through SystemExit with a one-line message."""
    p = _parser()
    args = p.parse_args(argv)
    config, tcfg = _configs(p, args)
    splits = load_tokens(args.corpus)
    print(
        f"model: {config.arch}, {M.count_params(config):,} parameters, n = {config.seq_len}; "
        f"corpus {args.corpus}: {len(splits['train']):,} train / {len(splits['valid']):,} valid tokens",
        file=sys.stderr,
    )
    report_engine(config, args.engine)
    try:
        result = train(
            config,
            splits["train"],
            tcfg,
            valid=splits["valid"],
            checkpoint=args.checkpoint,
            resume=args.resume,
            overwrite=args.overwrite,
            progress=not args.no_progress,
            engine=args.engine,
        )
    except (CheckpointError, FileExistsError) as e:
        fail(str(e))
    done = result.steps_this_call
    where = f"steps {result.step - done + 1}..{result.step} of {tcfg.steps}" if args.resume else f"{result.step} steps"
    print(
        f"trained {done} steps this run ({where}) in {result.seconds:.0f} s: "
        f"{result.seconds / max(done, 1):.2f} s a step, {result.tokens_per_s:,.0f} training tokens/s"
    )
    if result.history:
        print(f"last training loss {result.history[-1]['loss']:.4f}")
    print_perplexities(
        result.params,
        splits["valid"],
        config,
        batch=args.eval_batch,
        split="valid",
        progress=not args.no_progress,
        engine=args.engine,
    )
    if args.checkpoint:
        print(f"checkpoint: {args.checkpoint}")
    return 0
