"""pytest plugin for kernel authors: the ``minicp_check`` fixture, the ``minicp_cases`` marker, two options.

Installed with minicp (entry point ``pytest11``: ``minicp = "minicp.testing.pytest_plugin"``), so pytest
loads it wherever minicp is installed (or with ``-p minicp.testing.pytest_plugin``)::

    import pytest
    from minicp.testing import torch as mtt

    @pytest.mark.minicp_cases("ecp", dtypes=("float32", "bfloat16"))   # one test per edge case
    def test_my_kernel(minicp_check, minicp_case):
        minicp_check(my_kernel, minicp_case, adapters=mtt.adapters)

``minicp_check(fn, case=None, *, adapters=None, **kwargs)`` runs ``assert_matches_reference`` with, in
increasing priority, the test's ``@pytest.mark.minicp(arch, **kwargs)`` settings, the case (a ``Case`` from
``minicp.testing.cases``, or an architecture name) and the call's own keyword arguments; ``adapters(fn,
dtype)`` (e.g. ``minicp.testing.torch.adapters``) adds ``array_fn`` and ``grad_fn``.
It returns the ``Report``, or fails the test with the ``MismatchError``, whose message pytest shows without
minicp's own frames. Golden files have their own fixture, ``minicp_golden``, in ``minicp.golden.pytest_plugin``
(installed alike; this module imports nothing of ``minicp.golden``).

Options: ``--minicp-cache DIR`` keeps the float64 references on disk between runs (``cache_dir``);
``--minicp-report DIR`` writes the JSON report of every failing check to ``DIR/<test id>.json``
(``-2``, ``-3`` ... for later checks of the same test); ``--minicp-device cuda`` checks on that GPU
(``device=``: inputs drawn there, reference and judging with CuPy; a call's own ``device=`` wins, and
adapters that take ``device`` get it). Nothing here imports torch, and a test suite
that uses neither the fixture nor the marker runs as before.
"""

import inspect
import os
import re

import pytest

from minicp.testing.cases import Case, cases
from minicp.testing.check import assert_matches_reference, write_report
from minicp.testing.compare import MismatchError

__all__ = [
    "MinicpCheck",
    "checked",
    "report_settings",
    "pytest_addoption",
    "pytest_configure",
    "pytest_generate_tests",
    "minicp_check",
]

REPORTS = pytest.StashKey[list]()  # the report paths written for one test, by every minicp fixture it uses

MARKERS = (
    "minicp(**kwargs): default keyword arguments of every minicp_check call in the test",
    "minicp_cases(arch=None, **kwargs): parametrize the test's minicp_case over minicp.testing.cases(arch, **kwargs)",
)


def pytest_addoption(parser):
    group = parser.getgroup("minicp", "minicp: checking attention kernels against the float64 reference")
    group.addoption("--minicp-cache", metavar="DIR", default=None, help="keep the float64 references in DIR")
    group.addoption("--minicp-report", metavar="DIR", default=None, help="write failing checks' JSON reports to DIR")
    group.addoption(
        "--minicp-device",
        metavar="DEVICE",
        default=None,
        help="check on this GPU ('cuda', 'cuda:1'): inputs drawn there",
    )


def pytest_configure(config):
    for line in MARKERS:
        config.addinivalue_line("markers", line)


def pytest_generate_tests(metafunc):
    marker = metafunc.definition.get_closest_marker("minicp_cases")
    if marker is not None:
        if "minicp_case" not in metafunc.fixturenames:
            raise pytest.UsageError(
                f"{metafunc.definition.nodeid}: @pytest.mark.minicp_cases needs a minicp_case argument"
            )
        metafunc.parametrize("minicp_case", cases(*marker.args, **marker.kwargs), ids=str)


def checked(check, args, kwargs, report_dir, test_id, reports):
    """``check(*args, **kwargs)``; on a ``MismatchError`` its JSON report goes to ``report_dir`` (when set) as
    ``<test id>.json``, ``-2``, ``-3`` ... for the test's later failing checks (``reports``: the paths so far),
    and the error names the file."""
    __tracebackhide__ = True
    try:
        return check(*args, **kwargs)
    except MismatchError as err:
        if report_dir is not None and getattr(err, "report", None) is not None:
            path = _report_path(report_dir, test_id, len(reports))
            write_report(err.report, path)
            reports.append(path)
            if hasattr(err, "add_note"):
                err.add_note(f"minicp report: {path}")
        raise


def _report_path(report_dir, test_id, written):
    os.makedirs(report_dir, exist_ok=True)
    stem = re.sub(r"[^A-Za-z0-9_.=-]+", "_", test_id).strip("_") or "test"
    suffix = f"-{written + 1}" if written else ""
    return os.path.join(report_dir, f"{stem}{suffix}.json")


def report_settings(request):
    """(cache dir, report dir, test id, the test's list of written reports) of a fixture's test; the options are
    None where this plugin is not loaded."""
    config = request.config
    reports = request.node.stash.setdefault(REPORTS, [])
    return config.getoption("minicp_cache", None), config.getoption("minicp_report", None), request.node.nodeid, reports


class MinicpCheck:
    """The ``minicp_check`` fixture's value: calling it checks a kernel against the reference."""

    def __init__(self, settings, cache_dir, report_dir, test_id, reports=None, device=None):
        self.settings, self.cache_dir, self.report_dir, self.test_id = dict(settings), cache_dir, report_dir, test_id
        self.reports = [] if reports is None else reports  # paths written so far
        self.device = device  # --minicp-device

    def __call__(self, fn, case=None, *, adapters=None, **kwargs):
        __tracebackhide__ = True
        if isinstance(case, Case):
            given = dict(case.kwargs)
        elif isinstance(case, str):
            given = {"arch": case}
        elif case is None:
            given = {}
        else:
            raise ValueError(f"case must be a minicp.testing.Case, an architecture name or None, got {case!r}")
        args = {**self.settings, **given, **kwargs}
        if "arch" not in args:
            raise ValueError("minicp_check needs an architecture: a case, an arch name, arch= or @pytest.mark.minicp")
        if self.cache_dir is not None:
            args.setdefault("cache_dir", self.cache_dir)
        if self.device is not None:
            args.setdefault("device", self.device)
        if adapters is not None:
            takes_device = "device" in inspect.signature(adapters).parameters
            extra = {"device": args["device"]} if takes_device and args.get("device") is not None else {}
            args = {**adapters(fn, args.get("dtype", "float32"), **extra), **args}
        return checked(assert_matches_reference, (fn,), args, self.report_dir, self.test_id, self.reports)


@pytest.fixture
def minicp_check(request):
    """Check a kernel against minicp's reference (``MinicpCheck``) with this test's settings and options."""
    marker = request.node.get_closest_marker("minicp")
    settings = dict(marker.kwargs) if marker is not None else {}
    if marker is not None and marker.args:
        settings.setdefault("arch", marker.args[0])
    return MinicpCheck(settings, *report_settings(request), device=request.config.getoption("minicp_device", None))


@pytest.fixture
def minicp_case(request):
    """Set by ``@pytest.mark.minicp_cases(...)``; requesting it without the marker is an error."""
    pytest.fail("minicp_case is parametrized by @pytest.mark.minicp_cases(arch, ...); the test has no such marker")
