"""Command-line options shared by ``minicp train``, ``eval`` and ``generate``: which model to build, and how
every command reports a bad argument (one line on stderr, exit status 2, no traceback)."""

import functools
import os
import sys

from minicp.config import ARCHITECTURES, PRESETS, ModelConfig
from minicp.engines import ENGINES, which_engine

ERRORS = (ValueError, TypeError, OSError)  # what a bad argument or file raises (CheckpointError is a ValueError)


def fail(message):
    """Print ``error: message`` on stderr and exit with status 2 (SystemExit whose str is the message)."""
    text = f"error: {message}"
    print(text, file=sys.stderr)
    err = SystemExit(text)
    err.code = 2
    raise err


def quiet_stdout():
    """Point stdout at /dev/null, so that flushing what was left for a closed pipe raises nothing more."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError):
        pass


def command(main):
    """Decorator for a command's ``main``: a ValueError / TypeError / OSError becomes ``fail(message)``."""

    @functools.wraps(main)
    def wrapped(argv=None):
        try:
            return main(argv)
        except BrokenPipeError:  # the reader went away (minicp steps | head): nothing is wrong, nothing to say
            quiet_stdout()
            return 0
        except ERRORS as e:
            fail(str(e))

    return wrapped


def add_engine_argument(parser):
    """--engine, shared by train, eval and generate (see ``minicp.engines``)."""
    parser.add_argument(
        "--engine",
        choices=ENGINES,
        default="fast",
        help="which engine computes the model: fast (default; fused primitives, tested equal to the reference "
        "up to the order of summation) or reference (the readable code of minicp/nn, slower)",
    )


def report_engine(config, engine, seq_len=None):
    """One line on stderr: the engine that will run and how it computes the attention (as ``which_engine``)."""
    choice = which_engine(config, engine, purpose="loop", seq_len=seq_len)
    attention = choice.parts.get("attention", choice.parts.get("everything"))
    print(f"engine: {choice.engine}; attention: {attention}", file=sys.stderr)


def add_model_arguments(parser):
    """--preset / --arch and size flags shared by train, eval and generate."""
    g = parser.add_argument_group("model (ignored when a checkpoint already fixes the model)")
    g.add_argument(
        "--preset",
        default=None,
        help="start from a named configuration (default tiny-ecp: D 128, "
        "4 layers, 4 heads, n 512, m 64); the paper's are table1-A-double-L512, table6-ecp-SL2048-S512, ... "
        "(all names: python -c 'import minicp; print(sorted(minicp.PRESETS))'); other model flags override it",
    )
    g.add_argument("--arch", choices=ARCHITECTURES, default=None, help="architecture (default ecp)")
    for name, help_ in (
        ("vocab", "vocabulary size V (byte corpora: 256)"),
        ("dim", "model width D"),
        ("heads", "attention heads h"),
        ("layers", "layers l"),
        ("seq-len", "sequence length n"),
        ("latent", "latent length L (Perceiver family; default n/2)"),
        ("half-segment", "ECP half segment m (the official block; paper segment s = 2m)"),
        ("compressed", "Compressed: history compressed to p rows"),
        ("split", "s-Split: history segment length c"),
        ("group", "LongLoRA group g"),
    ):
        g.add_argument(f"--{name}", type=int, default=None, help=help_)


def model_config_from_args(args):
    """A ModelConfig from parsed --preset/--arch/size flags (the tiny model when nothing is given)."""
    fields = dict(PRESETS["tiny-ecp"]) if args.preset is None else dict(PRESETS.get(args.preset) or {})
    if args.preset is not None and args.preset not in PRESETS:
        fail(f"unknown preset {args.preset!r}; choose one of: {', '.join(sorted(PRESETS))}")
    if args.arch is not None and args.arch != fields.get("arch"):
        fields = {
            k: v
            for k, v in fields.items()
            if k not in ("half_segment", "segment", "latent", "compressed", "split", "group")
        }
        fields["arch"] = args.arch
    for flag in (
        "vocab",
        "dim",
        "heads",
        "layers",
        "seq_len",
        "latent",
        "half_segment",
        "compressed",
        "split",
        "group",
    ):
        value = getattr(args, flag)
        if value is not None:
            fields[flag] = value
            if flag == "half_segment":
                fields.pop("segment", None)
    return ModelConfig(**fields)
