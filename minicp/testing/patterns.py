"""Pattern arguments: ``segment=`` / ``half_segment=`` alike, validation, and every default resolved."""

import inspect

from minicp.analysis import kernel_pattern
from minicp.config import ARCHITECTURES
from minicp.nn.attention import module as arch_module
from minicp.validate import half_segment_from

__all__ = ["normalize_pattern_args", "resolved_pattern_args"]


def normalize_pattern_args(arch, pattern_args):
    """``pattern_args`` with ECP's paper ``segment`` s turned into the code's ``half_segment`` m = s / 2.

    Both spellings are accepted (they must agree when both are given); other architectures take no
    segment. Raises ValueError for an unknown arch."""
    if arch not in ARCHITECTURES:
        raise ValueError(f"arch must be one of {ARCHITECTURES}, got {arch!r}")
    args = dict(pattern_args)
    if "segment" in args:
        if arch != "ecp":
            raise ValueError(f"segment applies to arch 'ecp' only, not {arch!r}")
        args["half_segment"] = half_segment_from(args.pop("segment"), args.get("half_segment"))
    return args


def resolved_pattern_args(arch, n, heads, pattern_args):
    """Every pattern argument of ``arch`` with defaults filled in (e.g. LongLoRA ``shift``, ECP ``partial``),
    after validating them against the pattern (ValueError naming the argument)."""
    args = normalize_pattern_args(arch, pattern_args)
    kernel_pattern.patterns_checked(arch, n, heads, args)
    mod = arch_module(arch)
    fn = mod.head_patterns if hasattr(mod, "head_patterns") else mod.pattern
    for p in inspect.signature(fn).parameters.values():
        if p.kind is p.KEYWORD_ONLY and p.default is not p.empty:
            args.setdefault(p.name, p.default)
    return args
