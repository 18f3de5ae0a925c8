"""``minicp figures``: regenerate every image in figures/."""

import argparse
import time

from minicp.cli.options import command
from minicp.viz import FIGURES, make_all


@command
def main(argv=None):
    """``minicp figures``: regenerate every image in figures/ (or --out DIR)."""
    ap = argparse.ArgumentParser(
        prog="minicp figures", description="Regenerate the images in figures/.", epilog="figures: " + ", ".join(FIGURES)
    )
    ap.add_argument("--out", default="figures", metavar="DIR", help="output folder (default: figures)")
    ap.add_argument("--only", nargs="+", metavar="FILE", choices=list(FIGURES), help="make only these files")
    ap.add_argument("--quick", action="store_true", help="smaller animations (for tests)")
    args = ap.parse_args(argv)
    start = time.perf_counter()
    skipped = []
    for path in make_all(args.out, quick=args.quick, only=args.only, skipped=skipped):
        print(f"wrote {path}  ({path.stat().st_size / 1024:.0f} KiB)")
    for name, why in skipped:
        print(f"left out {name}: {why}")
    print(f"done in {time.perf_counter() - start:.1f} s")
    return 0
