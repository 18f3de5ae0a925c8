"""Solution to notebook 05's last exercise: a model golden file's loss from its tokens and logits."""

import numpy as np


def model_loss(tokens, logits):
    """Mean cross-entropy of logits (b, n, V) for the next tokens: row t predicts tokens[:, t + 1]."""
    logits = np.asarray(logits, dtype=np.float64)
    targets = tokens[:, 1:]  # (b, n)
    shifted = logits - logits.max(-1, keepdims=True)  # log-softmax, stable
    log_p = shifted - np.log(np.exp(shifted).sum(-1, keepdims=True))
    return -np.take_along_axis(log_p, targets[..., None], -1).mean()
