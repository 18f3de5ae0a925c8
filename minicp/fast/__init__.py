"""The fast engine: the same model as ``minicp.nn``, computed with fused primitives, blocked CPU cores, a
thread pool and CUDA kernels. ``minicp.engines`` is the one switch that chooses it.

What it computes differently: nothing but the order of summation. Products are split over threads and
their partial sums added per row range; a sequence of array passes becomes one primitive or one CUDA
kernel; ECP's core reads its key pairs through strided windows instead of concatenating them. In float32 one
function differs by more than summation: GELU, from a fit evaluated in float64 (within 2.3 float32 units of the
exact function everywhere; the reference's ``(1 + erf) / 2`` loses the negative tail to cancellation).
Gradients are first order only (its VJPs work in place on plain buffers); the reference gives every order.

How it is tested (tests/fast/): every primitive and every route against the reference, forced on NumPy where a
route is the GPU's (ECP's K2 route, which CuPy training takes, and the windows route of CuPy inference): float64
values and gradients equal to 1e-14 relative (bit-equal where the order is the same), float32 within float32
rounding of the exact functions, GELU over the whole float32 range; the blocked ECP core's coverage of exactly
the declared pattern; the CUDA kernels on a GPU (``pytest -m gpu``).

    model.py         forward, loss and value_and_grad; ``plan`` says which part runs how
    primitives.py    linear, LayerNorm, RoPE, embedding, cross-entropy as autograd primitives
    feed_forward.py  the feed-forward sub-layer, residual included, as one primitive
    gelu.py          GELU and GELU' (float32 fit, float64 erf, CUDA)
    ecp.py           ECP's core (routes cpu-blocks, k2, windows) and its whole sub-layer as primitives
    cpu_blocks.py    ECP's core on NumPy in cache-sized groups of blocks over strided key windows
    windows.py       ECP's core for inference as batched products over overlapping key windows
    arrays.py        plain-array helpers on either backend: split products, in-place softmax and its backward
    threads.py       the CPU thread pool and the split products
    cuda/            the CUDA kernels (CuPy): softmax, RoPE, LayerNorm, GELU, AdamW, cuBLAS windows
"""
