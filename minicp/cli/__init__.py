"""``minicp <command>``: the command-line entry point (also ``python -m minicp``).

Each command is one small module in this package; this file only dispatches (importing just the command
asked for, so ``minicp --help`` stays fast).
"""

import importlib
import sys

from minicp import __version__

COMMANDS = {
    # name: (module under minicp.cli, one-line help)
    "tour": ("minicp.cli.tour", "build every architecture, check it against the dense reference, count its steps"),
    "steps": ("minicp.cli.steps", "count attention steps exactly (any config, --table7, --table8)"),
    "figures": ("minicp.cli.figures", "regenerate every image in figures/"),
    "train": ("minicp.cli.train", "train a small language model (default corpus: the Python docs)"),
    "eval": ("minicp.cli.eval", "perplexity of a checkpoint, official and every-token-once"),
    "generate": ("minicp.cli.generate", "continue a prompt from a checkpoint"),
    "golden": ("minicp.cli.golden", "write golden test vectors (.npz) for kernel authors"),
}

USAGE = "usage: minicp <command> [options]     (minicp <command> --help for each)\n\ncommands:\n" + "\n".join(
    f"  {name:<10} {help_}" for name, (_, help_) in COMMANDS.items()
)


def main(argv=None):
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(USAGE)
        return 0
    if argv[0] in ("-V", "--version"):
        print(f"minicp {__version__}")
        return 0
    if argv[0] not in COMMANDS:
        print(f"minicp: unknown command {argv[0]!r}\n\n{USAGE}", file=sys.stderr)
        return 2
    module, _ = COMMANDS[argv[0]]
    result = importlib.import_module(module).main(argv[1:])
    return 0 if result is None else int(result)


if __name__ == "__main__":
    sys.exit(main())
