"""Attention-level golden cases: ``Golden`` and ``make_golden``."""

import importlib.metadata

import numpy as onp

from minicp.analysis import kernel_pattern
from minicp.golden.config import (
    INPUT_MODES,
    INPUTS,
    MASK_LIMIT,
    WORK_LIMIT,
    attention_config,
    attention_work,
)
from minicp.testing.dtypes import check_dtype, to_storage
from minicp.testing.guards import digest
from minicp.testing.patterns import normalize_pattern_args, resolved_pattern_args
from minicp.testing.reference import reference_case
from minicp.validate import choice, nonnegative_int, positive_int, real

__all__ = ["Golden", "make_golden", "input_digest", "block_arrays", "minicp_version"]


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
    """sha256 of q, k, v, dout (name, shape, dtype and bytes of each, in that order): how a file's inputs are
    recorded (``input_sha256``) and verified."""
    return digest(arrays, INPUTS)


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
    max_work=WORK_LIMIT,
    **pattern_args,
):
    """Attention-level golden case (see the package docstring for the keys). Returns a ``Golden``.

    ``mask_limit``: the dense mask is stored only when seq_len <= mask_limit. ``inputs="seed"`` leaves q,
    k, v, dout out of the file (``load_golden`` regenerates them from the recorded seed and verifies their
    sha256): half the size. ``segment=`` (the paper's s) or ``half_segment=`` for ECP. ``max_work``: refuse
    (ValueError) a case of more multiply-adds than this (``attention_work``; None: no bound).
    """
    name = check_dtype(dtype)
    mask_limit = nonnegative_int("mask_limit", mask_limit)
    choice("inputs", inputs, INPUT_MODES)
    n, h = positive_int("seq_len", seq_len), positive_int("heads", heads)
    d, b = positive_int("head_dim", head_dim), positive_int("batch", batch)
    seed = nonnegative_int("seed", seed)
    given = normalize_pattern_args(arch, pattern_args)
    if max_work is not None:  # before the pattern is built (for a long causal case that alone costs n^2 bytes)
        case = {"arch": arch, "seq_len": n, "heads": h, "pattern_args": given, "head_dim": d, "batch": b}
        if attention_work(case) > real("max_work", max_work, low=0):
            raise ValueError(
                f"this case takes {attention_work(case):.2g} multiply-adds, more than max_work = {max_work:.2g}; "
                "pass max_work=None (CLI: --allow-large) to compute it anyway"
            )
    resolved = resolved_pattern_args(arch, n, h, given)
    ref = reference_case(arch, seq_len=n, heads=h, head_dim=d, batch=b, dtype=name, seed=seed, grads=True, **given)
    arrays = {key: ref[key] for key in ("q", "k", "v", "dout", "rows")}
    for key in ("out", "dq", "dk", "dv"):
        arrays[key] = to_storage(ref[key], name)
    config = attention_config(arch, given, resolved, b, h, n, d, name, seed, inputs, mask_limit)
    if config["mask"] != "omitted":
        arrays["mask"] = kernel_pattern.dense_mask(arch, n, 1 if config["mask"] == "shared" else h, **resolved)
    arrays.update(block_arrays(arch, n, h, resolved)[0])
    config.update(input_sha256=input_digest(arrays), minicp_version=minicp_version())
    listed = [key for key in arrays if inputs == "stored" or key not in INPUTS]
    config["arrays"] = {key: [list(arrays[key].shape), arrays[key].dtype.name] for key in listed}
    return Golden(arrays, config)  # in memory the case is complete, inputs included
