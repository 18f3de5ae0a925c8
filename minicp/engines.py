"""The one switch: which engine computes a model, the reference (``minicp.nn``) or the fast engine (``minicp.fast``).

    minicp.forward(params, tokens, cfg, engine="fast")     for one call
    with minicp.engine("fast"): ...                        for the calls in a block that name no engine
    print(minicp.which_engine(cfg))                        which engine will run, and why

Defaults, used when neither the call nor an enclosing ``engine`` block names one:

* ``"reference"`` for ``forward``, ``loss`` and ``value_and_grad``: the functions a reader steps through, so
  what they compute is exactly the code of ``minicp/nn`` (autograd's gradients, every order).
* ``"fast"`` for ``train``, ``perplexity`` and ``generate`` (and the ``minicp train / eval / generate``
  commands): long loops, where the fast engine is two to three times quicker on the CPU and what the GPU
  benchmarks measure. Each says which engine it uses (``which_engine``) when it starts.

Head-level ``minicp.attention`` always runs the readable file of its architecture, and there is no global
setting: an engine is named per call or per block, never by a module variable.

The fast engine computes the same functions; its results differ from the reference's only in the order of
summation (products split over threads, partial sums added per row range, one kernel for a sequence of
passes) and, in float32, GELU, which comes from a fit within 2.3 float32 units of the exact function where the
reference's ``(1 + erf) / 2`` loses the negative tail. It gives first-order gradients only. Tests hold every
route to the reference: float64 values and gradients to 1e-14 relative, float32 within float32 rounding
(tests/fast/).
"""

import contextlib
import contextvars
from collections import namedtuple

from minicp.fast import model as fast_model
from minicp.nn import budget
from minicp.nn import model as reference_model
from minicp.validate import choice

ENGINES = ("reference", "fast")
DEFAULTS = {"model": "reference", "loop": "fast"}  # per purpose: model functions, and the long loops
MODULES = {"reference": reference_model, "fast": fast_model}

_scoped = contextvars.ContextVar("minicp_engine", default=None)


@contextlib.contextmanager
def engine(name):
    """Run the calls of a block that name no engine on ``name`` ("reference" or "fast")."""
    token = _scoped.set(choice("engine", name, ENGINES))
    try:
        yield name
    finally:
        _scoped.reset(token)


def resolve(engine=None, purpose="model"):
    """(engine name, why): ``engine`` when given, else the enclosing ``engine`` block's, else the purpose's default."""
    purpose = choice("purpose", purpose, tuple(DEFAULTS))
    if engine is not None:
        return choice("engine", engine, ENGINES), "asked for (engine=...)"
    scoped = _scoped.get()
    if scoped is not None:
        return scoped, "set by an enclosing minicp.engine(...) block"
    what = "forward, loss and value_and_grad" if purpose == "model" else "train, perplexity and generate"
    return DEFAULTS[purpose], f"the default for {what}"


class EngineChoice(namedtuple("EngineChoice", "engine reason parts")):
    """Which engine runs (``engine``), why (``reason``) and how it computes each part of the model (``parts``)."""

    def __str__(self):
        lines = [f"engine: {self.engine} ({self.reason})"]
        lines += [f"  {part}: {how}" for part, how in self.parts.items()]
        return "\n".join(lines)


def which_engine(config, engine=None, *, purpose="model", seq_len=None):
    """Which engine a call with ``engine`` (None: the block's or the default) runs for ``config``, and why.

    ``purpose``: "model" (forward, loss, value_and_grad) or "loop" (train, perplexity, generate);
    ``seq_len``: the input length, default the config's."""
    reference_model.check_config(config)
    name, reason = resolve(engine, purpose)
    if name == "reference":
        parts = {"everything": "the readable code of minicp/nn (autograd's gradients)"}
    else:
        parts = fast_model.plan(config, seq_len)
    return EngineChoice(name, reason, parts)


def module(engine=None, purpose="model"):
    """The model module (``minicp.nn.model`` or ``minicp.fast.model``) of the resolved engine."""
    return MODULES[resolve(engine, purpose)[0]]


# The public model functions. Both engines check the request's size before anything is allocated
# (docs/inputs.md, "Bounded work"); these add what a public entry point must: no NaN or inf in what they
# return (``minicp.validate.finite_result``: the tensor, the first bad index, the likely overflow).


def forward(params, tokens, config, *, engine=None, official_broadcast=False):
    """Logits (b, rows, V) for integer tokens (b, t): ``minicp.nn.model.forward``, computed by ``engine``
    ("reference" or "fast"; None: an enclosing ``minicp.engine`` block's, else "reference")."""
    logits = module(engine).forward(params, tokens, config, official_broadcast=official_broadcast)
    return budget.finite_output("logits", logits)


def loss(params, tokens, config, *, engine=None, official_broadcast=False):
    """The official wrapper's loss for tokens (b, t + 1): ``minicp.nn.model.loss``, computed by ``engine``."""
    value = module(engine).loss(params, tokens, config, official_broadcast=official_broadcast)
    return budget.finite_output("loss", value)


def value_and_grad(params, tokens, config, *, engine=None, official_broadcast=False):
    """(loss, its gradient nested like ``params``), computed by ``engine`` (see ``forward``)."""
    value, grads = module(engine).value_and_grad(params, tokens, config, official_broadcast=official_broadcast)
    budget.finite_gradients(value, reference_model.flatten(grads))
    return value, grads
