"""``minicp <command>``: the command-line entry point (also ``python -m minicp``).

Each command is one small module in this package; this file only dispatches (importing just the command
asked for, so ``minicp --help`` stays fast). A bad argument or file is one line on stderr and exit status 2,
never a traceback; Ctrl-C at any moment, start-up included, is one line and exit status 130 (after
``minicp train`` saved its checkpoint; ``minicp.cli.interrupt``).
"""

import importlib
import sys

from minicp import __version__
from minicp.cli import interrupt

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

ENGINES_NOTE = """
engines: train, eval and generate run the fast engine by default (fused primitives, tested equal to the
readable reference up to the order of summation); --engine reference runs the readable code of minicp/nn
instead. Each prints the engine it uses. In Python: engine=..., minicp.engine(...), minicp.which_engine(cfg)."""

USAGE = (
    "usage: minicp <command> [options]     (minicp <command> --help for each)\n\ncommands:\n"
    + "\n".join(f"  {name:<10} {help_}" for name, (_, help_) in COMMANDS.items())
    + "\n"
    + ENGINES_NOTE
)


def main(argv=None):
    """Run ``minicp <command>``; returns the exit status (0, 2 for a bad argument, 130 after Ctrl-C)."""
    interrupt.begin()
    try:
        status = _main(argv)
    except SystemExit as e:
        interrupt.end(e.code)  # the minicp process ends here; called from Python, the SystemExit goes on
        raise
    interrupt.end(status)
    return status


def _main(argv):
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
    try:
        result = importlib.import_module(module).main(argv[1:])
    except ImportError as e:  # an optional dependency (matplotlib for figures)
        hint = "" if "pip install" in str(e) else "; install it (figures: pip install 'minicp[viz]')"
        print(f"minicp {argv[0]}: error: {e}{hint}", file=sys.stderr)
        return 2
    except (ValueError, TypeError, OSError) as e:  # a command without its own handler: one line, status 2
        print(f"minicp {argv[0]}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as e:
        interrupt.quiet()
        print(f"minicp {argv[0]}: interrupted{f' ({e})' if str(e) else ''}", file=sys.stderr)
        return 130
    return 0 if result is None else int(result)


if __name__ == "__main__":
    sys.exit(main())
