"""minicp.testing.dtypes: exact rounding to bfloat16 (as PyTorch's), and where the public names live."""

import numpy as np
import pytest

import minicp.golden
import minicp.testing as mt


def test_round_to_bfloat16_bits():
    one = np.float32(1.0)
    ulp = 2.0**-7  # bfloat16 spacing at 1
    x = np.array(
        [1 + ulp / 2, 1 + 1.5 * ulp, 1 + ulp / 2 + 2**-20, -(1 + 1.5 * ulp), 3.4e38, np.inf, np.nan, 0.0, -0.0]
    )
    got = mt.round_to_bfloat16(x)
    assert got.dtype == np.float32
    assert got[0] == one  # tie -> even (1.0)
    assert got[1] == 1 + 2 * ulp  # tie -> even (1 + 2 ulp)
    assert got[2] == 1 + ulp  # above the tie -> up
    assert got[3] == -(1 + 2 * ulp)
    assert np.isinf(got[4]) and np.isinf(got[5]) and np.isnan(got[6])
    assert np.signbit(got[8]) and got[7] == 0
    assert not (got[np.isfinite(got)].view(np.uint32) & 0xFFFF).any()


def test_round_to_bfloat16_matches_torch():
    torch = pytest.importorskip("torch")
    x = np.random.default_rng(0).standard_normal(20000) * np.logspace(-30, 30, 20000)
    for src in (x, x.astype(np.float32)):
        expected = torch.from_numpy(src).to(torch.bfloat16).float().numpy()
        assert np.array_equal(mt.round_to_bfloat16(src), expected)


def test_no_public_name_is_exported_by_two_public_modules():
    """minicp.testing owns the dtypes, the rounding and the reference; minicp.golden only its own names."""
    testing, golden = set(mt.__all__), set(minicp.golden.__all__)
    assert not testing & golden, sorted(testing & golden)
    assert {"DTYPES", "STORAGE", "round_to_bfloat16", "to_storage", "reference_arrays"} <= testing
    for name in golden:  # each function and class among them is defined in minicp.golden itself
        module = getattr(getattr(minicp.golden, name), "__module__", None)  # (None for constants)
        assert module is None or module.startswith("minicp.golden."), (name, module)
    assert not hasattr(minicp.golden, "round_to_bfloat16")
