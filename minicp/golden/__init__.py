"""Golden test vectors for kernel authors: ``minicp golden`` and its reader.

A golden file is a plain ``.npz`` (no pickle; ``numpy.load(path)`` in any NumPy, ``np.load`` then
``torch.from_numpy``, ``jnp.asarray``, or any zip + .npy reader) holding seeded inputs, the reference
outputs, the gradients for a seeded upstream gradient, the attention pattern, and a JSON config.
Everything is computed in float64 and stored in the requested dtype; the same arguments and seed give
the same file bit for bit.

Attention level (``make_golden``, ``minicp golden --arch ...``), one attention layer of all heads:

=====================  ====================  ========================================================
key                    shape, dtype          meaning
=====================  ====================  ========================================================
q, k, v                (b, h, n, d), S       inputs; q is NOT pre-scaled (scale d^-0.5 is applied inside)
out                    (b, h, R, d), S       attention output of the R computed rows (R = n except
                                             PerceiverAR's first layer, R = latent)
rows                   (R,), int64           token position of each output row
dout                   (b, h, R, d), S       upstream gradient
dq, dk, dv             (b, h, n, d), S       gradients of sum(out * dout) with respect to q, k, v
mask                   (1 or h, n, n), bool  True = query i may attend to key j; (1, n, n) when all heads
                                             share the pattern; only stored when n <= mask_limit (8192)
block_head             (B,), int64           the block list, one entry per (head, block): head index,
block_row_start/stop   (B,), int64           query rows [start, stop) and key columns (-1 when the
block_col_start/stop   (B,), int64           block's positions are not one contiguous range)
block_diagonal         (B,), int64           local (r, c) visible iff c <= r + diagonal ...
block_masked           (B,), bool            ... when masked; everything visible when not
block_rows, block_cols (sum,), int64         every block's row/column positions concatenated (lossless)
block_rows_offsets     (B + 1,), int64       block i's rows are block_rows[off[i]:off[i + 1]]
block_cols_offsets     (B + 1,), int64       (same for the columns)
config                 0-d unicode           JSON: arch, pattern_args, sizes, seed, dtype, tolerances, ...
=====================  ====================  ========================================================

S is the storage dtype: float64, float32 or float16 as requested; **bfloat16 is stored as float32
arrays whose values are exactly bfloat16 numbers** (NumPy has no bfloat16): convert with
``torch.from_numpy(a).to(torch.bfloat16)`` or ``jnp.asarray(a, jnp.bfloat16)`` (exact). Rounding is
float64 -> float32 -> bfloat16, round to nearest even, as PyTorch's ``.to(torch.bfloat16)``.

Model level (``make_model_golden``, ``minicp golden --model ...``), the whole language model:
``tokens`` (b, n + 1) int64; ``param/<official name>`` for every parameter (e.g.
``param/layers.0.0.fn.to_q.weight``); ``logits`` (b, rows, V) of ``forward(params, tokens[:, :n])``;
``loss`` (0-d) of ``loss(params, tokens)`` (the official wrapper's loss); ``grad/<name>`` = d loss /
d param; ``config`` with the full ModelConfig.

Reproducibility: attention level draws ``rng = numpy.random.default_rng(seed)`` then q, k, v, dout
with ``rng.standard_normal`` in that order (float64), rounds them to the dtype, and computes every
reference value in float64 **from the rounded inputs**; so a kernel that reads the stored inputs is
measured only by its own arithmetic. Model level: ``init_params(config, seed)`` (float64, rounded),
tokens from ``default_rng(seed + 1).integers(0, vocab, (b, n + 1))``.
"""
import dataclasses
import json

import numpy as onp

from minicp import backend as B
from minicp.analysis import kernel_pattern
from minicp.config import ARCHITECTURES, ModelConfig
from minicp.testing import TOLERANCES, compare, dtype_name

__all__ = ["FORMAT", "FORMAT_VERSION", "DTYPES", "MASK_LIMIT", "Golden", "round_to_bfloat16", "to_storage",
           "reference_arrays", "make_golden", "make_model_golden", "save_golden", "load_golden", "check_golden",
           "main"]

FORMAT, FORMAT_VERSION = "minicp-golden", 1
DTYPES = ("float64", "float32", "bfloat16", "float16")
STORAGE = {"float64": "float64", "float32": "float32", "bfloat16": "float32", "float16": "float16"}
MASK_LIMIT = 8192
ATTENTION_ARRAYS = ("q", "k", "v", "out", "rows", "dout", "dq", "dk", "dv")
BLOCK_ARRAYS = ("block_head", "block_row_start", "block_row_stop", "block_col_start", "block_col_stop",
                "block_diagonal", "block_masked", "block_rows", "block_rows_offsets", "block_cols",
                "block_cols_offsets")


# ----------------------------------------------------------------------------------------------------
# dtypes
# ----------------------------------------------------------------------------------------------------

def _dtype(dtype):
    name = dtype_name(dtype)
    if name not in DTYPES:
        raise ValueError(f"dtype must be one of {DTYPES}, got {dtype!r}")
    return name


def round_to_bfloat16(x):
    """float32 array holding ``x`` rounded to the nearest bfloat16 (ties to even; NaN stays NaN).

    float64 input is first rounded to float32 (as ``torch.tensor(x).to(torch.bfloat16)`` does), then
    the low 16 bits of the float32 pattern are rounded away: add 0x7FFF plus the lowest kept bit,
    clear the low half. Finite values beyond the bfloat16 range become +-inf, as in PyTorch.
    """
    x32 = onp.asarray(x, dtype=onp.float32)
    bits = x32.view(onp.uint32).astype(onp.uint64)
    rounded = ((bits + 0x7FFF + ((bits >> 16) & 1)) & 0xFFFF0000).astype(onp.uint32)
    out = rounded.view(onp.float32)
    return onp.where(onp.isnan(x32), onp.float32("nan"), out).astype(onp.float32)


def to_storage(x, dtype):
    """``x`` rounded to ``dtype`` and stored as NumPy (bfloat16 -> float32 holding bfloat16 values)."""
    name = _dtype(dtype)
    x = onp.asarray(x)
    if name == "bfloat16":
        return round_to_bfloat16(x)
    return x.astype(STORAGE[name])


def _is_bfloat16_exact(a):
    return a.dtype == onp.float32 and not (a.view(onp.uint32) & 0xFFFF).any()


# ----------------------------------------------------------------------------------------------------
# Argument checks
# ----------------------------------------------------------------------------------------------------

def _int(name, value, minimum=1):
    if isinstance(value, bool) or not isinstance(value, (int, onp.integer)) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def _check_pattern_args(arch, n, heads, pattern_args):
    """Validate the architecture and its pattern args (ValueError naming them); returns the Patterns."""
    if arch not in ARCHITECTURES:
        raise ValueError(f"arch must be one of {ARCHITECTURES}, got {arch!r}")
    return kernel_pattern._patterns_checked(arch, n, heads, pattern_args)


# ----------------------------------------------------------------------------------------------------
# Attention level
# ----------------------------------------------------------------------------------------------------

def reference_arrays(arch, *, seq_len, heads, head_dim, batch=1, dtype="float32", seed=0, grads=True,
                     **pattern_args):
    """Seeded inputs (rounded to ``dtype``) and float64 reference values computed from them.

    Returns a dict: q, k, v, dout in the storage dtype; rows (int64); out and, with ``grads``, dq, dk,
    dv in float64. See the module docstring for the draw order.
    """
    import autograd
    import autograd.numpy as anp
    from minicp.nn.attention import attention

    n, h = _int("seq_len", seq_len), _int("heads", heads)
    d, b = _int("head_dim", head_dim), _int("batch", batch)
    seed = _int("seed", seed, 0)
    name = _dtype(dtype)
    _check_pattern_args(arch, n, h, pattern_args)
    rows = kernel_pattern.rows(arch, n, h, **pattern_args).astype(onp.int64)
    rng = onp.random.default_rng(seed)
    stored = {key: to_storage(rng.standard_normal((b, h, n, d)), name) for key in ("q", "k", "v")}
    stored["dout"] = to_storage(rng.standard_normal((b, h, len(rows), d)), name)
    q, k, v, dout = (stored[key].astype(onp.float64) for key in ("q", "k", "v", "dout"))

    with B.backend("numpy"):
        out = onp.asarray(attention(arch, q, k, v, **pattern_args))
        if out.shape != dout.shape:  # pragma: no cover - a module disagreeing with its own pattern
            raise RuntimeError(f"{arch}: attention returned {out.shape}, its pattern computes {dout.shape}")
        result = dict(stored, rows=rows, out=out)
        if grads:
            objective = lambda q_, k_, v_: anp.sum(attention(arch, q_, k_, v_, **pattern_args) * dout)
            dq, dk, dv = autograd.grad(objective, argnum=(0, 1, 2))(q, k, v)
            result.update(dq=onp.asarray(dq), dk=onp.asarray(dk), dv=onp.asarray(dv))
    return result


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
        what = (f"arch={c.get('arch')!r}, pattern_args={c.get('pattern_args')}" if self.kind == "attention"
                else f"arch={c.get('model_config', {}).get('arch')!r}")
        return f"Golden({self.kind}, {what}, dtype={c.get('dtype')!r}, {len(self.arrays)} arrays)"


def _block_arrays(arch, n, heads, pattern_args):
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
        for x, y in zip(a.blocks, b.blocks))


def _tolerance_dict(name):
    rtol, atol = TOLERANCES[name]
    return {"rtol": rtol, "atol": atol, "test": "|actual - expected| <= atol + rtol * |expected|",
            "gradients": "atol x max(1, rms(expected))"}


def _version():
    import minicp
    return getattr(minicp, "__version__", "unknown")


def make_golden(arch, *, seq_len, heads, head_dim, batch=1, dtype="float32", seed=0, mask_limit=MASK_LIMIT,
                **pattern_args):
    """Attention-level golden case (see the module docstring for the keys). Returns a ``Golden``.

    ``mask_limit``: the dense mask is stored only when seq_len <= mask_limit (its memory is n^2 bytes,
    times heads when the heads' patterns differ); the block list is always stored.
    """
    name = _dtype(dtype)
    mask_limit = _int("mask_limit", mask_limit, 0)
    ref = reference_arrays(arch, seq_len=seq_len, heads=heads, head_dim=head_dim, batch=batch, dtype=name,
                           seed=seed, grads=True, **pattern_args)
    n, h = int(seq_len), int(heads)
    arrays = {key: ref[key] for key in ("q", "k", "v", "dout", "rows")}
    for key in ("out", "dq", "dk", "dv"):
        arrays[key] = to_storage(ref[key], name)
    pats = kernel_pattern._patterns_checked(arch, n, h, pattern_args)
    shared = all(_same_pattern(p, pats[0]) for p in pats)
    mask_mode = "omitted"
    if n <= mask_limit:
        arrays["mask"] = kernel_pattern.dense_mask(arch, n, 1 if shared else h, **pattern_args)
        mask_mode = "shared" if shared else "per_head"
    blocks, block_names = _block_arrays(arch, n, h, pattern_args)
    arrays.update(blocks)
    config = {
        "format": FORMAT, "format_version": FORMAT_VERSION, "kind": "attention",
        "arch": arch, "pattern_args": dict(pattern_args),
        "batch": int(batch), "heads": h, "seq_len": n, "head_dim": int(head_dim), "out_rows": len(ref["rows"]),
        "scale": int(head_dim) ** -0.5,
        "dtype": name, "storage_dtype": STORAGE[name], "compute_dtype": "float64",
        "seed": int(seed),
        "rng": "numpy.random.default_rng(seed).standard_normal: q, k, v (b,h,n,d), then dout (b,h,R,d); "
               "rounded to dtype; references computed in float64 from the rounded inputs",
        "objective": "gradients of sum(out * dout)",
        "mask": mask_mode, "mask_limit": mask_limit,
        "block_names": block_names,
        "tolerance": _tolerance_dict(name),
        "minicp_version": _version(),
    }
    if arch == "ecp" and "half_segment" in pattern_args:
        config["segment"] = 2 * int(pattern_args["half_segment"])      # the paper's s, for reference
    config["arrays"] = {key: [list(a.shape), a.dtype.name] for key, a in arrays.items()}
    return Golden(arrays, config)


# ----------------------------------------------------------------------------------------------------
# Model level
# ----------------------------------------------------------------------------------------------------

def make_model_golden(config, *, batch=1, dtype="float32", seed=0):
    """Model-level golden case for a ``ModelConfig``: tokens, parameters, logits, loss and its gradients."""
    import autograd

    from minicp.nn.model import flatten, forward, init_params, loss, unflatten

    if not isinstance(config, ModelConfig):
        raise ValueError(f"config must be a minicp.ModelConfig, got {type(config).__name__}")
    b = _int("batch", batch)
    seed = _int("seed", seed, 0)
    name = _dtype(dtype)
    with B.backend("numpy"):
        flat64 = flatten(init_params(config, seed=seed, dtype="float64"))
        stored = {key: to_storage(val, name) for key, val in flat64.items()}
        params = unflatten({key: val.astype(onp.float64) for key, val in stored.items()})
        tokens = onp.random.default_rng(seed + 1).integers(0, config.vocab, (b, config.seq_len + 1), dtype=onp.int64)
        logits = onp.asarray(forward(params, tokens[:, :-1], config))
        value, grads = autograd.value_and_grad(lambda p: loss(p, tokens, config))(params)
    grads = flatten(grads)
    arrays = {"tokens": tokens, "logits": to_storage(logits, name), "loss": to_storage(onp.float64(value), name)}
    for key in stored:
        arrays[f"param/{key}"] = stored[key]
    for key in stored:
        arrays[f"grad/{key}"] = to_storage(onp.asarray(grads[key]), name)
    cfg = {
        "format": FORMAT, "format_version": FORMAT_VERSION, "kind": "model",
        "model_config": dataclasses.asdict(config), "arch": config.arch,
        "batch": b, "dtype": name, "storage_dtype": STORAGE[name], "compute_dtype": "float64", "seed": seed,
        "rng": "params: minicp.init_params(config, seed) in float64, rounded to dtype; tokens: "
               "numpy.random.default_rng(seed + 1).integers(0, vocab, (b, seq_len + 1))",
        "objective": "logits = forward(params, tokens[:, :-1]); loss = minicp.loss(params, tokens) "
                     "(mean cross-entropy of the last `latent` positions); grad/* = d loss / d param",
        "param_names": list(stored),
        "tolerance": _tolerance_dict(name),
        "minicp_version": _version(),
    }
    cfg["arrays"] = {key: [list(a.shape), a.dtype.name] for key, a in arrays.items()}
    return Golden(arrays, cfg)


# ----------------------------------------------------------------------------------------------------
# Writing and reading
# ----------------------------------------------------------------------------------------------------

def save_golden(golden, path):
    """Write a ``Golden`` as a compressed .npz (no pickled objects). Returns the path written."""
    if not isinstance(golden, Golden):
        raise ValueError(f"golden must be a minicp.golden.Golden, got {type(golden).__name__}")
    path = str(path)
    if not path.endswith(".npz"):
        raise ValueError(f"path must end in .npz, got {path!r}")
    arrays = dict(golden.arrays)
    arrays["config"] = onp.asarray(json.dumps(golden.config))
    with open(path, "wb") as fh:
        onp.savez_compressed(fh, **arrays)
    return path


def load_golden(path, check=True, check_grads=False):
    """Read a golden .npz (``allow_pickle=False``); with ``check``, verify it (see ``check_golden``)."""
    try:
        with onp.load(str(path), allow_pickle=False) as z:
            arrays = {key: z[key] for key in z.files}
    except ValueError as e:
        raise ValueError(f"{path}: not a minicp golden file (unreadable without pickle: {e})") from e
    except (OSError, EOFError) as e:
        raise ValueError(f"{path}: cannot read as .npz ({e})") from e
    if "config" not in arrays:
        raise ValueError(f"{path}: no 'config' entry; not a minicp golden file")
    try:
        config = json.loads(str(arrays.pop("config")[()]))
    except (json.JSONDecodeError, TypeError) as e:
        raise ValueError(f"{path}: 'config' is not valid JSON ({e})") from e
    golden = Golden(arrays, config)
    if check:
        check_golden(golden, check_grads=check_grads, source=str(path))
    return golden


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


def check_golden(golden, check_grads=False, source="golden"):
    """Verify a ``Golden`` for consistency; raises ValueError saying what is wrong, returns None.

    Checks: format and version; every array the config implies is present with the right shape and
    dtype (bfloat16 files: values exactly bfloat16); for attention files the rows, block list and mask
    equal the pattern recomputed from the config, and the output (and with ``check_grads`` the
    gradients) recomputed in float64 from the stored inputs matches the stored values within the
    dtype's tolerance; for model files the parameter names and shapes match the ModelConfig, tokens are
    in range, and logits and loss recomputed in float64 match.
    """
    if not isinstance(golden, Golden):
        raise ValueError(f"golden must be a minicp.golden.Golden, got {type(golden).__name__}")
    c = golden.config
    if c.get("format") != FORMAT:
        _fail(source, f"config format is {c.get('format')!r}, expected {FORMAT!r}")
    if c.get("format_version") != FORMAT_VERSION:
        _fail(source, f"format_version {c.get('format_version')!r} is not supported (this reader: {FORMAT_VERSION})")
    name = c.get("dtype")
    if name not in DTYPES or c.get("storage_dtype") != STORAGE[name]:
        _fail(source, f"dtype {name!r} / storage_dtype {c.get('storage_dtype')!r} are not a valid pair")
    for key, (shape, dt) in c.get("arrays", {}).items():
        _expect(golden, key, shape, dt, source)
    extra = set(golden.arrays) - set(c.get("arrays", {}))
    if extra:
        _fail(source, f"arrays not listed in the config: {sorted(extra)}")
    if c.get("kind") == "attention":
        _check_attention(golden, name, check_grads, source)
    elif c.get("kind") == "model":
        _check_model(golden, name, check_grads, source)
    else:
        _fail(source, f"config kind {c.get('kind')!r} is not 'attention' or 'model'")
    if name == "bfloat16":
        for key, a in golden.arrays.items():
            if a.dtype.kind == "f" and not _is_bfloat16_exact(a):
                _fail(source, f"array {key!r} should hold bfloat16 values (low 16 bits zero) but does not")


def _compare_stored(stored, recomputed, key, name, source, grad=False):
    atol = TOLERANCES[name][1]
    if grad:
        rms = float(onp.sqrt(onp.mean(onp.square(recomputed)))) if recomputed.size else 0.0
        atol *= max(1.0, rms)
    cmp = compare(stored, recomputed, name=key, dtype=name, atol=atol)
    if not cmp.ok:
        _fail(source, f"stored {key!r} does not match its float64 recomputation from the stored inputs:\n{cmp.message}")


def _check_attention(g, name, check_grads, source):
    c = g.config
    try:
        arch, pa = c["arch"], dict(c["pattern_args"])
        b, h, n, d = (int(c[key]) for key in ("batch", "heads", "seq_len", "head_dim"))
    except (KeyError, TypeError, ValueError) as e:
        _fail(source, f"config lacks a valid field: {e}")
    try:
        rows = kernel_pattern.rows(arch, n, h, **pa)
    except ValueError as e:
        _fail(source, f"the config's pattern is invalid: {e}")
    R, S = len(rows), STORAGE[name]
    for key in ("q", "k", "v", "dq", "dk", "dv"):
        _expect(g, key, (b, h, n, d), S, source)
    for key in ("out", "dout"):
        _expect(g, key, (b, h, R, d), S, source)
    if not onp.array_equal(_expect(g, "rows", (R,), "int64", source), rows):
        _fail(source, "'rows' differs from the computed rows of the pattern in the config")
    blocks, _ = _block_arrays(arch, n, h, pa)
    for key, expected in blocks.items():
        a = _expect(g, key, expected.shape, expected.dtype.name, source)
        if not onp.array_equal(a, expected):
            _fail(source, f"{key!r} differs from the block list recomputed from the config")
    if "mask" in g:
        mask = g["mask"]
        heads_in_mask = mask.shape[0] if mask.ndim == 3 else -1
        if mask.dtype != bool or mask.ndim != 3 or heads_in_mask not in (1, h) or mask.shape[1:] != (n, n):
            _fail(source, f"'mask' must be bool (1 or {h}, {n}, {n}), got {mask.dtype} {mask.shape}")
        expected = kernel_pattern.dense_mask(arch, n, h, **pa)
        if not onp.array_equal(onp.broadcast_to(mask, expected.shape), expected):
            bad = onp.argwhere(onp.broadcast_to(mask, expected.shape) != expected)[0]
            _fail(source, f"'mask' differs from the pattern recomputed from the config, first at (head, q, kv) = "
                          f"{tuple(int(i) for i in bad)}: stored {bool(mask[min(bad[0], heads_in_mask - 1), bad[1], bad[2]])}")
    elif c.get("mask") != "omitted":
        _fail(source, f"config says mask {c.get('mask')!r} but the file has no 'mask'")
    ref = _recompute_attention(g, arch, pa, check_grads)
    _compare_stored(g["out"], ref["out"], "out", name, source)
    if check_grads:
        for key in ("dq", "dk", "dv"):
            _compare_stored(g[key], ref[key], key, name, source, grad=True)


def _recompute_attention(g, arch, pa, grads):
    import autograd
    import autograd.numpy as anp
    from minicp.nn.attention import attention

    q, k, v, dout = (g[key].astype(onp.float64) for key in ("q", "k", "v", "dout"))
    with B.backend("numpy"):
        out = {"out": onp.asarray(attention(arch, q, k, v, **pa))}
        if grads:
            objective = lambda q_, k_, v_: anp.sum(attention(arch, q_, k_, v_, **pa) * dout)
            dq, dk, dv = autograd.grad(objective, argnum=(0, 1, 2))(q, k, v)
            out.update(dq=onp.asarray(dq), dk=onp.asarray(dk), dv=onp.asarray(dv))
    return out


def _check_model(g, name, check_grads, source):
    import autograd

    from minicp.nn.model import forward, loss, param_spec, unflatten

    c = g.config
    try:
        config = ModelConfig(**c["model_config"])
    except (KeyError, TypeError, ValueError) as e:
        _fail(source, f"config's model_config is not a valid ModelConfig: {e}")
    b, S = int(c["batch"]), STORAGE[name]
    spec = param_spec(config)
    if list(c.get("param_names", [])) != list(spec):
        _fail(source, "param_names differ from the ModelConfig's parameter list")
    for key, shape in spec.items():
        _expect(g, f"param/{key}", shape, S, source)
        _expect(g, f"grad/{key}", shape, S, source)
    tokens = _expect(g, "tokens", (b, config.seq_len + 1), "int64", source)
    if tokens.min() < 0 or tokens.max() >= config.vocab:
        _fail(source, f"tokens must lie in [0, {config.vocab}), got {tokens.min()}..{tokens.max()}")
    _expect(g, "logits", (b, config.out_len, config.vocab), S, source)
    _expect(g, "loss", (), S, source)
    params = unflatten({key: g[f"param/{key}"].astype(onp.float64) for key in spec})
    with B.backend("numpy"):
        logits = onp.asarray(forward(params, tokens[:, :-1], config))
        if check_grads:
            value, grads = autograd.value_and_grad(lambda p: loss(p, tokens, config))(params)
        else:
            value = loss(params, tokens, config)
    _compare_stored(g["logits"], logits, "logits", name, source)
    _compare_stored(g["loss"], onp.asarray(float(value)), "loss", name, source)
    if check_grads:
        from minicp.nn.model import flatten
        for key, val in flatten(grads).items():
            _compare_stored(g[f"grad/{key}"], onp.asarray(val), f"grad/{key}", name, source, grad=True)
