"""Verifying golden files (``check_golden``, ``load_golden``) and judging a kernel with one (``assert_matches_golden``)."""

import numpy as onp

from minicp.analysis import kernel_pattern
from minicp.config import ModelConfig
from minicp.golden.io import read_golden
from minicp.golden.make import FORMAT, INPUTS, READABLE_VERSIONS, Golden, block_arrays, input_draw
from minicp.golden.model import model_expected_arrays, model_recomputed
from minicp.nn.model import param_spec
from minicp.testing.check import LAYOUTS, case_context, check_case
from minicp.testing.compare import check_tolerance, compare
from minicp.testing.dtypes import DTYPES, EPS, STORAGE, is_bfloat16_exact
from minicp.testing.reference import reference_case, shared_inputs
from minicp.validate import boolean, choice, real

__all__ = ["WORK_LIMIT", "attention_work", "check_golden", "load_golden", "assert_matches_golden"]

WORK_LIMIT = 5e10  # multiply-adds of a recomputation (forward + backward); about a minute in NumPy


def _fail(source, message):
    raise ValueError(f"{source}: {message}")


def attention_work(config):
    """Multiply-adds to recompute an attention file's reference with gradients: 4 matmuls of every block's
    rows x visible columns x head_dim (forward S and O, backward dP, dS products), times batch."""
    blocks = kernel_pattern.blocks(
        config["arch"], int(config["seq_len"]), int(config["heads"]), **config["pattern_args"]
    )
    pairs = sum(len(b["rows"]) * len(b["cols"]) for b in blocks)
    return 6.0 * pairs * int(config["head_dim"]) * int(config["batch"])


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

    Checks: format and version; every array the config implies is present with the right shape and
    dtype (bfloat16 files: values exactly bfloat16); inputs finite; for attention files the rows, block
    list and mask equal the pattern recomputed from the config, and the outputs (with ``check_grads`` the
    gradients) recomputed in float64 from the stored inputs equal the stored values up to their rounding
    to the storage dtype (a non-finite value never passes); for model files the parameter names and shapes
    match the ModelConfig, tokens are in range, and logits and loss recomputed in float64 match.
    ``max_work``: refuse (ValueError) a recomputation of more multiply-adds than this (None: no bound).
    """
    if not isinstance(golden, Golden):
        raise ValueError(f"golden must be a minicp.golden.Golden, got {type(golden).__name__}")
    c = golden.config
    if c.get("format") != FORMAT:
        _fail(source, f"config format is {c.get('format')!r}, expected {FORMAT!r}")
    if c.get("format_version") not in READABLE_VERSIONS or isinstance(c.get("format_version"), bool):
        _fail(source, f"format_version {c.get('format_version')!r} is not supported (this reader: {READABLE_VERSIONS})")
    name = c.get("dtype")
    if name not in DTYPES or c.get("storage_dtype") != STORAGE[name]:
        _fail(source, f"dtype {name!r} / storage_dtype {c.get('storage_dtype')!r} are not a valid pair")
    listed = c.get("arrays", {})
    if not isinstance(listed, dict):
        _fail(source, "config 'arrays' must map names to [shape, dtype]")
    for key, spec in listed.items():
        if not (isinstance(spec, list) and len(spec) == 2):
            _fail(source, f"config 'arrays' entry {key!r} must be [shape, dtype], got {spec!r}")
        _expect(golden, key, spec[0], spec[1], source)
    regenerated = set(INPUTS) if c.get("inputs") == "seed" else set()
    extra = set(golden.arrays) - set(listed) - regenerated
    if extra:
        _fail(source, f"arrays not listed in the config: {sorted(extra)}")
    if name == "bfloat16":
        for key, a in golden.arrays.items():
            if a.dtype.kind == "f" and not is_bfloat16_exact(a):
                _fail(source, f"array {key!r} should hold bfloat16 values (low 16 bits zero) but does not")
    if c.get("kind") == "attention":
        _check_attention(golden, name, check_grads, source, max_work)
    elif c.get("kind") == "model":
        _check_model(golden, name, check_grads, source)
    else:
        _fail(source, f"config kind {c.get('kind')!r} is not 'attention' or 'model'")


def _compare_stored(stored, recomputed, key, name, source):
    """Stored values must be the recomputed float64 values rounded to the storage dtype: within one ulp of
    the dtype relative, plus 64 ulps of the tensor's rms for summation-order differences."""
    finite = onp.isfinite(recomputed)
    rms = float(onp.sqrt(onp.mean(onp.square(recomputed[finite])))) if finite.any() else 0.0
    cmp = compare(stored, recomputed, name=key, dtype=name, rtol=EPS[name], atol=64 * EPS[name] * max(rms, 1e-300))
    if not cmp.ok:
        _fail(source, f"stored {key!r} does not match its float64 recomputation from the stored inputs:\n{cmp.message}")


def _attention_fields(c, source):
    try:
        arch, pa = c["arch"], dict(c["pattern_args"])
        b, h, n, d = (int(c[key]) for key in ("batch", "heads", "seq_len", "head_dim"))
        rows = kernel_pattern.rows(arch, n, h, **pa)
    except (KeyError, TypeError, ValueError) as e:
        _fail(source, f"config lacks a valid field or its pattern is invalid ({type(e).__name__}: {e})")
    return arch, pa, b, h, n, d, rows


def _file_reference(c, source, build=reference_case, **options):
    """``reference_case`` (with gradients) of an attention file's case: its pattern, sizes, dtype, seed and
    draw (``options``: e.g. ``fresh=True``); ``build=shared_inputs`` for its inputs only (the reference when
    cached)."""
    arch, pa, b, h, n, d, _ = _attention_fields(c, source)
    return build(
        arch, seq_len=n, heads=h, head_dim=d, batch=b, dtype=c["dtype"], seed=int(c["seed"]), grads=True,
        draw=input_draw(c, source), **options, **pa,
    )  # fmt: skip


def _check_mask(g, arch, pa, h, n, source):
    mask = g["mask"]
    heads_in_mask = mask.shape[0] if mask.ndim == 3 else -1
    if mask.dtype != bool or mask.ndim != 3 or heads_in_mask not in (1, h) or mask.shape[1:] != (n, n):
        _fail(source, f"'mask' must be bool (1 or {h}, {n}, {n}), got {mask.dtype} {mask.shape}")
    expected = kernel_pattern.dense_mask(arch, n, h, **pa)
    if not onp.array_equal(onp.broadcast_to(mask, expected.shape), expected):
        bad = onp.argwhere(onp.broadcast_to(mask, expected.shape) != expected)[0]
        _fail(
            source,
            f"'mask' differs from the pattern recomputed from the config, first at (head, q, kv) = "
            f"{tuple(int(i) for i in bad)}: stored {bool(mask[min(bad[0], heads_in_mask - 1), bad[1], bad[2]])}",
        )


def _check_attention(g, name, check_grads, source, max_work):
    c = g.config
    arch, pa, b, h, n, d, rows = _attention_fields(c, source)
    R, S = len(rows), STORAGE[name]
    for key in ("q", "k", "v", "dq", "dk", "dv"):
        _expect(g, key, (b, h, n, d), S, source)
    for key in ("out", "dout"):
        _expect(g, key, (b, h, R, d), S, source)
    for key in INPUTS:
        bad = int((~onp.isfinite(g[key])).sum())
        if bad:
            _fail(source, f"input {key!r} holds {bad} non-finite value(s); a golden case has finite inputs")
    if not onp.array_equal(_expect(g, "rows", (R,), "int64", source), rows):
        _fail(source, "'rows' differs from the computed rows of the pattern in the config")
    blocks, _ = block_arrays(arch, n, h, pa)
    for key, expected in blocks.items():
        a = _expect(g, key, expected.shape, expected.dtype.name, source)
        if not onp.array_equal(a, expected):
            _fail(source, f"{key!r} differs from the block list recomputed from the config")
    if "mask" in g:
        _check_mask(g, arch, pa, h, n, source)
    elif c.get("mask") != "omitted":
        _fail(source, f"config says mask {c.get('mask')!r} but the file has no 'mask'")
    if max_work is not None and attention_work(c) > max_work:
        _fail(
            source,
            f"recomputing this case takes {attention_work(c):.2g} multiply-adds, more than max_work = "
            f"{max_work:.2g}; pass max_work=None (CLI: --allow-large) to check it anyway",
        )
    ref = _file_reference(c, source, fresh=True)  # never the cache it verifies against
    for key in INPUTS:
        if not onp.array_equal(g[key], ref[key]):
            _fail(source, f"stored input {key!r} is not the draw of seed {c['seed']} (see the config's 'rng')")
    for key in ("out",) + (("dq", "dk", "dv") if check_grads else ()):
        _compare_stored(g[key], ref[key], key, name, source)


def _check_model(g, name, check_grads, source):
    c = g.config
    try:
        config = ModelConfig(**c["model_config"])
        b = int(c["batch"])
    except (KeyError, TypeError, ValueError) as e:
        _fail(source, f"config's model_config is not a valid ModelConfig: {e}")
    if list(c.get("param_names", [])) != list(param_spec(config)):
        _fail(source, "param_names differ from the ModelConfig's parameter list")
    for key, (shape, dtype) in model_expected_arrays(config, b, STORAGE[name]).items():
        _expect(g, key, shape, dtype, source)
    tokens = g["tokens"]
    if tokens.min() < 0 or tokens.max() >= config.vocab:
        _fail(source, f"tokens must lie in [0, {config.vocab}), got {tokens.min()}..{tokens.max()}")
    for key, val in model_recomputed(g, config, check_grads).items():
        _compare_stored(g[key], val, key, name, source)


def load_golden(path, check=True, check_grads=False, max_work=WORK_LIMIT):
    """Read a golden .npz (``allow_pickle=False``); with ``check``, verify it (see ``check_golden``)."""
    golden = read_golden(path)
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
):
    """Judge ``fn(q, k, v)`` on a golden file's inputs, as ``minicp.testing.assert_matches_reference`` does.

    ``check_grads`` defaults to ``grad_fn is not None``. The file is verified first (``check``); the budgets
    come from the float64 reference and the plain implementation of the file's case, computed once per
    process and case (the verification reuses them). Returns the ``Report``; raises ``MismatchError``.
    """
    __tracebackhide__ = True  # pytest shows the failure message without minicp's frames
    check_grads = grad_fn is not None if check_grads is None else boolean("check_grads", check_grads)
    if check_grads and not callable(grad_fn):
        raise ValueError("check_grads=True needs grad_fn(q, k, v, dout) -> (dq, dk, dv)")
    if not callable(fn):
        raise ValueError(f"fn must be callable (q, k, v) -> out, got {type(fn).__name__}")
    choice("layout", layout, LAYOUTS)
    rtol, atol = check_tolerance("rtol", rtol), check_tolerance("atol", atol)
    if max_work is not None:
        real("max_work", max_work, low=0)
    g = load_golden(path, check=check, check_grads=False, max_work=max_work)
    c = g.config
    if c.get("kind") != "attention":
        raise ValueError(f"{path}: assert_matches_golden needs an attention-level file, got kind {c.get('kind')!r}")
    if check_grads and not check and max_work is not None and attention_work(c) > max_work:
        _fail(str(path), f"the case takes {attention_work(c):.2g} multiply-adds (> max_work); pass max_work=None")
    case = _file_reference(c, str(path), build=shared_inputs)  # complete already when the file was verified
    context = case_context(c["arch"], c["pattern_args"], case["case"]["pattern_args"], case["case"], f", file {path}")
    return check_case(
        case, fn, grad_fn, check_grads=check_grads, array_fn=array_fn, layout=layout, context=context, rtol=rtol,
        atol=atol, report_path=report_path, cache_dir=None,
    )  # fmt: skip
