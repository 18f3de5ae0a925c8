"""``minicp golden``: write golden test vectors (.npz) for kernel authors, or check one."""

import argparse
import sys
import time

from minicp.config import ARCHITECTURES, PRESETS, ModelConfig
from minicp.files import check_target
from minicp.golden import (
    INPUT_MODES,
    MASK_LIMIT,
    READ_LIMIT,
    WORK_LIMIT,
    load_golden,
    make_golden,
    make_model_golden,
    save_golden,
)
from minicp.nn.attention import pattern_args_for
from minicp.testing.dtypes import DTYPES
from minicp.validate import half_segment_from

EXAMPLES = """\
examples:
  # attention level: ECP, paper segment s = 256 (the code's half segment m = 128), 8 heads of 64
  minicp golden --arch ecp --seq-len 4096 --segment 256 --heads 8 --head-dim 64 --dtype float32 -o ecp.npz
  minicp golden --arch ecp --seq-len 1024 --half-segment 64 --dtype bfloat16 -o ecp_bf16.npz
  minicp golden --arch perceiver_ar --seq-len 1024 --latent 512 --heads 4 -o par.npz
  minicp golden --arch longlora --seq-len 2048 --group 512 --shift roll --heads 8 -o s2.npz

  # model level: tokens, every parameter (official names), logits, loss and its gradients
  minicp golden --model --arch ecp --seq-len 256 --segment 64 --heads 4 --head-dim 32 --layers 2 -o model.npz
  minicp golden --model --preset tiny-ecp -o tiny.npz

  # compact: inputs regenerated from the recorded seed (verified by sha256)
  minicp golden --arch ecp --seq-len 16384 --segment 256 --heads 8 --inputs seed -o ecp16k.npz
  minicp golden --arch transformer --seq-len 16384 --heads 8 --allow-large -o causal16k.npz  # over the work bound

  # read a file back and verify it (shapes, pattern, recomputed outputs)
  minicp golden --check ecp.npz
  minicp golden --check ecp16k.npz --check-grads --allow-large
  python -c "import numpy as np; z = np.load('ecp.npz'); print(z.files)"

pattern arguments per architecture: ecp --segment/--half-segment [--partial]; perceiver_ar --latent
[--layer]; double --latent; s_split --latent --split; compressed --latent --compressed [--layer];
longlora --group [--shift]; transformer none. The dense mask is stored only for n <= --mask-limit;
bfloat16 is stored as float32 holding bfloat16 values (see minicp/golden/__init__.py).
"""

# CLI option -> (pattern-arg name, ModelConfig field)
_PATTERN_OPTIONS = {
    "latent": ("latent", "latent"),
    "layer": ("layer", None),
    "split": ("split", "split"),
    "compressed": ("compressed", "compressed"),
    "group": ("group", "group"),
    "shift": ("shift", "shift"),
    "partial": ("partial", "partial_segments"),
}


class _Parser(argparse.ArgumentParser):
    """argparse with usage errors on one line (exit status 2)."""

    def error(self, message):
        self.exit(2, f"minicp golden: error: {message} (see minicp golden --help)\n")


def _one_line(error):
    return " ".join(str(error).split())


def _parser():
    p = _Parser(
        prog="minicp golden",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=EXAMPLES,
        description="Write golden test vectors (.npz, no pickle) for an attention kernel or the whole model: "
        "seeded inputs, float64 reference outputs and gradients stored in the requested dtype, "
        "the attention pattern and a JSON config. Or --check an existing file.",
    )
    p.add_argument("--arch", choices=ARCHITECTURES, help="architecture (default: from --preset, else required)")
    p.add_argument("--seq-len", type=int, help="sequence length n")
    p.add_argument("--heads", type=int, help="number of heads h (default 1; model level: 4)")
    p.add_argument("--head-dim", type=int, help="head dimension d (default 64; model level: 32 unless --dim is given)")
    p.add_argument("--batch", type=int, default=1, help="batch size b (default 1)")
    p.add_argument("--dtype", choices=DTYPES, default="float32", help="storage dtype (default float32)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument("-o", "--output", help="output path, ending in .npz (an existing file needs --overwrite)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output file (atomically)")
    g = p.add_argument_group("pattern arguments")
    g.add_argument("--segment", type=int, help="ecp: the paper's segment s (even); the code's block is m = s / 2")
    g.add_argument("--half-segment", type=int, help="ecp: the official code's block m (= s / 2)")
    g.add_argument("--partial", action="store_true", default=None, help="ecp: allow n not divisible by m")
    g.add_argument("--latent", type=int, help="perceiver_ar/double/s_split/compressed: latent length L")
    g.add_argument("--layer", type=int, help="perceiver_ar/compressed: 0-based layer index (default 0)")
    g.add_argument("--split", type=int, help="s_split: history segment length c")
    g.add_argument("--compressed", type=int, help="compressed: compressed history length p")
    g.add_argument("--group", type=int, help="longlora: group size g")
    g.add_argument("--shift", choices=("varlen", "roll"), help="longlora: shifted-head variant (default varlen)")
    g.add_argument(
        "--inputs",
        choices=INPUT_MODES,
        default="stored",
        help="stored: q, k, v, dout in the file; seed: regenerated from the recorded seed (half the size)",
    )
    g.add_argument(
        "--mask-limit",
        type=int,
        default=MASK_LIMIT,
        help=f"store the dense mask only for n <= this (default {MASK_LIMIT})",
    )
    m = p.add_argument_group("model level")
    m.add_argument("--model", action="store_true", help="whole model: tokens, params, logits, loss, gradients")
    m.add_argument("--preset", choices=sorted(PRESETS), metavar="NAME", help="a ModelConfig preset (implies --model)")
    m.add_argument("--dim", type=int, help="model width D (default heads * head_dim)")
    m.add_argument("--layers", type=int, help="number of layers (default 2)")
    m.add_argument("--vocab", type=int, help="vocabulary size (default 256)")
    c = p.add_argument_group("reading")
    c.add_argument("--check", metavar="PATH", help="load PATH, verify it and print a summary (writes nothing)")
    c.add_argument("--check-grads", action="store_true", help="also recompute and compare the gradients")
    c.add_argument(
        "--allow-large",
        action="store_true",
        help=f"write or check cases of more than {WORK_LIMIT:.0e} multiply-adds, and read files declaring more "
        f"than {READ_LIMIT / 2**30:.0f} GiB of arrays (refused otherwise)",
    )
    return p


def _segment_args(args):
    return half_segment_from(args.segment, args.half_segment, required=False)


def _summary(golden, path):
    c = golden.config
    lines = [
        f"{path}: {c['kind']} golden, arch {c['arch']}, dtype {c['dtype']} (stored {c['storage_dtype']}), "
        f"seed {c['seed']}, minicp {c['minicp_version']}"
    ]
    if c["kind"] == "attention":
        lines.append(
            f"  pattern_args {c['pattern_args']}, batch {c['batch']}, heads {c['heads']}, "
            f"seq_len {c['seq_len']}, head_dim {c['head_dim']}, out rows {c['out_rows']}, mask {c['mask']}"
        )
    for key, (shape, dt) in c["arrays"].items():
        if c["kind"] == "model" and key.startswith(("param/", "grad/")):
            continue
        lines.append(f"  {key:<20} {str(tuple(shape)):<22} {dt}")
    if c["kind"] == "model":
        example = next((p for p in c["param_names"] if "to_q" in p), c["param_names"][0])
        lines.append(f"  param/<name>, grad/<name> for {len(c['param_names'])} parameters, e.g. param/{example}")
    return "\n".join(lines)


def main(argv=None):
    """``minicp golden``: write a golden .npz, or ``--check`` one. Returns the exit status."""
    parser = _parser()
    args = parser.parse_args(sys.argv[1:] if argv is None else list(argv))
    try:
        if args.check:
            golden = load_golden(
                args.check,
                check=True,
                check_grads=args.check_grads,
                max_work=None if args.allow_large else WORK_LIMIT,
                max_bytes=None if args.allow_large else READ_LIMIT,
            )
            print(_summary(golden, args.check))
            print(
                "  OK: shapes, dtypes, pattern and recomputed "
                + ("outputs and gradients" if args.check_grads else "outputs")
                + " agree"
            )
            return 0
        if not args.output:
            parser.error("-o/--output is required (or --check PATH)")
        check_target(args.output, overwrite=args.overwrite)  # before the work: symlinks, existing files
        half = _segment_args(args)
        start = time.perf_counter()
        if args.model or args.preset:
            golden = make_model_golden(_model_config(args, half), batch=args.batch, dtype=args.dtype, seed=args.seed)
        else:
            golden = _attention_golden(args, half)
        save_golden(golden, args.output, overwrite=args.overwrite)
    except (ValueError, OSError) as e:
        print(f"minicp golden: error: {_one_line(e)}", file=sys.stderr)
        return 2
    print(_summary(golden, args.output))
    print(f"  written in {time.perf_counter() - start:.1f} s")
    return 0


def _attention_golden(args, half):
    if args.arch is None:
        raise ValueError("--arch is required")
    if args.seq_len is None:
        raise ValueError("--seq-len is required")
    for opt in ("dim", "layers", "vocab"):
        if getattr(args, opt) is not None:
            raise ValueError(f"--{opt} applies to --model only")
    pattern_args = {}
    if half is not None:
        pattern_args["half_segment"] = half
    for opt, (pname, _) in _PATTERN_OPTIONS.items():
        if getattr(args, opt) is not None:
            pattern_args[pname] = getattr(args, opt)
    required, optional = pattern_args_for(args.arch)
    for pname in pattern_args:
        if pname not in required + optional:
            flag = "--segment/--half-segment" if pname == "half_segment" else "--" + pname.replace("_", "-")
            raise ValueError(
                f"{flag} does not apply to arch {args.arch!r} (its pattern arguments: "
                f"{', '.join(required + optional) or 'none'})"
            )
    missing = [pname for pname in required if pname not in pattern_args]
    if missing:
        flags = [
            "--segment or --half-segment" if m_ == "half_segment" else "--" + m_.replace("_", "-") for m_ in missing
        ]
        raise ValueError(f"arch {args.arch!r} needs {', '.join(flags)}")
    return make_golden(
        args.arch,
        max_work=None if args.allow_large else WORK_LIMIT,
        seq_len=args.seq_len,
        heads=1 if args.heads is None else args.heads,
        head_dim=64 if args.head_dim is None else args.head_dim,
        batch=args.batch,
        dtype=args.dtype,
        seed=args.seed,
        mask_limit=args.mask_limit,
        inputs=args.inputs,
        **pattern_args,
    )


def _model_config(args, half):
    if args.layer is not None:
        raise ValueError("--layer applies to attention-level files only (a model has all its layers)")
    fields = {}
    if args.arch is not None:
        fields["arch"] = args.arch
    if args.seq_len is not None:
        fields["seq_len"] = args.seq_len
    if half is not None:
        fields["half_segment"] = half
    for opt, (_, field) in _PATTERN_OPTIONS.items():
        if field is not None and getattr(args, opt) is not None:
            fields[field] = getattr(args, opt)
    if args.heads is not None:
        fields["heads"] = args.heads
    if args.vocab is not None:
        fields["vocab"] = args.vocab
    if args.layers is not None:
        fields["layers"] = args.layers
    if args.dim is not None:
        fields["dim"] = args.dim
    if args.preset:
        if args.head_dim is not None and args.dim is None:
            fields["dim"] = args.head_dim * fields.get("heads", PRESETS[args.preset].get("heads", 4))
        return ModelConfig.preset(args.preset, **fields)
    if "arch" not in fields:
        raise ValueError("--arch (or --preset) is required")
    if "seq_len" not in fields:
        raise ValueError("--seq-len is required")
    heads = fields.setdefault("heads", 4)
    if "dim" not in fields:
        fields["dim"] = heads * (32 if args.head_dim is None else args.head_dim)
    elif args.head_dim is not None and fields["dim"] != heads * args.head_dim:
        raise ValueError(f"--dim {fields['dim']} must equal --heads {heads} x --head-dim {args.head_dim}")
    fields.setdefault("layers", 2)
    fields.setdefault("vocab", 256)
    return ModelConfig(**fields)
