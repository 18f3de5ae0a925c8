"""The README's first Python example runs as printed."""

import pathlib
import re

README = pathlib.Path(__file__).resolve().parent.parent / "README.md"


def test_readme_usage_example_runs():
    block = re.search(r"```python\n(.*?)```", README.read_text(), re.S).group(1)
    namespace = {}
    exec(compile(block, "README.md", "exec"), namespace)
    assert namespace["out"].shape == (1, 8, 4096, 64)
    assert namespace["logits"].shape == (2, 512, 256)
    assert set(namespace["grads"]) == set(namespace["params"])
