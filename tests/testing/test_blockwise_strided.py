"""The strided route of the block reference (views of evenly spaced blocks) gives what gathering gives."""

import numpy as np
import pytest

from minicp.testing import blockwise, reference
from minicp.testing.cases import EDGES
from minicp.testing.dtypes import EPS

WIDER = {  # more blocks than the edge cases: several per batch, two heads per group, partial ends
    "ecp": [(96, {"half_segment": 8}), (90, {"half_segment": 8, "partial": True}), (64, {"half_segment": 16})],
    "longlora": [(64, {"group": 16, "shift": "varlen"}), (64, {"group": 16, "shift": "roll"})],
    "s_split": [(40, {"latent": 16, "split": 4})],
    "compressed": [(48, {"latent": 16, "compressed": 4})],
}
CASES = [(a, n, d, pa) for a, edges in EDGES.items() for _, n, d, pa in edges]
CASES += [(a, n, 8, pa) for a, wide in WIDER.items() for n, pa in wide]


def _both(arch, n, d, pa, dtype, heads=3, workers=1, batch_elements=None, monkeypatch=None, row_chunk=4):
    args = reference.resolved_pattern_args(arch, n, heads, pa)
    plan, rows = blockwise.block_plan(arch, n, heads, args)
    x = reference.seeded_inputs(7, 2, heads, n, d, len(rows), dtype)
    if batch_elements:
        monkeypatch.setattr(blockwise, "BATCH_ELEMENTS", batch_elements)
    run = lambda strided: blockwise.attention_blocks(
        x["q"], x["k"], x["v"], plan, rows, dtype=dtype, dout=x["dout"], workers=workers, strided=strided,
        row_chunk=row_chunk,
    )  # fmt: skip
    return run(True), run(False)


@pytest.mark.parametrize("arch, n, d, pa", CASES, ids=[f"{a}-{n}-{d}-{sorted(pa.items())}" for a, n, d, pa in CASES])
@pytest.mark.parametrize("dtype", ["float64", "float32", "bfloat16"])
@pytest.mark.parametrize("row_chunk", [3, 256])  # chunks that split blocks (causal ones see fewer columns)
def test_strided_views_equal_gathered_blocks(arch, n, d, pa, dtype, row_chunk):
    fast, plain = _both(arch, n, d, pa, dtype, row_chunk=row_chunk)
    for key in plain:
        assert fast[key].dtype == plain[key].dtype and fast[key].shape == plain[key].shape
        if dtype == "float64":  # BLAS may sum a view and a copy in another order: float64 rounding only
            np.testing.assert_allclose(fast[key], plain[key], rtol=1e-12, atol=1e-12, err_msg=key)
        else:  # the same products on the same values, summed in an order that may differ (OpenBLAS on an
            # Intel Xeon: up to 2 float32 units of the largest entry; exact on an AMD EPYC and in bfloat16)
            scale = np.abs(plain[key]).max()
            assert np.abs(fast[key] - plain[key]).max() <= 8 * EPS[dtype] * scale, key


def test_strided_route_is_taken_for_ecp_and_gathering_for_the_roll_wrap():
    acc = {"rows": np.arange(64)}
    plan, _ = blockwise.block_plan("ecp", 64, 2, {"half_segment": 8, "partial": False})
    groups = blockwise._groups(plan, blockwise.BATCH_ELEMENTS)
    runs = [blockwise._strided_runs(*g[:3], acc) for g in groups]
    assert all(r is not None for r in runs)
    assert sorted(run[4] for rs in runs for run in rs) == [1, 1, 7, 7]  # per head: first block, then 7 at step 8
    assert {run[5:] for rs in runs for run in rs if run[4] > 1} == {(8, 8, 8)}
    plan, _ = blockwise.block_plan("longlora", 64, 2, {"group": 16, "shift": "roll"})
    groups = blockwise._groups(plan, blockwise.BATCH_ELEMENTS)
    assert any(blockwise._strided_runs(*g[:3], acc) is None for g in groups)  # the wrapped group


@pytest.mark.parametrize("dtype", ["float32", "float16"])
def test_small_batches_and_threads_keep_the_key_gradient_order(dtype, monkeypatch):
    fast, plain = _both("ecp", 96, 8, {"half_segment": 8}, dtype, heads=4, workers=2, batch_elements=200,
                        monkeypatch=monkeypatch)  # fmt: skip
    for key in plain:  # float16 keeps its rounded partial sums in plan order exactly; float32's strided route
        # sums a run's key gradients over its row chunks before adding them (another order, float32 rounding)
        if dtype == "float16":
            assert np.array_equal(fast[key], plain[key]), key
        else:
            assert np.abs(fast[key] - plain[key]).max() <= 8 * EPS[dtype] * np.abs(plain[key]).max(), key


@pytest.mark.parametrize("heads", [1, 3, 8])
def test_more_workers_than_heads_give_the_single_thread_values(heads):
    """A machine with more cores than heads (16 cores, 8 heads) splits the work into one part per head at most;
    each part's values equal the unsplit run's (disjoint heads, the same order within a head)."""
    plan, rows = blockwise.block_plan("ecp", 64, heads, {"half_segment": 8, "partial": False})
    x = reference.seeded_inputs(2, 1, heads, 64, 8, len(rows), "float32")
    run = lambda workers: blockwise.attention_blocks(
        x["q"], x["k"], x["v"], plan, rows, dtype="float32", dout=x["dout"], workers=workers
    )
    one = run(1)
    for workers in (heads + 1, 2 * heads, 16, 17):
        parts = blockwise._head_parts(blockwise._groups(plan, blockwise.BATCH_ELEMENTS), workers)
        assert len(parts) == min(heads, workers)
        many = run(workers)
        assert all(np.array_equal(one[key], many[key]) for key in one), workers
