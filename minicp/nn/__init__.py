"""The reference: what minicp computes, written to be read, and exactly what the reference engine runs.

    ops.py        linear, LayerNorm, exact GELU, heads, and attend (softmax(q k^T, masked) v, its VJP by hand)
    rope.py       rotary position embedding as the official code applies it
    attention/    one file per architecture: its equation, its explicit computation, its declared pattern
    model.py      embedding -> pre-norm blocks -> logits, and the official loss; autograd's gradients
    params.py     parameters checked against the config
    reference.py  plain dense masked attention, O(n^2): the independent road the tests compare with
    interop.py    weights and checkpoints written by the official PyTorch code

Nothing here chooses another computation: no fast path, no test of whether an array is being traced. The
fast engine (``minicp.fast``) computes the same model and is chosen by ``minicp.engines``.
"""
