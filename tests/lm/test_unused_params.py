"""Parameters the forward pass never reads: declared per architecture and layer (``unused_params``), equal to
the parameters whose gradient PyTorch leaves at None, and skipped by AdamW exactly as torch.optim.AdamW
skips them (no decay, no moments), so training equals the official loop to float64 rounding.

Oracles: the PyTorch twin (``.grad is None`` after a backward pass, torch's own AdamW, clipping and the
official learning-rate walk), and, for every architecture including LongLoRA (which has no twin), the
loss itself: changing an unused parameter must leave it bit for bit unchanged, changing any other must not.
"""

import numpy as np
import pytest

from minicp import ModelConfig, flatten, init_params, load_official_state_dict, loss, unflatten
from minicp.config import ARCHITECTURES
from minicp.lm.optim import adamw_init, adamw_step
from minicp.lm.train import TrainConfig, train
from minicp.nn.model import param_spec, unused_params

CONFIGS = {
    "transformer": dict(seq_len=16),
    "perceiver_ar": dict(seq_len=16, latent=6),
    "double": dict(seq_len=16, latent=6),
    "compressed": dict(seq_len=16, latent=6, compressed=4),
    "s_split": dict(seq_len=16, latent=8, split=4),
    "ecp": dict(seq_len=16, half_segment=4),
    "longlora": dict(seq_len=16, group=8),
}
EXPECTED = {  # what the twin's .grad says for 3 layers (checked below); spelled out for the reader
    "transformer": ["norm"] * 3,
    "ecp": ["norm"] * 3,
    "longlora": ["norm"] * 3,
    "compressed": [None, "projection_hist", "projection_hist"],
}


@pytest.fixture
def torch_one_thread():
    """torch on one thread: its OpenMP workers, spinning beside minicp's after a run, made these tiny
    backward passes take from 0.1 s to 15 s on two cores."""
    torch = pytest.importorskip("torch")
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield torch
    torch.set_num_threads(before)


def config(arch, **extra):
    return ModelConfig(arch=arch, vocab=13, dim=8, heads=2, layers=3, **CONFIGS[arch], **extra)


def test_declared_lists_per_architecture():
    for arch in ARCHITECTURES:
        names = set(unused_params(config(arch)))
        expected = {
            f"layers.{i}.0.fn.{module}.{leaf}"
            for i, module in enumerate(EXPECTED.get(arch, [None] * 3))
            if module is not None
            for leaf in ("weight", "bias")
        }
        assert names == expected, arch
        assert names <= set(param_spec(config(arch)))


@pytest.mark.parametrize("arch", ARCHITECTURES)
@pytest.mark.parametrize(
    "options", [{}, {"kv_layernorm": True}, {"kv_layernorm": False}], ids=["official", "ln", "no-ln"]
)
def test_unused_parameters_do_not_change_the_loss_and_the_others_do(arch, options):
    cfg = config(arch, **options)
    rng = np.random.default_rng(0)
    tokens = rng.integers(0, 13, (2, cfg.seq_len + 1))
    flat = flatten(init_params(cfg, dtype="float64"))
    base = float(loss(unflatten(flat), tokens, cfg))
    unused = set(unused_params(cfg))
    for name, value in flat.items():
        changed = dict(flat, **{name: value + rng.standard_normal(value.shape)})
        moved = float(loss(unflatten(changed), tokens, cfg))
        if name in unused:
            assert moved == base, name  # bit for bit: never read
        else:
            assert moved != base, name  # read: a random change shows


def test_unused_parameters_have_no_gradient_in_torch(torch_one_thread):
    torch = torch_one_thread
    from minicp import torch_twin

    for arch in torch_twin.ARCHITECTURES:
        cfg = config(arch)
        sizes = {k: getattr(cfg, k) for k in ("latent", "compressed", "split", "half_segment")}
        twin = torch_twin.build(arch, vocab=13, dim=8, heads=2, layers=3, seq_len=16, dtype=torch.float64, **sizes)
        tokens = torch.from_numpy(np.random.default_rng(1).integers(0, 13, (2, 17)))
        torch_twin.wrapper_loss(twin, tokens, cfg.latent).backward()
        none = {name for name, p in twin.named_parameters() if p.grad is None}
        assert none == set(unused_params(cfg)), arch


def test_adamw_skips_parameters_without_gradient():
    p = {"a": np.ones(3), "b.weight": np.ones((2, 2)), "c.weight": np.ones((2, 2))}
    state = adamw_init(p)
    grads = {"a": np.ones(3), "b.weight": None}  # c.weight absent, b.weight None: both skipped
    adamw_step(p, grads, state, lr=0.1, weight_decay=0.5)
    assert np.all(p["b.weight"] == 1) and np.all(p["c.weight"] == 1) and np.all(p["a"] != 1)
    assert not state["m"]["b.weight"].any() and not state["v"]["c.weight"].any()


def _official_groups(torch, twin):
    """configure_optimizers of the official main: weights of nn.Linear decay, everything else does not."""
    decay, no_decay = [], []
    for module_name, module in twin.named_modules():
        for leaf, p in module.named_parameters(recurse=False):
            full = f"{module_name}.{leaf}" if module_name else leaf
            (decay if leaf == "weight" and isinstance(module, torch.nn.Linear) else no_decay).append((full, p))
    return [
        {"params": [p for _, p in sorted(decay)], "weight_decay": 0.1},
        {"params": [p for _, p in sorted(no_decay)], "weight_decay": 0.0},
    ]


def test_training_equals_torch_adamw_on_a_compressed_model(torch_one_thread):
    """minicp.train against the official loop run in torch on the twin: float64, 12 steps of two summed
    micro-batches, clipping active, the learning rates dropped twice by the official walk."""
    torch = torch_one_thread
    from minicp import torch_twin

    cfg = config("compressed")
    twin = torch_twin.build(
        "compressed", vocab=13, dim=8, heads=2, layers=3, seq_len=16, latent=6, compressed=4, dtype=torch.float64
    )
    start = load_official_state_dict(twin.state_dict(), cfg, dtype="float64")
    drawn = []

    def sample(rng, batch):
        rows = rng.integers(0, 13, (batch, cfg.seq_len + 1))
        drawn.append(rows)
        return rows

    tcfg = TrainConfig(steps=12, batch=3, grad_accum=2, lr=3e-2, clip=0.5, lr_halve_every=4, seed=5)
    result = train(cfg, sample, tcfg, params=start, progress=False)

    opt = torch.optim.AdamW(_official_groups(torch, twin), lr=tcfg.lr, betas=tcfg.betas, eps=tcfg.eps)
    args_lr, clipped = tcfg.lr, 0
    for i in range(tcfg.steps):
        for rows in drawn[i * tcfg.grad_accum : (i + 1) * tcfg.grad_accum]:
            torch_twin.wrapper_loss(twin, torch.from_numpy(rows), cfg.latent).backward()
        clipped += float(torch.nn.utils.clip_grad_norm_(twin.parameters(), tcfg.clip)) > tcfg.clip
        opt.step()
        opt.zero_grad()  # set_to_none: unused parameters keep grad None
        if (i + 1) % tcfg.lr_halve_every == 0:
            for group in opt.param_groups:
                group["lr"] = args_lr / 2
                args_lr = args_lr / 2
    assert clipped == tcfg.steps  # clipping was active at every step
    ours, theirs = flatten(result.params), twin.state_dict()
    worst = 0.0
    for name in param_spec(cfg):
        a, b = ours[name], theirs[name].numpy()
        worst = max(worst, float(np.max(np.abs(a - b)) / np.max(np.abs(b))))
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-14, err_msg=name)
    named = dict(twin.named_parameters())
    for name in unused_params(cfg):  # never touched on either side: torch keeps no state for them
        assert not opt.state[named[name]]
        np.testing.assert_array_equal(theirs[name].numpy(), flatten(start)[name])
        np.testing.assert_array_equal(ours[name], flatten(start)[name])
        assert not result.opt_state["m"][name].any() and not result.opt_state["v"][name].any()
    print(f"largest relative difference to torch.optim.AdamW after {tcfg.steps} steps: {worst:.2e}")
