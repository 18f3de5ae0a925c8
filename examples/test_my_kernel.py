"""Check a PyTorch attention kernel on every edge case of an architecture:  pytest examples/test_my_kernel.py"""

import pytest
import torch.nn.functional as F

import minicp.testing as mt
from minicp.testing import torch as mtt


def my_kernel(q, k, v):  # yours here: (b, h, n, d) -> (b, h, n, d)
    return F.scaled_dot_product_attention(q, k, v, is_causal=True)


@pytest.mark.parametrize("case", mt.cases("transformer", dtypes=("float32", "bfloat16"), rope=False), ids=str)
def test_my_kernel(case):
    mt.assert_matches_reference(my_kernel, **case.kwargs, **mtt.adapters(my_kernel, case.kwargs["dtype"]))
