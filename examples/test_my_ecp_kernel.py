"""Check an ECP kernel on every ECP edge case; the case hands the kernel its pattern arguments (the half
segment, a partial last block):  pytest examples/test_my_ecp_kernel.py"""

import functools

import pytest
import torch
import torch.nn.functional as F

import minicp.analysis.kernel_pattern as kp
from minicp.testing import torch as mtt

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


def my_ecp(q, k, v, **pattern):  # yours here; pattern: half_segment=..., partial=...
    mask = torch.from_numpy(kp.dense_mask("ecp", q.shape[-2], q.shape[1], **pattern)).to(q.device)
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask)


@pytest.mark.minicp_cases("ecp", dtypes=("float32", "bfloat16"))
def test_my_ecp(minicp_check, minicp_case):
    kernel = functools.partial(my_ecp, **minicp_case.pattern_args)
    minicp_check(kernel, minicp_case, adapters=mtt.adapters, device=DEVICE)
