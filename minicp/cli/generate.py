"""``minicp generate``: continue a text prompt with a trained checkpoint (byte-level tokens)."""

import argparse
import sys

from minicp.cli.options import add_engine_argument, command, fail, report_engine
from minicp.lm import data as D
from minicp.lm.checkpoint import CheckpointError, load_checkpoint
from minicp.lm.generate import generate

GENERATE_EXAMPLES = """\
examples:
  minicp generate ecp.npz --prompt "The with statement"
  minicp generate ecp.npz --prompt-file start.txt --tokens 500 --temperature 0.8 --seed 3
  minicp generate ecp.npz --prompt "def " --top-k 5          # k set directly instead of filter_thres
  minicp generate ecp.npz --prompt "x" --temperature 0        # greedy

Sampling is the official wrapper's: keep the top int((1 - filter_thres) * V) logits (V = 256: 25), then
softmax(logits / temperature). Any prompt length works; see `pydoc minicp.generate` for how prompts
shorter than the model's sequence length are fed to each architecture.
"""


@command
def main(argv=None):
    """`minicp generate`: continue a text prompt with a trained checkpoint (byte-level tokens)."""
    p = argparse.ArgumentParser(
        prog="minicp generate",
        description="Continue a prompt with a trained minicp checkpoint (byte-level text).",
        epilog=GENERATE_EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("checkpoint", help="a .npz checkpoint written by `minicp train`")
    src = p.add_mutually_exclusive_group()
    src.add_argument("--prompt", default="\n", help="prompt text (default: a newline)")
    src.add_argument("--prompt-file", default=None, help="read the prompt from this UTF-8 file")
    p.add_argument("--tokens", type=int, default=200, help="bytes to generate (default 200)")
    p.add_argument("--temperature", type=float, default=1.0, help="softmax temperature, 0 = greedy (default 1.0)")
    p.add_argument(
        "--filter-thres", type=float, default=0.9, help="official top-k: keep int((1 - thres) * V) logits (default 0.9)"
    )
    p.add_argument("--top-k", type=int, default=None, help="keep this many logits instead (overrides --filter-thres)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument("--eos", type=int, default=None, help="stop at this token id (e.g. 10 for a newline)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar (it goes to stderr)")
    add_engine_argument(p)
    args = p.parse_args(argv)
    try:
        ck = load_checkpoint(args.checkpoint)
    except CheckpointError as e:
        fail(str(e))
    text = D.load_corpus("text", args.prompt_file) if args.prompt_file else args.prompt
    ids = D.encode(text)
    if ids.size == 0:
        fail("the prompt is empty; give at least one character")
    report_engine(ck["config"], args.engine)
    try:
        out = generate(
            ck["params"],
            ids,
            ck["config"],
            args.tokens,
            temperature=args.temperature,
            top_k=args.top_k,
            filter_thres=args.filter_thres,
            seed=args.seed,
            eos=args.eos,
            progress=not args.no_progress,
            engine=args.engine,
        )
    except ValueError as e:
        fail(str(e))
    sys.stdout.write(text + D.decode(out) + "\n")
    return 0
