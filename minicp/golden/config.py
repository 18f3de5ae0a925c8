"""A golden file's JSON config: built from its case (``attention_config``, ``model_file_config``), the arrays it
implies (``implied_arrays``), and every field checked against that recomputation (``check_fields``).

Of an attention file's fields only the case's own are free (arch, pattern_args, batch, heads, seq_len,
head_dim, dtype, seed, inputs, mask_limit, format_version) and minicp_version, the writer's version;
everything else (scale, tolerance, rng, block names, the arrays' listing, input_sha256, ...) follows from
them, and ``check_fields`` refuses a file whose config says otherwise: readers outside minicp use those
fields. A model file's free fields are its model_config, batch, dtype and seed.
"""

import dataclasses
import json

import numpy as onp

from minicp.analysis import kernel_pattern
from minicp.analysis.counts import count_attention_steps
from minicp.config import ModelConfig
from minicp.nn.model import param_spec
from minicp.testing.budgets import (
    ARITH_ULPS,
    C_MAX,
    C_OUT,
    C_PAR,
    C_RMS,
    FLOOR_ULPS,
    NOISE_Z,
    PAR_AMBIGUOUS,
    TILE_ROWS,
    ZERO_ULPS,
)
from minicp.testing.compare import TOLERANCES
from minicp.testing.dtypes import DTYPES, EPS, STORAGE
from minicp.testing.patterns import normalize_pattern_args, resolved_pattern_args
from minicp.testing.reference import DRAW, check_draw
from minicp.validate import nonnegative_int, positive_int

__all__ = [
    "FORMAT",
    "FORMAT_VERSION",
    "READABLE_VERSIONS",
    "MASK_LIMIT",
    "INPUT_MODES",
    "INPUTS",
    "WORK_LIMIT",
    "attention_work",
    "tolerance_config",
    "input_draw",
    "attention_case",
    "attention_config",
    "model_file_config",
    "implied_arrays",
    "check_fields",
]

FORMAT, FORMAT_VERSION = "minicp-golden", 4  # 2: the input draw recorded ("draw"); 3: the tolerance block;
# 4: the tolerance block of the production floor, the blocks' budgets and the row-scale criterion
READABLE_VERSIONS = (1, 2, 3, 4)  # each version's block describes the budgets as minicp.testing computed them
MASK_LIMIT = 8192
INPUT_MODES = ("stored", "seed")
INPUTS = ("q", "k", "v", "dout")
WORK_LIMIT = 5e10  # multiply-adds of a computation (forward + backward); about a minute in NumPy
RNG = {
    1: "numpy.random.default_rng(seed).standard_normal: q, k, v (b,h,n,d), then dout (b,h,R,d); rounded to "
    "dtype; references computed in float64 from the rounded inputs",
    2: "numpy.random.SeedSequence(seed).spawn(4): one generator per tensor q, k, v (b,h,n,d), dout (b,h,R,d); "
    "standard_normal in float32 (float64 for dtype float64), rounded to dtype; references computed in float64 "
    "from the rounded inputs",
    3: "counter-based (minicp.testing.device): SplitMix64 words of (seed, tensor, index), Box-Muller in float64, "
    "rounded to float32 and to dtype; references computed in float64 from the rounded inputs",
}
MODEL_RNG = (
    "params: minicp.init_params(config, seed) in float64, rounded to dtype; tokens: "
    "numpy.random.default_rng(seed + 1).integers(0, vocab, (b, seq_len + 1))"
)
MODEL_OBJECTIVE = (
    "logits = forward(params, tokens[:, :-1]); loss = minicp.loss(params, tokens) "
    "(mean cross-entropy of the last `latent` positions); grad/* = d loss / d param"
)


def attention_work(config):
    """Multiply-adds to compute an attention case's reference with gradients: 6 per score entry of every
    block (masked ones included: forward S and O, backward dP, dS and the dq, dk products) and head
    dimension, times batch. The entries come from the closed forms of ``minicp.analysis.counts`` (constant
    time, so a request is refused before its pattern is built); cases those do not cover (an ECP of one
    half segment) count the blocks of the pattern."""
    arch, n, h = config["arch"], int(config["seq_len"]), int(config["heads"])
    args = dict(config["pattern_args"])
    layer = args.pop("layer", 0)
    try:
        entries = count_attention_steps(arch, seq_len=n, heads=h, layers=layer + 1, per_layer=True, **args)[layer]
    except (TypeError, ValueError):
        blocks = kernel_pattern.blocks(arch, n, h, **config["pattern_args"])
        entries = sum(len(b["rows"]) * len(b["cols"]) for b in blocks)
    return 6.0 * entries * int(config["head_dim"]) * int(config["batch"])


def tolerance_config(name, version=FORMAT_VERSION):
    """Every number a reader needs to judge a kernel as ``minicp.testing`` does (no prose to parse); files of
    format_version 1 and 2 carry the older block, whose rms budget named F and whose grad_atol_factor no
    check applies."""
    rtol, atol = TOLERANCES[name]
    if version < 3:
        return {
            "model": "budget", "C_MAX": C_MAX, "C_RMS": C_RMS, "FLOOR_ULPS": FLOOR_ULPS,
            "budget_max": "C_MAX * max|F - R| + FLOOR_ULPS * eps * rms(R)",
            "budget_rms": "C_RMS * rms|F - R| + FLOOR_ULPS * eps * rms(R)",
            "floor": f"F: the plain implementation in {name} (minicp.testing.blockwise)",
            "rtol": rtol, "atol": atol, "grad_atol_factor": "max(1, rms(expected))",
            "test": "|actual - expected| <= atol + rtol * |expected|",
        }  # fmt: skip
    low = name in ("bfloat16", "float16")
    if version == 3:  # the numbers as they were (files of version 3 are checked against this block)
        return {
            "model": "budget", "C_MAX": 5.0, "C_RMS": 2.5, "FLOOR_ULPS": 0.0625, "ZERO_ULPS": 16.0, "eps": EPS[name],
            "budget_max": "C_MAX * max|F - R| + FLOOR_ULPS * eps * rms(R)",
            "budget_rms": "C_RMS * rms|G - R| + FLOOR_ULPS * eps * rms(R)",
            "zero_reference": "ZERO_ULPS * eps in place of FLOOR_ULPS * eps * rms(R) where R is all zero",
            "floor": f"F: the plain implementation in {name}, every intermediate rounded (minicp.testing.blockwise)",
            "accurate": f"G: float32 arithmetic, only inputs and results rounded to {name}" if low else "G = F",
            "pass": "max|A - R| <= budget_max and rms|A - R| <= budget_rms and non-finite R matched exactly",
            "rtol": rtol, "atol": atol,
            "test": "fixed tolerances, only when asked for: |actual - expected| <= atol + rtol * |expected|",
        }  # fmt: skip
    return {
        "model": "budget",
        "C_MAX": C_MAX,
        "C_RMS": C_RMS,
        "C_OUT": C_OUT,
        "C_PAR": C_PAR,
        "PAR_AMBIGUOUS": PAR_AMBIGUOUS,
        "FLOOR_ULPS": FLOOR_ULPS,
        "ZERO_ULPS": ZERO_ULPS,
        "ARITH_ULPS": ARITH_ULPS,
        "NOISE_Z": NOISE_Z,
        "TILE_ROWS": TILE_ROWS,
        "eps": EPS[name],
        "eps_arithmetic": EPS["float64" if name == "float64" else "float32"],
        "budget_max": "max(C_MAX * max|F - R|, ARITH_ULPS * eps_arithmetic * max|R|) + FLOOR_ULPS * eps * rms(R)",
        "budget_rms": "max(C * rms|G - R| * (1 + NOISE_Z / sqrt(N)), ARITH_ULPS * eps_arithmetic * rms(R)) + "
        "FLOOR_ULPS * eps * rms(R), C = C_OUT for out in bfloat16/float16, else C_RMS; N the number of elements",
        "budget_row_scale": "out in bfloat16/float16: max(C_PAR * par(G) * (1 + NOISE_Z / sqrt(rows)), ARITH_ULPS * "
        "eps_arithmetic), par(X) = sqrt(sum_rows <X - R, R>^2 / <R, R> / sum R^2)",
        "zero_reference": "ZERO_ULPS * eps in place of the absolute terms where R is all zero",
        "floor": f"F: the plain implementation in {name}, every intermediate rounded (minicp.testing.blockmath)",
        "accurate": f"G: the production implementation: float32 state and accumulators, exp(S - max) rounded to {name}"
        " before P @ V, P and dS rounded before their products, D from the rounded output"
        if low
        else "G = F",
        "units": "bfloat16/float16: budget_rms applies to every declared block too (in pieces of at most TILE_ROWS "
        "rows, with the block's own floors)",
        "pass": "budget_max, budget_rms (and for units budget_rms) met, the row-scale error within PAR_AMBIGUOUS * "
        "budget_row_scale and non-finite R matched exactly; inconclusive when the row-scale error exceeds "
        "budget_row_scale or a precision bug's twin (accumulator, maximum or sum kept in the dtype) would pass too",
        "rtol": rtol,
        "atol": atol,
        "test": "fixed tolerances, only when asked for: |actual - expected| <= atol + rtol * |expected|",
    }


def input_draw(config, source="golden"):
    """How an attention file's inputs were drawn from its seed (``minicp.testing.reference.seeded_inputs``):
    1 for format_version 1, else the config's ``draw``. ValueError naming the file otherwise."""
    if config.get("format_version") == 1:
        return 1
    try:
        return check_draw(config.get("draw"))
    except ValueError as e:
        raise ValueError(f"{source}: config {e}") from None


def _fail(source, message):
    raise ValueError(f"{source}: {message}")


def attention_case(c, source, patterns=True):
    """The free fields of an attention config, validated: (arch, given pattern args, resolved pattern args,
    b, h, n, d, dtype, seed, inputs, mask_limit, version), or ValueError naming the field. ``patterns=False``
    checks the fields without building the pattern (the resolved arguments are then None)."""
    version = c.get("format_version")
    if c.get("format") != FORMAT:
        _fail(source, f"config format is {c.get('format')!r}, expected {FORMAT!r}")
    if version not in READABLE_VERSIONS or isinstance(version, bool):
        _fail(source, f"format_version {version!r} is not supported (this reader: {READABLE_VERSIONS})")
    try:
        arch, given = c["arch"], c["pattern_args"]
        if not isinstance(given, dict):
            raise ValueError(f"pattern_args must be a JSON object, got {given!r}")
        b, h = positive_int("batch", c["batch"]), positive_int("heads", c["heads"])
        n, d = positive_int("seq_len", c["seq_len"]), positive_int("head_dim", c["head_dim"])
        seed, mask_limit = nonnegative_int("seed", c["seed"]), nonnegative_int("mask_limit", c["mask_limit"])
        normal = normalize_pattern_args(arch, given)
        resolved = resolved_pattern_args(arch, n, h, given) if patterns else None
    except (KeyError, TypeError, ValueError) as e:
        _fail(source, f"config lacks a valid field or its pattern is invalid ({type(e).__name__}: {e})")
    if normal != given:
        _fail(source, f"config pattern_args {given} are not in their normal form {normal}")
    if c.get("dtype") not in DTYPES:
        _fail(source, f"config dtype {c.get('dtype')!r} is not one of {DTYPES}")
    if c.get("inputs") not in INPUT_MODES:
        _fail(source, f"config inputs {c.get('inputs')!r} is not one of {INPUT_MODES}")
    return arch, given, resolved, b, h, n, d, c["dtype"], seed, c["inputs"], mask_limit, version


def attention_config(arch, given, resolved, b, h, n, d, name, seed, inputs, mask_limit, version=FORMAT_VERSION):
    """The config ``make_golden`` writes for this case, all but ``input_sha256``, ``minicp_version`` and the
    ``arrays`` listing (what the arrays themselves give)."""
    pats = kernel_pattern.patterns_checked(arch, n, h, resolved)
    shared = all(p is pats[0] or _same_pattern(p, pats[0]) for p in pats)
    config = {
        "format": FORMAT, "format_version": version, "kind": "attention", "arch": arch, "pattern_args": given,
        "resolved_pattern_args": resolved, "batch": b, "heads": h, "seq_len": n, "head_dim": d,
        "out_rows": len(kernel_pattern.rows(arch, n, h, **resolved)), "scale": d**-0.5, "dtype": name,
        "storage_dtype": STORAGE[name], "compute_dtype": "float64", "seed": seed, "inputs": inputs,
    }  # fmt: skip
    if version >= 2:
        config["draw"] = DRAW
    config.update(
        rng=RNG[min(version, 2)],
        objective="gradients of sum(out * dout)",
        mask="omitted" if n > mask_limit else "shared" if shared else "per_head",
        mask_limit=mask_limit,
        mask_convention="True = query i may attend to key j",
        block_names=[blk["name"] for blk in kernel_pattern.blocks(arch, n, h, **resolved)],
        tolerance=tolerance_config(name, version),
    )
    if arch == "ecp":
        config["segment"] = 2 * int(resolved["half_segment"])  # the paper's s, for reference
    return config


def _same_pattern(a, b):
    return len(a.blocks) == len(b.blocks) and all(
        x.diagonal == y.diagonal and onp.array_equal(x.rows, y.rows) and onp.array_equal(x.cols, y.cols)
        for x, y in zip(a.blocks, b.blocks)
    )


def model_file_config(config, b, name, seed, version=FORMAT_VERSION):
    """The config ``make_model_golden`` writes for a ``ModelConfig``, all but ``minicp_version`` and the
    ``arrays`` listing."""
    return {
        "format": FORMAT, "format_version": version, "kind": "model", "model_config": dataclasses.asdict(config),
        "arch": config.arch, "batch": b, "dtype": name, "storage_dtype": STORAGE[name], "compute_dtype": "float64",
        "seed": seed, "inputs": "stored", "rng": MODEL_RNG, "objective": MODEL_OBJECTIVE,
        "param_names": list(param_spec(config)), "tolerance": tolerance_config(name, version),
    }  # fmt: skip


def implied_arrays(config, source, block_arrays):
    """name -> (shape, dtype name) of every array the file's config implies (inputs included, also when the
    file keeps only their seed), from the free fields alone; ``block_arrays`` is ``make.block_arrays``."""
    if config.get("kind") == "model":
        cfg, b, name = _model_fields(config, source)
        out = {"tokens": ((b, cfg.seq_len + 1), "int64"), "logits": ((b, cfg.out_len, cfg.vocab), STORAGE[name])}
        out["loss"] = ((), STORAGE[name])
        for key, shape in param_spec(cfg).items():
            out[f"param/{key}"] = out[f"grad/{key}"] = (tuple(shape), STORAGE[name])
        return out
    if config.get("kind") != "attention":
        _fail(source, f"config kind {config.get('kind')!r} is not 'attention' or 'model'")
    arch, _, resolved, b, h, n, d, name, *_, mask_limit, _ = attention_case(config, source)
    R, S = len(kernel_pattern.rows(arch, n, h, **resolved)), STORAGE[name]
    out = {key: ((b, h, n, d), S) for key in ("q", "k", "v", "dq", "dk", "dv")}
    out.update(out=((b, h, R, d), S), dout=((b, h, R, d), S), rows=((R,), "int64"))
    if n <= mask_limit:
        pats = kernel_pattern.patterns_checked(arch, n, h, resolved)
        shared = all(p is pats[0] or _same_pattern(p, pats[0]) for p in pats)
        out["mask"] = ((1 if shared else h, n, n), "bool")
    blocks, _ = block_arrays(arch, n, h, resolved)
    out.update({key: (a.shape, a.dtype.name) for key, a in blocks.items()})
    return out


def _model_fields(config, source):
    if config.get("format") != FORMAT or config.get("format_version") not in READABLE_VERSIONS:
        _fail(source, f"config format {config.get('format')!r} / version {config.get('format_version')!r} unknown")
    try:
        cfg = ModelConfig(**config["model_config"])
        b = positive_int("batch", config["batch"])
    except (KeyError, TypeError, ValueError) as e:
        _fail(source, f"config's model_config is not a valid ModelConfig or batch is invalid: {e}")
    if config.get("dtype") not in DTYPES:
        _fail(source, f"config dtype {config.get('dtype')!r} is not one of {DTYPES}")
    return cfg, b, config["dtype"]


def check_fields(config, expected, source):
    """ValueError naming the first field of ``config`` that differs from ``expected`` (the recomputation, as
    JSON: 5 and 5.0 differ), or that one of them lacks; ``minicp_version`` may be any string."""
    if not isinstance(config.get("minicp_version"), str):
        _fail(source, f"config minicp_version must be a string, got {config.get('minicp_version')!r}")
    canon = lambda x: json.dumps(x, sort_keys=True)
    expected = json.loads(canon(expected))
    for key in sorted(set(config) | set(expected)):
        if key == "minicp_version":
            continue
        if key not in expected:
            _fail(source, f"config field {key!r} is not a field of a minicp golden file")
        if key not in config:
            _fail(source, f"config lacks the field {key!r} (the recomputation gives {expected[key]!r})")
        if canon(config[key]) != canon(expected[key]):
            _fail(source, f"config field {key!r} is {config[key]!r}, the recomputation gives {expected[key]!r}")
