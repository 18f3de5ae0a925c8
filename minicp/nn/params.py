"""Parameters checked against the config: names, shapes, dtype and finiteness, in one pass.

``forward`` (and so ``loss``, ``generate``, ``train``) calls ``check_params`` first, so a params dict
of another architecture, dim, vocab or layer count, integer or half-precision weights, or a NaN that
crept in, is a clear ValueError / TypeError naming the first mismatching entries by their official
state_dict names, never a KeyError deep inside a layer or a silently wrong result (docs/inputs.md).

Accepted: the nested dict ``init_params`` returns (official names, see ``minicp.nn.model``), with
float32 or float64 arrays (NumPy, CuPy or autograd boxes of them) of exactly ``param_spec(cfg)``'s
shapes, all finite, plus the RoPE buffers ``layers.i.0.fn.pos_emb.freqs`` the official loader keeps.
"""

import numpy as onp
from autograd.tracer import getval

from minicp import backend as B
from minicp.validate import finite_array

DTYPES = ("float32", "float64")
SHOWN = 5  # mismatches listed per kind


def _walk(node, prefix, out):
    """Nested dicts / lists -> {dotted name: leaf}."""
    node = getval(node)
    if isinstance(node, dict):
        items = node.items()
    elif isinstance(node, (list, tuple)):
        items = enumerate(node)
    else:
        out[prefix[:-1]] = node
        return out
    for key, value in items:
        _walk(value, f"{prefix}{key}.", out)
    return out


def flat_leaves(params):
    """{official name: array} of a nested params dict (TypeError when ``params`` is not a dict)."""
    params = getval(params)  # autograd's DictBox / ListBox while differentiating
    if not isinstance(params, dict):
        raise TypeError(f"params must be the nested dict init_params returns, got {type(params).__name__}")
    return _walk(params, "", {})


def _listed(kind, names):
    return f"{kind} {len(names)}: {', '.join(names[:SHOWN])}{' ...' if len(names) > SHOWN else ''}"


def is_rope_buffer(name, layers):
    """True for ``layers.i.0.fn.pos_emb.freqs`` with i < layers: the RoPE buffer official weights carry."""
    parts = name.split(".")
    return (
        len(parts) == 6
        and parts[0] == "layers"
        and parts[1].isdigit()
        and int(parts[1]) < layers
        and parts[2:] == ["0", "fn", "pos_emb", "freqs"]
    )


def mismatches(flat, spec, layers):
    """Sentences listing the missing, unexpected and mis-shaped or mis-typed entries (empty when all fit)."""
    missing = [k for k in spec if k not in flat]
    unexpected = [k for k in flat if k not in spec and not is_rope_buffer(k, layers)]
    shapes, dtypes = [], []
    for name, shape in spec.items():
        if name not in flat:
            continue
        value = getval(flat[name])
        got = getattr(value, "shape", None)
        if got is None or tuple(got) != tuple(shape):
            shapes.append(f"{name} {tuple(got) if got is not None else type(value).__name__} (expected {shape})")
        elif getattr(getattr(value, "dtype", None), "name", None) not in DTYPES:
            dtypes.append(f"{name} {getattr(value, 'dtype', type(value).__name__)}")
    out = []
    if missing:
        out.append(_listed("missing", missing))
    if unexpected:
        out.append(_listed("unexpected", unexpected))
    if shapes:
        out.append(_listed("wrong shape", shapes))
    if dtypes:
        out.append(_listed(f"dtype not in {DTYPES}", dtypes))
    return out


def check_params(params, config, param_spec, *, defer_finite=False):
    """Raise unless ``params`` fit ``config`` (``param_spec``: the model's name -> shape function) and are all
    finite. The layer count is compared first, so a config with absurdly many layers fails at once.

    ``defer_finite=True`` (used by ``forward``): returns ``(flat, finish)``; ``finish()`` raises the same
    error, later. On the GPU ``finish()`` queues the test behind the work queued so far and reads it:
    reading it at once would hold the host until the GPU has answered, and even queuing it first keeps the
    GPU idle while the host prepares it, before the first real kernel of the forward pass. On the CPU the
    test is made at once and ``finish`` does nothing.
    """
    flat_layers = getval(params.get("layers")) if isinstance(getval(params), dict) else None
    if isinstance(flat_layers, (list, tuple)) and len(flat_layers) != config.layers:
        raise ValueError(f"params have {len(flat_layers)} layers but the config has layers = {config.layers}")
    spec = param_spec(config)
    flat = flat_leaves(params)
    problems = mismatches(flat, spec, config.layers)
    if problems:
        raise ValueError(
            f"params do not match the config ({config.arch}, vocab {config.vocab}, dim {config.dim}, layers "
            f"{config.layers}): " + " | ".join(problems)
        )
    arrays = [getval(flat[name]) for name in spec]
    if defer_finite and B.name == "cupy":
        return flat, lambda: B.all_finite(arrays) or _name_non_finite(flat, spec)
    if not B.all_finite(arrays):
        _name_non_finite(flat, spec)
    return (flat, lambda: None) if defer_finite else flat


def _name_non_finite(flat, spec):
    """Raise the ValueError that names the first parameter holding a NaN or an inf."""
    for name in spec:
        finite_array(f"params[{name!r}]", getval(flat[name]), B.raw)


def host_array(name, value):
    """``value`` as a host NumPy array (NumPy, CuPy, torch, lists ...); a TypeError naming ``name`` when no
    conversion works (a string, an object)."""
    try:
        return onp.asarray(B.to_numpy(value))
    except (ValueError, TypeError) as e:
        raise TypeError(f"{name} must be an array of token ids, got {type(value).__name__} ({e})") from None
