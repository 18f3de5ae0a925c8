"""A readable report of the attention steps of any configuration (what ``minicp steps`` prints)."""

from minicp.analysis.counts import count_attention_steps, layer_counts, resolve
from minicp.analysis.tables import fmt_int, grid, percent_of


def _runs_of_equal_layers(comp, unm, layers):
    """[(first, last)] runs of consecutive layers with the same (computed, unmasked) counts; ``comp`` and
    ``unm`` are (layer 0, every later layer), so any number of layers takes constant time."""
    if layers == 1:
        return [(0, 0)]
    if (comp[0], unm[0]) == (comp[1], unm[1]):
        return [(0, layers - 1)]
    return [(0, 0), (1, layers - 1)]


def format_steps(arch_or_config, **kwargs):
    """Printable per-layer breakdown, totals and percent of full attention for one configuration.

    Takes the same arguments as ``count_attention_steps`` (except ``count`` and ``per_layer``).
    """
    for bad in ("count", "per_layer"):
        if bad in kwargs:
            raise ValueError(f"format_steps shows both counts for every layer; do not pass {bad}")
    z = resolve(arch_or_config, **kwargs)
    count_attention_steps(arch_or_config, **kwargs)  # the same argument checks and messages
    comp, unm = layer_counts(z, "computed"), layer_counts(z, "unmasked")  # (layer 0, each later layer)
    full_layer = z.h * z.n * z.n
    full = z.l * full_layer
    causal = z.l * z.h * (z.n * (z.n + 1) // 2)
    rows = [("layers", "computed / layer", "unmasked / layer", "% of full layer")]
    for a, b in _runs_of_equal_layers(comp, unm, z.l):
        c, u = comp[min(a, 1)], unm[min(a, 1)]
        rows.append((f"{a}" if a == b else f"{a}-{b}", fmt_int(c), fmt_int(u), percent_of(c, full_layer)))
    lines = [f"Attention steps for {z.describe()}", ""]
    lines += grid(rows, right={1, 2, 3}, strip=False)
    total_c, total_u = comp[0] + (z.l - 1) * comp[1], unm[0] + (z.l - 1) * unm[1]
    lines += [
        "",
        f"total computed: {fmt_int(total_c)} ({percent_of(total_c, full)} of full attention l·h·n² = {fmt_int(full)})",
        f"total unmasked: {fmt_int(total_u)} ({percent_of(total_u, causal)} of causal full l·h·n(n+1)/2 = {fmt_int(causal)})",
    ]
    return "\n".join(lines)
