"""Sequential-pixel classification: every architecture as an image classifier (the paper's Table 5, in small).

The paper's third benchmark reads a CIFAR-10 image one pixel at a time and asks for its class. Here the
same idea runs on any small grey-level image set (the notebook uses scikit-learn's 8 x 8 digits, which ship
inside the package: 64 pixels, 17 grey levels, 10 classes; this module itself needs no scikit-learn):

    tokens[b, t] = grey level of pixel t in raster order          (b, n), n = height * width
    hidden       = minicp.forward(params, tokens, config)         (b, rows, V), V = levels + classes
    class_logits = hidden[:, -1, levels:]                         (b, classes): the last row reads the class

so the model is the unchanged language model of ``minicp.nn.model`` whose output layer has ``classes``
extra entries, and the class is predicted at the last pixel, the one row that every architecture computes
and that (after enough layers) can see the whole image. The loss is the mean cross-entropy over the batch;
training is AdamW with the official parameter groups (``minicp.lm.optim``) on shuffled epochs.
"""

import math

import numpy as np
from autograd import value_and_grad

from minicp import backend as B
from minicp import engines
from minicp import validate as V
from minicp.config import ModelConfig
from minicp.lm.optim import adamw_init, adamw_step, clip_grad_norm
from minicp.nn import model as M


def _at_least(name, value, low):
    value = V.integer(name, value)
    if value < low:
        raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")
    return value


def pixel_tokens(images, levels=17, max_value=None):
    """Grey-level images (num, height, width) or (num, pixels) -> int64 tokens (num, pixels) in raster order.

    Values in [0, max_value] (default: the largest value in ``images``, at least 1) are mapped linearly to
    the integers 0 .. levels - 1 (rounded). scikit-learn's digits hold 0..16, so levels=17 keeps them exact.
    """
    levels = _at_least("levels", levels, 2)
    arr = np.asarray(images, dtype=np.float64)
    if arr.ndim not in (2, 3) or arr.shape[0] == 0 or arr.size == 0:
        raise ValueError(f"images must be a non-empty array (num, height, width) or (num, pixels), got {arr.shape}")
    if not np.all(np.isfinite(arr)) or arr.min() < 0:
        raise ValueError("images must hold finite, non-negative grey levels")
    top = float(arr.max()) if max_value is None else V.real("max_value", max_value, low=0, low_open=True)
    if not top > 0:
        top = 1.0
    if arr.max() > top:
        raise ValueError(f"images hold values up to {arr.max()}, above max_value {top}")
    flat = arr.reshape(arr.shape[0], -1)
    return np.rint(flat / top * (levels - 1)).astype(np.int64)


def classifier_config(arch, *, seq_len, levels=17, classes=10, dim=32, heads=2, layers=2, **fields):
    """ModelConfig of a pixel classifier: vocab = levels (inputs) + classes (read at the last row)."""
    levels = _at_least("levels", levels, 2)
    classes = _at_least("classes", classes, 2)
    return ModelConfig(
        arch=arch, vocab=levels + classes, dim=dim, heads=heads, layers=layers, seq_len=seq_len, **fields
    )


def _classes(config, classes):
    classes = _at_least("classes", classes, 2)
    if not isinstance(config, ModelConfig):
        raise TypeError(f"config must be a ModelConfig, got {type(config).__name__}")
    if classes >= config.vocab:
        raise ValueError(f"classes {classes} must be smaller than the config's vocab {config.vocab}")
    return classes


def _labels(labels, num, classes):
    lab = np.asarray(labels)
    if lab.shape != (num,) or lab.dtype.kind not in "iu":
        raise ValueError(f"labels must be integers of shape ({num},), got {lab.dtype} {lab.shape}")
    if num and (lab.min() < 0 or lab.max() >= classes):
        raise ValueError(f"labels must lie in [0, classes={classes}), got min {lab.min()} max {lab.max()}")
    return lab.astype(np.int64)


def class_logits(params, tokens, config, classes=10, engine=None):
    """(b, classes) scores: the last output row's entries for the class ids vocab - classes .. vocab - 1.
    ``engine``: see ``minicp.engines`` (None: an enclosing ``minicp.engine`` block's, else "fast")."""
    classes = _classes(config, classes)
    logits = engines.forward(params, tokens, config, engine=engines.resolve(engine, "loop")[0])  # (b, rows, V)
    return logits[:, -1, config.vocab - classes :]  # (b, classes)


def classification_loss(params, tokens, labels, config, classes=10, engine=None):
    """Mean cross-entropy of the class logits against integer labels (b,)."""
    scores = class_logits(params, tokens, config, classes, engine)
    labels = _labels(labels, scores.shape[0], scores.shape[1])
    logp = M.log_softmax(scores)  # (b, classes)
    picked = logp[B.asarray(np.arange(len(labels))), B.asarray(labels)]
    return -B.xp.sum(picked) * (1.0 / len(labels))


def predict(params, tokens, config, classes=10, batch=256, engine=None):
    """Predicted class per row (num,), in batches of ``batch`` rows."""
    batch = V.positive_int("batch", batch)
    tokens = np.asarray(tokens)
    out = [
        np.argmax(B.to_numpy(class_logits(params, tokens[i : i + batch], config, classes, engine)), axis=-1)
        for i in range(0, len(tokens), batch)
    ]
    return np.concatenate(out).astype(np.int64)


def accuracy(params, tokens, labels, config, classes=10, batch=256, engine=None):
    """Share of rows whose predicted class equals the label."""
    labels = _labels(labels, len(tokens), _at_least("classes", classes, 2))
    return float(np.mean(predict(params, tokens, config, classes, batch, engine) == labels))


def split_indices(labels, test_fraction=0.2, seed=0):
    """(train, test) index arrays, stratified: each class contributes round(test_fraction * count) test rows."""
    lab = np.asarray(labels)
    if lab.ndim != 1 or lab.size == 0:
        raise ValueError(f"labels must be a non-empty 1-D array, got shape {lab.shape}")
    frac = V.real("test_fraction", test_fraction, low=0, high=1, low_open=True, high_open=True)
    rng = np.random.default_rng(V.nonnegative_int("seed", seed))
    test = []
    for c in np.unique(lab):
        rows = rng.permutation(np.nonzero(lab == c)[0])
        test.extend(rows[: int(round(frac * len(rows)))])
    test = np.sort(np.asarray(test, dtype=np.int64))
    train = np.setdiff1d(np.arange(len(lab)), test)
    return train, test


def train_classifier(
    config,
    tokens,
    labels,
    *,
    classes=10,
    steps=200,
    batch=32,
    lr=3e-3,
    weight_decay=0.1,
    clip=1.0,
    seed=0,
    callback=None,
    engine=None,
    dtype="float32",
):
    """Train a pixel classifier; returns (params, history) with history[i] = {"step", "loss", "grad_norm"}.

    Rows are visited in a fresh random order every epoch (numpy Generator seeded with ``seed``, which also
    seeds ``init_params``); AdamW with betas (0.9, 0.95), decoupled decay on Linear weights, global-norm
    clipping. ``callback(step, info)`` runs after every step (e.g. a tqdm bar's update); return True to stop.
    ``engine``: see ``minicp.engines`` (None: an enclosing ``minicp.engine`` block's, else "fast"). ``dtype``:
    of the parameters and so of the whole computation ("float32" or "float64"; float64 runs print the same
    numbers on every BLAS, float32 ones can move in the last digits).
    """
    classes = _classes(config, classes)
    engine, _ = engines.resolve(engine, "loop")
    loss_and_grad = value_and_grad(classification_loss)
    steps, batch = V.nonnegative_int("steps", steps), V.positive_int("batch", batch)
    lr = V.real("lr", lr, low=0, low_open=True)
    tokens = np.asarray(tokens)
    if tokens.ndim != 2 or tokens.shape[1] != config.seq_len or tokens.dtype.kind not in "iu":
        raise ValueError(f"tokens must be integers of shape (num, seq_len={config.seq_len}), got {tokens.shape}")
    labels = _labels(labels, len(tokens), classes)
    rng = np.random.default_rng(V.nonnegative_int("seed", seed))
    params = M.init_params(config, seed=seed, dtype=dtype)  # init_params checks the dtype
    flat = {k: np.array(B.to_numpy(v)) for k, v in M.flatten(params).items()}
    state = adamw_init(flat)
    order, pos, history = rng.permutation(len(tokens)), 0, []
    for step in range(1, steps + 1):
        take = []
        while len(take) < batch:  # a batch that runs past the epoch's end continues with the next epoch
            if pos == len(order):
                order, pos = rng.permutation(len(tokens)), 0
            grab = order[pos : pos + batch - len(take)]
            take.extend(grab)
            pos += len(grab)
        rows = np.asarray(take)
        value, grads = loss_and_grad(M.unflatten(flat), tokens[rows], labels[rows], config, classes, engine)
        grads = {k: np.asarray(B.to_numpy(g)) for k, g in M.flatten(grads).items()}
        norm = clip_grad_norm(grads, clip)
        adamw_step(flat, grads, state, lr=lr, weight_decay=weight_decay)
        info = {"step": step, "loss": float(value), "grad_norm": norm}
        if not math.isfinite(info["loss"]):
            raise FloatingPointError(f"loss became {info['loss']} at step {step}")
        history.append(info)
        if callback is not None and callback(step, info):
            break
    return M.unflatten(flat), history
