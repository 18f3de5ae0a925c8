"""``minicp steps``: count attention steps exactly, for any configuration or the paper's Tables 7 and 8."""

import argparse

from minicp.analysis.steps import COUNTS, SHIFTS, count_attention_steps, format_steps, format_table7, format_table8
from minicp.cli.options import command
from minicp.config import ARCHITECTURES, PRESETS, ModelConfig

_EPILOG = """\
examples:
  minicp steps --arch ecp --seq-len 4096 --layers 48 --heads 24 --segment 256
  minicp steps --arch ecp --seq-len 4096 --layers 48 --heads 24 --segment 256 --count unmasked
  minicp steps --arch longlora --seq-len 4096 --heads 24 --group 512 --shift roll
  minicp steps --preset table8-compressed
  minicp steps --preset table6-ecp-SL2048-S512 --layers 12
  minicp steps --table8          # the paper's Table 8 reconciled with the code (docs/attention-steps.md#table-8)
  minicp steps --table7          # closed forms per architecture

An attention step is one score-matrix entry. "computed" counts every entry of every score matrix the
official code materialises (masked ones included); "unmasked" counts the entries that survive the
mask. Counts are exact closed forms summed over all heads and layers; they match what minicp's
explicit implementation builds. ECP's --segment is the paper's segment s (the official code's block
is the half segment m = s/2, --half-segment).
"""


def _parser():
    ap = argparse.ArgumentParser(
        prog="minicp steps",
        description="Count attention steps (score entries) exactly, in closed form.",
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    what = ap.add_mutually_exclusive_group()
    what.add_argument("--arch", choices=ARCHITECTURES, help="architecture to count (give its sizes below)")
    what.add_argument(
        "--preset",
        metavar="NAME",
        help="a paper configuration from minicp.PRESETS, e.g. table8-ecp (size options override it)",
    )
    what.add_argument("--table8", action="store_true", help="print the paper's Table 8 reconciled with the code")
    what.add_argument("--table7", action="store_true", help="print Table 7: closed forms per architecture")
    sizes = ap.add_argument_group("sizes (defaults as ModelConfig)")
    sizes.add_argument("--seq-len", type=int, metavar="N", help="sequence length n (required with --arch)")
    sizes.add_argument("--layers", type=int, metavar="NUM", help="layers l (default 1 with --arch)")
    sizes.add_argument("--heads", type=int, metavar="NUM", help="heads h (default 1 with --arch)")
    sizes.add_argument("--latent", type=int, metavar="L", help="latent length (PerceiverAR family; default n/2)")
    sizes.add_argument("--compressed", type=int, metavar="P", help="compressed history length p (default n//4)")
    sizes.add_argument("--split", type=int, metavar="C", help="s-Split history segment c (divides n - latent)")
    sizes.add_argument("--segment", type=int, metavar="S", help="ECP segment s in paper units (even; m = s/2)")
    sizes.add_argument("--half-segment", type=int, metavar="M", help="ECP half segment m (the official block)")
    sizes.add_argument("--partial", action="store_true", help="ECP: allow n not divisible by m")
    sizes.add_argument("--group", type=int, metavar="G", help="LongLoRA group g (even, divides n; default n/4)")
    sizes.add_argument("--shift", choices=SHIFTS, help="LongLoRA shifted heads: varlen (default) or roll")
    out = ap.add_argument_group("output")
    out.add_argument(
        "--count", choices=COUNTS, help="print only this total as a bare integer (default: a report with both counts)"
    )
    out.add_argument("--per-layer", action="store_true", help="with --count: one integer per layer")
    return ap


_SIZE_OPTS = (
    "seq_len",
    "layers",
    "heads",
    "latent",
    "compressed",
    "split",
    "segment",
    "half_segment",
    "group",
    "shift",
)


@command
def main(argv=None):
    """``minicp steps``: returns the exit status (0), or exits 2 with a message on bad arguments."""
    ap = _parser()
    args = ap.parse_args(argv)
    sizes = {k: getattr(args, k) for k in _SIZE_OPTS if getattr(args, k) is not None}
    if args.partial:
        sizes["partial"] = True
    if args.table8 or args.table7:
        if sizes or args.count or args.per_layer:
            ap.error("--table8/--table7 take no size or --count options")
        print(format_table8() if args.table8 else format_table7())
        return 0
    if args.per_layer and not args.count:
        ap.error("--per-layer needs --count computed|unmasked")
    try:
        if args.preset is not None:
            if args.preset not in PRESETS:
                raise ValueError(f"preset {args.preset!r} is not one of: {', '.join(sorted(PRESETS))}")
            if "partial" in sizes:
                sizes["partial_segments"] = sizes.pop("partial")
            target, kw = ModelConfig.preset(args.preset, **sizes), {}
        elif args.arch is not None:
            target, kw = args.arch, sizes
        else:
            ap.error("give --arch (with sizes), --preset NAME, --table8 or --table7")
        if args.count:
            result = count_attention_steps(target, count=args.count, per_layer=args.per_layer, **kw)
            print("\n".join(map(str, result)) if args.per_layer else result)
        else:
            print(format_steps(target, **kw))
    except ValueError as err:
        ap.error(str(err).replace("pass partial=True", "add --partial"))
    return 0
