import os

import pytest
from hypothesis import HealthCheck, settings

settings.register_profile(
    "ci", max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large]
)
settings.register_profile(
    "thorough",
    max_examples=300,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


@pytest.fixture
def gpu():
    """Switch to the CuPy backend for one test and back to NumPy afterwards (tests marked gpu)."""
    from minicp import backend

    with backend.backend("cupy") as xp:
        yield xp


@pytest.fixture(autouse=True)
def _numpy_backend():
    """Every test starts (and ends) on the CPU autograd backend unless it switches explicitly."""
    from minicp import backend

    backend.use_backend("numpy")
    yield
    backend.use_backend("numpy")


SKIP_GROUPS = (  # (words in a skip reason, what the group is, how to run it)
    (("CuPy", "GPU", "CUDA"), "need an NVIDIA GPU and CuPy", "make test-gpu on a GPU machine"),
    (
        ("torch",),
        "need PyTorch (the official twin, the verdict corpus, the torch adapters)",
        "pip install torch --index-url https://download.pytorch.org/whl/cpu, then make test",
    ),
)


@pytest.hookimpl(trylast=True)
def pytest_terminal_summary(terminalreporter):
    """One line at the end naming the groups of skipped tests and the command that runs each."""
    skipped = terminalreporter.stats.get("skipped", [])
    if not skipped:
        return
    counts = {}
    for report in skipped:
        reason = str(report.longrepr[-1]) if isinstance(report.longrepr, tuple) else str(report.longrepr)
        group = next((g for g in SKIP_GROUPS if any(word in reason for word in g[0])), None)
        counts[group] = counts.get(group, 0) + 1
    parts = [f"{counts[g]} {g[1]} ({g[2]})" for g in SKIP_GROUPS if g in counts]
    if None in counts:
        parts.append(f"{counts[None]} for other reasons (pytest -rs lists them)")
    terminalreporter.write_line("skipped: " + "; ".join(parts))
