"""The fast engine's CUDA kernels on CuPy (imported by the fast engine on every backend; CuPy itself is
imported only when a kernel runs).

    kernels.py   NVRTC machinery shared by all; the fused masked softmax and RoPE
    layers.py    LayerNorm, bias + GELU (+ GELU'), residual + bias
    multi.py     multi-tensor kernels for the optimiser step: sums of squares, scaling, AdamW
    blocks.py    cuBLAS strided-batched products over windows (ECP inference, ``minicp.fast.windows``)
"""
