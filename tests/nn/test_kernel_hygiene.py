"""Static checks on the differentiable code (autograd's traps).

Plain NumPy applied to a traced value does not fail: it silently builds an object array of boxes,
10^4 times slower. So the kernels may use plain NumPy (imported as ``onp``) only to build host-side
constants: masks, index arrays, RoPE angles, initial values. This test pins that list, and bans
einsum (its VJP drops ``optimize``), ``np.take``/``take_along_axis`` (no VJP) and in-place writes.
"""

import ast
import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2] / "minicp"
KERNELS = sorted((ROOT / "nn" / "attention").glob("*.py")) + [ROOT / "nn" / "ops.py", ROOT / "nn" / "model.py"]
assert len(KERNELS) >= 11, KERNELS
HOST_ONLY = {
    "arange",
    "tril",
    "ones",
    "zeros",
    "asarray",
    "cos",
    "sin",
    "concatenate",
    "stack",
    "clip",
    "ix_",
    "argsort",
    "unique",
    "add",
    "reshape",  # the indexing VJP (ops.py): applied to raw cotangents only
    "float32",
    "float64",
    "int64",
    "integer",
    "ndarray",
    "dtype",
    "random",
    "logical_not",
}
BANNED_XP = {"einsum", "take", "take_along_axis", "matrix_transpose", "vecdot"}


@pytest.mark.parametrize("path", KERNELS, ids=lambda p: p.name)
def test_plain_numpy_only_builds_host_constants(path):
    tree = ast.parse(path.read_text())
    imports = [n for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names if a.name == "numpy"]
    for node in imports:
        assert all(a.asname == "onp" for a in node.names if a.name == "numpy"), f"{path.name}: import numpy as onp"
    assert not any(isinstance(n, ast.ImportFrom) and n.module == "numpy" for n in ast.walk(tree))
    used = {
        n.attr
        for n in ast.walk(tree)
        if isinstance(n, ast.Attribute) and isinstance(n.value, ast.Name) and n.value.id == "onp"
    }
    assert used <= HOST_ONLY, f"{path.name} uses plain numpy for {sorted(used - HOST_ONLY)}"


@pytest.mark.parametrize("path", KERNELS, ids=lambda p: p.name)
def test_no_autograd_traps(path):
    tree = ast.parse(path.read_text())
    xp_calls = {n.attr for n in ast.walk(tree) if isinstance(n, ast.Attribute) and n.attr in BANNED_XP}
    assert not xp_calls, f"{path.name} calls {sorted(xp_calls)}"
    pad_calls = [
        n
        for n in ast.walk(tree)
        if isinstance(n, ast.Call)
        and isinstance(n.func, ast.Attribute)
        and n.func.attr == "pad"
        and not any(k.arg == "mode" for k in n.keywords)
    ]
    assert not pad_calls, f"{path.name}: pad without mode= has no VJP"
