"""minicp.course: the notebooks' exercise check and machine line."""

import re
from pathlib import Path

import pytest

from minicp.course import machine, yours_or_solution


def test_an_answer_is_used_once_it_returns_something(tmp_path):
    def mine(n):
        return n + 1

    fn, who = yours_or_solution(mine, "nothing_needed", 1, folder=tmp_path)
    assert fn is mine and who == "your answer"


def test_a_stub_falls_back_to_the_kept_solution(tmp_path):
    (tmp_path / "double.py").write_text("def double(n):\n    return 2 * n\n")

    def mine(n):
        return None  # the stub as a notebook ships it

    fn, who = yours_or_solution(mine, "double", 3, folder=tmp_path)
    assert fn(21) == 42 and who == "the solution (no attempt yet)"


def test_every_exercise_of_the_notebooks_has_its_solution():
    """Each yours_or_solution(..., "name", ...) call in the notebooks names a file of notebooks/solutions."""
    root = Path(__file__).resolve().parents[1]
    names = {
        m.group(1)
        for source in (root / "notebooks").glob("[0-9][0-9]_*.py")
        for m in re.finditer(r"yours_or_solution\(\s*\w+,\s*\"(\w+)\"", source.read_text())
    }
    assert len(names) == 30, sorted(names)
    missing = [n for n in names if not (root / "notebooks" / "solutions" / f"{n}.py").is_file()]
    assert not missing, missing


def test_bad_arguments_are_named(tmp_path):
    with pytest.raises(TypeError, match="mine must be a function"):
        yours_or_solution(None, "x", folder=tmp_path)
    with pytest.raises(ValueError, match="no solution 'absent'"):
        yours_or_solution(lambda: None, "absent", folder=tmp_path)


def test_machine_names_the_cores():
    assert re.search(r", \d+ cores", machine())
