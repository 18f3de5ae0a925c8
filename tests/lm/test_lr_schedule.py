"""The official learning-rate drop: two parameter groups that do not halve together.

The official loop lowers the rates after every ``lr_halve_every`` steps by walking the optimiser's two
groups (decayed first) and, for each, setting ``group lr = args.lr / 2`` and then ``args.lr /= 2``.
The expected values below come from running exactly that walk on a torch.optim.AdamW (or, without torch,
on plain dicts), never from minicp's closed form.
"""

import numpy as np
import pytest

from minicp.lm import train as T
from minicp.lm.optim import adamw_init, adamw_step, decays


def official_walk(lr0, drops):
    """Group learning rates after ``drops`` drops, by the official loop's own steps."""
    groups = [{"lr": lr0}, {"lr": lr0}]  # decayed group first, as configure_optimizers builds them
    args_lr = lr0
    for _ in range(drops):
        for group in groups:
            group["lr"] = args_lr / 2
            args_lr = args_lr / 2
    return groups[0]["lr"], groups[1]["lr"]


@pytest.mark.parametrize("period", [3, 100_000])
def test_official_schedule_matches_the_official_walk(period):
    tc = T.TrainConfig(lr_halve_every=period)
    assert tc.lr_schedule == "official"
    for step in range(0, 6 * period, max(1, period // 3)):
        assert T.learning_rates(tc, step) == official_walk(tc.lr, step // period), step


def test_first_drop_in_numbers():
    tc = T.TrainConfig()  # lr 2e-4, drop after step i = 99999
    assert T.learning_rates(tc, 99_999) == (2e-4, 2e-4)
    assert T.learning_rates(tc, 100_000) == (1e-4, 5e-5)  # decayed lr0/2, no-decay lr0/4
    assert T.learning_rates(tc, 200_000) == (2.5e-5, 1.25e-5)


def test_halve_schedule_and_off():
    tc = T.TrainConfig(lr_schedule="halve")
    assert T.learning_rates(tc, 250_000) == (5e-5, 5e-5)
    assert T.learning_rates(tc.replace(lr_halve_every=0, lr_schedule="official"), 10**7) == (2e-4, 2e-4)
    with pytest.raises(ValueError, match="lr_schedule"):
        T.TrainConfig(lr_schedule="cosine")


def test_two_group_rates_match_torch_adamw():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(3)
    shapes = {"a.weight": (4, 3), "a.bias": (4,), "norm.weight": (3,), "b.weight": (2, 4)}
    p = {k: rng.standard_normal(s) for k, s in shapes.items()}
    tp = {k: torch.tensor(v, requires_grad=True) for k, v in p.items()}
    names = sorted(shapes)
    groups = [
        {"params": [tp[k] for k in names if decays(k, shapes[k])], "weight_decay": 0.1},
        {"params": [tp[k] for k in names if not decays(k, shapes[k])], "weight_decay": 0.0},
    ]
    opt = torch.optim.AdamW(groups, lr=1e-2, betas=(0.9, 0.95), eps=1e-8)
    state = adamw_init(p)
    for step in range(6):
        lr, lr_no_decay = official_walk(1e-2, step // 2)
        opt.param_groups[0]["lr"], opt.param_groups[1]["lr"] = lr, lr_no_decay
        g = {k: rng.standard_normal(s) for k, s in shapes.items()}
        for k in shapes:
            tp[k].grad = torch.tensor(g[k])
        opt.step()
        adamw_step(p, g, state, lr=lr, lr_no_decay=lr_no_decay, betas=(0.9, 0.95), eps=1e-8, weight_decay=0.1)
    for k in shapes:
        np.testing.assert_allclose(p[k], tp[k].detach().numpy(), rtol=1e-13, atol=1e-15, err_msg=k)
