"""minicp.lm.images: pixel tokens, the class row, stratified splits and a classifier that learns."""

import numpy as np
import pytest

import minicp
from minicp import init_params
from minicp.lm import images as I
from minicp.nn.model import forward


def test_pixel_tokens_raster_order_and_levels():
    img = np.array([[[0, 8], [16, 4]]])  # one 2 x 2 image, values 0..16
    assert I.pixel_tokens(img, levels=17, max_value=16).tolist() == [[0, 8, 16, 4]]
    assert I.pixel_tokens(img, levels=5, max_value=16).tolist() == [[0, 2, 4, 1]]  # 16 -> 4, 8 -> 2, 4 -> 1


@pytest.mark.parametrize("bad", [np.zeros((0, 4)), -np.ones((1, 4)), np.full((1, 4), np.nan), np.zeros(4)])
def test_pixel_tokens_rejects(bad):
    with pytest.raises(ValueError, match="images"):
        I.pixel_tokens(bad)


def test_class_logits_are_the_last_rows_class_entries():
    cfg = I.classifier_config("ecp", seq_len=8, levels=3, classes=4, dim=8, heads=2, layers=1, half_segment=2)
    params = init_params(cfg, seed=0, dtype="float64")
    tok = np.random.default_rng(0).integers(0, 3, (5, 8))
    full = np.asarray(forward(params, tok, cfg))  # (5, 8, 7)
    assert np.array_equal(np.asarray(I.class_logits(params, tok, cfg, classes=4, engine="reference")), full[:, -1, 3:])
    fast = np.asarray(I.class_logits(params, tok, cfg, classes=4))  # the default for loops: the fast engine
    np.testing.assert_allclose(fast, full[:, -1, 3:], rtol=1e-13, atol=1e-14)


def test_split_is_stratified_and_disjoint():
    labels = np.repeat(np.arange(3), [10, 20, 5])
    train, test = I.split_indices(labels, test_fraction=0.2, seed=1)
    assert np.intersect1d(train, test).size == 0 and len(train) + len(test) == 35
    assert np.bincount(labels[test]).tolist() == [2, 4, 1]


def test_classifier_learns_a_separable_task():
    """Class = whether the first pixel is bright: must be read from the far end, through the receptive field."""
    rng = np.random.default_rng(0)
    tok = rng.integers(0, 4, (128, 8))
    labels = (tok[:, 0] >= 2).astype(np.int64)
    cfg = I.classifier_config("transformer", seq_len=8, levels=4, classes=2, dim=16, heads=2, layers=1)
    params, history = I.train_classifier(cfg, tok, labels, classes=2, steps=60, batch=32, lr=1e-2)
    assert len(history) == 60 and history[-1]["loss"] < history[0]["loss"]
    assert I.accuracy(params, tok, labels, cfg, classes=2) > 0.9


def test_argument_checks():
    cfg = I.classifier_config("transformer", seq_len=4, levels=2, classes=2, dim=8, heads=2, layers=1)
    tok = np.zeros((3, 4), dtype=np.int64)
    with pytest.raises(ValueError, match="labels"):
        I.train_classifier(cfg, tok, np.array([0, 1, 2]), classes=2, steps=1)
    with pytest.raises(ValueError, match="tokens"):
        I.train_classifier(cfg, tok[:, :3], np.zeros(3, dtype=np.int64), classes=2, steps=1)
    with pytest.raises(ValueError, match="classes"):
        I.class_logits(None, tok, cfg, classes=4)
    with pytest.raises(ValueError, match="levels"):
        I.classifier_config("transformer", seq_len=4, levels=1)
    with pytest.raises(ValueError, match="test_fraction"):
        I.split_indices(np.zeros(4, dtype=int), test_fraction=1.0)
    with pytest.raises(ValueError, match="lr"):
        I.train_classifier(cfg, tok, np.zeros(3, dtype=np.int64), classes=2, lr=0)


def test_the_classifier_trains_in_the_dtype_asked_for():
    cfg = I.classifier_config("ecp", seq_len=8, levels=3, classes=4, dim=8, heads=2, layers=1, half_segment=2)
    tok = np.random.default_rng(0).integers(0, 3, (12, 8))
    lab = np.random.default_rng(1).integers(0, 4, 12)
    for dtype in ("float32", "float64"):
        params, history = I.train_classifier(cfg, tok, lab, classes=4, steps=2, batch=4, dtype=dtype)
        assert all(a.dtype == dtype for a in minicp.flatten(params).values()) and len(history) == 2
    with pytest.raises(ValueError, match="dtype must be 'float32' or 'float64'"):
        I.train_classifier(cfg, tok, lab, classes=4, steps=1, batch=4, dtype="float16")
