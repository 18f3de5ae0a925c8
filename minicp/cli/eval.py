"""``minicp eval``: perplexities of a checkpoint, the official way and every token once."""

import argparse
import sys

from minicp.cli.options import add_engine_argument, command, fail, report_engine
from minicp.lm.checkpoint import CheckpointError, load_checkpoint
from minicp.lm.data import load_tokens
from minicp.lm.evaluate import print_perplexities

EVAL_EXAMPLES = """\
examples:
  minicp eval ecp.npz                     # both perplexities on the validation split of the run's corpus
  minicp eval ecp.npz --split test
  minicp eval ecp.npz --corpus my_book.txt --stride 64

Two numbers are printed. "official" is what the paper's code computes: half-overlapping windows, each
scored on all of its L targets, so most tokens count twice (once with little context) and the result
depends on the latent length L. "every token once" scores each token exactly once with at least
n - stride + 1 tokens of context, and is comparable across architectures.
"""


@command
def main(argv=None):
    """`minicp eval`: perplexities of a checkpoint on a corpus split."""
    p = argparse.ArgumentParser(
        prog="minicp eval",
        description="Perplexity of a trained checkpoint, computed the official way and every-token-once.",
        epilog=EVAL_EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("checkpoint", help="a .npz checkpoint written by `minicp train`")
    p.add_argument("--corpus", default="pydoc", help="'pydoc' (default), a UTF-8 text file or wikitext:<dir>")
    p.add_argument(
        "--split", choices=("train", "valid", "test"), default="valid", help="which 90/5/5 split (default valid)"
    )
    p.add_argument("--stride", type=int, default=None, help="every-token-once stride S (default min(L, n/2))")
    p.add_argument("--batch", type=int, default=8, help="windows per forward pass (default 8)")
    p.add_argument("--max-tokens", type=int, default=None, help="evaluate only the first so many tokens of the split")
    p.add_argument("--no-progress", action="store_true", help="no progress bar (it goes to stderr)")
    add_engine_argument(p)
    args = p.parse_args(argv)
    try:
        ck = load_checkpoint(args.checkpoint)
    except CheckpointError as e:
        fail(str(e))
    ids = load_tokens(args.corpus)[args.split]
    if args.max_tokens:
        ids = ids[: args.max_tokens]
    cfg = ck["config"]
    print(
        f"{args.checkpoint}: {cfg.arch}, step {ck['step']}, n = {cfg.seq_len}, L = {cfg.latent}; "
        f"{len(ids):,} {args.split} tokens",
        file=sys.stderr,
    )
    report_engine(cfg, args.engine)
    try:
        print_perplexities(
            ck["params"],
            ids,
            cfg,
            batch=args.batch,
            stride=args.stride,
            split=args.split,
            progress=not args.no_progress,
            engine=args.engine,
        )
    except ValueError as e:
        fail(str(e))
    return 0
