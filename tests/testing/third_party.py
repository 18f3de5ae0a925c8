"""Kernels written outside the corpus, judged like it: FlexAttention with minicp's mask_mod (output
only: no FlexAttention backward on the CPU), and an
independent PerceiverAR (prefix and latent parts merged by log-sum-exp, no mask at all).

    python tests/testing/third_party.py [n]      # default n = 1024; results in benchmarks/results/verdicts-cpu.txt
"""

import sys
import time
import warnings

import torch
from torch.nn.attention.flex_attention import create_block_mask, flex_attention

import minicp.analysis.kernel_pattern as kp
import minicp.testing as mt
from minicp.testing import torch as mtt


def flex(arch, pa):
    """torch's FlexAttention (eager on the CPU) with ``kernel_pattern.mask_mod``."""

    def fn(q, k, v):
        b, h, n, d = q.shape
        mask = create_block_mask(kp.mask_mod(arch, n, h, **pa), B=None, H=h, Q_LEN=n, KV_LEN=n, device="cpu")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            out = flex_attention(q, k, v, block_mask=mask)
        return out[:, :, torch.from_numpy(kp.rows(arch, n, h, **pa))]

    return fn


def perceiver_ar(latent):
    """PerceiverAR's first layer as a third party writes it: the last ``latent`` positions query; each sees
    the whole prefix (keys 0..n-latent-1) and the latent keys up to itself. Two attention pieces in float32,
    merged by their log-sum-exp; the result in the input dtype."""

    def fn(q, k, v):
        n, d = q.shape[-2], q.shape[-1]
        p = n - latent
        Q = q[:, :, p:].float() * d**-0.5
        pieces = []
        for keys, causal in ((slice(0, p), False), (slice(p, n), True)):
            s = Q @ k[:, :, keys].float().transpose(-1, -2)
            if causal:
                s = s.masked_fill(torch.ones(latent, latent, dtype=torch.bool).triu(1), -torch.inf)
            lse = torch.logsumexp(s, dim=-1, keepdim=True)
            pieces.append((lse, torch.exp(s - lse) @ v[:, :, keys].float()))
        (l1, o1), (l2, o2) = pieces
        total = torch.logaddexp(l1, l2)
        return (torch.exp(l1 - total) * o1 + torch.exp(l2 - total) * o2).to(q.dtype)

    return fn


def run(name, arch, fn, pa, n, dtype, seeds=(0, 1), heads=4, head_dim=64, grads=True):
    t, shares, passes, inconclusive = time.perf_counter(), [], 0, 0
    for seed in seeds:
        try:
            rep = mt.assert_matches_reference(
                fn,
                arch,
                seq_len=n,
                heads=heads,
                head_dim=head_dim,
                dtype=dtype,
                seed=seed,
                check_grads=grads,
                inconclusive="ignore",
                **mtt.adapters(fn, dtype),
                **pa,
            )
            passes += rep.status == "pass"
            inconclusive += rep.status == "inconclusive"
        except mt.MismatchError as e:
            rep = e.report
        shares.append(max(v.share for v in rep.values()))
    verdict = "right" if passes + inconclusive == len(seeds) else "FALSE FAIL"
    print(
        f"{name:<38} n={n:<5} {dtype:<9} passed {passes}/{len(seeds)}"
        + (f" inconclusive {inconclusive}" if inconclusive else "")
        + f"  budget share {100 * min(shares):.3g}%..{100 * max(shares):.3g}%  {verdict}  ({time.perf_counter() - t:.1f} s)",
        flush=True,
    )


if __name__ == "__main__":
    torch.set_num_threads(1)
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 1024
    for dtype in ("float32", "bfloat16", "float16"):
        ecp = {"half_segment": n // 8}  # FlexAttention has no backward on the CPU: the output only
        run("third party: flex ecp (eager, out only)", "ecp", flex("ecp", ecp), ecp, n, dtype, grads=False)
        run("third party: perceiver_ar lse merge", "perceiver_ar", perceiver_ar(n // 2), {"latent": n // 2}, n, dtype)
