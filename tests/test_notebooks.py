"""Every notebook runs, and shows what a fresh run shows: the drift check of the committed notebooks.

Each notebook in notebooks/ is executed afresh by ``execute`` below (nbclient, the ``python3`` kernel of the
running interpreter, working directory notebooks/, the default run: ``MINICP_FULL`` and the other knobs of the
environment are left out), and its outputs are held against the committed .ipynb cell by cell. ``make
notebooks`` writes the committed notebooks with the same ``execute`` (``python tests/test_notebooks.py``), so
the two runs differ only by the machine.

* Text (stdout, text/plain, text/markdown, text/latex, and HTML without embedded images) must be the same,
  with numbers compared as printed: two decimal numbers agree when they differ by at most one unit of their
  last printed digit (a value on a rounding boundary may print either way on another BLAS); integers (counts,
  sizes, indices, whole percentages) must be equal. A digit inside a word (``float32``, ``layers.0.0``) is text.
  A printed source (notebook 01 prints the code of every architecture) is text, so a file that changed without
  a re-run fails here.
* Images and animations must be where they were, one for one; their pixels are not compared (they are drawn
  from the numbers compared above). Widgets likewise.
* Cells tagged ``approx`` compare their numbers to 25%: float32 rounding floors, which move with the BLAS's
  summation order (notebook 05's budget shares). Cells tagged ``varies`` compare only the kinds of their
  outputs: the timings, which a notebook prints for the run at hand together with the machine and its load.
  The tags live in the .py sources (``# %% tags=["varies"]``); no other tag is allowed.
* No output may be an error, carry a path of the machine that ran it, or be a figure that was made but not
  displayed (``<Figure size ...>`` without its image), in the committed notebook or in the fresh run.

stderr (progress bars, warnings) is not compared. Run ``make notebooks`` to re-execute and commit.
"""

import difflib
import os
import pathlib
import re
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
TAGS = {"approx": 0.25, "varies": None}
# a number as printed: not inside a word, thousands separators allowed, a decimal point only with digits after it
NUMBER = re.compile(r"(?<![\w.])[-+]?\d+(?:,\d{3})*(?:\.\d+)?(?:[eE][-+]?\d+)?(?![\w])")
IMAGE_KINDS = ("image/png", "image/svg+xml", "image/jpeg", "application/vnd.jupyter.widget-view+json")
TEXT_KINDS = ("text/plain", "text/markdown", "text/latex", "text/html")
MACHINE_PATHS = re.compile(r"(/tmp/|/var/folders/|/work/|/home/|/root/|/Users/|[A-Z]:\\\\|/private/var/)")
# knobs of a notebook that a developer's shell may hold: the committed run and the check run without them
LEFT_OUT = ("MPLBACKEND", "MINICP_FULL", "MINICP_WORKERS", "MINICP_THREADS", "MINICP_ENGINE")
TIMEOUT = 900  # seconds per cell


def execute(path):
    """Execute the notebook at ``path`` as ``make notebooks`` and this test do; returns the executed notebook."""
    import nbclient
    import nbformat

    nb = nbformat.read(path, as_version=4)
    for cell in nb.cells:
        cell.metadata.pop("execution", None)  # wall-clock stamps of an earlier run
    env = {k: v for k, v in os.environ.items() if k not in LEFT_OUT}
    client = nbclient.NotebookClient(
        nb,
        timeout=TIMEOUT,
        kernel_name="python3",
        record_timing=False,  # no wall-clock stamps in the committed cells' metadata
        resources={"metadata": {"path": str(pathlib.Path(path).resolve().parent)}},
    )
    client.execute(env=env)
    return nb


def _texts(output):
    """(kind, text) pairs of one output, images reduced to their kind."""
    if output.output_type == "stream":
        return [] if output.name == "stderr" else [("stdout", output.text)]
    if output.output_type == "error":
        return [("error", f"{output.ename}: {output.evalue}")]
    data = output.get("data", {})
    pairs = [(kind, "") for kind in IMAGE_KINDS if kind in data]
    for kind in TEXT_KINDS:
        if kind in data:
            text = data[kind] if isinstance(data[kind], str) else "".join(data[kind])
            if kind == "text/html" and ("data:image" in text or "base64" in text):
                text = ""  # an animation's frames: compared by presence
            if kind == "text/plain" and any(k in data for k in IMAGE_KINDS):
                text = ""  # the repr under an image or widget (a size, a model id)
            pairs.append((kind, text))
    return pairs


def _cell_texts(cell):
    pairs = []
    for output in cell.get("outputs", []):
        pairs.extend(_texts(output))
    # consecutive stdout pieces are one text (how print calls are split into messages is not the notebook's)
    merged = []
    for kind, text in pairs:
        if merged and kind == "stdout" and merged[-1][0] == "stdout":
            merged[-1] = ("stdout", merged[-1][1] + text)
        else:
            merged.append((kind, text))
    return merged


def _last_digit(token):
    mantissa, _, exponent = token.lower().partition("e")
    decimals = len(mantissa.split(".")[1]) if "." in mantissa else 0
    return 10.0 ** ((int(exponent) if exponent else 0) - decimals)


def _numbers_agree(a, b, rel):
    x, y = float(a.replace(",", "")), float(b.replace(",", ""))
    if rel:
        return abs(x - y) <= rel * max(abs(x), abs(y))
    if not any(c in a + b for c in ".eE"):
        return False  # integers (counts, sizes, indices) must be equal
    return abs(x - y) <= max(_last_digit(a), _last_digit(b)) * 1.000001


def texts_agree(want, got, rel=0.0):
    """True when two texts are the same apart from numbers, and their numbers agree (see the docstring)."""
    if want == got:
        return True
    if NUMBER.split(want) != NUMBER.split(got):
        return False
    return all(a == b or _numbers_agree(a, b, rel) for a, b in zip(NUMBER.findall(want), NUMBER.findall(got)))


def _first_difference(want, got, rel):
    """The first pair of lines that do not agree, with the line number, for the failure message."""
    w, g = want.splitlines(), got.splitlines()
    for i, (a, b) in enumerate(zip(w, g)):
        if not texts_agree(a, b, rel):
            return f"line {i + 1}:\n    committed: {a[:300]}\n    fresh run: {b[:300]}"
    diff = difflib.unified_diff(w, g, "committed", "fresh run", n=1, lineterm="")
    return "\n".join(list(diff)[:12])


def _problems(cell):
    problems = []
    for kind, text in _cell_texts(cell):
        if kind == "error":
            problems.append(f"raised {text}")
        found = MACHINE_PATHS.search(text)
        if found:
            line = next(x for x in text.splitlines() if found.group(0) in x)
            problems.append(f"shows a path of the machine that ran it: {line.strip()[:120]!r}")
        if kind in ("text/plain", "stdout") and re.search(r"<Figure size [^>]*>", text):
            problems.append("made a figure without displaying it (its repr is all that shows)")
    return problems


def _tags(cell):
    return set(cell.get("metadata", {}).get("tags", []))


def compare(committed, fresh, name):
    """Every way the fresh run departs from the committed notebook, as readable lines (empty when none)."""
    if [c.cell_type for c in committed.cells] != [c.cell_type for c in fresh.cells]:
        return [f"{name}: the cells differ (run `make notebooks`)"]
    failures = []
    code = [(c, f) for c, f in zip(committed.cells, fresh.cells) if c.cell_type == "code"]
    for index, (want_cell, got_cell) in enumerate(code):
        first = (want_cell.source.strip().splitlines() or [""])[0][:60]
        where = f"{name}, code cell {index + 1} ({first!r})"
        unknown = _tags(want_cell) - set(TAGS)
        if unknown:
            failures.append(f"{where}: unknown tag(s) {sorted(unknown)}; the tags are {sorted(TAGS)}")
        for problem in _problems(want_cell):
            failures.append(f"{where}: the committed notebook {problem}")
        for problem in _problems(got_cell):
            failures.append(f"{where}: a fresh run {problem}")
        want, got = _cell_texts(want_cell), _cell_texts(got_cell)
        if [k for k, _ in want] != [k for k, _ in got]:
            failures.append(f"{where}: outputs {[k for k, _ in want]} committed, {[k for k, _ in got]} in a fresh run")
            continue
        if "varies" in _tags(want_cell):
            continue
        rel = TAGS["approx"] if "approx" in _tags(want_cell) else 0.0
        for (kind, w), (_, g) in zip(want, got):
            if not texts_agree(w, g, rel):
                failures.append(f"{where}: {kind} differs at {_first_difference(w, g, rel)}")
    return failures


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_committed_notebook_shows_what_a_fresh_run_shows(path):
    nbformat = pytest.importorskip("nbformat")
    pytest.importorskip("nbclient")
    failures = compare(nbformat.read(path, as_version=4), execute(path), path.name)
    assert not failures, "run `make notebooks` and commit, or fix the notebook:\n" + "\n".join(failures)


def test_number_comparison_reads_the_printed_digits():
    assert texts_agree("accuracy 0.68 at lag 12", "accuracy 0.69 at lag 12")  # one unit of the last digit
    assert not texts_agree("accuracy 0.68 at lag 12", "accuracy 0.70 at lag 12")
    assert not texts_agree("accuracy 0.68 at lag 12", "accuracy 0.68 at lag 13")
    assert not texts_agree("lag 5.", "lag 6.")  # a full stop is not a decimal point
    assert not texts_agree("rows 0..15", "rows 0..16")
    assert not texts_agree("layers.0.0.fn", "layers.0.1.fn")  # digits inside a name are text
    assert not texts_agree("float32", "float64")
    assert texts_agree("1,189,085,184 entries", "1,189,085,184 entries")
    assert not texts_agree("1,189,085,184 entries", "1,189,085,185 entries")
    assert not texts_agree("1,189,085,184", "1,189,085,186")
    assert texts_agree("max err 3.2e-07", "max err 3.3e-07")
    assert not texts_agree("max err 3.2e-07", "max err 3.2e-08")
    assert not texts_agree("+1.0%", "-1.0%")
    assert texts_agree("budget 2.34e-06 (81%)", "budget 2.5e-06 (88%)", rel=0.25)
    assert not texts_agree("budget 2.34e-06 (81%)", "budget 2.34e-06 (41%)", rel=0.25)
    assert not texts_agree("passed", "failed", rel=0.25)


def _cell(source, outputs, tags=()):
    import nbformat

    cell = nbformat.v4.new_code_cell(source, outputs=outputs)
    if tags:
        cell.metadata["tags"] = list(tags)
    return cell


def test_compare_catches_what_it_promises():
    nbformat = pytest.importorskip("nbformat")
    v4 = nbformat.v4

    def nb(*cells):
        return v4.new_notebook(cells=list(cells))

    def out(text):
        return v4.new_output("stream", name="stdout", text=text)

    def figure(repr_only):
        data = {"text/plain": "<Figure size 640x480 with 1 Axes>"}
        if not repr_only:
            data["image/png"] = "iVBORw0KGgo="
        return v4.new_output("display_data", data=data)

    same = nb(_cell("print(1)", [out("took 12 s\n")], tags=["varies"]), _cell("fig", [figure(False)]))
    other = nb(_cell("print(1)", [out("took 31 s\n")], tags=["varies"]), _cell("fig", [figure(False)]))
    assert compare(same, other, "nb") == []
    assert compare(nb(_cell("x", [out("took 12 s\n")])), nb(_cell("x", [out("took 31 s\n")])), "nb")
    assert compare(nb(_cell("x", [out("rms 81%\n")], ["approx"])), nb(_cell("x", [out("rms 95%\n")])), "nb") == []
    assert compare(nb(_cell("x", [out("rms 81%\n")], ["approx"])), nb(_cell("x", [out("rms 120%\n")])), "nb")
    assert any(
        "without displaying" in f for f in compare(nb(_cell("f", [figure(True)])), nb(_cell("f", [figure(True)])), "nb")
    )
    assert any(
        "path" in f
        for f in compare(nb(_cell("x", [out("in /tmp/abc\n")])), nb(_cell("x", [out("in /tmp/abc\n")])), "nb")
    )
    assert any("unknown tag" in f for f in compare(nb(_cell("x", [], ["vary"])), nb(_cell("x", [])), "nb"))
    assert any("outputs" in f for f in compare(nb(_cell("x", [figure(False)])), nb(_cell("x", [])), "nb"))
    error = v4.new_output("error", ename="ValueError", evalue="bad", traceback=[])
    assert any("raised ValueError" in f for f in compare(nb(_cell("x", [])), nb(_cell("x", [error])), "nb"))


if __name__ == "__main__":  # make notebooks: execute each notebook given and write it in place
    import nbformat

    for arg in sys.argv[1:]:
        target = pathlib.Path(arg)
        print(f"executing {target}", flush=True)
        nbformat.write(execute(target), target)
