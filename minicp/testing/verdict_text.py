"""The words of a verdict: one line per tensor when it passes, and where the errors lie when it fails."""

from minicp.testing.where import percent

__all__ = ["message", "parts_text", "MAX_LISTED"]

MAX_LISTED = 8


def message(v):
    """The message of a ``TensorVerdict``."""
    status = "OK," if v.ok else "out of tolerance:"
    first = (
        f"{v.name}: {status} max err {v.max_err:.3g} = {percent(v.max_share)} of the max budget "
        f"{v.max_budget:.3g}; rms err {v.rms_err:.3g} = {percent(v.rms_share)} of the rms budget "
        f"{v.rms_budget:.3g}"
    )
    if v.par_budget:
        first += f"; row-scale err {v.par_err:.3g} = {percent(v.par_share)} of {v.par_budget:.3g}"
    first += f" (floors: plain {v.dtype} max {v.floor_max:.3g}, production rms {v.floor_rms:.3g})"
    lines = [first]
    if v.ok:
        return "\n".join(lines + [f"  {note}" for note in v.inconclusive])
    lines.append(
        f"  {percent(v.bad_fraction)} of elements over the max budget; worst {tuple(v.worst_index)}: "
        f"expected {v.worst_expected:.8g}, actual {v.worst_actual:.8g}"
    )
    if v.nonfinite_bad:
        lines.append(f"  {v.nonfinite_bad} element(s) where the reference is +-inf or NaN and actual differs")
    lines.append(f"  rows over budget: {v.bad_rows}")
    if v.bad_ranges:
        lines.append(
            "  bad elements lie in "
            + " x ".join(f"[{lo}..{hi}]" for lo, hi in v.bad_ranges)
            + " (index range per axis)"
        )
    lines.append("  per head: " + parts_text(v.per_head))
    if v.per_block:
        lines.append("  per block: " + parts_text(v.per_block))
    return "\n".join(lines)


def parts_text(parts):
    """'k of n over budget: <where> max x% rms y% bad z%, ...' (or the largest, when all are within)."""
    bad = [p for p in parts if p["rms_share"] > 1 or p["max_share"] > 1]
    shown = (bad or sorted(parts, key=lambda p: -max(p["rms_share"], p["max_share"])))[:MAX_LISTED]
    text = ", ".join(
        f"{p['where']} max {percent(p['max_share'])} rms {percent(p['rms_share'])}"
        + (f" bad {percent(p['bad_fraction'])}" if "bad_fraction" in p else "")
        for p in shown
    )
    more = len(bad) - len(shown) if bad else 0
    return (
        (f"{len(bad)} of {len(parts)} over budget: " if bad else "all within budget, largest: ")
        + text
        + (f", ... {more} more" if more > 0 else "")
    )
