"""ECP's segment in either spelling: ``segment`` s (paper units) or ``half_segment`` m = s / 2.

count_attention_steps, receptive_field(_by_layer) and every minicp.analysis.kernel_pattern export accept
both, alone or together when they agree (s = 2m), and refuse a disagreeing pair or an odd segment with
one ValueError that names both parameters. Expected values are written out by hand from the closed forms
of docs/attention-steps.md and docs/receptive-fields.md.
"""

import numpy as np
import pytest

from minicp.analysis import kernel_pattern as kp
from minicp.analysis.receptive import receptive_field, receptive_field_by_layer
from minicp.analysis.steps import count_attention_steps, format_steps

N, M = 64, 8  # n = 64 tokens, half segment m = 8, segment s = 16
SPELLINGS = [dict(segment=2 * M), dict(half_segment=M), dict(segment=2 * M, half_segment=M)]


def _ecp_mask(n, m):
    """Independent ECP mask: query q sees keys max(0, (q // m - 1) m) .. q."""
    q, kv = np.arange(n)[:, None], np.arange(n)[None, :]
    return (kv <= q) & (kv >= np.maximum(0, (q // m - 1) * m))


@pytest.mark.parametrize("seg", SPELLINGS, ids=["segment", "half_segment", "both"])
def test_count_attention_steps_accepts_either_spelling(seg):
    # computed m (2n - m) = 8 * 120 per head and layer; unmasked n (m+1)/2 + m (n-m) = 288 + 448
    assert count_attention_steps("ecp", seq_len=N, **seg) == 960
    assert count_attention_steps("ecp", seq_len=N, layers=2, heads=3, count="unmasked", **seg) == 6 * 736
    assert "s=16 (half segment m=8, 8 blocks)" in format_steps("ecp", seq_len=N, **seg)


@pytest.mark.parametrize("seg", SPELLINGS, ids=["segment", "half_segment", "both"])
def test_receptive_field_accepts_either_spelling(seg):
    rf = receptive_field("ecp", seq_len=N, layers=2, **seg)
    assert rf.intervals(37) == [(16, 37)]  # [m max(0, 37 // 8 - 2), 37]
    assert rf.intervals(5) == [(0, 5)]
    by_layer = receptive_field_by_layer("ecp", seq_len=N, layers=1, **seg)
    assert by_layer[1].intervals(37) == [(24, 37)]


@pytest.mark.parametrize("seg", SPELLINGS, ids=["segment", "half_segment", "both"])
def test_kernel_pattern_accepts_either_spelling(seg):
    expected = _ecp_mask(N, M)
    np.testing.assert_array_equal(kp.dense_mask("ecp", N, 2, **seg), np.stack([expected, expected]))
    allowed = kp.allowed_fn("ecp", N, **seg)
    q, kv = np.arange(N)[:, None], np.arange(N)[None, :]
    np.testing.assert_array_equal(allowed(q, kv), expected)
    np.testing.assert_array_equal(kp.mask_mod("ecp", N, **seg)(0, 0, q, kv), expected)
    assert [(b["row_start"], b["row_stop"], b["col_start"]) for b in kp.blocks("ecp", N, **seg)][:2] == [
        (0, 8, 0),
        (8, 16, 0),
    ]
    np.testing.assert_array_equal(kp.rows("ecp", N, **seg), np.arange(N))


CALLS = {
    "count_attention_steps": lambda **seg: count_attention_steps("ecp", seq_len=N, **seg),
    "receptive_field": lambda **seg: receptive_field("ecp", seq_len=N, layers=1, **seg),
    "receptive_field_by_layer": lambda **seg: receptive_field_by_layer("ecp", seq_len=N, layers=1, **seg),
    "dense_mask": lambda **seg: kp.dense_mask("ecp", N, **seg),
    "blocks": lambda **seg: kp.blocks("ecp", N, **seg),
    "rows": lambda **seg: kp.rows("ecp", N, **seg),
    "allowed_fn": lambda **seg: kp.allowed_fn("ecp", N, **seg),
    "mask_mod": lambda **seg: kp.mask_mod("ecp", N, **seg),
}


@pytest.mark.parametrize("name", sorted(CALLS))
def test_disagreeing_segment_and_half_segment_raise_one_clear_error(name):
    with pytest.raises(
        ValueError,
        match=r"^segment 16 and half_segment 4 disagree: segment must equal "
        r"2 \* half_segment; give one of them$",
    ):
        CALLS[name](segment=16, half_segment=4)


@pytest.mark.parametrize("name", sorted(CALLS))
def test_odd_segment_is_refused(name):
    with pytest.raises(ValueError, match=r"^segment 15 must be even"):
        CALLS[name](segment=15)
    with pytest.raises(ValueError, match=r"^segment 15 must be even"):  # even with a half_segment
        CALLS[name](segment=15, half_segment=8)


def test_segment_is_refused_where_it_does_not_apply():
    with pytest.raises(ValueError, match="segment"):
        count_attention_steps("double", seq_len=N, segment=16)
    with pytest.raises(ValueError, match="segment"):
        receptive_field("double", seq_len=N, layers=1, segment=16)
    with pytest.raises(ValueError, match=r"unknown pattern argument.*'segment'"):
        kp.dense_mask("double", N, segment=16)
