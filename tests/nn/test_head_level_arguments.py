"""Head-level entry points take ECP's segment in either spelling, and refuse bad pattern arguments."""

import numpy as np
import pytest

import minicp


def hand_ecp_mask(n, m):
    """Row i sees keys m * max(0, i // m - 1) .. i (its half segment, causally, and the previous one)."""
    i, j = np.arange(n)[:, None], np.arange(n)[None, :]
    return (j <= i) & (j >= m * np.maximum(0, i // m - 1))


def dense(q, k, v, mask):
    s = q @ np.swapaxes(k, -1, -2) / np.sqrt(q.shape[-1])
    s = np.where(mask, s, -np.inf)
    p = np.exp(s - s.max(-1, keepdims=True))
    return (p / p.sum(-1, keepdims=True)) @ v


@pytest.mark.parametrize("spelling", [dict(segment=8), dict(half_segment=4), dict(segment=8, half_segment=4)])
def test_attention_and_mask_accept_both_spellings(spelling):
    rng = np.random.default_rng(0)
    q, k, v = rng.standard_normal((3, 1, 2, 16, 5))
    expected = dense(q, k, v, hand_ecp_mask(16, 4))
    np.testing.assert_allclose(minicp.attention("ecp", q, k, v, **spelling), expected, rtol=1e-12, atol=1e-14)
    np.testing.assert_array_equal(minicp.attention_mask("ecp", 16, **spelling), hand_ecp_mask(16, 4))
    np.testing.assert_array_equal(
        minicp.analysis.kernel_pattern.dense_mask("ecp", 16, 2, **spelling)[1], hand_ecp_mask(16, 4)
    )


@pytest.mark.parametrize(
    "args, match",
    [
        (dict(segment=8, half_segment=5), "disagree"),
        (dict(segment=7), "even"),
        (dict(), "half_segment"),
        (dict(half_segment=4, latent=3), "unknown pattern argument"),
    ],
)
def test_bad_pattern_arguments_are_named(args, match):
    q = np.zeros((1, 1, 16, 4))
    with pytest.raises(ValueError, match=match):
        minicp.attention("ecp", q, q, q, **args)
    with pytest.raises(ValueError, match=match):
        minicp.attention_mask("ecp", 16, **args)
