"""Seeded cases and their float64 reference, computed block by block at the pattern's own cost and cached.

``reference_case`` draws q, k, v (b, h, n, d) and dout (b, h, R, d) standard normal from the seed
(``seeded_inputs``: one generator per tensor from ``numpy.random.SeedSequence(seed).spawn(4)``, or draw 3 on a
GPU); rounds them to the dtype; computes out (and dq, dk, dv) in float64 **from the rounded inputs**
(``minicp.testing.blockwise``, checked against ``minicp.attention`` + autograd in the tests), and the same
quantities of the plain and the production implementations in the dtype, the budgets' units; of those only
their row statistics are kept (``floor_*``, ``minicp.testing.rowstats``), and in bfloat16/float16 the
precision bugs' twins (``twin_out``). On the host each pass runs in ``os.cpu_count()`` threads, each over a
range of heads; with ``device`` everything runs on that GPU (CuPy).

Results are cached per case (``minicp.testing.cache``): in this process (the last ``MEMORY_CACHE`` cases),
and on disk when ``cache_dir`` (or the environment variable ``MINICP_REFERENCE_CACHE``) names a folder, one
verified .npz per case holding the float64 reference and the floors' statistics (the inputs are drawn again
and must have the entry's digest; GPU cases are kept in memory only). Callers get read-only views; ``fresh=True`` reads neither cache (what a golden
file's verification uses: it never trusts the cache it is verifying against).
"""

import concurrent.futures
import hashlib
import json
import os

import numpy as onp

from minicp.nn.budget import check_case_size
from minicp.testing.arrays import is_numpy, module_of, rounder, to_host
from minicp.testing.blockwise import attention_blocks, block_plan, single_blas_thread
from minicp.testing.cache import entry_path, load_entry, read_only, recall, remember, store_entry
from minicp.testing.cache import forget as forget_key
from minicp.testing.convert import aligned_empty
from minicp.testing.device import check_device, device_module, draw_normals
from minicp.testing.dtypes import STORAGE, check_dtype, to_storage
from minicp.testing.guards import combined_digest
from minicp.testing.patterns import resolved_pattern_args
from minicp.testing.rope import check_rope, rope_plain, rope_reference
from minicp.testing.rowstats import FLOOR_ROWS, floor_stats
from minicp.testing.twins import BUGS, twin_stats
from minicp.validate import boolean, nonnegative_int, positive_int

__all__ = [
    "CASE_VERSION",
    "case_key",
    "seeded_inputs",
    "reference_case",
    "case_inputs",
    "complete_case",
    "shared_inputs",
    "shared_complete",
    "forget_case",
    "reference_arrays",
    "check_precision",
    "PRECISIONS",
]

CASE_VERSION = 7  # 3: the accurate floor keeps dk, dv partial sums in the dtype; 4: budgets, not floors, kept;
# 5: the input draw is recorded (``draw``); 6: disk entries hold no inputs, but their digest and their own;
# 7: the floors' row statistics and the precision bugs' twins kept, the production floor G
DRAWS = (1, 2, 3)  # how inputs are drawn from a seed (``seeded_inputs``)
DRAW = 2
GRADS = ("dq", "dk", "dv")
PRECISIONS = ("tf32",)  # reduced-precision modes with their own floors
INPUTS = ("q", "k", "v", "dout")


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


def forget_case(case):
    """Drop one case (a dict from ``case_inputs`` or ``reference_case``) from the in-process cache."""
    forget_key(_key_of(case["case"]))


def seeded_inputs(seed, b, h, n, d, R, name, draw=DRAW, xp=onp):
    """q, k, v (b, h, n, d) and dout (b, h, R, d), standard normal from ``seed``, rounded to name.

    ``draw=2`` (the host's default): ``numpy.random.SeedSequence(seed).spawn(4)`` gives one generator per
    tensor (q, k, v, dout in that order), each filled with ``standard_normal`` in float32 (float64 when
    name is float64) on its own thread. ``draw=1`` (files of format_version 1): one stream,
    ``default_rng(seed).standard_normal`` in float64 for q, k, v, then dout. ``draw=3`` (a GPU check's
    default): counter-based, the same values on the host and on a GPU (``minicp.testing.device``), drawn
    in the array module ``xp``."""
    check_draw(draw)
    shapes = {key: (b, h, n, d) for key in ("q", "k", "v")}
    shapes["dout"] = (b, h, R, d)
    if draw == 3:
        wide3 = xp.float64 if name == "float64" else xp.float32
        rnd = rounder(name, xp)
        return {
            key: rnd(draw_normals(xp, seed, t, int(onp.prod(shapes[key]))).astype(wide3)).reshape(shapes[key])
            if name != "float64"
            else draw_normals(xp, seed, t, int(onp.prod(shapes[key]))).reshape(shapes[key])
            for t, key in enumerate(INPUTS)
        }
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


def _rotate(x, rope, dt, inverse=False):
    """RoPE of the reference (float64) or of the plain implementation in ``dt``, on the host (a GPU's arrays
    go there and back)."""
    xp = module_of(x)
    host = to_host(x)
    r = (
        rope_reference(host.astype(onp.float64), rope, inverse)
        if dt == "float64"
        else rope_plain(host, rope, dt, inverse)
    )
    return r if is_numpy(xp) else xp.asarray(r)


def _one_pass(q, k, v, dout, plan, rows, rope, label, dt, kind, workers, precision=None):
    """One implementation (``kind``: "plain", "accurate" or "production") of the case: out/dq/dk/dv, keys
    prefixed with ``label``."""
    qr, kr = (_rotate(q, rope, dt), _rotate(k, rope, dt)) if rope else (q, k)
    r = attention_blocks(
        qr, kr, v, plan, rows, dtype=dt, dout=dout, intermediates=kind == "plain", production=kind == "production",
        precision=None if dt == "float64" else precision, workers=workers,
    )  # fmt: skip
    if rope and dout is not None:
        for key in ("dq", "dk"):
            r[key] = _rotate(r[key], rope, dt, inverse=True)
    return {label + key: val for key, val in r.items()}


def _compute(case, stored, rows, plan, grads, rope):
    """Float64 reference out (dq, dk, dv) from the stored inputs, the floors' row statistics per tensor
    (``floor_<key>``: ``rowstats.floor_stats`` of the plain implementation F and the production one G, on the
    host) and, in bfloat16 and float16, the precision bugs' twins (``twin_out``: ``twins.twin_stats``)."""
    name, precision = case["dtype"], case.get("precision")
    q, k, v, dout = (stored[key] for key in ("q", "k", "v", "dout"))  # each pass converts what it needs
    low = name not in ("float64", "float32")
    passes = [("", "float64", "plain"), ("floor_", "float32" if name == "float64" else name, "plain")]
    if name != "float64":
        passes.append(("accurate_", name, "production"))
    workers, result = os.cpu_count() or 1, {}
    for p in passes:  # each pass over all cores: its heads split between the threads
        result.update(_one_pass(q, k, v, dout if grads else None, plan, rows, rope, *p, workers, precision))
    keys = [key for key in result if key in GRADS + ("out",)]
    if name == "float64":  # float64 rounding is float32's scaled by eps64 / eps32 = 2^-29
        for key in keys:
            result["floor_" + key] = result[key] + (result["floor_" + key] - result[key]) * 2.0**-29

    def stats(key):
        accurate = result.get("accurate_" + key, result["floor_" + key])
        return to_host(floor_stats(result[key], result["floor_" + key], accurate))

    if is_numpy(module_of(q)):
        with single_blas_thread(), concurrent.futures.ThreadPoolExecutor(max(1, min(workers, len(keys)))) as pool:
            found = dict(zip(keys, pool.map(stats, keys)))
    else:
        found = {key: stats(key) for key in keys}
    computed = dict({key: result[key] for key in keys}, **{"floor_" + key: f for key, f in found.items()})
    if low:
        computed["twin_out"] = twin_stats(q, k, v, plan, name)
    return computed


def reference_case(arch, *, cache_dir=None, fresh=False, **case_args):
    """Inputs, float64 reference and the floors' row statistics of one seeded case (a dict of read-only arrays;
    CuPy arrays with ``device``).

    Keys: ``q, k, v`` (b, h, n, d) and ``dout`` (b, h, R, d) in the storage dtype (bfloat16 -> float32
    holding bfloat16 values); ``rows`` (R,) token positions of the output rows; ``out`` (+ ``dq, dk, dv``
    with ``grads``) float64; ``floor_out`` (+ ``floor_dq`` ...): (5, h, rows) row statistics of the plain and
    production implementations in ``dtype`` (``minicp.testing.rowstats.floor_stats``); in bfloat16/float16
    ``twin_out`` (``minicp.testing.twins``); ``case`` the canonical case dict (every pattern argument resolved).

    Arguments: those of ``case_inputs`` (``seq_len``, ``heads``, ``head_dim``, ``batch``, ``dtype``, ``seed``,
    ``grads``, ``rope``, ``draw``, ``device``, ``precision`` and the pattern's own); the same as
    ``complete_case(case_inputs(...), cache_dir)``. ``fresh=True``: computed anew, reading neither the
    in-process nor the disk cache (and writing no disk entry); the result is kept in memory.
    """
    return read_only(shared_complete(shared_inputs(arch, fresh=fresh, **case_args), cache_dir, fresh=fresh))


def case_inputs(arch, **case_args):
    """The first half of ``reference_case`` (read-only views): the case's inputs, ``rows``, ``plan`` and
    ``case``, and everything else when the case is complete in the in-process cache. ``complete_case``
    computes (or loads) the rest. Arguments: ``seq_len``, ``heads``, ``head_dim``, ``batch=1``,
    ``dtype="float32"``, ``seed=0``, ``grads=False``, ``rope=None`` ("interleaved" or "halves": the kernel
    applies RoPE to q and k itself), ``draw`` (how the inputs are drawn from the seed, ``seeded_inputs``; 1
    only for golden files of format_version 1; default 2 on the host, 3 on a GPU), ``fresh=False``,
    ``device`` (None or "cuda[:i]"), ``precision`` (None or "tf32", float32 only) and the pattern's own
    (``segment=`` or ``half_segment=`` for ECP).

    ``minicp.testing.check.check_case`` runs the kernel between the two: a kernel run after the reference finds
    the memory that the reference's passes allocated and freed, which the system must hand out again page
    by page, and runs markedly slower there (docs/benchmarks.md, "Measurements behind design choices")."""
    return read_only(shared_inputs(arch, **case_args))


def shared_inputs(
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
    draw=None,
    fresh=False,
    device=None,
    precision=None,
    **pattern_args,
):
    """``case_inputs`` without the read-only views: the inputs are the cache's own (writable) arrays, what
    ``minicp.testing.check`` hands to an ``array_fn`` that may wrap their memory (and then verifies by digest
    that the kernel left them as they were). Not for callers outside minicp.testing and minicp.golden."""
    n, h = positive_int("seq_len", seq_len), positive_int("heads", heads)
    d, b = positive_int("head_dim", head_dim), positive_int("batch", batch)
    device = check_device(device)
    draw = check_draw((3 if device else DRAW) if draw is None else draw)
    seed, grads = nonnegative_int("seed", seed), boolean("grads", grads)
    name, rope, fresh = check_dtype(dtype), check_rope(rope, d), boolean("fresh", fresh)
    precision = check_precision(precision, name)
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
    if precision is not None or device is not None:  # fields of host float32/bfloat16/float16 cases as before
        case.update({k: v for k, v in (("precision", precision), ("device", device)) if v is not None})
        key = _key_of(case)
    cached = None if fresh else recall(key)
    if cached is not None:
        return cached
    plan, rows = block_plan(arch, n, h, pa)  # kept per shape (``block_plan``)
    xp = onp if device is None else device_module(device)
    return dict(seeded_inputs(seed, b, h, n, d, len(rows), name, draw, xp), rows=rows, case=case, plan=plan)


def check_precision(precision, dtype):
    """None, or "tf32" for a float32 case (its floors then use TF32 products); ValueError otherwise."""
    if precision is None:
        return None
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be None or one of {PRECISIONS}, got {precision!r}")
    if dtype != "float32":
        raise ValueError(f"precision={precision!r} applies to dtype float32 only, not {dtype}")
    return precision


def complete_case(case, cache_dir=None, fresh=False):
    """A ``case_inputs`` dict with its float64 reference and floors (read-only views), computed (or loaded
    from the disk cache ``cache_dir`` and verified, unless ``fresh``) unless it has them already; the
    complete case is kept in the in-process cache."""
    return read_only(shared_complete(case, cache_dir, fresh))


def shared_complete(case, cache_dir=None, fresh=False):
    """``complete_case`` without the read-only views (``shared_inputs`` says why)."""
    if not isinstance(case, dict) or not {"case", "plan", "rows", *INPUTS} <= set(case):
        raise ValueError("case must be a dict returned by case_inputs or reference_case")
    c, key = case["case"], _key_of(case["case"])
    if "out" not in case:
        stored = {name: case[name] for name in INPUTS}
        shapes = _shapes(case)
        on_disk = not fresh and c.get("device") is None and entry_path(cache_dir, key) is not None
        inputs_sha256 = combined_digest(stored, INPUTS) if on_disk else None
        computed = load_entry(cache_dir, key, shapes, inputs_sha256, c["dtype"]) if on_disk else None
        if computed is None:
            computed = _compute(c, stored, case["rows"], case["plan"], c["grads"], c["rope"])
            if on_disk:
                store_entry(cache_dir, key, computed, inputs_sha256)
        case = dict(case, **computed)
    remember(key, case, inputs=INPUTS)
    return dict(case)


def _shapes(case):
    """name -> (shape, dtype) of what a case computes: what a disk entry must hold."""
    c = case["case"]
    full, rows = tuple(case["q"].shape), tuple(case["dout"].shape)
    stats = lambda shape: ((len(FLOOR_ROWS), shape[1], shape[2]), "float64")
    shapes = {"out": (rows, "float64"), "floor_out": stats(rows)}
    for key in GRADS if c["grads"] else ():
        shapes.update({key: (full, "float64"), "floor_" + key: stats(full)})
    if c["dtype"] in ("bfloat16", "float16"):
        shapes["twin_out"] = ((len(BUGS), 3), "float64")
    return shapes


def reference_arrays(arch, *, seq_len, heads, head_dim, batch=1, dtype="float32", seed=0, grads=True, **pattern_args):
    """q, k, v, dout (storage dtype), rows, out and with ``grads`` dq, dk, dv (float64): the golden values, as
    read-only views."""
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
