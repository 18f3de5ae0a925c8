"""The package's layout rules, checked on the source tree: no import cycles, no module over 400 lines,
no imports inside functions except optional dependencies and the few heavy modules loaded on first use,
a docstring-opened ``__init__.py`` in every subpackage, tests laid out like the package, no name exported by
two public modules, no fast path inside the reference, no references to documents outside the repository,
and every notebook identical to its percent-format source."""

import ast
import pathlib
import re
import subprocess

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "minicp"
MODULES = sorted(PACKAGE.rglob("*.py"))
OPTIONAL = {
    "matplotlib",
    "tqdm",
    "torch",
    "cupy",
    "cupyx",
    "jax",
    "scipy",
    "IPython",
    "ipywidgets",
    "threadpoolctl",
    "pydoc_data",
}  # pydoc_data: the 466 kB demo corpus, loaded only when asked for
LAZY = {"autograd.scipy"}  # loaded on first use: importing it loads most of SciPy (about 0.6 s)


def module_name(path):
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def top_level_imports(path):
    """minicp modules imported at module level (not inside functions), resolved to module names."""
    names = set()
    known = {module_name(p) for p in MODULES}
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names if a.name.startswith("minicp"))
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("minicp"):
            for a in node.names:
                sub = f"{node.module}.{a.name}"
                names.add(sub if sub in known else node.module)
    return {n for n in names if n in known}


def test_modules_are_found():
    assert len(MODULES) > 60


def test_no_import_cycles():
    graph = {module_name(p): top_level_imports(p) for p in MODULES}
    # a package imports its parents implicitly; an edge to a parent package is not a cycle by itself
    # unless the parent imports the child back, which the search below catches like any other cycle
    state, stack = {}, []

    def visit(node):
        state[node] = "open"
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if nxt == node:
                continue
            if state.get(nxt) == "open":
                cycle = stack[stack.index(nxt) :] + [nxt]
                if not _package_reexport(cycle):
                    pytest.fail("import cycle: " + " -> ".join(cycle))
            elif nxt not in state:
                visit(nxt)
        stack.pop()
        state[node] = "done"

    for node in sorted(graph):
        if node not in state:
            visit(node)


def _package_reexport(cycle):
    """A package __init__ importing its own submodules, which import siblings through the package: the
    ordinary Python layout (``minicp.nn.attention`` re-exporting ``ecp``, ``ecp`` importing
    ``minicp.nn.attention.common``). Allowed when every edge stays inside one package."""
    roots = {".".join(m.split(".")[:3]) for m in cycle}
    return len(roots) == 1 and cycle[0].count(".") >= 2


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(ROOT)))
def test_module_at_most_400_lines(path):
    assert len(path.read_text().splitlines()) <= 400


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(ROOT)))
def test_no_imports_inside_functions_except_optional(path):
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            for sub in ast.walk(node):
                if isinstance(sub, ast.Import):
                    mods = [a.name for a in sub.names]
                elif isinstance(sub, ast.ImportFrom):
                    mods = [sub.module or ""]
                else:
                    continue
                for mod in mods:
                    lazy = any(mod == name or mod.startswith(name + ".") for name in LAZY)
                    assert lazy or mod.split(".")[0] in OPTIONAL, (
                        f"{path.name}:{sub.lineno} imports {mod} inside {node.name}"
                    )


PACKAGES = sorted(p for p in PACKAGE.rglob("*") if p.is_dir() and p.name != "__pycache__")


@pytest.mark.parametrize("folder", [PACKAGE, *PACKAGES], ids=lambda p: str(p.relative_to(ROOT)))
def test_every_package_opens_with_a_docstring(folder):
    init = folder / "__init__.py"
    assert init.exists(), f"{folder.relative_to(ROOT)} has no __init__.py"
    assert ast.get_docstring(ast.parse(init.read_text())), f"{init.relative_to(ROOT)} has no docstring"


def test_tests_are_laid_out_like_the_package():
    """Every folder under tests/ is named after a subpackage of minicp (tests/nn/ for minicp/nn/, ...)."""
    subpackages = {p.relative_to(PACKAGE).as_posix() for p in PACKAGES}
    folders = {
        p.relative_to(ROOT / "tests").as_posix()
        for p in (ROOT / "tests").rglob("*")
        if p.is_dir() and p.name not in ("__pycache__", ".hypothesis")
    }
    assert folders <= subpackages, sorted(folders - subpackages)


def _public_names(path):
    """Names a module exports: its ``__all__``, or else the names it imports with a re-export marker."""
    tree = ast.parse(path.read_text())
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == "__all__" for t in node.targets):
            return set(ast.literal_eval(node.value))
    lines = path.read_text().splitlines()
    names = set()
    for node in tree.body:
        if isinstance(node, ast.ImportFrom) and "re-export" in lines[node.lineno - 1]:
            names.update(a.asname or a.name for a in node.names)
    return names


def test_no_name_is_exported_by_two_public_modules():
    """A package's face may hand on what its own submodules define; two other modules may not both export a
    name (``minicp.nn.ops.rope`` beside ``minicp.nn.rope.rope`` was one)."""
    exported = {module_name(p): _public_names(p) for p in MODULES}
    clashes = []
    for a in sorted(exported):
        for b in sorted(exported):
            if a < b and not b.startswith(a + ".") and not a.startswith(b + "."):
                clashes += [f"{name}: {a} and {b}" for name in sorted(exported[a] & exported[b])]
    assert not clashes, clashes


REFERENCE = [
    ROOT / "minicp/nn/ops.py",
    ROOT / "minicp/nn/model.py",
    *sorted((ROOT / "minicp/nn/attention").glob("*.py")),
]


@pytest.mark.parametrize("path", REFERENCE, ids=lambda p: str(p.relative_to(ROOT)))
def test_the_reference_has_no_fast_path(path):
    """The reference is what the reference engine runs: no branch to the fast engine, no tracing test, no
    identity test (``v is k``) choosing another computation."""
    text = path.read_text()
    for pattern in (
        r"\bfused\b",
        r"cpu_blocks",
        r"_traced",
        r"minicp\.fast",
        r"\b[kvq] is [kvq]\b",
        r"isinstance\(\w+, Box\)",
    ):
        assert not re.search(pattern, text), f"{path.name} matches {pattern!r}"


def test_no_references_outside_the_repository():
    out = subprocess.run(
        ["git", "grep", "-nIE", r"\bSPEC\b|issue [0-9]+|\.\./shared|AUTOGRAD-CUPY", "--", "."],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    if out.returncode == 128:
        pytest.skip("not a git checkout")
    hits = [line for line in out.stdout.splitlines() if not line.startswith("tests/test_layout.py:")]
    assert not hits, "\n".join(hits[:20])


NOTEBOOKS = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.py"))


def test_every_notebook_has_a_source():
    ipynbs = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
    assert [p.stem for p in ipynbs] == [p.stem for p in NOTEBOOKS] and NOTEBOOKS


@pytest.mark.parametrize("source", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_matches_its_source(source):
    jupytext = pytest.importorskip("jupytext")
    from_py = jupytext.read(source)
    from_ipynb = jupytext.read(source.with_suffix(".ipynb"))

    def cells(nb):
        return [(c.cell_type, c.source.strip()) for c in nb.cells]

    assert cells(from_py) == cells(from_ipynb), f"run `make notebooks` ({source.name} and its .ipynb differ)"


def test_layout_section_of_the_readme_names_every_module():
    readme = (ROOT / "README.md").read_text()
    section = re.search(r"## Layout\n(.*?)\n## ", readme, re.S).group(1)
    missing = [
        str(p.relative_to(ROOT))
        for p in MODULES
        if p.name not in ("__main__.py", "__init__.py") and p.name not in section
    ]
    missing += [
        str(p.relative_to(ROOT))
        for p in PACKAGE.iterdir()
        if p.is_dir() and (p / "__init__.py").exists() and f"{p.name}/" not in section
    ]
    assert not missing, missing
