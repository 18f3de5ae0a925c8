"""A readable report of the attention steps of any configuration (what ``minicp steps`` prints)."""

from minicp.analysis.counts import count_attention_steps, resolve
from minicp.analysis.tables import _fmt_int, _grid, _pct

__all__ = ["format_steps"]


def _runs_of_equal_layers(comp, unm):
    """[(first, last)] runs of consecutive layers with the same (computed, unmasked) counts."""
    runs, start = [], 0
    for k in range(1, len(comp) + 1):
        if k == len(comp) or (comp[k], unm[k]) != (comp[start], unm[start]):
            runs.append((start, k - 1))
            start = k
    return runs


def format_steps(arch_or_config, **kwargs):
    """Printable per-layer breakdown, totals and percent of full attention for one configuration.

    Takes the same arguments as ``count_attention_steps`` (except ``count`` and ``per_layer``).
    """
    for bad in ("count", "per_layer"):
        if bad in kwargs:
            raise ValueError(f"format_steps shows both counts for every layer; do not pass {bad}")
    z = resolve(arch_or_config, **kwargs)
    comp = count_attention_steps(arch_or_config, per_layer=True, **kwargs)
    unm = count_attention_steps(arch_or_config, count="unmasked", per_layer=True, **kwargs)
    full_layer = z.h * z.n * z.n
    full = z.l * full_layer
    causal = z.l * z.h * (z.n * (z.n + 1) // 2)
    rows = [("layers", "computed / layer", "unmasked / layer", "% of full layer")]
    for a, b in _runs_of_equal_layers(comp, unm):
        rows.append((f"{a}" if a == b else f"{a}-{b}", _fmt_int(comp[a]), _fmt_int(unm[a]), _pct(comp[a], full_layer)))
    lines = [f"Attention steps for {z.describe()}", ""]
    lines += _grid(rows, right={1, 2, 3}, strip=False)
    total_c, total_u = sum(comp), sum(unm)
    lines += [
        "",
        f"total computed: {_fmt_int(total_c)} ({_pct(total_c, full)} of full attention l·h·n² = {_fmt_int(full)})",
        f"total unmasked: {_fmt_int(total_u)} ({_pct(total_u, causal)} of causal full l·h·n(n+1)/2 = "
        f"{_fmt_int(causal)})",
    ]
    return "\n".join(lines)
