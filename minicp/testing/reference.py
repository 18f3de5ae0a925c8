"""Seeded cases and their float64 reference, computed block by block at the pattern's own cost and cached.

``reference_case`` draws ``numpy.random.default_rng(seed)``: q, k, v (b, h, n, d) standard normal, then
dout (b, h, R, d); rounds them to the dtype; computes out (and dq, dk, dv) in float64 **from the rounded
inputs** (``minicp.testing.blockwise``, checked against ``minicp.attention`` + autograd in the tests), and
the same quantities of the plain implementation in the dtype (``floor_*``), the budgets' unit.

Results are cached per case: in this process (the last ``MEMORY_CACHE`` cases), and on disk when
``cache_dir`` (or the environment variable ``MINICP_REFERENCE_CACHE``) names a folder, one .npz per case,
named by a hash of the case, holding exactly what was computed: float32 where that is lossless (the
floors), float64 otherwise (the reference), an array equal to another stored once.
"""

import collections
import concurrent.futures
import hashlib
import json
import os

import numpy as onp

from minicp.testing.blockwise import attention_blocks, block_plan, single_blas_thread
from minicp.testing.dtypes import check_dtype, to_storage
from minicp.testing.files import atomic_savez
from minicp.testing.patterns import resolved_pattern_args
from minicp.testing.rope import check_rope, rope_plain, rope_reference
from minicp.validate import boolean, nonnegative_int, positive_int

__all__ = [
    "CASE_VERSION",
    "MEMORY_CACHE",
    "case_key",
    "seeded_inputs",
    "reference_case",
    "reference_arrays",
    "clear_cache",
]

CASE_VERSION = 3  # 3: the accurate floor keeps dk, dv partial sums in the dtype
MEMORY_CACHE = 4
CACHE_ENV = "MINICP_REFERENCE_CACHE"
_MEMORY = collections.OrderedDict()


def case_key(arch, *, seq_len, heads, head_dim, batch, dtype, seed, grads, rope, pattern_args):
    """(canonical case dict, sha256 hex of its JSON): what the reference depends on, nothing else."""
    case = {
        "version": CASE_VERSION,
        "arch": arch,
        "pattern_args": pattern_args,
        "seq_len": seq_len,
        "heads": heads,
        "head_dim": head_dim,
        "batch": batch,
        "dtype": dtype,
        "seed": seed,
        "grads": grads,
        "rope": rope,
    }
    text = json.dumps(case, sort_keys=True)
    return case, hashlib.sha256(text.encode()).hexdigest()


def clear_cache():
    """Forget the in-process cache."""
    _MEMORY.clear()


def seeded_inputs(seed, b, h, n, d, R, name):
    """q, k, v (b, h, n, d) and dout (b, h, R, d) drawn in that order from default_rng(seed), rounded to name."""
    rng = onp.random.default_rng(seed)
    stored = {key: to_storage(rng.standard_normal((b, h, n, d)), name) for key in ("q", "k", "v")}
    stored["dout"] = to_storage(rng.standard_normal((b, h, R, d)), name)
    return stored


def _one_pass(q, k, v, dout, plan, rows, rope, label, dt, intermediates):
    """One implementation (reference, plain or accurate) of the case: its out/dq/dk/dv, keys prefixed."""
    if rope:
        qr, kr = ((rope_reference(x, rope) if dt == "float64" else rope_plain(x, rope, dt)) for x in (q, k))
    else:
        qr, kr = q, k
    r = attention_blocks(qr, kr, v, plan, rows, dtype=dt, dout=dout, intermediates=intermediates)
    if rope and dout is not None:
        for key in ("dq", "dk"):
            r[key] = (
                rope_reference(r[key], rope, inverse=True)
                if dt == "float64"
                else rope_plain(r[key], rope, dt, inverse=True).astype(onp.float64)
            )
    return {label + key: val for key, val in r.items()}


def _compute(case, stored, rows, plan, grads, rope):
    """Reference (float64) and floor (plain dtype) out/dq/dk/dv from the stored inputs."""
    name = case["dtype"]
    q, k, v, dout = (stored[key].astype(onp.float64) for key in ("q", "k", "v", "dout"))
    result = {}
    passes = [("", "float64", True), ("floor_", "float32" if name == "float64" else name, True)]
    if name not in ("float64", "float32"):
        passes.append(("accurate_", name, False))
    run = lambda p: _one_pass(q, k, v, dout if grads else None, plan, rows, rope, *p)
    workers = min(len(passes), os.cpu_count() or 1)
    with single_blas_thread():  # the passes run side by side, one BLAS thread each (NumPy releases the GIL)
        if workers > 1:
            with concurrent.futures.ThreadPoolExecutor(workers) as pool:
                for r in pool.map(run, passes):
                    result.update(r)
        else:
            for p in passes:
                result.update(run(p))
    if name == "float64":  # float64 rounding is float32's scaled by eps64 / eps32 = 2^-29
        for key in [k for k in result if k.startswith("floor_")]:
            ref = result[key[len("floor_") :]]
            result[key] = ref + (result[key] - ref) * 2.0**-29
    for key in [k for k in result if k.startswith("floor_")]:  # float32 / float64: plain is accurate
        result.setdefault("accurate_" + key[len("floor_") :], result[key])
    return result


def reference_case(
    arch,
    *,
    seq_len,
    heads,
    head_dim,
    batch=1,
    dtype="float32",
    seed=0,
    grads=False,
    rope=None,
    cache_dir=None,
    **pattern_args,
):
    """Inputs, float64 reference and plain-dtype floor of one seeded case (a dict of NumPy arrays).

    Keys: ``q, k, v`` (b, h, n, d) and ``dout`` (b, h, R, d) in the storage dtype (bfloat16 -> float32
    holding bfloat16 values); ``rows`` (R,) token positions of the output rows; ``out`` (+ ``dq, dk, dv``
    with ``grads``) float64; ``floor_out`` (+ ``floor_dq`` ...) of the plain implementation in ``dtype``;
    ``case`` the canonical case dict (every pattern argument resolved). ``segment=`` or ``half_segment=``
    for ECP; ``rope`` None, "interleaved" or "halves" (the kernel applies RoPE to q and k itself).
    """
    n, h = positive_int("seq_len", seq_len), positive_int("heads", heads)
    d, b = positive_int("head_dim", head_dim), positive_int("batch", batch)
    seed, grads = nonnegative_int("seed", seed), boolean("grads", grads)
    name, rope = check_dtype(dtype), check_rope(rope, d)
    pa = resolved_pattern_args(arch, n, h, pattern_args)
    case, key = case_key(
        arch, seq_len=n, heads=h, head_dim=d, batch=b, dtype=name, seed=seed, grads=grads, rope=rope, pattern_args=pa
    )
    if key in _MEMORY:
        _MEMORY.move_to_end(key)
        return dict(_MEMORY[key])
    plan, rows = block_plan(arch, n, h, pa)
    stored = seeded_inputs(seed, b, h, n, d, len(rows), name)
    computed = _load_cached(cache_dir, key)
    if computed is None:
        computed = _compute(case, stored, rows, plan, grads, rope)
        _store_cached(cache_dir, key, computed)
    result = dict(stored, rows=rows, case=case, plan=plan, **computed)
    _MEMORY[key] = result
    while len(_MEMORY) > MEMORY_CACHE:
        _MEMORY.popitem(last=False)
    return dict(result)


def _cache_path(cache_dir, key):
    folder = cache_dir if cache_dir is not None else os.environ.get(CACHE_ENV)
    return None if not folder else os.path.join(os.fspath(folder), f"minicp-ref-{key[:24]}.npz")


def _load_cached(cache_dir, key):
    path = _cache_path(cache_dir, key)
    if path is None or not os.path.isfile(path):
        return None
    try:
        with onp.load(path, allow_pickle=False) as z:
            if str(z["key"][()]) != key:
                return None
            computed = {k: z[k].astype(onp.float64) for k in z.files if k not in ("key", "aliases")}
            for alias, original in json.loads(str(z["aliases"][()])).items():
                computed[alias] = computed[original]
            return computed
    except (OSError, ValueError, KeyError, EOFError):
        return None  # a damaged cache entry is recomputed


def _compact(computed):
    """Arrays to store, exactly: float32 where that is lossless (the floors hold float32, bfloat16 or float16
    values), the float64 reference as is; an array equal to one already stored is recorded as an alias."""
    stored, aliases = {}, {}
    for name, a in computed.items():
        same = next((k for k, b in computed.items() if k in stored and b is a), None)
        if same is not None:
            aliases[name] = same
            continue
        low = a.astype(onp.float32)
        stored[name] = low if onp.array_equal(low, a, equal_nan=True) else a
    return stored, aliases


def _store_cached(cache_dir, key, computed):
    path = _cache_path(cache_dir, key)
    if path is not None:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        stored, aliases = _compact(computed)
        arrays = dict(stored, key=onp.asarray(key), aliases=onp.asarray(json.dumps(aliases)))
        atomic_savez(path, arrays, compressed=False)


def reference_arrays(arch, *, seq_len, heads, head_dim, batch=1, dtype="float32", seed=0, grads=True, **pattern_args):
    """q, k, v, dout (storage dtype), rows, out and with ``grads`` dq, dk, dv (float64): the golden values."""
    case = reference_case(
        arch,
        seq_len=seq_len,
        heads=heads,
        head_dim=head_dim,
        batch=batch,
        dtype=dtype,
        seed=seed,
        grads=grads,
        **pattern_args,
    )
    keys = ("q", "k", "v", "dout", "rows", "out") + (("dq", "dk", "dv") if grads else ())
    return {key: case[key] for key in keys}
