"""Block-by-block attention with explicit gradients: the float64 reference and the plain low-precision twin.

Every computed query row of an architecture lies in exactly one block of its block list
(``minicp.analysis.kernel_pattern.blocks``): rows r, key columns c, and the in-block mask
"local (i, j) visible iff j <= i + diagonal". One block, for one head, is plain attention:

    S = (q_r * scale) k_c^T          (|r|, |c|)       P = softmax(S masked)       O = P v_c
    dP = dO v_c^T      dS = P * (dP - rowsum(dP * P))
    dq_r = (dS k_c) * scale          dk_c += dS^T (q_r * scale)          dv_c += P^T dO

so the cost is the pattern's own (linear in n for ECP, LongLoRA, PerceiverAR ...). Rows are processed
in chunks (softmax is per row, so chunking is exact); a causal block only reads the key columns its
chunk can see. Blocks of one shape whose rows and columns sit at equal steps (ECP, LongLoRA, the
Double family) are read and written through strided views of the arrays; the others are gathered.

``dtype="float64"`` is the reference (exact float64 arithmetic). Any other dtype gives the *plain
implementation in that dtype*: the same formulas with every intermediate (q * scale, S, P, O, dP, dS,
dq, dk, dv; the dk, dv partial sums every ``KEY_GRAD_CHUNK`` query rows) rounded to the dtype, products accumulated in float32 (float64 for float64); this is what a
straightforward PyTorch implementation in that dtype computes, and its error against the reference is
the rounding floor that ``minicp.testing.verdict`` scales the budgets by.
"""

import collections
import concurrent.futures
import contextlib

import numpy as onp

from minicp.analysis import kernel_pattern
from minicp.testing.arrays import as_strided, is_numpy, module_of, operand_rounder, rounder
from minicp.testing.blockdevice import head_batched, run_head_batched
from minicp.testing.blockmath import chunk_cols as _chunk_cols
from minicp.testing.blockmath import chunk_math as _math
from minicp.testing.blockmath import scratch as _scratch
from minicp.testing.blockmath import wide as _wide

try:  # optional: one BLAS thread for the many small block products (threads cost more than they give there)
    from threadpoolctl import threadpool_limits
except ImportError:  # pragma: no cover
    threadpool_limits = None

__all__ = ["block_plan", "attention_blocks", "ROW_CHUNK", "KEY_GRAD_CHUNK", "single_blas_thread"]

ROW_CHUNK = 256
BATCH_ELEMENTS = 1 << 17  # score entries per batched product: temporaries of a MiB or two stay in cache
DEVICE_ROW_CHUNK = 1024  # on a GPU: fewer, larger launches
DEVICE_BATCH_ELEMENTS = 1 << 24
PLANS = 8  # block plans kept (``block_plan``)
_PLANS = collections.OrderedDict()
KEY_GRAD_CHUNK = 64  # query rows between roundings of the accurate twin's dk, dv partial sums (docs/tolerances.md)


def block_plan(arch, n, heads, pattern_args):
    """[(head, rows, cols, diagonal or None, name)] and the sorted output rows of the pattern (read-only arrays),
    kept for the last ``PLANS`` shapes: building a pattern's blocks costs more than checking it (a causal
    block's in-block mask is n x n), and every check of that shape needs the same plan."""
    key = (arch, int(n), int(heads), tuple(sorted(pattern_args.items())))
    if key in _PLANS:
        _PLANS.move_to_end(key)
        return _PLANS[key]
    blocks = kernel_pattern.blocks(arch, n, heads, **pattern_args)
    plan = [(b["head"], b["rows"], b["cols"], b["diagonal"], b["name"]) for b in blocks]
    rows = onp.unique(onp.concatenate([b["rows"] for b in blocks])).astype(onp.int64) if blocks else onp.zeros(0, int)
    for _, r, c, _, _ in plan:
        r.flags.writeable = c.flags.writeable = False
    rows.flags.writeable = False
    _PLANS[key] = plan, rows
    while len(_PLANS) > PLANS:
        _PLANS.popitem(last=False)
    return plan, rows


def single_blas_thread():
    """Context: BLAS limited to one thread (small matrices; a shared machine), when threadpoolctl is present."""
    return threadpool_limits(limits=1, user_api="blas") if threadpool_limits else contextlib.nullcontext()


def _groups(plan, batch_elements):
    """The plan's blocks grouped by shape (rows, cols, diagonal), in batches of at most ``batch_elements``
    score entries: [(heads (G,), rows (G, R), cols (G, C), diagonal)], blocks in plan order within a shape."""
    by_shape = {}
    for head, r, c, diagonal, _ in plan:
        by_shape.setdefault((len(r), len(c), diagonal), []).append((head, r, c))
    groups = []
    for (R, C, diagonal), blocks in by_shape.items():
        size = max(1, batch_elements // max(1, min(R, KEY_GRAD_CHUNK) * C))
        for g0 in range(0, len(blocks), size):
            part = blocks[g0 : g0 + size]
            groups.append(
                (
                    onp.array([hd for hd, _, _ in part]),
                    onp.stack([r for _, r, _ in part]).reshape(len(part), R),
                    onp.stack([c for _, _, c in part]).reshape(len(part), C),
                    diagonal,
                )
            )
    return groups


def _head_parts(groups, workers):
    """The groups split into ``workers`` parts of whole heads (contiguous head ranges, about equal work),
    each group keeping its blocks of those heads in order: every head sees its blocks in the same order as
    unsplit, so the parts may run side by side on shared accumulators (disjoint heads) with equal results."""
    heads = sorted({int(hd) for g in groups for hd in g[0]})
    workers = min(workers, len(heads))  # a part is at least one head (more cores than heads: some idle)
    if workers <= 1:
        return [groups]
    bounds = [heads[i * len(heads) // workers] for i in range(workers)] + [heads[-1] + 1]
    parts = []
    for h0, h1 in zip(bounds[:-1], bounds[1:]):
        part = []
        for hd, r, c, diagonal in groups:
            keep = (hd >= h0) & (hd < h1)
            if keep.any():
                part.append((hd[keep], r[keep], c[keep], diagonal))
        parts.append(part)
    return [p for p in parts if p]


def _run_groups(q, k, v, groups, row_chunk, acc):
    acc = dict(acc, work={})  # this thread's scratch buffers, reused chunk after chunk (``_scratch``)
    for heads, r, c, diagonal in groups:
        span = None if is_numpy(acc["xp"]) else head_batched(heads, r, c, acc)
        if span is not None:  # a GPU: every head in one launch, in long chunks
            part = dict(acc, key_parts=None if acc["store_exact"] else KEY_GRAD_CHUNK)
            run_head_batched(q, k, v, span, r.shape[1], c.shape[1], diagonal, DEVICE_ROW_CHUNK, part)
            continue
        runs = _strided_runs(heads, r, c, acc) if acc["strided"] else None
        chunks = [(i0, min(r.shape[1], i0 + row_chunk)) for i0 in range(0, r.shape[1], row_chunk)]
        if runs is None:
            for i0, i1 in chunks:
                _chunk(
                    q, k, v, heads, r[:, i0:i1], c[:, : _chunk_cols(c.shape[1], i0, i1, diagonal)], i0, diagonal, acc
                )
        else:
            runs = runs if is_numpy(acc["xp"]) else _merged(runs)  # a GPU: all heads of equal runs at once
            for run in runs:  # one head each (or a head range): its chunks in order, as unsplit
                _strided_run(q, k, v, run, chunks, c.shape[1], diagonal, acc)


def _progression(starts, alone):
    """The common step of the integer sequence ``starts`` (``alone`` for a single start), or None."""
    steps = onp.diff(starts)
    if len(steps) == 0:
        return alone
    return int(steps[0]) if steps[0] > 0 and (steps == steps[0]).all() else None


def _strided_runs(heads, r, c, acc):
    """The group as runs of one head whose blocks sit at equal steps (rows, columns and output rows each
    a contiguous range, their starts in arithmetic progression): [(head, r0, o0, c0, G, row_step,
    out_step, col_step)], or None when a block does not fit (the group is then gathered).

    Such a run is read and written through strided views of q, k, v, dout, out, dq (no copies), and its key
    gradients are added in pieces of one column step: ECP's, LongLoRA's and the Double family's blocks."""
    R, C = r.shape[1], c.shape[1]
    oi = onp.searchsorted(acc["rows"], r[:, :1])[:, 0]
    if not (
        (r == r[:, :1] + onp.arange(R)).all()
        and (c == c[:, :1] + onp.arange(C)).all()
        and (acc["rows"][onp.minimum(oi[:, None] + onp.arange(R), len(acc["rows"]) - 1)] == r).all()
    ):
        return None
    runs = []
    for head in onp.unique(heads):
        sel = onp.flatnonzero(heads == head)
        if (onp.diff(sel) != 1).any():
            return None
        steps = [_progression(x[sel], alone) for x, alone in ((r[:, 0], R), (oi, R), (c[:, 0], C))]
        if None in steps or steps[0] < R or steps[1] < R or not (steps[2] >= C or C % steps[2] == 0):
            return None  # rows of one head lie in one block, so a smaller row step cannot occur
        runs.append((int(head), int(r[sel[0], 0]), int(oi[sel[0]]), int(c[sel[0], 0]), len(sel), *steps))
    return runs


def _windows(x, head, start, count, step, length):
    """View (b, count, length, d) of x[:, head]: ``count`` windows of ``length`` rows, ``step`` rows apart;
    for a head range (h0, h1), (b, h1 - h0, count, length, d)."""
    if isinstance(head, tuple):
        base = x[:, head[0] : head[1], start:]
        sb, sh, sn, sd = base.strides
        shape = (x.shape[0], head[1] - head[0], count, length, x.shape[-1])
        assert (count - 1) * step + length <= base.shape[2]
        return as_strided(module_of(x), base, shape, (sb, sh, step * sn, sn, sd))
    base = x[:, head, start:]
    sb, sn, sd = base.strides
    shape = (x.shape[0], count, length, x.shape[-1])
    assert (count - 1) * step + length <= base.shape[1]
    return as_strided(module_of(x), base, shape, (sb, step * sn, sn, sd))


def _merged(runs):
    """Runs of consecutive heads with the same blocks as one run over the head range (h0, h1) (a GPU: one
    launch for every head)."""
    out = []
    for run in runs:
        last = out[-1] if out else None
        if last is not None and last[1:] == run[1:] and last[0][1] == run[0]:
            out[-1] = ((last[0][0], run[0] + 1), *run[1:])
        else:
            out.append(((run[0], run[0] + 1), *run[1:]))
    return out


def _strided_run(q, k, v, run, chunks, C, diagonal, acc):
    """The row chunks of a strided run's blocks (``_strided_runs``), read and written through views. The key
    columns are widened once for all chunks; where the key gradients are kept exactly (float32, float64)
    they are summed over the chunks first and added to dk, dv once per run."""
    head, r0, o0, c0, G, row_step, out_step, col_step = run
    ct = acc["out"].dtype
    K, V = (_wide(acc, name, _windows(x, head, c0, G, col_step, C), ct) for name, x in (("K", k), ("V", v)))
    grads = "dq" in acc
    summed = grads and acc["store_exact"] and len(chunks) > 1
    if summed:
        dK_sum, dV_sum = (_scratch(acc, name, K.shape, ct) for name in ("dK sum", "dV sum"))
        dK_sum[...], dV_sum[...] = 0, 0
    for i0, i1 in chunks:
        cols = _chunk_cols(C, i0, i1, diagonal)
        dout = _windows(acc["dout"], head, o0, G, out_step, i1)[..., i0:, :] if grads else None
        into = {"O": _windows(acc["out"], head, o0, G, out_step, i1)[..., i0:, :]}
        if grads:  # rows of one head lie in one block: dq is written once, like out
            into["dQ"] = _windows(acc["dq"], head, r0, G, row_step, i1)[..., i0:, :]
        Q = _windows(q, head, r0, G, row_step, i1)[..., i0:, :]
        _, g = _math(Q, K[..., :cols, :], V[..., :cols, :], dout, i0, diagonal, acc, into)
        if g is None:
            continue
        if summed:
            dK_sum[..., :cols, :] += g[1]
            dV_sum[..., :cols, :] += g[2]
        else:
            _add_key_grads(acc, head, c0, G, col_step, cols, g[1], g[2])
    if summed:
        _add_key_grads(acc, head, c0, G, col_step, C, dK_sum, dV_sum)


def _add_key_grads(acc, head, c0, G, col_step, cols, dK, dV):
    """dk, dv of a run's G blocks += dK, dV (b, G, cols, d), in pieces of one column step: key columns
    shared by neighbouring blocks get the earlier block's part first (plan order)."""
    pieces = [(0, cols)] if col_step >= cols else [(j, min(cols, j + col_step)) for j in range(0, cols, col_step)][::-1]
    for a, z in pieces:
        for target, values in ((acc["dk"], dK), (acc["dv"], dV)):
            view = _windows(target, head, c0 + a, G, col_step, z - a)
            if acc["store_exact"]:
                view += values[..., a:z, :]
            else:
                view[...] = acc["store"](view + values[..., a:z, :])


def attention_blocks(
    q,
    k,
    v,
    plan,
    rows,
    *,
    dtype="float64",
    dout=None,
    scale=None,
    row_chunk=None,
    intermediates=True,
    production=False,
    precision=None,
    workers=1,
    strided=True,
):
    """Attention (and, with ``dout``, its gradients) of the block plan, q, k, v (b, h, n, d), NumPy or CuPy
    arrays (the arithmetic runs in their module).

    Returns a dict with ``out`` (b, h, R, d) for the R sorted ``rows``, and ``dq, dk, dv`` (b, h, n, d)
    when ``dout`` (b, h, R, d) is given: float64 for dtype="float64" (exact float64 arithmetic), else
    float32 arrays holding values of the plain dtype implementation. In bfloat16 and float16 the key-side
    partial sums dk, dv are stored in the dtype after every ``KEY_GRAD_CHUNK`` query rows of a block (as
    PyTorch's CPU flash backward and autograd through bfloat16 tensors keep them).
    ``intermediates=False``: the *accurate* implementation, float32 arithmetic throughout, only the
    inputs, the results and those partial sums rounded to the dtype; with ``production=True`` also the
    probabilities and dS where fused GPU kernels round them (``minicp.testing.blockmath``).
    ``precision="tf32"``: every product's float32 operands truncated to TF32 (tensor cores).
    Blocks of one shape are computed together (batched products); on the host ``workers`` threads take a
    range of heads each (same results). ``strided``: blocks at equal steps are read through strided views
    instead of gathered copies (the same values up to summation order; False gathers every block)."""
    xp = module_of(q)
    host = is_numpy(xp)
    rnd_io = rounder(dtype, xp)
    rnd = rnd_io if intermediates else rounder("float64" if dtype == "float64" else "float32", xp)
    ct = onp.float64 if dtype == "float64" else onp.float32
    q, k, v = (_operand(xp, x, ct, rnd_io) for x in (q, k, v))
    scale = q.shape[-1] ** -0.5 if scale is None else scale
    out = xp.zeros(q.shape[:2] + (len(rows), v.shape[-1]), dtype=ct)
    grads = dout is not None
    row_chunk = row_chunk or (ROW_CHUNK if host else DEVICE_ROW_CHUNK)
    long_chunks = dtype == "float32" or (dtype == "float64" and not host)
    row_chunk = row_chunk if long_chunks else min(row_chunk, KEY_GRAD_CHUNK)  # float64 on the host: causal blocks
    # read fewer hidden columns in shorter chunks (the same values, up to float64 summation order)
    acc = {"out": out, "rows": rows, "scale": ct(scale), "rnd": rnd, "store": rnd_io, "strided": strided}
    acc.update(xp=xp, production=bool(production) and not intermediates, mm=operand_rounder(precision, xp))
    acc.update(exact=dtype in ("float32", "float64") or not intermediates, store_exact=dtype in ("float32", "float64"))
    if grads:
        acc.update(dout=_operand(xp, dout, ct, rnd_io), dq=xp.zeros(q.shape, ct), dk=xp.zeros(k.shape, ct))
        acc["dv"] = xp.zeros(v.shape, ct)  # calloc: pages are zeroed as the threads first write them
    parts = _head_parts(_groups(plan, BATCH_ELEMENTS if host else DEVICE_BATCH_ELEMENTS), workers if host else 1)
    with single_blas_thread():  # NumPy releases the GIL in products and ufuncs: the parts run side by side
        if len(parts) > 1:
            with concurrent.futures.ThreadPoolExecutor(len(parts)) as pool:
                list(pool.map(lambda part: _run_groups(q, k, v, part, row_chunk, acc), parts))
        else:
            _run_groups(q, k, v, parts[0] if parts else [], row_chunk, acc)
    result = {"out": rnd_io(out)}
    if grads:
        dq = xp.multiply(acc["dq"], ct(scale), out=acc["dq"]) if acc["exact"] else rnd(acc["dq"]) * ct(scale)
        result.update(dq=rnd_io(dq), dk=rnd_io(acc["dk"]), dv=rnd_io(acc["dv"]))
    return result


def _operand(xp, x, ct, rnd_io):
    """An input as the arithmetic reads it: float32 inputs of the float64 reference stay float32 (each chunk
    widens its own rows and columns, ``_wide``: exact, and no full float64 copy to allocate and fault in
    before the threads start); everything else converted and rounded to the dtype up front."""
    x = xp.asarray(x)
    if ct == onp.float64 and x.dtype in (onp.float32, onp.float64):
        return x
    return rnd_io(xp.asarray(x, dtype=ct))


def _chunk(q, k, v, heads, rr, cc, i0, diagonal, acc):
    """One row chunk of G same-shaped blocks, gathered: rr (G, R') query rows, cc (G, C') key columns of heads (G,)."""
    xp = acc["xp"]
    hd, oi = xp.asarray(heads[:, None]), xp.asarray(onp.searchsorted(acc["rows"], rr))
    rr_x, cc_x = xp.asarray(rr), xp.asarray(cc)
    dout = acc["dout"][:, hd, oi] if "dq" in acc else None
    O, grads = _math(q[:, hd, rr_x], k[:, hd, cc_x], v[:, hd, cc_x], dout, i0, diagonal, acc)
    acc["out"][:, hd, oi] = O
    if grads is None:
        return
    dQ, dK, dV = grads
    acc["dq"][:, hd, rr_x] += dQ  # every (head, row) lies in one block: no duplicates
    for g in range(len(heads)):  # key columns may repeat across blocks: in plan order, one block at a time
        _add_rows(xp, acc["dk"], heads[g], cc[g], dK[:, g], acc["store"])
        _add_rows(xp, acc["dv"], heads[g], cc[g], dV[:, g], acc["store"])


def _add_rows(xp, target, head, cols, values, store=None):
    """target[:, head, cols] += values for the distinct cols of a block (a slice when contiguous); ``store``
    rounds the updated partial sums (an accumulator kept in the dtype)."""
    contiguous = len(cols) and cols[-1] - cols[0] + 1 == len(cols)
    index = slice(int(cols[0]), int(cols[-1]) + 1) if contiguous else xp.asarray(cols)
    updated = target[:, head, index] + values
    target[:, head, index] = updated if store is None else store(updated)
