"""Verdict quality: correct kernels must pass, planted bugs must fail, on several seeds per case.

    python tests/testing/corpus.py            # the sweep (n up to 4096; minutes)
    python tests/testing/corpus.py --quick    # what tests/testing/test_verdicts.py runs
    python tests/testing/corpus.py 4096 bugs  # one size, the planted bugs only (or: correct)

Prints one line per (kernel, case, dtype): passes / runs, inconclusive verdicts, the largest budget shares
(over the tensors, their blocks and the row-scale criterion), and whether the verdicts were right (a bug
that passes is a false pass, a correct kernel that fails a false fail; an inconclusive verdict is neither,
and is counted); then the totals.
"""

import sys
import time

import kernels as K
import torch

import minicp.testing as mt
from minicp.testing import torch as mtt

DTYPES = ("float32", "bfloat16", "float16")
# name, arch, pattern args, kernel factory (arch, pa) -> fn, rope style, rope offset, is_bug, dtypes
ENTRIES = [
    ("ecp sdpa blocks", "ecp", {}, K.sdpa_blocks, None, False, DTYPES),
    ("ecp flash tile 64", "ecp", {}, lambda a, p: K.flash(a, p, 64), None, False, DTYPES),
    ("ecp flash tile 1", "ecp", {}, lambda a, p: K.flash(a, p, 1), None, False, DTYPES),
    ("ecp flash tile 16", "ecp", {}, lambda a, p: K.flash(a, p, 16), None, False, DTYPES),
    ("ecp dense mask", "ecp", {}, K.dense, None, False, DTYPES),
    ("causal sdpa", "transformer", {}, K.causal_sdpa, None, False, DTYPES),
    ("causal flash tile 128", "transformer", {}, lambda a, p: K.flash(a, p, 128), None, False, DTYPES),
    ("longlora roll sdpa blocks", "longlora", {"shift": "roll"}, K.sdpa_blocks, None, False, DTYPES),
    ("perceiver_ar dense", "perceiver_ar", {}, K.dense, None, False, DTYPES),
    ("ecp rope interleaved", "ecp", {}, K.sdpa_blocks, "interleaved", False, DTYPES),
    ("causal rope halves", "transformer", {}, K.causal_sdpa, "halves", False, DTYPES),
    # planted bugs
    ("BUG block boundary off by one", "ecp", {}, "off_by_one", None, True, DTYPES),
    ("BUG wrong scale (x1.05)", "ecp", {}, "scale", None, True, DTYPES),
    ("BUG no causal mask in diagonal block", "ecp", {}, "no_diag", None, True, DTYPES),
    ("BUG wrong heads shifted", "longlora", {}, "heads", None, True, DTYPES),
    ("BUG softmax state in low precision", "ecp", {}, "low_state", None, True, ("bfloat16", "float16")),
    ("BUG RoPE position offset", "ecp", {}, "rope_offset", "interleaved", True, DTYPES),
    ("BUG missing previous half segment", "ecp", {}, "own_half", None, True, DTYPES),
]


def sizes(arch, n):
    pa = {"ecp": {"half_segment": n // 8}, "longlora": {"group": n // 4}, "perceiver_ar": {"latent": n // 2}}
    return pa.get(arch, {})


def build(entry, pa, dtype, n):
    name, arch, _, factory, rope, _, _ = entry
    m = pa.get("half_segment")
    if factory == "off_by_one":
        return K.dense(arch, pa, K.ecp_predicate(m, off_by_one=True))
    if factory == "own_half":
        return K.dense(arch, pa, K.ecp_predicate(m, own_half_only=True))
    if factory == "scale":
        return lambda q, k, v: K.sdpa_blocks(arch, pa, scale=1.05 * q.shape[-1] ** -0.5)(q, k, v)
    if factory == "no_diag":
        return K.sdpa_blocks(arch, pa, drop_diagonal_mask=True)
    if factory == "heads":
        return lambda q, k, v: K.sdpa_blocks(
            arch, pa, head_map=[(i + q.shape[1] // 2) % q.shape[1] for i in range(q.shape[1])]
        )(q, k, v)
    if factory == "low_state":
        return K.flash(arch, pa, 16, state_dtype=mtt.torch_dtype(dtype))
    if factory == "rope_offset":
        return K.with_rope(K.sdpa_blocks(arch, pa), rope, q_offset=1)
    fn = factory(arch, pa)
    return K.with_rope(fn, rope) if rope else fn


def verdict_of(fn, arch, n, dtype, seed, rope, pa, heads=4, head_dim=64, **options):
    """(status, largest share over the tensors and their units, the report) of one check."""
    try:
        rep = mt.assert_matches_reference(
            fn,
            arch,
            seq_len=n,
            heads=heads,
            head_dim=head_dim,
            dtype=dtype,
            seed=seed,
            check_grads=True,
            rope=rope,
            inconclusive="ignore",
            **mtt.adapters(fn, dtype, options.pop("device", "cpu")),
            **options,
            **pa,
        )
    except mt.MismatchError as e:
        rep = e.report
    return rep.status, max(v.share for v in rep.values()), rep


def tally(name, arch, dtype, n, is_bug, outcomes):
    """One line's counts from [(status, share)]: passes, inconclusive, false passes and false fails."""
    shares = [share for _, share in outcomes]
    passes = sum(status == "pass" for status, _ in outcomes)
    fails = sum(status == "fail" for status, _ in outcomes)
    return dict(
        name=name,
        arch=arch,
        dtype=dtype,
        n=n,
        passes=passes,
        inconclusive=len(outcomes) - passes - fails,
        runs=len(outcomes),
        is_bug=is_bug,
        false_pass=passes if is_bug else 0,
        false_fail=0 if is_bug else fails,
        share_min=min(shares),
        share_max=max(shares),
        wrong=passes if is_bug else fails,
    )


def run_entry(entry, dtype, n, seeds, heads=4, head_dim=64):
    name, arch, extra, _, rope, is_bug, _ = entry
    pa = dict(sizes(arch, n), **extra)
    fn = build(entry, pa, dtype, n)
    outcomes = [verdict_of(fn, arch, n, dtype, seed, rope, pa, heads, head_dim)[:2] for seed in seeds]
    return tally(name, arch, dtype, n, is_bug, outcomes)


def line(r, seconds):
    """The printed line of one (kernel, case, dtype): passes, inconclusive, shares and whether it was right."""
    verdict = "FALSE PASS" if r["false_pass"] else "FALSE FAIL" if r["false_fail"] else "right"
    return (
        f"{r['name']:<38} n={r['n']:<5} {r['dtype']:<9} passed {r['passes']}/{r['runs']}"
        + (f" inconclusive {r['inconclusive']}" if r["inconclusive"] else "")
        + f"  budget share {100 * r['share_min']:.3g}%..{100 * r['share_max']:.3g}%  {verdict}  ({seconds:.1f} s)"
    )


def sweep(ns, seeds, entries=ENTRIES, out=print):
    rows = []
    for n in ns:
        for entry in entries:
            if "tile 1 " in entry[0] + " " and n > 512:
                continue  # one key per step: too slow in eager PyTorch
            for dtype in entry[6]:
                t = time.perf_counter()
                r = run_entry(entry, dtype, n, seeds)
                rows.append(r)
                out(line(r, time.perf_counter() - t))
    fp, ff = sum(r["false_pass"] for r in rows), sum(r["false_fail"] for r in rows)
    inc = sum(r["inconclusive"] for r in rows)
    out(f"false passes: {fp}, false fails: {ff}, inconclusive: {inc} over {sum(r['runs'] for r in rows)} runs")
    return rows


if __name__ == "__main__":
    torch.set_num_threads(1)
    quick = "--quick" in sys.argv
    ns = [int(a) for a in sys.argv[1:] if a.isdigit()] or ((256,) if quick else (512, 1024, 4096))
    kinds = [a for a in sys.argv[1:] if a in ("correct", "bugs")]  # a part of the corpus only
    entries = [e for e in ENTRIES if not kinds or ("bugs" if e[5] else "correct") in kinds]
    sweep(ns, seeds=(0, 1), entries=entries)
