"""pytest plugin for golden files: the ``minicp_golden`` fixture.

Installed with minicp (entry point ``pytest11``: ``minicp_golden = "minicp.golden.pytest_plugin"``), beside
``minicp.testing.pytest_plugin`` (the ``minicp_check`` fixture, the ``minicp_cases`` marker and the
``--minicp-cache`` / ``--minicp-report`` options); from a source checkout: ``pytest -p
minicp.golden.pytest_plugin``. It works alone too (without the options)::

    def test_my_ecp_golden(minicp_golden):
        minicp_golden(my_ecp, "ecp.npz", adapters=mtt.adapters)

``minicp_golden(fn, path, *, adapters=None, **kwargs)`` runs ``assert_matches_golden(fn, path, **kwargs)``;
``adapters(fn, dtype)`` (e.g. ``minicp.testing.torch.adapters``) adds ``array_fn`` and ``grad_fn`` for the
file's dtype. It returns the ``Report``, or fails the test with the ``MismatchError``; with
``--minicp-report DIR`` the failing check's JSON report is written as ``minicp_check`` writes its own (one
numbering per test for both fixtures). Nothing here imports torch.
"""

import pytest

from minicp.golden.check import assert_matches_golden
from minicp.golden.io import read_golden_config
from minicp.testing.pytest_plugin import checked, report_settings

__all__ = ["MinicpGolden", "minicp_golden"]


class MinicpGolden:
    """The ``minicp_golden`` fixture's value: calling it checks a kernel on a golden file."""

    def __init__(self, report_dir, test_id, reports=None):
        self.report_dir, self.test_id = report_dir, test_id
        self.reports = [] if reports is None else reports

    def __call__(self, fn, path, *, adapters=None, **kwargs):
        __tracebackhide__ = True
        args = dict(kwargs)
        if adapters is not None:
            args = {**adapters(fn, read_golden_config(path)["dtype"]), **args}
        return checked(assert_matches_golden, (fn, path), args, self.report_dir, self.test_id, self.reports)


@pytest.fixture
def minicp_golden(request):
    """Check a kernel on a golden file (``MinicpGolden``), reports written where ``--minicp-report`` says."""
    _, report_dir, test_id, reports = report_settings(request)
    return MinicpGolden(report_dir, test_id, reports)
