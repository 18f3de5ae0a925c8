"""Attention-level golden cases: ``Golden`` and ``make_golden``."""

import hashlib
import importlib.metadata

import numpy as onp

from minicp.analysis import kernel_pattern
from minicp.testing.compare import TOLERANCES
from minicp.testing.dtypes import STORAGE, check_dtype, to_storage
from minicp.testing.patterns import normalize_pattern_args, resolved_pattern_args
from minicp.testing.reference import DRAW, check_draw, reference_case
from minicp.testing.verdict import C_MAX, C_RMS, FLOOR_ULPS
from minicp.validate import choice, nonnegative_int

__all__ = [
    "FORMAT",
    "FORMAT_VERSION",
    "READABLE_VERSIONS",
    "MASK_LIMIT",
    "INPUT_MODES",
    "Golden",
    "make_golden",
    "tolerance_config",
    "input_digest",
    "block_arrays",
    "minicp_version",
    "input_draw",
]

FORMAT, FORMAT_VERSION = "minicp-golden", 2  # 2: the input draw is recorded ("draw"); 1 had one stream
READABLE_VERSIONS = (1, 2)
MASK_LIMIT = 8192
INPUT_MODES = ("stored", "seed")
INPUTS = ("q", "k", "v", "dout")


class Golden:
    """A golden case: ``arrays`` (name -> NumPy array) and ``config`` (dict). ``g["q"]`` reads an array."""

    def __init__(self, arrays, config):
        self.arrays, self.config = dict(arrays), dict(config)

    @property
    def kind(self):
        return self.config.get("kind")

    def __getitem__(self, key):
        return self.arrays[key]

    def __contains__(self, key):
        return key in self.arrays

    def keys(self):
        return self.arrays.keys()

    def __repr__(self):
        c = self.config
        what = (
            f"arch={c.get('arch')!r}, pattern_args={c.get('pattern_args')}"
            if self.kind == "attention"
            else f"arch={c.get('model_config', {}).get('arch')!r}"
        )
        return f"Golden({self.kind}, {what}, dtype={c.get('dtype')!r}, {len(self.arrays)} arrays)"


def minicp_version():
    try:
        return importlib.metadata.version("minicp")
    except importlib.metadata.PackageNotFoundError:  # pragma: no cover - running from a bare checkout
        return "unknown"


def input_digest(arrays):
    """sha256 of q, k, v, dout (shapes, dtypes and bytes): how a file with regenerated inputs is verified."""
    h = hashlib.sha256()
    for key in INPUTS:
        a = onp.ascontiguousarray(arrays[key])
        h.update(f"{key}{a.shape}{a.dtype.str}".encode())
        h.update(a.tobytes())
    return h.hexdigest()


def block_arrays(arch, n, heads, pattern_args):
    """The block list as flat int64/bool arrays (see the package docstring) and the block names."""
    blks = kernel_pattern.blocks(arch, n, heads, **pattern_args)
    neg = lambda v: -1 if v is None else v
    arrays = {
        "block_head": [b_["head"] for b_ in blks],
        "block_row_start": [neg(b_["row_start"]) for b_ in blks],
        "block_row_stop": [neg(b_["row_stop"]) for b_ in blks],
        "block_col_start": [neg(b_["col_start"]) for b_ in blks],
        "block_col_stop": [neg(b_["col_stop"]) for b_ in blks],
        "block_diagonal": [0 if b_["diagonal"] is None else b_["diagonal"] for b_ in blks],
    }
    arrays = {key: onp.asarray(val, dtype=onp.int64) for key, val in arrays.items()}
    arrays["block_masked"] = onp.asarray([b_["diagonal"] is not None for b_ in blks], dtype=bool)
    for axis in ("rows", "cols"):
        parts = [b_[axis] for b_ in blks]
        arrays[f"block_{axis}"] = onp.concatenate(parts).astype(onp.int64)
        arrays[f"block_{axis}_offsets"] = onp.concatenate([[0], onp.cumsum([len(p) for p in parts])]).astype(onp.int64)
    return arrays, [b_["name"] for b_ in blks]


def _same_pattern(a, b):
    if a is b:
        return True
    return len(a.blocks) == len(b.blocks) and all(
        x.diagonal == y.diagonal and onp.array_equal(x.rows, y.rows) and onp.array_equal(x.cols, y.cols)
        for x, y in zip(a.blocks, b.blocks)
    )


def tolerance_config(name):
    """Every number a reader needs to judge a kernel as ``minicp.testing`` does (no prose to parse)."""
    rtol, atol = TOLERANCES[name]
    return {
        "model": "budget",
        "C_MAX": C_MAX,
        "C_RMS": C_RMS,
        "FLOOR_ULPS": FLOOR_ULPS,
        "budget_max": "C_MAX * max|F - R| + FLOOR_ULPS * eps * rms(R)",
        "budget_rms": "C_RMS * rms|F - R| + FLOOR_ULPS * eps * rms(R)",
        "floor": f"F: the plain implementation in {name} (minicp.testing.blockwise)",
        "rtol": rtol,
        "atol": atol,
        "grad_atol_factor": "max(1, rms(expected))",
        "test": "|actual - expected| <= atol + rtol * |expected|",
    }


def make_golden(
    arch,
    *,
    seq_len,
    heads,
    head_dim,
    batch=1,
    dtype="float32",
    seed=0,
    mask_limit=MASK_LIMIT,
    inputs="stored",
    **pattern_args,
):
    """Attention-level golden case (see the package docstring for the keys). Returns a ``Golden``.

    ``mask_limit``: the dense mask is stored only when seq_len <= mask_limit. ``inputs="seed"`` leaves q,
    k, v, dout out of the file (``load_golden`` regenerates them from the recorded seed and verifies their
    sha256): half the size. ``segment=`` (the paper's s) or ``half_segment=`` for ECP.
    """
    name = check_dtype(dtype)
    mask_limit = nonnegative_int("mask_limit", mask_limit)
    choice("inputs", inputs, INPUT_MODES)
    given = normalize_pattern_args(arch, pattern_args)
    resolved = resolved_pattern_args(arch, seq_len, heads, given)
    ref = reference_case(
        arch, seq_len=seq_len, heads=heads, head_dim=head_dim, batch=batch, dtype=name, seed=seed, grads=True, **given
    )
    n, h = int(seq_len), int(heads)
    arrays = {key: ref[key] for key in ("q", "k", "v", "dout", "rows")}
    for key in ("out", "dq", "dk", "dv"):
        arrays[key] = to_storage(ref[key], name)
    pats = kernel_pattern._patterns_checked(arch, n, h, resolved)
    shared = all(_same_pattern(p, pats[0]) for p in pats)
    mask_mode = "omitted"
    if n <= mask_limit:
        arrays["mask"] = kernel_pattern.dense_mask(arch, n, 1 if shared else h, **resolved)
        mask_mode = "shared" if shared else "per_head"
    blocks, block_names = block_arrays(arch, n, h, resolved)
    arrays.update(blocks)
    config = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "kind": "attention",
        "arch": arch,
        "pattern_args": given,
        "resolved_pattern_args": resolved,
        "batch": int(batch),
        "heads": h,
        "seq_len": n,
        "head_dim": int(head_dim),
        "out_rows": len(ref["rows"]),
        "scale": int(head_dim) ** -0.5,
        "dtype": name,
        "storage_dtype": STORAGE[name],
        "compute_dtype": "float64",
        "seed": int(seed),
        "inputs": inputs,
        "input_sha256": input_digest(arrays),
        "draw": DRAW,
        "rng": "numpy.random.SeedSequence(seed).spawn(4): one generator per tensor q, k, v (b,h,n,d), dout "
        "(b,h,R,d); standard_normal in float32 (float64 for dtype float64), rounded to dtype; references "
        "computed in float64 from the rounded inputs",
        "objective": "gradients of sum(out * dout)",
        "mask": mask_mode,
        "mask_limit": mask_limit,
        "mask_convention": "True = query i may attend to key j",
        "block_names": block_names,
        "tolerance": tolerance_config(name),
        "minicp_version": minicp_version(),
    }
    if arch == "ecp":
        config["segment"] = 2 * int(resolved["half_segment"])  # the paper's s, for reference
    if inputs == "seed":
        for key in INPUTS:
            arrays.pop(key)
    config["arrays"] = {key: [list(a.shape), a.dtype.name] for key, a in arrays.items()}
    if inputs == "seed":
        arrays.update({key: ref[key] for key in INPUTS})  # in memory the case is complete
    return Golden(arrays, config)


def input_draw(config, source="golden"):
    """How an attention file's inputs were drawn from its seed (``minicp.testing.reference.seeded_inputs``):
    1 for format_version 1, else the config's ``draw``. ValueError naming the file otherwise."""
    if config.get("format_version") == 1:
        return 1
    try:
        return check_draw(config.get("draw"))
    except ValueError as e:
        raise ValueError(f"{source}: config {e}") from None
