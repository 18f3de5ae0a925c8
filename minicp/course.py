"""What the notebooks share: the exercise check's choice between the student's answer and the kept solution,
and the machine in words that every printed timing names.

    fn, who = yours_or_solution(my_ecp_mask, "ecp_mask", 8, 2)   # the student's function, or solutions/ecp_mask.py
    print(f"took {t:.1f} s on this machine ({machine()})")      # "AMD EPYC, 2 cores, load average 1.3"
"""

import os
import platform
import runpy
from pathlib import Path

__all__ = ["solutions_folder", "yours_or_solution", "machine"]


def solutions_folder():
    """notebooks/solutions, seen from the notebooks' folder (where Jupyter runs a notebook) or the repository root."""
    here = Path.cwd()
    return here / "solutions" if here.name == "notebooks" else here / "notebooks" / "solutions"


def yours_or_solution(mine, name, *probe, folder=None):
    """(function, who): ``mine`` and "your answer" if ``mine(*probe)`` returns something, else the function
    ``name`` of ``folder``/<name>.py (default ``solutions_folder()``) and "the solution (no attempt yet)".
    An exercise's stub returns None until the student writes it."""
    if not callable(mine):
        raise TypeError(f"mine must be a function, got {type(mine).__name__}")
    if mine(*probe) is not None:
        return mine, "your answer"
    path = Path(folder or solutions_folder()) / f"{name}.py"
    if not path.is_file():
        raise ValueError(f"no solution {name!r}: {path.name} is not in {path.parent}")
    return runpy.run_path(str(path))[name], "the solution (no attempt yet)"


def machine():
    """This machine in words, for the timings: CPU model, cores, load average over the last minute."""
    model = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            model = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    load = f", load average {os.getloadavg()[0]:.1f}" if hasattr(os, "getloadavg") else ""
    return f"{model}, {os.cpu_count()} cores{load}"
