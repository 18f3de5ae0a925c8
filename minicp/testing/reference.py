"""Seeded cases and their float64 reference, computed block by block at the pattern's own cost and cached.

``reference_case`` draws q, k, v (b, h, n, d) and dout (b, h, R, d) standard normal from the seed
(``seeded_inputs``: one generator per tensor from ``numpy.random.SeedSequence(seed).spawn(4)``); rounds
them to the dtype; computes out (and dq, dk, dv) in float64 **from the rounded inputs** (``minicp.testing.blockwise``, checked against ``minicp.attention`` + autograd in the tests), and
the same quantities of the plain implementation in the dtype, the budgets' unit; of those only the budgets
are kept (``budget_*``). Each pass runs in ``os.cpu_count()`` threads, each over a range of heads.

Results are cached per case: in this process (the last ``MEMORY_CACHE`` cases), and on disk when
``cache_dir`` (or the environment variable ``MINICP_REFERENCE_CACHE``) names a folder, one uncompressed
.npz per case, named by a hash of the case: the inputs, the float64 reference and the budgets. An entry is
mapped into memory, not read (``minicp.testing.files.mapped_npz``): the reference arrays of a case from
the disk cache are read-only; the inputs are copied.
"""

import collections
import concurrent.futures
import hashlib
import json
import os

import numpy as onp

from minicp.analysis import kernel_pattern
from minicp.files import atomic_savez
from minicp.nn.budget import check_case_size
from minicp.testing.blockwise import attention_blocks, block_plan, single_blas_thread
from minicp.testing.convert import aligned_copy, aligned_empty
from minicp.testing.dtypes import STORAGE, check_dtype, to_storage
from minicp.testing.files import mapped_npz
from minicp.testing.patterns import resolved_pattern_args
from minicp.testing.rope import check_rope, rope_plain, rope_reference
from minicp.testing.verdict import budgets
from minicp.validate import boolean, nonnegative_int, positive_int

__all__ = [
    "CASE_VERSION",
    "MEMORY_CACHE",
    "case_key",
    "seeded_inputs",
    "reference_case",
    "case_inputs",
    "complete_case",
    "reference_arrays",
    "clear_cache",
]

CASE_VERSION = 5  # 3: the accurate floor keeps dk, dv partial sums in the dtype; 4: budgets, not floors, kept;
# 5: the input draw is recorded (``draw``)
DRAWS = (1, 2)  # how inputs are drawn from a seed (``seeded_inputs``)
DRAW = 2
GRADS = ("dq", "dk", "dv")
INPUTS = ("q", "k", "v", "dout")
MEMORY_CACHE = 4
CACHE_ENV = "MINICP_REFERENCE_CACHE"
_MEMORY = collections.OrderedDict()


def case_key(arch, *, seq_len, heads, head_dim, batch, dtype, seed, grads, rope, pattern_args, draw=DRAW):
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
        "draw": draw,
        "grads": grads,
        "rope": rope,
    }
    return case, _key_of(case)


def _key_of(case):
    """sha256 hex of a canonical case dict's JSON (``case_key``)."""
    return hashlib.sha256(json.dumps(case, sort_keys=True).encode()).hexdigest()


def check_draw(draw):
    """``draw`` if it is one of ``DRAWS`` (the ways inputs are drawn from a seed), else ValueError."""
    if draw not in DRAWS or isinstance(draw, bool):
        raise ValueError(f"draw {draw!r} is not one of {DRAWS} (the ways inputs are drawn from a seed)")
    return draw


def clear_cache():
    """Forget the in-process cache."""
    _MEMORY.clear()


def forget(case):
    """Drop one case (a dict from ``case_inputs`` or ``reference_case``) from the in-process cache."""
    _MEMORY.pop(_key_of(case["case"]), None)


def seeded_inputs(seed, b, h, n, d, R, name, draw=DRAW):
    """q, k, v (b, h, n, d) and dout (b, h, R, d), standard normal from ``seed``, rounded to name.

    ``draw=2`` (the current one): ``numpy.random.SeedSequence(seed).spawn(4)`` gives one generator per
    tensor (q, k, v, dout in that order), each filled with ``standard_normal`` in float32 (float64 when
    name is float64) on its own thread. ``draw=1`` (files of format_version 1): one stream,
    ``default_rng(seed).standard_normal`` in float64 for q, k, v, then dout."""
    check_draw(draw)
    shapes = {key: (b, h, n, d) for key in ("q", "k", "v")}
    shapes["dout"] = (b, h, R, d)
    if draw == 1:
        rng = onp.random.default_rng(seed)
        buffer = onp.empty(b * h * max(n, R) * d)  # one float64 buffer for the draws (the values of fresh arrays)
        return {
            key: to_storage(rng.standard_normal(out=buffer[: int(onp.prod(s))].reshape(s)), name)
            for key, s in shapes.items()
        }
    wide = onp.float64 if name == "float64" else onp.float32
    streams = dict(zip(INPUTS, onp.random.SeedSequence(seed).spawn(len(INPUTS))))

    def one(key):  # a generator's fill runs without the GIL: the four tensors fill side by side
        out = aligned_empty(shapes[key], STORAGE[name])  # aligned as PyTorch's own (``convert``)
        rng = onp.random.default_rng(streams[key])
        if name in ("float32", "float64"):  # drawn in place (bfloat16 and float16 are rounded first)
            rng.standard_normal(out=out, dtype=wide)
        else:
            out[...] = to_storage(rng.standard_normal(shapes[key], dtype=wide), name)
        return out

    with concurrent.futures.ThreadPoolExecutor(max(1, min(len(INPUTS), os.cpu_count() or 1))) as pool:
        return dict(zip(INPUTS, pool.map(one, INPUTS)))


def _one_pass(q, k, v, dout, plan, rows, rope, label, dt, intermediates, workers):
    """One implementation (reference, plain or accurate) of the case: its out/dq/dk/dv, keys prefixed."""
    if rope:
        rotate = lambda x: rope_reference(x.astype(onp.float64), rope) if dt == "float64" else rope_plain(x, rope, dt)
        qr, kr = rotate(q), rotate(k)
    else:
        qr, kr = q, k
    r = attention_blocks(qr, kr, v, plan, rows, dtype=dt, dout=dout, intermediates=intermediates, workers=workers)
    if rope and dout is not None:
        for key in ("dq", "dk"):
            r[key] = (
                rope_reference(r[key], rope, inverse=True)
                if dt == "float64"
                else rope_plain(r[key], rope, dt, inverse=True)
            )
    return {label + key: val for key, val in r.items()}


def _compute(case, stored, rows, plan, grads, rope):
    """Float64 reference out (dq, dk, dv) from the stored inputs, and per tensor the budgets of the plain
    implementation in the dtype (``budget_<key>``: B_max, B_rms, max(e_F), rms(e_G); ``verdict.budgets``)."""
    name = case["dtype"]
    q, k, v, dout = (stored[key] for key in ("q", "k", "v", "dout"))  # each pass converts what it needs
    passes = [("", "float64", True), ("floor_", "float32" if name == "float64" else name, True)]
    if name not in ("float64", "float32"):
        passes.append(("accurate_", name, False))
    workers, result = os.cpu_count() or 1, {}
    for p in passes:  # each pass over all cores: its heads split between the threads
        result.update(_one_pass(q, k, v, dout if grads else None, plan, rows, rope, *p, workers))
    keys = [key for key in result if key in GRADS + ("out",)]
    if name == "float64":  # float64 rounding is float32's scaled by eps64 / eps32 = 2^-29
        for key in keys:
            result["floor_" + key] = result[key] + (result["floor_" + key] - result[key]) * 2.0**-29

    def budget(key):
        return onp.array(budgets(result[key], result["floor_" + key], name, result.get("accurate_" + key)))

    with single_blas_thread(), concurrent.futures.ThreadPoolExecutor(max(1, min(workers, len(keys)))) as pool:
        found = dict(zip(keys, pool.map(budget, keys)))
    return dict({key: result[key] for key in keys}, **{"budget_" + key: b for key, b in found.items()})


def reference_case(arch, *, cache_dir=None, **case_args):
    """Inputs, float64 reference and the budgets of the plain-dtype floor of one seeded case (a dict).

    Keys: ``q, k, v`` (b, h, n, d) and ``dout`` (b, h, R, d) in the storage dtype (bfloat16 -> float32
    holding bfloat16 values); ``rows`` (R,) token positions of the output rows; ``out`` (+ ``dq, dk, dv``
    with ``grads``) float64; ``budget_out`` (+ ``budget_dq`` ...): (B_max, B_rms, max(e_F), rms(e_G)) of
    the plain implementation in ``dtype`` (``minicp.testing.verdict.budgets``); ``case`` the canonical case
    dict (every pattern argument resolved).

    Arguments: those of ``case_inputs`` (``seq_len``, ``heads``, ``head_dim``, ``batch``, ``dtype``, ``seed``,
    ``grads``, ``rope``, ``draw`` and the pattern's own); the same as
    ``complete_case(case_inputs(...), cache_dir)``.
    """
    return complete_case(case_inputs(arch, cache_dir=cache_dir, **case_args), cache_dir)


def case_inputs(
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
    draw=DRAW,
    **pattern_args,
):
    """The first half of ``reference_case``: the case's inputs, ``rows``, ``plan`` and ``case``, and
    everything else when the case is cached (in this process or in ``cache_dir``). ``complete_case``
    computes what is missing. ``segment=`` or ``half_segment=`` for ECP (``**pattern_args``: the
    architecture's own); ``rope`` None, "interleaved" or "halves" (the kernel applies RoPE to q and k
    itself); ``draw`` how the inputs are drawn from the seed (``seeded_inputs``; 1 only for golden files
    of format_version 1).

    ``minicp.testing.check.check_case`` runs the kernel between the two: a kernel run after the reference finds
    the memory that the reference's passes allocated and freed, which the system must hand out again page
    by page (measured on a 2-core machine with the PyTorch ECP kernel of benchmarks/golden.py: a median
    1.14 s there against 0.48 s right after the draw)."""
    n, h = positive_int("seq_len", seq_len), positive_int("heads", heads)
    d, b = positive_int("head_dim", head_dim), positive_int("batch", batch)
    seed, grads, draw = nonnegative_int("seed", seed), boolean("grads", grads), check_draw(draw)
    name, rope = check_dtype(dtype), check_rope(rope, d)
    check_case_size(arch, n, h, d, b, name, grads, pattern_args)  # MAX_ACTIVATION_BYTES, MAX_SCORE_ENTRIES
    pa = resolved_pattern_args(arch, n, h, pattern_args)
    case, key = case_key(
        arch,
        seq_len=n,
        heads=h,
        head_dim=d,
        batch=b,
        dtype=name,
        seed=seed,
        grads=grads,
        rope=rope,
        pattern_args=pa,
        draw=draw,
    )
    if key in _MEMORY:
        _MEMORY.move_to_end(key)
        return dict(_MEMORY[key])
    R = len(kernel_pattern.rows(arch, n, h, **pa))
    computed = _load_cached(cache_dir, key, _shapes(b, h, n, d, R, name, grads))
    with concurrent.futures.ThreadPoolExecutor(1) as pool:  # the draw (no GIL) while the plan is built
        drawing = pool.submit(seeded_inputs, seed, b, h, n, d, R, name, draw) if computed is None else None
        plan, rows = block_plan(arch, n, h, pa)
        stored = computed if drawing is None else drawing.result()
    return dict(stored, rows=rows, case=case, plan=plan)


def complete_case(case, cache_dir=None):
    """A ``case_inputs`` dict with its float64 reference and budgets, computed (and stored in
    ``cache_dir``) unless it has them already; the complete case is kept in the in-process cache."""
    if not isinstance(case, dict) or not {"case", "plan", "rows", *INPUTS} <= set(case):
        raise ValueError("case must be a dict returned by case_inputs or reference_case")
    c, key = case["case"], _key_of(case["case"])
    if "out" not in case:
        stored = {name: case[name] for name in INPUTS}
        computed = dict(stored, **_compute(c, stored, case["rows"], case["plan"], c["grads"], c["rope"]))
        _store_cached(cache_dir, key, computed)
        case = dict(case, **computed)
    _MEMORY[key] = case
    _MEMORY.move_to_end(key)
    while len(_MEMORY) > MEMORY_CACHE:
        _MEMORY.popitem(last=False)
    return dict(case)


def _shapes(b, h, n, d, R, name, grads):
    """name -> (shape, dtype) of everything a case computes or draws: what a cache entry must hold."""
    full, rows = (b, h, n, d), (b, h, R, d)
    shapes = {key: (full, STORAGE[name]) for key in ("q", "k", "v")}
    shapes.update(dout=(rows, STORAGE[name]), out=(rows, "float64"), budget_out=((4,), "float64"))
    for key in GRADS if grads else ():
        shapes.update({key: (full, "float64"), "budget_" + key: ((4,), "float64")})
    return shapes


def _cache_path(cache_dir, key):
    folder = cache_dir if cache_dir is not None else os.environ.get(CACHE_ENV)
    return None if not folder else os.path.join(os.fspath(folder), f"minicp-ref-{key[:24]}.npz")


def _load_cached(cache_dir, key, shapes):
    """The cached arrays of the case ``key``, or None when absent, of another case, or not what ``shapes``
    says (a damaged or foreign entry is recomputed)."""
    path = _cache_path(cache_dir, key)
    if path is None or not os.path.isfile(path):
        return None
    try:
        z = mapped_npz(path)
        if set(z) != set(shapes) | {"key"} or str(z["key"][()]) != key:
            return None
    except (OSError, ValueError):
        return None
    for name, (shape, dtype) in shapes.items():
        if z[name].shape != shape or z[name].dtype.name != dtype:
            return None
    computed = {name: z[name] for name in shapes}  # the reference and budgets stay mapped (read-only) ...
    computed.update({name: aligned_copy(computed[name]) for name in INPUTS})  # ... the kernel's inputs are copies
    return computed


def _store_cached(cache_dir, key, computed):
    """One uncompressed .npz per case: the drawn inputs, the float64 reference and the budgets (the floors
    themselves are not kept: the budgets are all the verdicts use of them)."""
    path = _cache_path(cache_dir, key)
    if path is not None:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        atomic_savez(path, dict(computed, key=onp.asarray(key)), compressed=False)


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
