"""Tests for minicp.lm.data: tokenizer, corpora, splits, batching and the lag-copy task."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from minicp.lm import data as D

# ---------------------------------------------------------------------------- tokenizer


@settings(max_examples=200, deadline=None)
@given(st.text())
def test_encode_decode_round_trip(text):
    ids = D.encode(text)
    assert ids.dtype == np.int64 and ids.ndim == 1
    assert ids.size == len(text.encode("utf-8"))
    assert ids.size == 0 or (ids.min() >= 0 and ids.max() < D.VOCAB)
    assert D.decode(ids) == text
    assert D.decode(ids.tolist()) == text


def test_decode_replaces_invalid_utf8():
    cut = D.encode("é")[:1]  # half of a two-byte character
    assert D.decode(cut) == "\ufffd"
    assert D.decode([]) == ""
    assert D.VOCAB == 256


# ---------------------------------------------------------------------------- corpora


def test_pydoc_corpus():
    from pydoc_data.topics import topics

    text = D.load_corpus()
    assert text == D.load_corpus("pydoc")
    assert len(text.encode("utf-8")) > 400_000
    first, last = sorted(topics)[0], sorted(topics)[-1]
    assert text.startswith(topics[first].strip("\n") + "\n\n")
    assert text.endswith(topics[last].strip("\n") + "\n")


def test_text_corpus(tmp_path):
    f = tmp_path / "a.txt"
    f.write_bytes("héllo\r\nwörld\n".encode())
    assert D.load_corpus("text", f) == "héllo\r\nwörld\n"  # no newline translation
    assert D.load_corpus("text", str(f)) == "héllo\r\nwörld\n"
    with pytest.raises(FileNotFoundError, match="missing.txt"):
        D.load_corpus("text", tmp_path / "missing.txt")
    bad = tmp_path / "bad.txt"
    bad.write_bytes(b"ok \xff\xfe")
    with pytest.raises(ValueError, match="path .*UTF-8"):
        D.load_corpus("text", bad)


def test_wikitext_directory_and_file(tmp_path):
    texts = {"train": " = Title = \n\n train text é\n", "valid": " valid \n", "test": " test <unk>\n"}
    for split, text in texts.items():
        (tmp_path / f"wiki.{split}.raw").write_text(text, encoding="utf-8")
    assert D.load_corpus("wikitext", tmp_path) == texts
    assert D.load_corpus("wikitext", str(tmp_path / "wiki.valid.raw")) == texts["valid"]
    (tmp_path / "wiki.test.raw").unlink()
    with pytest.raises(FileNotFoundError, match="wiki.test.raw"):
        D.load_corpus("wikitext", tmp_path)


# ---------------------------------------------------------------------------- splits and batching


@settings(max_examples=50, deadline=None)
@given(st.integers(20, 5000))
def test_split_tokens_partition(n):
    ids = np.arange(n)
    parts = D.split_tokens(ids)
    assert list(parts) == ["train", "valid", "test"]
    assert all(len(p) > 0 for p in parts.values())
    np.testing.assert_array_equal(np.concatenate(list(parts.values())), ids)
    parts = D.split_tokens(ids, (0.5, 0.25, 0.25))
    assert len(parts["train"]) == n // 2


def test_chunks_shape_and_content():
    ids = np.arange(103)
    c = D.chunks(ids, 9)
    assert c.shape == (10, 10)
    np.testing.assert_array_equal(c.ravel(), ids[:100])
    assert np.shares_memory(c, ids)  # a view, no copy


def test_batches_cover_every_chunk_once():
    ids = np.arange(7 * 23)  # 23 chunks of seq_len + 1 = 7
    rng = np.random.default_rng(0)
    got = list(D.batches(ids, 6, 5, rng))
    assert [b.shape for b in got] == [(5, 7)] * 4 + [(3, 7)]
    rows = np.concatenate(got)
    assert sorted(rows[:, 0].tolist()) == list(range(0, 7 * 23, 7))  # each chunk exactly once
    np.testing.assert_array_equal(rows - rows[:, :1], np.broadcast_to(np.arange(7), rows.shape))
    assert rows[:, 0].tolist() != sorted(rows[:, 0].tolist())  # shuffled
    ordered = np.concatenate(list(D.batches(ids, 6, 5, shuffle=False)))
    np.testing.assert_array_equal(ordered, D.chunks(ids, 6))
    dropped = list(D.batches(ids, 6, 5, np.random.default_rng(0), drop_last=True))
    assert [b.shape for b in dropped] == [(5, 7)] * 4


def test_random_windows_deterministic_and_contiguous():
    ids = D.encode(D.load_corpus()[:5000])
    a = D.random_windows(ids, 32, 8, np.random.default_rng(123))
    b = D.random_windows(ids, 32, 8, np.random.default_rng(123))
    c = D.random_windows(ids, 32, 8, np.random.default_rng(124))
    assert a.shape == (8, 33) and a.dtype == ids.dtype
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    pos = np.arange(100)
    w = D.random_windows(pos, 10, 500, np.random.default_rng(0))
    np.testing.assert_array_equal(np.diff(w, axis=1), 1)  # consecutive tokens
    assert w[:, 0].min() == 0 and w[:, -1].max() == 99  # both ends reachable
    assert D.random_windows(np.arange(11), 10, 3, np.random.default_rng(0)).tolist() == [list(range(11))] * 3


# ---------------------------------------------------------------------------- lag copy


@settings(max_examples=100, deadline=None)
@given(
    num=st.integers(1, 6),
    seq_len=st.integers(1, 64),
    data=st.data(),
    vocab=st.integers(2, 20),
    low=st.integers(0, 200),
    seed=st.integers(0, 2**32 - 1),
)
def test_lag_copy_property(num, seq_len, data, vocab, low, seed):
    lag = data.draw(st.integers(1, seq_len))
    x, mask = D.lag_copy(num, seq_len, lag, vocab=vocab, rng=np.random.default_rng(seed), low=low)
    assert x.shape == (num, seq_len + 1) and x.dtype == np.int64
    assert mask.shape == (num, seq_len) and mask.dtype == np.bool_
    assert x.min() >= low and x.max() < low + vocab
    t = np.arange(lag, seq_len + 1)
    np.testing.assert_array_equal(x[:, t], x[:, t - lag])
    i = np.arange(seq_len)
    np.testing.assert_array_equal(mask, np.broadcast_to(i + 1 >= lag, mask.shape))
    # every masked target x[:, i + 1] is the token lag back from it
    for row in range(num):
        for j in np.flatnonzero(mask[row]):
            assert x[row, j + 1] == x[row, j + 1 - lag]
    # the perfect copier scores 1, from predictions or one-hot logits
    preds = x[:, :-1].copy()
    preds[:, lag - 1 :] = x[:, : seq_len + 1 - lag]
    assert D.copy_accuracy(preds, x, mask) == 1.0
    assert D.copy_accuracy(np.eye(low + vocab)[preds], x, mask) == 1.0


def test_lag_copy_prefix_random_and_chance():
    x, mask = D.lag_copy(2000, 16, 8, vocab=16, rng=np.random.default_rng(0))
    assert np.bincount(x[:, :8].ravel(), minlength=16).min() > 0.8 * 2000 * 8 / 16
    guess = np.zeros((2000, 16), dtype=np.int64)
    assert abs(D.copy_accuracy(guess, x, mask) - 1 / 16) < 0.02
    assert D.copy_accuracy(guess, x, mask[0]) == D.copy_accuracy(guess, x, mask)  # broadcast mask


# ---------------------------------------------------------------------------- invalid arguments

RNG = np.random.default_rng(0)
IDS = np.arange(100)

INVALID = [
    ("text", lambda: D.encode(b"bytes")),
    ("text", lambda: D.encode("\ud800")),
    ("ids", lambda: D.decode([0, 256])),
    ("ids", lambda: D.decode([[1, 2]])),
    ("ids", lambda: D.decode([1.5])),
    ("name", lambda: D.load_corpus("imdb")),
    ("path", lambda: D.load_corpus("pydoc", path="x.txt")),
    ("path", lambda: D.load_corpus("text")),
    ("path", lambda: D.load_corpus("wikitext", path=3)),
    ("fractions", lambda: D.split_tokens(IDS, (0.5, 0.5))),
    ("fractions", lambda: D.split_tokens(IDS, (0.9, 0.2, -0.1))),
    ("fractions", lambda: D.split_tokens(IDS, (0.5, 0.3, 0.3))),
    ("fractions", lambda: D.split_tokens(IDS, "abc")),
    ("ids", lambda: D.split_tokens(np.arange(5))),
    ("ids", lambda: D.split_tokens(IDS.astype(float))),
    ("seq_len", lambda: D.random_windows(IDS, 0, 4, RNG)),
    ("seq_len", lambda: D.random_windows(IDS, 2.0, 4, RNG)),
    ("batch", lambda: D.random_windows(IDS, 8, -1, RNG)),
    ("batch", lambda: D.random_windows(IDS, 8, True, RNG)),
    ("rng", lambda: D.random_windows(IDS, 8, 4, 0)),
    ("ids", lambda: D.random_windows(IDS, 100, 4, RNG)),
    ("seq_len", lambda: D.chunks(IDS, 0)),
    ("ids", lambda: D.chunks(IDS.reshape(10, 10), 4)),
    ("ids", lambda: D.chunks(np.arange(5), 5)),
    ("batch", lambda: D.batches(IDS, 9, 0, RNG)),
    ("rng", lambda: D.batches(IDS, 9, 2)),
    ("shuffle", lambda: D.batches(IDS, 9, 2, RNG, shuffle="yes")),
    ("batch", lambda: D.batches(IDS, 9, 11, RNG, drop_last=True)),
    ("num", lambda: D.lag_copy(0, 8, 2, rng=RNG)),
    ("seq_len", lambda: D.lag_copy(4, -3, 2, rng=RNG)),
    ("lag", lambda: D.lag_copy(4, 8, 0, rng=RNG)),
    ("lag", lambda: D.lag_copy(4, 8, 9, rng=RNG)),
    ("vocab", lambda: D.lag_copy(4, 8, 2, vocab=1, rng=RNG)),
    ("low", lambda: D.lag_copy(4, 8, 2, rng=RNG, low=-1)),
    ("rng", lambda: D.lag_copy(4, 8, 2)),
    ("tokens", lambda: D.copy_accuracy(np.zeros((2, 4), int), np.zeros(5, int), np.ones((2, 4), bool))),
    ("logits_or_preds", lambda: D.copy_accuracy(np.zeros((2, 3), int), np.zeros((2, 5), int), np.ones((2, 4), bool))),
    ("logits_or_preds", lambda: D.copy_accuracy(np.zeros((2, 4, 3, 1)), np.zeros((2, 5), int), np.ones((2, 4), bool))),
    ("mask", lambda: D.copy_accuracy(np.zeros((2, 4), int), np.zeros((2, 5), int), np.ones((2, 4)))),
    ("mask", lambda: D.copy_accuracy(np.zeros((2, 4), int), np.zeros((2, 5), int), np.ones((3,), bool))),
    ("mask", lambda: D.copy_accuracy(np.zeros((2, 4), int), np.zeros((2, 5), int), np.zeros((2, 4), bool))),
]


@pytest.mark.parametrize("param, call", INVALID, ids=[f"{p}-{k}" for k, (p, _) in enumerate(INVALID)])
def test_invalid_arguments_raise_value_error(param, call):
    with pytest.raises(ValueError, match=param) as info:
        call()
    assert param in str(info.value)


def test_message_format():
    with pytest.raises(ValueError, match=r"^seq_len 0 must be a positive integer$"):
        D.chunks(IDS, 0)


def test_core_dependencies_only():
    import ast

    tree = ast.parse(open(D.__file__, encoding="utf-8").read())
    names = {a.name.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.Import) for a in node.names}
    names |= {node.module.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
    assert names <= {"numpy", "os", "pydoc_data"}, names
