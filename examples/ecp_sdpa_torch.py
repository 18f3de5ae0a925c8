"""ECP attention written with PyTorch, checked against minicp's reference with ``minicp.testing``.

Three ways a kernel author might write ECP (paper segment s, the code's half segment m = s / 2),
on the CPU by default or on a GPU with ``--device cuda``:

1. ``ecp_sdpa``: the efficient blockwise form, two calls of ``F.scaled_dot_product_attention``:
   half segment 0 attends causally to itself (m x m); every later half segment t attends to the
   pair (t-1, t) with one shared boolean block mask (m x 2m, query r sees keys 0..m+r).
2. ``blockwise_sdpa``: the generic form for any architecture, one SDPA call per block of
   ``minicp.analysis.kernel_pattern.blocks`` with the block's boolean mask.
3. ``dense_sdpa``: SDPA with the dense (heads, n, n) mask from ``minicp.analysis.kernel_pattern.dense_mask``
   (small n only), and ``flex`` with FlexAttention and the ``mask_mod`` from ``minicp.analysis.kernel_pattern``.

Each is checked with ``minicp.testing.assert_matches_reference`` (output and gradients; float32,
bfloat16 and float16 inputs), through the PyTorch adapters ``minicp.testing.torch.adapters``. The test
suite runs a small version (tests/golden/test_golden_cli.py, skipped without torch). Run:

    python examples/ecp_sdpa_torch.py                      # CPU, n = 1024, s = 256, about 10 s
    python examples/ecp_sdpa_torch.py --device cuda --seq-len 4096   # GPU kernels, compiled FlexAttention
"""

import sys
import time

import torch
import torch.nn.functional as F

import minicp.analysis.kernel_pattern as kp
import minicp.testing as mt
from minicp.testing import torch as mtt

# ----------------------------------------------------------------------------------------------------
# 1. ECP, blockwise, with two SDPA calls
# ----------------------------------------------------------------------------------------------------


def ecp_sdpa(q, k, v, half_segment):
    """ECP attention: q, k, v (b, h, n, d) -> (b, h, n, d); n must be a multiple of half_segment (>= 2 blocks)."""
    b, h, n, d = q.shape
    m = half_segment
    N = n // m
    Q, K, V = (x.reshape(b, h, N, m, d) for x in (q, k, v))  # (b, h, N, m, d)
    # ATTN: half segment 0, causal m x m
    first = F.scaled_dot_product_attention(Q[:, :, 0], K[:, :, 0], V[:, :, 0], is_causal=True)
    # PAR: half segment t >= 1 against the keys of t-1 and t (2m); query r sees keys 0..m+r of the pair
    K_pair = torch.cat([K[:, :, :-1], K[:, :, 1:]], dim=3)  # (b, h, N-1, 2m, d)
    V_pair = torch.cat([V[:, :, :-1], V[:, :, 1:]], dim=3)
    pair_mask = torch.ones(m, 2 * m, dtype=torch.bool, device=q.device).tril(diagonal=m)  # True = attend
    rest = F.scaled_dot_product_attention(Q[:, :, 1:], K_pair, V_pair, attn_mask=pair_mask)
    return torch.cat([first[:, :, None], rest], dim=2).reshape(b, h, n, d)


# ----------------------------------------------------------------------------------------------------
# 2. Any architecture: one SDPA call per block of the exported block list
# ----------------------------------------------------------------------------------------------------


def blockwise_sdpa(q, k, v, arch, **pattern_args):
    """q, k, v (b, h, n, d) -> (b, h, R, d) over the R computed rows, from ``kernel_pattern.blocks``."""
    b, h, n, d = q.shape
    rows = torch.from_numpy(kp.rows(arch, n, h, **pattern_args)).to(q.device)
    out = q.new_zeros(b, h, n, v.shape[-1])
    for blk in kp.blocks(arch, n, h, **pattern_args):
        r, c = (torch.from_numpy(blk[key]).to(q.device) for key in ("rows", "cols"))
        mask = None
        if blk["diagonal"] is not None:  # local (i, j) visible iff j <= i + diagonal
            mask = torch.ones(len(r), len(c), dtype=torch.bool, device=q.device).tril(diagonal=blk["diagonal"])
        hd = blk["head"]
        out[:, hd, r] = F.scaled_dot_product_attention(q[:, hd, r], k[:, hd, c], v[:, hd, c], attn_mask=mask)
    return out[:, :, rows]


# ----------------------------------------------------------------------------------------------------
# 3. Dense mask (small n) and FlexAttention
# ----------------------------------------------------------------------------------------------------


def dense_sdpa(q, k, v, arch, **pattern_args):
    """SDPA with the dense (h, n, n) mask; returns all n rows (rows that are not computed: zeros or NaN)."""
    b, h, n, d = q.shape
    mask = torch.from_numpy(kp.dense_mask(arch, n, h, **pattern_args)).to(q.device)  # (h, n, n), True = attend
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask[None])


def flex(q, k, v, arch, **pattern_args):
    """FlexAttention with ``kernel_pattern.mask_mod`` (the closed-form predicate, no dense mask)."""
    import warnings

    from torch.nn.attention.flex_attention import create_block_mask, flex_attention

    b, h, n, d = q.shape
    block_mask = create_block_mask(
        kp.mask_mod(arch, n, h, **pattern_args), B=None, H=h, Q_LEN=n, KV_LEN=n, device=q.device
    )
    if q.device.type != "cpu":  # fused kernel on the GPU
        return _compiled_flex()(q, k, v, block_mask=block_mask)
    with warnings.catch_warnings():  # eager FlexAttention warns that it is not compiled
        warnings.simplefilter("ignore", UserWarning)
        return flex_attention(q, k, v, block_mask=block_mask)


_COMPILED = []


def _compiled_flex():
    from torch.nn.attention.flex_attention import flex_attention

    if not _COMPILED:
        _COMPILED.append(torch.compile(flex_attention))
    return _COMPILED[0]


def check(name, fn, dtype="float32", device="cpu", check_grads=True, **case):
    """Run assert_matches_reference with the PyTorch adapters (``minicp.testing.torch``); print one line."""
    start = time.perf_counter()
    results = mt.assert_matches_reference(
        fn, "ecp", dtype=dtype, check_grads=check_grads, **mtt.adapters(fn, dtype, device), **case
    )
    worst = ", ".join(
        f"{key} {c.max_err:.1e} ({100 * max(c.max_share, c.rms_share):.0f}%)" for key, c in results.items()
    )
    print(
        f"  {name:<28} {dtype:<9} OK  max abs err (largest share of the budgets): {worst}  "
        f"({time.perf_counter() - start:.1f} s)"
    )
    return results


def main(argv=None):
    import argparse

    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--device", default="cpu", help="torch device, e.g. cuda (default cpu)")
    p.add_argument("--seq-len", type=int, default=1024)
    p.add_argument("--segment", type=int, default=256, help="the paper's segment s; half segment m = s / 2")
    p.add_argument("--heads", type=int, default=4)
    p.add_argument("--head-dim", type=int, default=64)
    p.add_argument("--batch", type=int, default=2)
    args = p.parse_args(argv)
    torch.manual_seed(0)
    m = args.segment // 2
    case = dict(seq_len=args.seq_len, heads=args.heads, head_dim=args.head_dim, batch=args.batch, half_segment=m)
    dev = args.device
    print(f"ECP in PyTorch on {dev} vs minicp's float64 reference: {case}")
    ecp = lambda q, k, v: ecp_sdpa(q, k, v, half_segment=m)
    check("ecp_sdpa (2 SDPA calls)", ecp, device=dev, **case)
    check("ecp_sdpa", ecp, dtype="bfloat16", device=dev, **case)
    check("ecp_sdpa", ecp, dtype="float16", device=dev, **case)
    check(
        "blockwise_sdpa (block list)",
        lambda q, k, v: blockwise_sdpa(q, k, v, "ecp", half_segment=m),
        device=dev,
        **case,
    )
    small = dict(case, seq_len=min(args.seq_len, 256), half_segment=min(m, 32))
    ms = small["half_segment"]
    check("dense_sdpa (dense mask)", lambda q, k, v: dense_sdpa(q, k, v, "ecp", half_segment=ms), device=dev, **small)
    flex_case = small if dev == "cpu" else case  # eager FlexAttention on the CPU is slow: keep it small
    mf = flex_case["half_segment"]
    try:
        check(
            "flex (mask_mod)",
            lambda q, k, v: flex(q, k, v, "ecp", half_segment=mf),
            device=dev,
            check_grads=dev != "cpu",
            **flex_case,
        )
        if dev != "cpu":
            check(
                "flex (mask_mod)",
                lambda q, k, v: flex(q, k, v, "ecp", half_segment=mf),
                dtype="bfloat16",
                device=dev,
                **flex_case,
            )
    except ImportError as e:  # pragma: no cover - older torch
        print(f"  flex: skipped ({e})")
    print("all checks passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
