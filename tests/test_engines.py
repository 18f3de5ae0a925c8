"""The one switch between the reference and the fast engine (``minicp.engines``), and what ``import minicp``
may and may not do.

Which engine ran is observed, not assumed: the reference's ``ops.attend`` records every score matrix it builds
(``ops.record_scores``), and the fast engine's ECP sub-layer builds none through it. Head-level attention is
traced line by line: it must execute the explicit lines of ``minicp/nn/attention/ecp.py``, whatever the engine.
"""

import inspect
import subprocess
import sys
import threading

import numpy as np
import pytest

import minicp
from minicp.nn import ops
from minicp.nn.attention import ecp

CFG = minicp.ModelConfig(arch="ecp", vocab=16, dim=16, heads=2, layers=1, seq_len=16, half_segment=4)
PARAMS = minicp.init_params(CFG, seed=0, dtype="float64")
TOKENS = np.random.default_rng(0).integers(0, 16, (1, 17))


def reference_ran(run):
    """True when ``run()`` built score matrices through the reference's ``ops.attend``."""
    with ops.record_scores() as log:
        run()
    return bool(log)


def test_model_functions_default_to_the_reference_and_loops_to_the_fast_engine():
    assert reference_ran(lambda: minicp.forward(PARAMS, TOKENS[:, :-1], CFG))
    assert reference_ran(lambda: minicp.value_and_grad(PARAMS, TOKENS, CFG))
    assert not reference_ran(lambda: minicp.forward(PARAMS, TOKENS[:, :-1], CFG, engine="fast"))
    assert not reference_ran(lambda: minicp.perplexity(PARAMS, np.arange(40) % 16, CFG))
    assert not reference_ran(lambda: minicp.generate(PARAMS, np.arange(16), CFG, 2))  # windows of n tokens
    assert reference_ran(lambda: minicp.perplexity(PARAMS, np.arange(40) % 16, CFG, engine="reference"))
    assert reference_ran(lambda: minicp.generate(PARAMS, np.arange(16), CFG, 2, engine="reference"))


def test_a_block_sets_the_engine_of_calls_that_name_none():
    with minicp.engine("fast"):
        assert not reference_ran(lambda: minicp.loss(PARAMS, TOKENS, CFG))
        assert reference_ran(lambda: minicp.loss(PARAMS, TOKENS, CFG, engine="reference"))  # the call wins
        with minicp.engine("reference"):
            assert reference_ran(lambda: minicp.perplexity(PARAMS, np.arange(40) % 16, CFG))
        assert minicp.which_engine(CFG).engine == "fast"
    assert minicp.which_engine(CFG).engine == "reference"  # restored


def test_a_block_does_not_reach_other_threads():
    seen = []
    with minicp.engine("fast"):
        worker = threading.Thread(target=lambda: seen.append(minicp.which_engine(CFG).engine))
        worker.start()
        worker.join()
    assert seen == ["reference"]


def test_which_engine_says_what_runs_and_why():
    choice = minicp.which_engine(CFG)
    assert (choice.engine, choice.reason) == ("reference", "the default for forward, loss and value_and_grad")
    loop = minicp.which_engine(CFG, purpose="loop")
    assert loop.engine == "fast" and "ECP sub-layer" in loop.parts["attention"]
    assert "engine: fast (the default for train, perplexity and generate)" in str(loop)
    assert "asked for" in minicp.which_engine(CFG, "fast").reason
    double = minicp.ModelConfig(arch="double", vocab=16, dim=16, heads=2, layers=1, seq_len=16, latent=8)
    other = minicp.which_engine(double, "fast")
    assert "minicp/nn/attention/double.py" in other.parts["attention"]
    separate = minicp.which_engine(CFG.replace(separate_kv=True), "fast")
    assert "minicp/nn/attention/ecp.py" in separate.parts["attention"]


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda: minicp.forward(PARAMS, TOKENS[:, :-1], CFG, engine="turbo"), "engine 'turbo' is not one of"),
        (lambda: minicp.engine("turbo").__enter__(), "engine 'turbo' is not one of"),
        (lambda: minicp.which_engine(CFG, purpose="sometimes"), "purpose 'sometimes' is not one of"),
        (lambda: minicp.which_engine("ecp"), "config must be a minicp.ModelConfig"),
    ],
)
def test_bad_engine_requests_are_named(call, message):
    with pytest.raises(ValueError, match=message):
        call()


def _executed_lines(run, function):
    """Line numbers of ``function``'s source file executed inside ``function`` while ``run()`` runs."""
    code, lines = function.__code__, set()

    def tracer(frame, event, arg):
        if frame.f_code is code:
            if event == "line":
                lines.add(frame.f_lineno)
            return tracer
        return None

    sys.settrace(tracer)
    try:
        run()
    finally:
        sys.settrace(None)
    return lines


def _line_of(function, text):
    source, start = inspect.getsourcelines(function)
    return start + next(i for i, line in enumerate(source) if text in line)


@pytest.mark.parametrize("engine", ["reference", "fast"])
def test_head_level_attention_runs_the_readable_file(engine):
    q, k = np.random.default_rng(1).standard_normal((2, 1, 2, 16, 8))
    with minicp.engine(engine):
        lines = _executed_lines(lambda: minicp.attention("ecp", q, k, k, half_segment=4), ecp.attention)
    for text in (
        "Q = xp.reshape(",
        "K_pair = xp.concatenate(",
        "V_pair = xp.concatenate(",
        "O_first = ops.attend(",
        "O_pairs = ops.attend(",
    ):
        assert _line_of(ecp.attention, text) in lines, text


IMPORT_CHECK = """
import sys
import autograd.core
before = dict(autograd.core.primitive_vjps)
import minicp
after = autograd.core.primitive_vjps
changed = sorted(str(k) for k in before if after.get(k) is not before[k])  # autograd's own rules
added = [getattr(k, "fun", k) for k in set(after) - set(before)]
foreign = sorted(str(f) for f in added if not f.__module__.startswith("minicp."))  # only minicp's own primitives
heavy = sorted(m for m in ("autograd.scipy", "scipy", "minicp.testing", "minicp.golden", "torch", "matplotlib") if m in sys.modules)
print(changed, foreign, len(added) > 0, heavy)
"""


def test_import_changes_no_autograd_rule_and_loads_nothing_heavy():
    """autograd's own VJPs stay as they were; the only additions are the rules of minicp's own primitives."""
    out = subprocess.run([sys.executable, "-c", IMPORT_CHECK], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[] [] True []"


def test_testing_and_golden_load_when_first_used():
    out = subprocess.run(
        [
            sys.executable,
            "-c",
            "import minicp, sys; minicp.testing.assert_close; print('minicp.testing' in sys.modules)",
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    assert out.stdout.strip() == "True"
    with pytest.raises(AttributeError, match="no attribute 'nonsense'"):
        minicp.nonsense  # noqa: B018
