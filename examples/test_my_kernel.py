"""Check an attention kernel on every edge case, on the GPU when there is one:  pytest examples/test_my_kernel.py"""

import pytest
import torch
import torch.nn.functional as F

from minicp.testing import torch as mtt

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"  # on a GPU, minicp checks there too (CuPy)


def my_kernel(q, k, v):  # yours here: (b, h, n, d) tensors on DEVICE -> (b, h, n, d)
    return F.scaled_dot_product_attention(q, k, v, is_causal=True)


@pytest.mark.minicp_cases("transformer", dtypes=("float32", "bfloat16"))  # the fixtures: minicp's pytest plugin
def test_my_kernel(minicp_check, minicp_case):
    minicp_check(my_kernel, minicp_case, adapters=mtt.adapters, device=DEVICE)
