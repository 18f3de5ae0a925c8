"""minicp.viz.training: the receptive-field prediction of lag-copy accuracy, and its figure."""

import numpy as np
import pytest

from minicp.viz.training import lag_copy_figure, predicted_copy_accuracy


def closed_form(k, lag, n, m, vocab):
    """Row i sees [m max(0, i // m - k), i] (docs/receptive-fields.md); copyable iff the source lies in it."""
    rows = np.arange(lag - 1, n)
    share = np.mean(rows + 1 - lag >= m * np.maximum(0, rows // m - k))
    return share + (1 - share) / vocab


@pytest.mark.parametrize("k", [1, 2, 3])
@pytest.mark.parametrize("lag", [1, 4, 5, 9, 11, 13, 17, 20])
def test_prediction_matches_the_closed_form(k, lag):
    got = predicted_copy_accuracy(k, lag, seq_len=20, half_segment=4, vocab=8)
    assert got == pytest.approx(closed_form(k, lag, 20, 4, 8), abs=1e-12)


def test_hand_counted_values():
    # k = 2, m = 4, n = 20, lag 11: rows 10, 11, 14, 15, 18, 19 of 10..19 can copy -> 0.6 + 0.4 / 8
    assert predicted_copy_accuracy(2, 11, seq_len=20, half_segment=4, vocab=8) == pytest.approx(0.65)
    assert predicted_copy_accuracy(1, 9, seq_len=20, half_segment=4, vocab=8) == pytest.approx(1 / 8)
    assert predicted_copy_accuracy(1, 5, seq_len=20, half_segment=4, vocab=8) == pytest.approx(1.0)


def test_argument_checks():
    with pytest.raises(ValueError, match="lag"):
        predicted_copy_accuracy(1, 21, seq_len=20, half_segment=4, vocab=8)
    with pytest.raises(ValueError, match="vocab"):
        predicted_copy_accuracy(1, 2, seq_len=20, half_segment=4, vocab=1)
    with pytest.raises(ValueError, match="results"):
        lag_copy_figure([], dict(m=4, n=20, vocab=8))
    with pytest.raises(ValueError, match="settings"):
        lag_copy_figure([dict(layers=1, lag=2, accuracy=1.0)], dict(m=4, n=20))


def test_figure_draws_one_line_per_layer_count():
    pytest.importorskip("matplotlib")
    results = [dict(layers=k, lag=g, accuracy=0.5) for k in (1, 2) for g in (5, 9)]
    fig = lag_copy_figure(results, dict(m=4, n=20, vocab=8), caption="test")
    (ax,) = fig.axes
    assert {t.get_text() for t in ax.get_legend().get_texts()} >= {"k = 1", "k = 2"}
