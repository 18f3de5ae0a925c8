"""The CuPy-safe VJPs of ``minicp.backend.autograd_cupy``, exercised on the CPU.

``install`` chooses its replacements for values of the registered array type. Installing it with NumPy
posing as CuPy (in a child process: the registration is global to autograd) makes every gradient of the
model, on both engines, go through those replacements, on NumPy arrays, where they can be compared with autograd's own
VJPs in float64. A wrong replacement (a slice off by one in concatenate, a reduction broadcast wrongly,
where's branches swapped) moves some gradient by O(1).
"""

import subprocess
import sys
import textwrap

SCRIPT = textwrap.dedent(
    """
    import numpy as np, scipy.special
    from autograd import grad
    from minicp import ModelConfig, init_params, engines
    from minicp import backend as B
    from minicp.nn import model as M

    def case(arch):
        extra = dict(half_segment=16) if arch == "ecp" else dict(latent=32) if arch == "perceiver_ar" else {}
        cfg = ModelConfig(arch=arch, vocab=64, dim=32, heads=4, layers=2, seq_len=64, **extra)
        return cfg, init_params(cfg, seed=3, dtype="float64"), np.random.default_rng(1).integers(0, 64, (2, 65))

    def grads(arch, engine):
        cfg, params, tokens = case(arch)
        return M.flatten(grad(engines.module(engine).loss)(params, tokens, cfg))

    ARCHS = ["ecp", "transformer", "perceiver_ar", "double", "compressed", "s_split", "longlora"]
    before = {(a, e): grads(a, e) for a in ARCHS for e in engines.ENGINES}
    from minicp.backend import autograd_cupy
    B.xp, B.special = autograd_cupy.install(np, scipy.special)  # NumPy posing as CuPy
    worst = 0.0
    for (a, f), ref in before.items():
        got = grads(a, f)
        for k in ref:
            worst = max(worst, float(np.abs(got[k] - ref[k]).max() / (np.abs(ref[k]).max() + 1e-300)))
    print(worst)
    """
)


def test_cupy_safe_vjps_equal_autograds_own_in_float64():
    out = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    worst = float(out.stdout.strip().splitlines()[-1])
    assert worst < 1e-12, f"largest relative gradient difference {worst:.2e}"
