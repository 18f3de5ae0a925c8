"""Verdict quality on the kernel corpus (tests/testing/kernels.py): no false passes, no false fails.

Small sizes here (n = 256, two seeds, a few seconds); the sweep up to n = 4096 is
``python tests/testing/corpus.py`` (results in benchmarks/results/verdicts-cpu.txt).
"""

import numpy as np
import pytest

import minicp.testing as mt

torch = pytest.importorskip("torch")
import corpus

QUICK = [e for e in corpus.ENTRIES if "tile 1 " not in e[0] + " "]


@pytest.mark.parametrize("entry", QUICK, ids=[e[0] for e in QUICK])
def test_corpus_verdicts_are_right(entry):
    for dtype in entry[6]:
        r = corpus.run_entry(entry, dtype, 256, seeds=(0, 1), heads=2)
        assert r["false_pass"] == 0 and r["false_fail"] == 0, r


def test_nonfinite_reference_never_passes():
    e = np.array([1.0, np.inf, -np.inf, np.nan])
    assert mt.compare(e.copy(), e, name="x", dtype="float32").ok
    for bad in ([1.0, 5.0, -np.inf, np.nan], [1.0, np.inf, np.inf, np.nan], [1.0, np.inf, -np.inf, 0.0]):
        c = mt.compare(np.array(bad), e, name="x", dtype="float32")
        assert not c.ok and c.n_nonfinite_bad == 1
    v = mt.judge("out", np.array([[[[12345.0]]]]), np.array([[[[np.nan]]]]), np.array([[[[np.nan]]]]), "float32")
    assert not v.ok and v.nonfinite_bad == 1


def test_report_points_at_strided_rows_heads_and_blocks(tmp_path):
    """Seven bad rows with stride 128 are named as such; every tensor is judged; the JSON report is written."""
    import json

    n, bad_rows = 1024, np.arange(255, 1024, 128)

    def fn(q, k, v):
        out = corpus.K.sdpa_blocks("ecp", {"half_segment": 128})(q, k, v)
        out[:, 1, bad_rows] += 0.5
        return out

    path = tmp_path / "report.json"
    with pytest.raises(mt.MismatchError) as info:
        mt.assert_matches_reference(
            fn,
            "ecp",
            seq_len=n,
            heads=2,
            head_dim=16,
            segment=256,
            check_grads=True,
            report_path=str(path),
            **mt_torch_adapters(fn),
        )
    msg = str(info.value)
    assert "255, 383, ..., 1023 (7, stride 128)" in msg and "head 1" in msg
    assert set(info.value.report) == {"out", "dq", "dk", "dv"}
    data = json.loads(path.read_text())
    assert data["ok"] is False and data["tensors"]["out"]["ok"] is False
    assert data["tensors"]["out"]["per_head"][0]["max_share"] <= 1


def mt_torch_adapters(fn, dtype="float32"):
    from minicp.testing import torch as mtt

    return mtt.adapters(fn, dtype)
