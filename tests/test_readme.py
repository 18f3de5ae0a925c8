"""The README's first Python example runs as printed, and its sample failure message is what the check prints."""

import pathlib
import re

import numpy as np
import pytest

import minicp.testing as mt
from minicp.analysis import kernel_pattern

README = pathlib.Path(__file__).resolve().parent.parent / "README.md"


def test_readme_usage_example_runs():
    block = re.search(r"```python\n(.*?)```", README.read_text(), re.S).group(1)
    namespace = {}
    exec(compile(block, "README.md", "exec"), namespace)
    assert namespace["out"].shape == (1, 8, 4096, 64)
    assert namespace["logits"].shape == (2, 512, 256)
    assert set(namespace["grads"]) == set(namespace["params"])


def off_by_one_ecp(q, k, v, m=64):
    """ECP by a dense mask whose previous half segment starts one key late (float32 out)."""
    n, d = q.shape[2], q.shape[3]
    mask = kernel_pattern.dense_mask("ecp", n, 1, half_segment=m)[0].copy()
    for t in range(1, n // m):
        mask[t * m : (t + 1) * m, (t - 1) * m] = False
    s = np.where(mask, (q * d**-0.5) @ np.swapaxes(k, -1, -2), -np.inf)
    p = np.exp(s - s.max(-1, keepdims=True))
    return ((p / p.sum(-1, keepdims=True)) @ v).astype(np.float32)


def test_readme_failure_message_is_what_the_check_prints():
    text = README.read_text()
    shown = re.search(r"```text\n(out: out of tolerance.*?)\n```", text, re.S).group(1)
    with pytest.raises(mt.MismatchError) as info:
        mt.assert_matches_reference(
            off_by_one_ecp, "ecp", seq_len=512, heads=4, head_dim=32, half_segment=64, dtype="float32"
        )
    number = re.compile(r"[-+]?\d+(?:\.\d+)?(?:e[-+]?\d+)?")
    got = str(info.value)
    assert number.split(got) == number.split(shown)  # the words, positions and layout exactly
    for a, b in zip(number.finditer(got), number.finditer(shown)):
        # errors, values and indices to 1e-3; what the float32 floor sets (budgets, floors and shares of
        # budget) moves with the BLAS's summation order: 7% between an AMD EPYC and an Intel Xeon
        of_floor = got[a.end() : a.end() + 1] == "%" or re.search(
            r"(budget|float32 max|production rms) $", got[: a.start()]
        )
        rel = 0.2 if of_floor else 1e-3
        assert float(a.group()) == pytest.approx(float(b.group()), rel=rel), (a.group(), b.group())
