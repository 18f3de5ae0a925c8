"""The pytest plugins (minicp.testing.pytest_plugin, minicp.golden.pytest_plugin), run inside pytest by
pytester: correct kernels pass, a planted bug fails through the fixture, reports and cache entries are written
where the options say."""

import json
import subprocess
import sys

import pytest

from minicp import golden
from minicp.testing import pytest_plugin

pytest_plugins = ["pytester"]

PLUGIN = ("-p", "minicp.testing.pytest_plugin", "-p", "no:cacheprovider", "-p", "no:randomly")
GOLDEN_PLUGIN = ("-p", "minicp.golden.pytest_plugin")

KERNELS = '''
import numpy as np
import pytest

from minicp.analysis import kernel_pattern as kp
from minicp.nn.reference import dense_attention

SIZES = ("arch", "seq_len", "heads", "head_dim", "batch", "dtype", "seed", "check_grads", "rope")


def kernel(arch, seq_len, heads, scale=1.0, **pattern_args):
    """Dense attention with the exported mask, in float64, returned in the inputs' dtype; ``scale`` != 1
    plants a bug."""
    mask = kp.dense_mask(arch, seq_len, heads, **pattern_args)
    return lambda q, k, v: np.asarray(dense_attention(q.astype(np.float64) * scale, k, v, mask)).astype(q.dtype)


def kernel_for(case, scale=1.0):
    kw = case.kwargs
    return kernel(kw["arch"], kw["seq_len"], kw["heads"], scale, **{k: v for k, v in kw.items() if k not in SIZES})
'''


@pytest.fixture(autouse=True)
def _plugin_by_name_only(monkeypatch):
    """The inner pytest loads the plugin through -p; an installed entry point would register it twice."""
    monkeypatch.setenv("PYTEST_DISABLE_PLUGIN_AUTOLOAD", "1")


def run(pytester, source, *args):
    pytester.makepyfile(minicp_plugin_kernels=KERNELS, test_kernel=source)
    return pytester.runpytest_inprocess(*PLUGIN, *args)


def test_marker_parametrizes_edge_cases_and_a_correct_kernel_passes(pytester, tmp_path):
    source = """
import pytest
from minicp_plugin_kernels import kernel_for

@pytest.mark.minicp_cases("ecp", check_grads=False)
def test_ecp(minicp_check, minicp_case):
    report = minicp_check(kernel_for(minicp_case), minicp_case)
    assert report.ok and set(report) == {"out"}
"""
    cache = tmp_path / "cache"
    result = run(pytester, source, f"--minicp-cache={cache}", "-v")
    result.assert_outcomes(passed=5)
    result.stdout.fnmatch_lines(["*test_ecp?ecp-one_half_segment*PASSED*", "*test_ecp?ecp-partial_last_block*PASSED*"])
    assert len(list(cache.glob("minicp-ref-*.npz"))) == 5  # --minicp-cache reaches the reference cache


def test_planted_bug_fails_through_the_fixture_and_its_report_is_written(pytester, tmp_path):
    source = """
import pytest
from minicp_plugin_kernels import kernel

@pytest.mark.minicp("ecp", seq_len=64, heads=2, head_dim=8, half_segment=8)
def test_correct(minicp_check):
    minicp_check(kernel("ecp", 64, 2, half_segment=8))

@pytest.mark.minicp("ecp", seq_len=64, heads=2, head_dim=8, half_segment=8)
def test_wrong_scale(minicp_check):
    minicp_check(kernel("ecp", 64, 2, scale=1.05, half_segment=8))
    minicp_check(kernel("ecp", 64, 2, scale=1.05, half_segment=8), seed=1)  # not reached
"""
    reports = tmp_path / "reports"
    result = run(pytester, source, f"--minicp-report={reports}")
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines(["*MismatchError*out: out of tolerance*", "*minicp report: *test_wrong_scale.json*"])
    (written,) = reports.iterdir()  # the failing test only
    assert written.name == "test_kernel.py_test_wrong_scale.json"
    data = json.loads(written.read_text())
    assert data["ok"] is False and data["tensors"]["out"]["ok"] is False
    assert data["tensors"]["out"]["max_share"] > 1 and "seq_len 64" in data["context"]


def test_call_arguments_override_the_marker_and_golden_files_are_checked(pytester, tmp_path):
    """minicp_check and minicp_golden in one run: one numbering of the reports per test."""
    path = tmp_path / "ecp.npz"
    golden.save_golden(golden.make_golden("ecp", seq_len=32, heads=2, head_dim=8, half_segment=8), str(path))
    source = f"""
import pytest
from minicp_plugin_kernels import kernel

@pytest.mark.minicp("transformer", seq_len=16, heads=1, head_dim=4)
def test_override(minicp_check):
    report = minicp_check(kernel("ecp", 32, 2, half_segment=8), "ecp", seq_len=32, heads=2, half_segment=8)
    assert report.context.startswith("reference: minicp ecp(half_segment=8)")
    assert "heads 2, seq_len 32, head_dim 4" in report.context

def test_golden_correct(minicp_golden):
    assert minicp_golden(kernel("ecp", 32, 2, half_segment=8), {str(path)!r}).ok

def test_golden_bug(minicp_golden):
    minicp_golden(kernel("ecp", 32, 2, scale=0.9, half_segment=8), {str(path)!r})

def test_both_fixtures_fail(minicp_check, minicp_golden):
    try:
        minicp_golden(kernel("ecp", 32, 2, scale=0.9, half_segment=8), {str(path)!r})
    finally:
        minicp_check(kernel("ecp", 32, 2, scale=0.9, half_segment=8), "ecp", seq_len=32, heads=2, head_dim=8, half_segment=8)

def test_no_arch(minicp_check):
    minicp_check(kernel("ecp", 32, 2, half_segment=8))
"""
    result = run(pytester, source, *GOLDEN_PLUGIN, f"--minicp-report={tmp_path / 'reports'}")
    result.assert_outcomes(passed=2, failed=3)
    result.stdout.fnmatch_lines(["*test_golden_bug*", "*needs an architecture*"])
    assert sorted(p.name for p in (tmp_path / "reports").iterdir()) == [
        "test_kernel.py_test_both_fixtures_fail-2.json",
        "test_kernel.py_test_both_fixtures_fail.json",
        "test_kernel.py_test_golden_bug.json",
    ]


def test_golden_plugin_works_alone(pytester, tmp_path):
    path = tmp_path / "ecp.npz"
    golden.save_golden(golden.make_golden("ecp", seq_len=32, heads=2, head_dim=8, half_segment=8), str(path))
    source = f"""
from minicp_plugin_kernels import kernel

def test_golden_correct(minicp_golden):
    assert minicp_golden(kernel("ecp", 32, 2, half_segment=8), {str(path)!r}).ok

def test_golden_bug(minicp_golden):
    minicp_golden(kernel("ecp", 32, 2, scale=0.9, half_segment=8), {str(path)!r})
"""
    pytester.makepyfile(minicp_plugin_kernels=KERNELS, test_kernel=source)
    result = pytester.runpytest_inprocess(*GOLDEN_PLUGIN, "-p", "no:cacheprovider")
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines(["*out: out of tolerance*"])


def test_case_without_marker_and_marker_without_case_are_errors(pytester):
    result = run(pytester, "def test_a(minicp_case):\n    pass\n")
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(["*parametrized by @pytest.mark.minicp_cases*"])
    result = run(pytester, "import pytest\n\n@pytest.mark.minicp_cases('ecp')\ndef test_b():\n    pass\n")
    assert result.ret != 0
    result.stdout.fnmatch_lines(["*minicp_cases needs a minicp_case argument*"])


def _entry_points():
    tomllib = pytest.importorskip("tomllib")
    with open(pytest_plugin.__file__.rsplit("/minicp/", 1)[0] + "/pyproject.toml", "rb") as fh:
        return tomllib.load(fh)["project"]["entry-points"]["pytest11"]


def test_plugins_are_registered_and_import_no_torch():
    assert _entry_points()["minicp"] == "minicp.testing.pytest_plugin"
    code = (
        "import sys, minicp.testing.pytest_plugin, minicp.golden.pytest_plugin; "
        "assert 'torch' not in sys.modules, 'torch imported'"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_golden_plugin_is_registered():
    entries = _entry_points()
    if "minicp_golden" not in entries:
        pytest.skip("pyproject.toml does not yet register minicp.golden.pytest_plugin (entry point minicp_golden)")
    assert entries == {"minicp": "minicp.testing.pytest_plugin", "minicp_golden": "minicp.golden.pytest_plugin"}


def test_no_module_of_minicp_testing_imports_minicp_golden():
    """golden may use testing, never the reverse (``import minicp`` loads both: the imports are read)."""
    import ast
    import pathlib

    folder = pathlib.Path(pytest_plugin.__file__).parent
    for path in folder.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else []
            if isinstance(node, ast.ImportFrom):
                names += [node.module or ""] + [f"{node.module}.{a.name}" for a in node.names]
            assert not [n for n in names if n.startswith("minicp.golden")], path.name


@pytest.mark.parametrize("bad", [3, ("ecp",)])
def test_fixture_rejects_a_case_of_the_wrong_type(bad):
    check = pytest_plugin.MinicpCheck({}, None, None, "t")
    with pytest.raises(ValueError, match="case must be a minicp.testing.Case"):
        check(lambda q, k, v: q, bad)
