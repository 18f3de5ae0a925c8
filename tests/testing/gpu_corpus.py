"""Verdict quality on GPU kernels (tests/testing/gpu_kernels.py): correct kernels must pass, planted bugs must
fail, and every inconclusive verdict is counted and explained. Runs on a CUDA GPU, checks on the GPU.

    python tests/testing/gpu_corpus.py [--budget SECONDS] [--out DIR] [--quick]
    python tests/testing/gpu_corpus.py --rejudge DIR/verdicts-gpu.json   # the recorded checks, judged again

Prints one line per (kernel, case, dtype): passes / runs, inconclusive verdicts, the budget shares (the
largest over the tensors, their blocks and the row-scale criterion) and whether the verdicts were right;
then the totals by kernel, dtype, bug class and n. With --out, DIR/verdicts-gpu.txt gets the same lines
and DIR/verdicts-gpu.json every check's numbers (each tensor's shares, its error over the production
floor's, the precision bugs' twins). Entries run in order of importance; once --budget seconds have
passed no new entry starts, and the skipped ones are listed. ``--rejudge`` recomputes every recorded
check's status from its recorded shares under the rules of ``minicp.testing.verdict`` (it needs no GPU:
the shares that decide are all recorded; only the twins' notes are as recorded) and prints the totals and the changed verdicts.
"""

import argparse
import json
import os
import sys
import time
import warnings

import gpu_kernels as G
import torch

import minicp.testing as mt
from minicp.testing import budgets
from minicp.testing import torch as mtt

ECP_M = 128  # half segment: paper segment 256
HEADS, HEAD_DIM = 8, 64
LOW = ("bfloat16", "float16")
ALL = ("float32", "bfloat16", "float16")
STRUCTURAL = ("off_by_one", "own_half", "no_diag", "scale", "heads", "future_key", "row_sparse")
PRECISION = {
    "acc": dict(acc=True),
    "max": dict(maximum=True),
    "sum": dict(total=True),
    "max+sum": dict(maximum=True, total=True),
    "acc+max+sum": dict(acc=True, maximum=True, total=True),
}


def entries(quick=False):
    """(label, arch, factory(n, pa) -> fn, bug class or None, dtypes, sizes, seeds, options), most important
    first. ``options``: ``tf32`` (run with TF32 allowed), ``precision``, ``head_dim``, ``heads``."""
    sizes = (4096, 16384) if quick else (4096, 16384, 65536)
    mid = (4096, 16384)
    two, one = (0, 1), (0,)
    ecp = lambda f: lambda n, pa: f(pa)
    sdpa = lambda b: ecp(lambda pa: G.ecp_sdpa(pa["half_segment"], b))
    out = [
        ("ecp sdpa flash", "ecp", sdpa("flash"), None, LOW, sizes, two, {}),
        ("ecp sdpa efficient", "ecp", sdpa("efficient"), None, ALL, mid, two, {}),
        ("ecp sdpa efficient", "ecp", sdpa("efficient"), None, ("bfloat16",), (65536,), one, {}),
        ("ecp sdpa math", "ecp", sdpa("math"), None, ALL, mid, two, {}),
        ("ecp online tile 128", "ecp", ecp(lambda pa: G.online("ecp", pa, 128)), None, ALL, mid, two, {}),
        ("ecp flex compiled", "ecp", lambda n, pa: G.flex("ecp", n, HEADS, pa), None, ("bfloat16",), (16384,), two,
         {}),
    ]  # fmt: skip
    for name, flags in PRECISION.items():
        fn = ecp(lambda pa, f=flags: G.online("ecp", pa, 128, **f))
        out.append((f"BUG ecp online {name} in dtype", "ecp", fn, "precision " + name, LOW, mid, two, {}))
    for bug in STRUCTURAL:
        fn = ecp(lambda pa, b=bug: G.ecp_masked(pa["half_segment"], b))
        out.append((f"BUG ecp {bug}", "ecp", fn, bug, ("float32", "bfloat16"), (16384,), one, {}))
    for bug in ("row_sparse", "future_key"):
        fn = ecp(lambda pa, b=bug: G.ecp_masked(pa["half_segment"], b))
        out.append((f"BUG ecp {bug}", "ecp", fn, bug, ("bfloat16",), (4096, 65536), one, {}))
    causal = lambda f: lambda n, pa: f
    out += [
        ("causal sdpa flash", "transformer", causal(G.causal_sdpa("flash")), None, LOW, mid, two, {}),
        ("causal sdpa efficient", "transformer", causal(G.causal_sdpa("efficient")), None, ALL, (4096,), two, {}),
        ("causal sdpa efficient", "transformer", causal(G.causal_sdpa("efficient")), None, ("bfloat16",), (16384,),
         one, {}),
        ("causal sdpa math", "transformer", causal(G.causal_sdpa("math")), None, ALL, (4096,), one, {}),
        ("causal online tile 128", "transformer", causal(G.online("transformer", {}, 128)), None, ("bfloat16",),
         (4096,), two, {}),
    ]  # fmt: skip
    for name in ("acc", "max", "sum"):
        fn = causal(G.online("transformer", {}, 128, **PRECISION[name]))
        out.append((f"BUG causal online {name} in dtype", "transformer", fn, "precision " + name, ("bfloat16",),
                    (4096,), one, {}))  # fmt: skip
    for bug in ("future_key", "row_sparse"):
        out.append((f"BUG causal {bug}", "transformer", causal(G.causal_masked(bug)), bug, ("float32", "bfloat16"),
                    (4096,), one, {}))  # fmt: skip
        out.append((f"BUG causal {bug}", "transformer", causal(G.causal_masked(bug)), bug, ("bfloat16",), (16384,),
                    one, {}))  # fmt: skip
    tf32 = {"tf32": True, "precision": "tf32"}
    out += [
        ("ecp dense, TF32 products, tf32=True", "ecp", ecp(lambda pa: G.dense("ecp", pa)), None, ("float32",),
         (4096,), two, tf32),
        ("BUG ecp dense, TF32 products, float32 check", "ecp", ecp(lambda pa: G.dense("ecp", pa)), "tf32",
         ("float32",), (4096,), one, {"tf32": True}),
        ("ecp sdpa flash d128", "ecp", sdpa("flash"), None, ("bfloat16",), (16384,), one, {"head_dim": 128}),
        ("BUG ecp online acc d128", "ecp", ecp(lambda pa: G.online("ecp", pa, 128, acc=True)), "precision acc",
         ("bfloat16",), (16384,), one, {"head_dim": 128}),
        ("causal flex compiled", "transformer", lambda n, pa: G.flex("transformer", n, HEADS, {}), None,
         ("bfloat16",), (16384,), one, {}),
    ]  # fmt: skip
    return out


def edge_entries():
    """SDPA backends on the plugin's edge cases (tiny shapes, n = 1 among them): (label, arch, factory)."""
    out = []
    for backend in ("flash", "efficient", "math"):
        out.append((f"edge causal sdpa {backend}", "transformer", lambda kw, b=backend: G.causal_sdpa(b)))
        out.append((f"edge ecp sdpa {backend}", "ecp", lambda kw, b=backend: G.ecp_sdpa(kw["half_segment"], b)))
    return out


def one_check(fn, arch, n, dtype, seed, pa, options):
    """(status, share, record) of one check on the GPU."""
    heads, d = options.get("heads", HEADS), options.get("head_dim", HEAD_DIM)
    previous = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = bool(options.get("tf32"))
    try:
        rep = mt.assert_matches_reference(
            fn, arch, seq_len=n, heads=heads, head_dim=d, dtype=dtype, seed=seed, check_grads=True,
            inconclusive="ignore", precision=options.get("precision"), **mtt.adapters(fn, dtype, "cuda"), **pa,
        )  # fmt: skip
    except mt.MismatchError as e:
        rep = e.report
    finally:
        torch.backends.cuda.matmul.allow_tf32 = previous
    record = {"status": rep.status, "inconclusive": rep.inconclusive, "tensors": {}}
    for key, v in rep.items():
        record["tensors"][key] = {
            "max_share": v.max_share, "rms_share": v.rms_share, "par_share": v.par_share, "share": v.share,
            "units_over": v.units_over, "rms_over_floor": v.rms_err / v.floor_rms if v.floor_rms else None,
            "par_over_floor": v.par_err / v.floor_par if v.floor_par else None, "twins": v.twins,
        }  # fmt: skip
    return rep.status, max(v.share for v in rep.values()), record


def _line(label, n, dtype, statuses, shares, bug, seconds):
    passes = statuses.count("pass")
    inc = statuses.count("inconclusive")
    wrong = passes if bug else statuses.count("fail")
    verdict = ("FALSE PASS" if bug else "FALSE FAIL") if wrong else "right"
    return (
        f"{label:<44} n={n:<6} {dtype:<9} passed {passes}/{len(statuses)}"
        + (f" inconclusive {inc}" if inc else "")
        + f"  budget share {100 * min(shares):.4g}%..{100 * max(shares):.4g}%  {verdict}  ({seconds:.1f} s)"
    )


def run(budget, out_dir, quick):
    start = time.perf_counter()
    lines, records, skipped = [], [], []

    def say(text):
        print(text, flush=True)
        lines.append(text)

    say(f"# GPU verdict corpus on {torch.cuda.get_device_name()}, torch {torch.__version__}")
    for label, arch, factory in edge_entries():
        t = time.perf_counter()
        for case in mt.cases(arch, dtypes=ALL, heads=2):
            kw = dict(case.kwargs)
            pa = {key: kw[key] for key in ("half_segment", "partial") if key in kw}
            if kw.get("partial") or (pa and kw["seq_len"] % pa["half_segment"]):
                continue  # the two-call form needs whole half segments
            fn = factory(kw)
            probe = torch.zeros(1, 2, kw["seq_len"], kw["head_dim"], device="cuda", dtype=mtt.torch_dtype(kw["dtype"]))
            try:
                fn(probe, probe, probe)
            except RuntimeError:
                records.append({"label": label, "case": str(case), "status": "unsupported"})
                say(f"{label}: {case}: the backend does not run this shape and dtype")
                continue
            status, share, rec = one_check(
                fn, arch, kw["seq_len"], kw["dtype"], 0, pa, {"heads": 2, "head_dim": kw["head_dim"]}
            )
            records.append(dict(rec, label=label, case=str(case), bug=None, share=share, dtype=kw["dtype"], n="edge"))
            say(_line(f"{label}: {case}", kw["seq_len"], kw["dtype"], [status], [share], None, 0.0))
        say(f"# {label}: {time.perf_counter() - t:.1f} s")
    for label, arch, factory, bug, dtypes, sizes, seeds, options in entries(quick):
        for n in sizes:
            pa = {"half_segment": ECP_M} if arch == "ecp" else {}
            for dtype in dtypes:
                if time.perf_counter() - start > budget:
                    skipped.append(f"{label} n={n} {dtype}")
                    continue
                t = time.perf_counter()
                fn = factory(n, pa)
                statuses, shares = [], []
                for seed in seeds:
                    try:
                        status, share, rec = one_check(fn, arch, n, dtype, seed, pa, options)
                    except RuntimeError as e:  # a backend without a kernel for this dtype or shape
                        records.append({"label": label, "n": n, "dtype": dtype, "status": "unsupported"})
                        say(f"{label} n={n} {dtype}: not run ({str(e).splitlines()[0][:80]})")
                        break
                    statuses.append(status)
                    shares.append(share)
                    records.append(dict(rec, label=label, arch=arch, n=n, dtype=dtype, seed=seed, bug=bug, share=share))
                if statuses:
                    say(_line(label, n, dtype, statuses, shares, bug, time.perf_counter() - t))
                del fn
                torch.cuda.empty_cache()
    summary(records, say)
    if skipped:
        say(f"# skipped after {budget} s: " + "; ".join(skipped))
    if out_dir:
        os.makedirs(out_dir, exist_ok=True)
        with open(os.path.join(out_dir, "verdicts-gpu.txt"), "w") as f:
            f.write("\n".join(lines) + "\n")
        with open(os.path.join(out_dir, "verdicts-gpu.json"), "w") as f:
            json.dump(records, f, default=float)


def rejudged(record):
    """A recorded check's status under the current rules, from its recorded shares: fail when a tensor's max or
    rms share exceeds 1, its row-scale share exceeds ``budgets.PAR_AMBIGUOUS`` or, in bfloat16 and float16
    (``budgets.UNIT_DTYPES``), one of its blocks' rms does; else inconclusive when the recorded twins made
    it so or the row-scale share lies in (1, PAR_AMBIGUOUS]; else pass."""
    units = record["dtype"] in budgets.UNIT_DTYPES
    ambiguous = False
    for t in record["tensors"].values():
        too_far = t["par_share"] > budgets.PAR_AMBIGUOUS
        if max(t["max_share"], t["rms_share"]) > 1 or too_far or (units and t["units_over"] > 0):
            return "fail"
        ambiguous |= t["par_share"] > 1
    return "inconclusive" if record["inconclusive"] or ambiguous else "pass"


def rejudge(path, say=print):
    """Print the totals of the checks recorded in ``path`` judged again, and every verdict that changed."""
    with open(path) as f:
        records = json.load(f)
    done = [r for r in records if r.get("status") in ("pass", "fail", "inconclusive")]
    for r in done:
        status = rejudged(r)
        if status != r["status"]:
            say(f"changed: {r['label']} {r.get('case') or ''} n={r.get('n')} {r['dtype']} seed {r.get('seed')}: "
                f"{r['status']} -> {status}")  # fmt: skip
            if status == "inconclusive" and not r["inconclusive"]:
                par = max(t["par_share"] for t in r["tensors"].values())
                r["inconclusive"] = [f"inconclusive: row-scale share {100 * par:.4g}% in (100%, 200%]"]
        r["status"] = status
    summary(records, say)


def summary(records, say):
    """Totals: false passes, false fails, inconclusive, by kernel kind, dtype, bug class and n."""
    done = [r for r in records if r.get("status") in ("pass", "fail", "inconclusive")]
    fp = sum(r["status"] == "pass" for r in done if r.get("bug"))
    ff = sum(r["status"] == "fail" for r in done if not r.get("bug"))
    inc = [r for r in done if r["status"] == "inconclusive"]
    say(f"false passes: {fp}, false fails: {ff}, inconclusive: {len(inc)} over {len(done)} checks")
    table = {}
    for r in done:
        key = (r.get("bug") or "correct", r.get("dtype"), r.get("n"))
        row = table.setdefault(key, [0, 0, 0, 0])
        row[0] += 1
        row[1] += r["status"] == "pass" and bool(r.get("bug"))
        row[2] += r["status"] == "fail" and not r.get("bug")
        row[3] += r["status"] == "inconclusive"
    say("| class | dtype | n | checks | false passes | false fails | inconclusive |")
    for (cls, dtype, n), (total, p, f, i) in sorted(table.items(), key=str):
        say(f"| {cls} | {dtype} | {n} | {total} | {p} | {f} | {i} |")
    for r in inc:
        say(
            f"inconclusive: {r.get('label')} n={r.get('n')} {r.get('dtype')} seed {r.get('seed')}: {r['inconclusive'][0]}"
        )
    kernels = {}
    for r in done:
        row = kernels.setdefault((r["label"].split(":")[0], r["dtype"]), {"n": set(), "bug": r.get("bug")})
        row["n"].add(str(r.get("n")))
        row[r["status"]] = row.get(r["status"], 0) + 1
    say("| kernel | dtype | n | pass | fail | inconclusive | wrong |")
    for (label, dtype), row in kernels.items():
        p, f, i = (row.get(key, 0) for key in ("pass", "fail", "inconclusive"))
        sizes = ", ".join(sorted(row["n"], key=lambda x: (len(x), x)))
        say(f"| {label} | {dtype} | {sizes} | {p} | {f} | {i} | {p if row['bug'] else f} |")


if __name__ == "__main__":
    warnings.simplefilter("ignore")
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--budget", type=float, default=1e9, help="seconds after which no new entry starts")
    p.add_argument("--out", default=None)
    p.add_argument("--quick", action="store_true")
    p.add_argument("--rejudge", metavar="JSON", default=None, help="judge the checks recorded in JSON again")
    args = p.parse_args()
    if args.rejudge:
        sys.exit(rejudge(args.rejudge))
    if not torch.cuda.is_available():
        sys.exit("gpu_corpus.py needs a CUDA GPU")
    run(args.budget, args.out, args.quick)
