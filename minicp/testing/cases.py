"""Edge cases of every architecture, for ``pytest.mark.parametrize`` (or the plugin's ``minicp_cases`` marker).

    @pytest.mark.parametrize("case", mt.cases("ecp", dtypes=("float32", "bfloat16")), ids=str)
    def test_my_kernel(case):
        mt.assert_matches_reference(my_kernel, **case.kwargs)

Each ``Case`` covers one edge: for ECP one half segment (n = m), two half segments, a partial last block,
an odd head dim; for LongLoRA n = g, two groups, both shift variants; for PerceiverAR latent 1, latent n,
the second layer; RoPE (interleaved and halves) where ``rope=True``.
"""

from dataclasses import dataclass, field

from minicp.config import ARCHITECTURES
from minicp.testing.dtypes import check_dtype
from minicp.testing.patterns import resolved_pattern_args
from minicp.validate import boolean, positive_int

__all__ = ["Case", "cases", "EDGES"]

# arch -> [(label, seq_len, head_dim, pattern_args)]
EDGES = {
    "transformer": [("n=1", 1, 8, {}), ("odd head dim", 17, 7, {}), ("n=48", 48, 16, {})],
    "ecp": [
        ("one half segment (n = m)", 8, 8, {"half_segment": 8}),
        ("two half segments", 16, 8, {"half_segment": 8}),
        ("four half segments", 32, 16, {"half_segment": 8}),
        ("partial last block", 21, 8, {"half_segment": 8, "partial": True}),
        ("odd head dim", 24, 5, {"half_segment": 6}),
    ],
    "perceiver_ar": [
        ("latent 1", 12, 8, {"latent": 1}),
        ("history 1 (latent n - 1)", 12, 8, {"latent": 11}),
        ("latent < n", 20, 8, {"latent": 7}),
        ("layer 1", 9, 8, {"latent": 9, "layer": 1}),
        ("odd head dim", 15, 5, {"latent": 6}),
    ],
    "double": [
        ("latent 1", 12, 8, {"latent": 1}),
        ("latent < n", 20, 8, {"latent": 7}),
        ("odd head dim", 15, 5, {"latent": 6}),
    ],
    "s_split": [
        ("latent 1", 13, 8, {"latent": 1, "split": 4}),
        ("split 1", 20, 8, {"latent": 8, "split": 1}),
        ("odd head dim", 18, 5, {"latent": 6, "split": 4}),
    ],
    "compressed": [
        ("latent 1", 13, 8, {"latent": 1, "compressed": 4}),
        ("latent < n", 24, 8, {"latent": 8, "compressed": 4}),
        ("layer 1", 12, 8, {"latent": 8, "compressed": 4, "layer": 1}),
    ],
    "longlora": [
        ("n = g", 16, 8, {"group": 16}),
        ("two groups varlen", 32, 8, {"group": 16, "shift": "varlen"}),
        ("two groups roll", 32, 8, {"group": 16, "shift": "roll"}),
        ("odd head dim", 24, 5, {"group": 8}),
    ],
}


@dataclass(frozen=True)
class Case:
    """One edge case: ``kwargs`` go straight into ``assert_matches_reference(fn, **kwargs)``."""

    arch: str
    label: str
    kwargs: dict = field(hash=False)

    @property
    def pattern_args(self):
        """The case's pattern arguments (``half_segment`` for ECP, ``latent``, ``group`` ...): what a kernel of
        the architecture needs besides q, k, v."""
        fixed = {"arch", "seq_len", "heads", "head_dim", "batch", "dtype", "seed", "check_grads", "rope"}
        return {key: value for key, value in self.kwargs.items() if key not in fixed}

    def __str__(self):
        k = self.kwargs
        rope = f"-rope-{k['rope']}" if k.get("rope") else ""
        return f"{self.arch}-{self.label.replace(' ', '_')}-{k['dtype']}{rope}"


def cases(arch=None, *, dtypes=("float32",), heads=2, batch=1, seeds=(0,), rope=False, check_grads=True):
    """Edge cases of ``arch`` (None: every architecture) as ``Case`` objects, validated.

    ``rope``: also yield each case with RoPE "interleaved" and "halves" (halves: even head dims only)."""
    archs = ARCHITECTURES if arch is None else (arch,)
    for a in archs:
        if a not in ARCHITECTURES:
            raise ValueError(f"arch must be one of {ARCHITECTURES} or None, got {a!r}")
    dtypes = tuple(check_dtype(d, "dtypes") for d in dtypes)
    heads, batch = positive_int("heads", heads), positive_int("batch", batch)
    rope, check_grads = boolean("rope", rope), boolean("check_grads", check_grads)
    out = []
    for a in archs:
        for label, n, d, pa in EDGES[a]:
            resolved_pattern_args(a, n, heads, pa)  # every edge is a valid case
            styles = [None] + (
                [s for s in ("interleaved", "halves") if s == "interleaved" or d % 2 == 0] if rope else []
            )
            for dtype in dtypes:
                for seed in seeds:
                    for style in styles:
                        kw = dict(
                            arch=a,
                            seq_len=n,
                            heads=heads,
                            head_dim=d,
                            batch=batch,
                            dtype=dtype,
                            seed=seed,
                            check_grads=check_grads,
                            rope=style,
                            **pa,
                        )
                        out.append(Case(a, label + (f" seed {seed}" if len(seeds) > 1 else ""), kw))
    return out
