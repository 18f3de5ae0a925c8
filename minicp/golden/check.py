"""Verifying golden files (``check_golden``, ``load_golden``) and judging a kernel with one (``assert_matches_golden``)."""

import numpy as onp

from minicp.analysis import kernel_pattern
from minicp.config import ModelConfig
from minicp.golden.config import (
    INPUTS,
    WORK_LIMIT,
    attention_case,
    attention_config,
    attention_work,
    check_fields,
    implied_arrays,
    input_draw,
    model_file_config,
)
from minicp.golden.io import READ_LIMIT, read_golden
from minicp.golden.make import Golden, block_arrays, input_digest
from minicp.golden.model import model_recomputed
from minicp.testing.check import INCONCLUSIVE, LAYOUTS, case_context, check_case
from minicp.testing.compare import check_tolerance, compare
from minicp.testing.device import check_device
from minicp.testing.dtypes import EPS, is_bfloat16_exact
from minicp.testing.kernel_run import on_device
from minicp.testing.reference import reference_case, shared_inputs
from minicp.validate import boolean, choice, nonnegative_int, real

__all__ = ["check_golden", "load_golden", "assert_matches_golden"]


def _fail(source, message):
    raise ValueError(f"{source}: {message}")


def _expect(golden, key, shape, dtype, source):
    if key not in golden.arrays:
        _fail(source, f"missing array {key!r}")
    a = golden.arrays[key]
    if tuple(a.shape) != tuple(shape):
        _fail(source, f"array {key!r} has shape {tuple(a.shape)}, the config implies {tuple(shape)}")
    if a.dtype.name != dtype:
        _fail(source, f"array {key!r} has dtype {a.dtype.name}, the config implies {dtype}")
    return a


def check_golden(golden, check_grads=False, source="golden", max_work=WORK_LIMIT):
    """Verify a ``Golden`` for consistency; raises ValueError saying what is wrong, returns None.

    Checks: format and version; every array the config implies is present with the right shape and dtype,
    and no other (bfloat16 files: values exactly bfloat16); every config field is what the file's case gives
    (scale, tolerance, rng, block names, listing, input_sha256, ...: ``minicp.golden.config``); inputs
    finite; for attention files the rows, block list and mask equal the pattern recomputed from the config,
    the stored inputs are the seed's draw, and the outputs (with ``check_grads`` the gradients) recomputed
    in float64 from them, never read from a cache, equal the stored values up to their rounding to the
    storage dtype (a non-finite value never passes); for model files the tokens are in range, and logits
    and loss recomputed in float64 match. ``max_work``: refuse (ValueError) a recomputation of more
    multiply-adds than this (None: no bound).
    """
    if not isinstance(golden, Golden):
        raise ValueError(f"golden must be a minicp.golden.Golden, got {type(golden).__name__}")
    c = golden.config
    implied = implied_arrays(c, source, block_arrays)
    for key, (shape, dtype) in implied.items():
        _expect(golden, key, shape, dtype, source)
    extra = set(golden.arrays) - set(implied)
    if extra:
        _fail(source, f"arrays not listed in the config: {sorted(extra)}")
    regenerated = set(INPUTS) if c.get("inputs") == "seed" and c.get("kind") == "attention" else set()
    listing = {key: [list(shape), dtype] for key, (shape, dtype) in implied.items() if key not in regenerated}
    if c.get("dtype") == "bfloat16":
        for key, a in golden.arrays.items():
            if a.dtype.kind == "f" and not is_bfloat16_exact(a):
                _fail(source, f"array {key!r} should hold bfloat16 values (low 16 bits zero) but does not")
    if c.get("kind") == "attention":
        _check_attention(golden, listing, check_grads, source, max_work)
    else:
        _check_model(golden, listing, check_grads, source)


def _compare_stored(stored, recomputed, key, name, source):
    """Stored values must be the recomputed float64 values rounded to the storage dtype: within one ulp of
    the dtype relative, plus 64 ulps of the tensor's rms for summation-order differences."""
    finite = onp.isfinite(recomputed)
    rms = float(onp.sqrt(onp.mean(onp.square(recomputed[finite])))) if finite.any() else 0.0
    cmp = compare(stored, recomputed, name=key, dtype=name, rtol=EPS[name], atol=64 * EPS[name] * max(rms, 1e-300))
    if not cmp.ok:
        _fail(source, f"stored {key!r} does not match its float64 recomputation from the stored inputs:\n{cmp.message}")


def _file_reference(c, source, build=reference_case, **options):
    """``reference_case`` (with gradients) of an attention file's case: its pattern, sizes, dtype, seed and
    draw (``options``: e.g. ``fresh=True``); ``build=shared_inputs`` for its inputs only (the reference when
    cached)."""
    arch, given, _, b, h, n, d, name, seed, *_ = attention_case(c, source)
    return build(
        arch, seq_len=n, heads=h, head_dim=d, batch=b, dtype=name, seed=seed, grads=True,
        draw=input_draw(c, source), **options, **given,
    )  # fmt: skip


def _check_mask(g, arch, pa, h, n, source):
    mask = g["mask"]
    expected = kernel_pattern.dense_mask(arch, n, h, **pa)
    if not onp.array_equal(onp.broadcast_to(mask, expected.shape), expected):
        bad = onp.argwhere(onp.broadcast_to(mask, expected.shape) != expected)[0]
        _fail(
            source,
            f"'mask' differs from the pattern recomputed from the config, first at (head, q, kv) = "
            f"{tuple(int(i) for i in bad)}: stored {bool(mask[min(bad[0], mask.shape[0] - 1), bad[1], bad[2]])}",
        )


def _check_attention(g, listing, check_grads, source, max_work):
    c = g.config
    arch, given, resolved, b, h, n, d, name, seed, inputs, mask_limit, version = attention_case(c, source)
    expected = attention_config(arch, given, resolved, b, h, n, d, name, seed, inputs, mask_limit, version)
    expected.update(arrays=listing, input_sha256=c.get("input_sha256"))  # the digest: once the draw is known
    check_fields(c, expected, source)
    for key in INPUTS:
        bad = int((~onp.isfinite(g[key])).sum())
        if bad:
            _fail(source, f"input {key!r} holds {bad} non-finite value(s); a golden case has finite inputs")
    if not onp.array_equal(g["rows"], kernel_pattern.rows(arch, n, h, **resolved)):
        _fail(source, "'rows' differs from the computed rows of the pattern in the config")
    for key, blocks in block_arrays(arch, n, h, resolved)[0].items():
        if not onp.array_equal(g[key], blocks):
            _fail(source, f"{key!r} differs from the block list recomputed from the config")
    if "mask" in g:
        _check_mask(g, arch, resolved, h, n, source)
    if max_work is not None and attention_work(c) > max_work:
        _fail(
            source,
            f"recomputing this case takes {attention_work(c):.2g} multiply-adds, more than max_work = "
            f"{max_work:.2g}; pass max_work=None (CLI: --allow-large) to check it anyway",
        )
    ref = _file_reference(c, source, fresh=True)  # never the cache it verifies against
    for key in INPUTS:
        if not onp.array_equal(g[key], ref[key]):
            _fail(source, f"stored input {key!r} is not the draw of seed {seed} (see the config's 'rng')")
    check_fields(c, dict(expected, input_sha256=input_digest(ref)), source)
    for key in ("out",) + (("dq", "dk", "dv") if check_grads else ()):
        _compare_stored(g[key], ref[key], key, name, source)


def _check_model(g, listing, check_grads, source):
    c = g.config
    config = _model_config(c, source)
    seed = _field(source, lambda: nonnegative_int("seed", c.get("seed")))
    expected = model_file_config(config, c["batch"], c["dtype"], seed, c["format_version"])
    check_fields(c, dict(expected, arrays=listing), source)
    tokens = g["tokens"]
    if tokens.min() < 0 or tokens.max() >= config.vocab:
        _fail(source, f"tokens must lie in [0, {config.vocab}), got {tokens.min()}..{tokens.max()}")
    for key, val in model_recomputed(g, config, check_grads).items():
        _compare_stored(g[key], val, key, c["dtype"], source)


def _model_config(c, source):
    return _field(source, lambda: ModelConfig(**c["model_config"]))


def _field(source, get):
    try:
        return get()
    except (KeyError, TypeError, ValueError) as e:
        _fail(source, f"config lacks a valid field ({type(e).__name__}: {e})")


def load_golden(path, check=True, check_grads=False, max_work=WORK_LIMIT, max_bytes=READ_LIMIT):
    """Read a golden .npz (checked before it is read: ``minicp.golden.io``); with ``check``, verify it (see
    ``check_golden``), refusing before reading any array a recomputation of more than ``max_work``
    multiply-adds. ``max_bytes``: the most array data the file may declare (None: no bound)."""
    golden = read_golden(path, max_bytes=max_bytes, max_work=max_work if check else None)
    if check:
        check_golden(golden, check_grads=check_grads, source=str(path), max_work=max_work)
    return golden


def assert_matches_golden(
    fn,
    path,
    *,
    grad_fn=None,
    check_grads=None,
    array_fn=None,
    layout="bhnd",
    report_path=None,
    check=True,
    max_work=WORK_LIMIT,
    rtol=None,
    atol=None,
    device=None,
    inconclusive="warn",
):
    """Judge ``fn(q, k, v)`` on a golden file's inputs, as ``minicp.testing.assert_matches_reference`` does.

    ``check_grads`` defaults to ``grad_fn is not None``. The file is verified first (``check``); the budgets
    come from the float64 reference and the plain implementation of the file's case, computed once per
    process and case (the verification computes them anew and the check reuses them). With
    ``check=False`` the file's stored inputs are still read and their sha256 compared with the config's
    ``input_sha256`` and with the seed's draw, the inputs the kernel gets. A case of more than
    ``max_work`` multiply-adds is refused before the file's arrays are read (``max_work=None`` lifts that
    bound and ``READ_LIMIT`` too). ``device`` ("cuda", ...): the file's inputs are copied to that GPU, handed
    to ``array_fn`` as CuPy arrays, and the reference and judging run there (a kernel returning GPU tensors
    is judged on their GPU without it). ``inconclusive``: as in ``assert_matches_reference``. Returns the
    ``Report``; raises ``MismatchError``.
    """
    __tracebackhide__ = True  # pytest shows the failure message without minicp's frames
    check_grads = grad_fn is not None if check_grads is None else boolean("check_grads", check_grads)
    if check_grads and not callable(grad_fn):
        raise ValueError("check_grads=True needs grad_fn(q, k, v, dout) -> (dq, dk, dv)")
    if not callable(fn):
        raise ValueError(f"fn must be callable (q, k, v) -> out, got {type(fn).__name__}")
    choice("layout", layout, LAYOUTS)
    choice("inconclusive", inconclusive, INCONCLUSIVE)
    device = check_device(device)
    rtol, atol = check_tolerance("rtol", rtol), check_tolerance("atol", atol)
    if max_work is not None:
        real("max_work", max_work, low=0)
    g = read_golden(path, max_work=max_work, max_bytes=READ_LIMIT if max_work is not None else None)
    c = g.config
    if c.get("kind") != "attention":
        raise ValueError(f"{path}: assert_matches_golden needs an attention-level file, got kind {c.get('kind')!r}")
    if check:
        check_golden(g, check_grads=False, source=str(path), max_work=max_work)
    case = _file_reference(c, str(path), build=shared_inputs)  # complete already when the file was verified
    if not check:
        stored, drawn = input_digest(g.arrays), input_digest(case)
        if not stored == drawn == c.get("input_sha256"):
            _fail(
                str(path),
                f"the stored inputs (sha256 {stored[:16]}...) are not the draw of seed {c.get('seed')} "
                f"({drawn[:16]}...) recorded as input_sha256 {str(c.get('input_sha256'))[:16]}...; the file was "
                "edited, or written by another draw",
            )
    context = case_context(c["arch"], c["pattern_args"], case["case"]["pattern_args"], case["case"], f", file {path}")
    if device is not None:
        case = on_device(case, device)
    return check_case(
        case, fn, grad_fn, check_grads=check_grads, array_fn=array_fn, layout=layout, context=context, rtol=rtol,
        atol=atol, report_path=report_path, cache_dir=None, inconclusive=inconclusive,
    )  # fmt: skip
