"""Failures that read well: shares as percentages of at most four significant digits, and pytest showing the
message without minicp's own frames."""

import re

import numpy as np
import pytest

import minicp
import minicp.testing as mt
from minicp.testing.where import percent

pytest_plugins = ["pytester"]

CASE = dict(seq_len=64, heads=2, head_dim=8, half_segment=8)


@pytest.mark.parametrize(
    "share, text",
    [
        (0.0, "0%"),
        (1.0, "100%"),
        (0.99999, "100%"),
        (0.875, "87.5%"),
        (0.98372, "98.37%"),
        (1.23e-7, "1.23e-05%"),
        (99.99, "9999%"),
        (364754.72, "3.648e+07%"),
        (np.inf, "inf%"),
        (np.nan, "nan%"),
    ],
)
def test_percent_has_at_most_four_significant_digits(share, text):
    assert percent(share) == text


def _ecp(q, k, v, scale=1.0):
    return np.asarray(minicp.attention("ecp", q * np.float32(scale), k, v, half_segment=8))


def test_every_share_in_a_failure_has_at_most_four_significant_digits():
    with pytest.raises(mt.MismatchError) as info:
        mt.assert_matches_reference(lambda q, k, v: _ecp(q, k, v, 1.5), "ecp", **CASE)
    shares = re.findall(r"([-+0-9.e]+)%", str(info.value))
    assert len(shares) > 10 and "1e+02%" not in str(info.value)
    for share in shares:
        digits = re.sub(r"e[-+]\d+$", "", share).replace(".", "").lstrip("0")
        assert len(digits) <= 4, share
    c = mt.compare(np.arange(1.0, 5.0) * 2, np.arange(1.0, 5.0), name="x", dtype="float64")
    assert c.message.startswith("x: 4 of 4 elements (100%) are out of tolerance")


KERNEL = """
import numpy as np
import minicp
import minicp.testing as mt
from minicp import golden

CASE = dict(seq_len=64, heads=2, head_dim=8, half_segment=8)

def wrong(q, k, v):
    return np.asarray(minicp.attention("ecp", q * np.float32(1.5), k, v, half_segment=8))

def test_reference():
    mt.assert_matches_reference(wrong, "ecp", **CASE)

def test_golden(tmp_path):
    path = golden.save_golden(golden.make_golden("ecp", **CASE), tmp_path / "g.npz")
    golden.assert_matches_golden(wrong, path)

def test_close():
    mt.assert_close(np.ones(3), np.zeros(3), name="x")

def test_fixture(minicp_check):
    minicp_check(wrong, "ecp", **CASE)
"""


def test_pytest_shows_the_message_without_minicps_frames(pytester, monkeypatch):
    monkeypatch.setenv("PYTEST_DISABLE_PLUGIN_AUTOLOAD", "1")
    pytester.makepyfile(test_kernel=KERNEL)
    result = pytester.runpytest_inprocess("-p", "minicp.testing.pytest_plugin", "-p", "no:cacheprovider")
    result.assert_outcomes(failed=4)
    text = result.stdout.str()
    assert text.count("E       minicp.testing.compare.MismatchError: out: out of tolerance") == 3
    assert "E       minicp.testing.compare.MismatchError: x: 3 of 3 elements (100%)" in text
    frames = [line for line in text.splitlines() if re.search(r"minicp/(testing|golden)/\w+\.py:\d+", line)]
    assert not frames, frames
