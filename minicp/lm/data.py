"""Text data for minicp: a byte-level tokenizer, corpora, splits, batching and synthetic copy tasks.

Everything here is plain NumPy and the standard library (no torch, no backend switch): data is made
on the CPU and handed to a model as integer arrays.

Conventions
-----------
* **Tokens.** Text is tokenized as its UTF-8 bytes, so the vocabulary is ``VOCAB = 256`` and every
  byte string round-trips. ``encode`` returns ``int64`` ids; ``decode`` maps invalid UTF-8 (for
  example a window that cuts a multi-byte character in half) to U+FFFD instead of failing.
* **The (n+1)-stream.** A training example for sequence length ``n`` is a row ``x`` of ``n + 1``
  tokens. The model reads ``x[:, :n]`` and is scored on predicting ``x[:, 1:]``: the target at input
  position ``i`` is ``x[:, i + 1]``. ``random_windows``, ``chunks``, ``batches`` and ``lag_copy``
  all return rows of ``seq_len + 1`` tokens in this convention.
* **Randomness.** Every function that draws random numbers takes an explicit
  ``numpy.random.Generator`` (``np.random.default_rng(seed)``); nothing touches global state, so
  the same generator state gives the same data.
* **Errors.** Invalid arguments raise ``ValueError`` whose message names the parameter and the rule,
  e.g. ``"seq_len 0 must be a positive integer"``. A file that does not exist raises
  ``FileNotFoundError`` naming the path.

Corpora (``load_corpus``)
-------------------------
* ``"pydoc"`` (default, needs no download): the Python documentation topics that ship with CPython
  in ``pydoc_data.topics.topics`` (about 465 kB), in sorted topic order, separated by blank lines.
* ``"text"``: any UTF-8 text file.
* ``"wikitext"``: WikiText-103 raw (``wiki.train.raw``, ``wiki.valid.raw``, ``wiki.test.raw``), as a
  dict of split -> text for a directory, or one text for a single file.

Batching
--------
* ``split_tokens``: contiguous train/valid/test slices of one token stream.
* ``random_windows``: ``batch`` windows of ``seq_len + 1`` tokens at uniformly random offsets.
* ``chunks`` / ``batches``: the stream cut into non-overlapping chunks of ``seq_len + 1`` tokens
  (the official WikitextDataset's "shuffled non-overlapping chunks of n+1 tokens"), and one epoch
  over those chunks in shuffled order.

Synthetic long-range task (``lag_copy``)
----------------------------------------
``x[:, t] = x[:, t - lag]`` for every ``t >= lag`` and uniformly random symbols for ``t < lag``, so
each row is its first ``lag`` symbols repeated. The target at input position ``i`` is ``x[:, i + 1]``
which, when ``i + 1 >= lag``, equals ``x[:, i + 1 - lag]``: the token ``lag`` positions before the
target, i.e. ``lag - 1`` positions before the input position ``i``. ``target_mask[:, i]`` is True
exactly for those positions (``i >= lag - 1``); the others are random and unpredictable, so a model
that learned nothing scores ``1 / vocab`` on the masked positions. ``copy_accuracy`` scores it.
"""

import os

import numpy as np

__all__ = [
    "VOCAB",
    "encode",
    "decode",
    "CORPORA",
    "WIKITEXT_SPLITS",
    "load_corpus",
    "split_tokens",
    "load_tokens",
    "random_windows",
    "chunks",
    "batches",
    "lag_copy",
    "copy_accuracy",
]

VOCAB = 256  # byte-level tokenizer: ids 0..255
CORPORA = ("pydoc", "text", "wikitext")
WIKITEXT_SPLITS = ("train", "valid", "test")  # files wiki.<split>.raw


# ----------------------------------------------------------------------------------------------
# argument checks


def _is_int(value):
    return isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_))


def _positive_int(name, value):
    if not _is_int(value) or value < 1:
        raise ValueError(f"{name} {value!r} must be a positive integer")
    return int(value)


def _generator(name, value):
    if not isinstance(value, np.random.Generator):
        raise ValueError(
            f"{name} must be a numpy.random.Generator (e.g. np.random.default_rng(0)), got {type(value).__name__}"
        )
    return value


def _ids(value, name="ids"):
    """``value`` as a 1-D integer array (no copy when it already is one)."""
    arr = np.asarray(value)
    if arr.size == 0 and arr.dtype.kind not in "iu":
        arr = arr.astype(np.int64)  # [] comes out of asarray as float64
    if arr.ndim != 1:
        raise ValueError(f"{name} must be a 1-D array of token ids, got shape {arr.shape}")
    if arr.dtype.kind not in "iu":
        raise ValueError(f"{name} must hold integers, got dtype {arr.dtype}")
    return arr


def _min_length(ids, need, what):
    if len(ids) < need:
        raise ValueError(f"ids of length {len(ids)} is too short: {what} needs at least {need} tokens")


# ----------------------------------------------------------------------------------------------
# byte-level tokenizer


def encode(text):
    """The UTF-8 bytes of ``text`` as a 1-D ``int64`` array of ids in ``[0, 256)``."""
    if not isinstance(text, str):
        raise ValueError(f"text must be a str, got {type(text).__name__}")
    try:
        data = text.encode("utf-8")
    except UnicodeEncodeError as err:
        raise ValueError(
            f"text must be encodable as UTF-8 (lone surrogate {text[err.start]!r} at index {err.start})"
        ) from None
    return np.frombuffer(data, dtype=np.uint8).astype(np.int64)


def decode(ids):
    """The text whose UTF-8 bytes are ``ids`` (1-D, integers in ``[0, 256)``); bad UTF-8 -> U+FFFD."""
    arr = _ids(ids)
    if arr.size and (arr.min() < 0 or arr.max() >= VOCAB):
        raise ValueError(f"ids must lie in [0, {VOCAB}), got values in [{arr.min()}, {arr.max()}]")
    return arr.astype(np.uint8).tobytes().decode("utf-8", errors="replace")


# ----------------------------------------------------------------------------------------------
# corpora


def _read_utf8(path, name="path"):
    if not os.path.isfile(path):
        if os.path.exists(path):
            raise ValueError(f"{name} {str(path)!r} must be a regular file")
        raise FileNotFoundError(f"{name} {str(path)!r} does not exist")
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as e:  # permission denied, an I/O error
        raise ValueError(f"{name} {str(path)!r} cannot be read ({e.strerror or e})") from None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as err:
        raise ValueError(
            f"{name} {str(path)!r} must be UTF-8 text: byte 0x{data[err.start]:02x} "
            f"at offset {err.start} is not valid UTF-8"
        ) from None


def load_corpus(name="pydoc", path=None):
    """Load a text corpus as a str (or, for a WikiText-103 directory, a dict of split -> str).

    ``name``:

    * ``"pydoc"``: the topics of ``pydoc_data.topics.topics`` in sorted key order, each stripped of
      leading/trailing newlines and separated by one blank line (ends with a newline). ``path``
      must be None.
    * ``"text"``: the UTF-8 text file at ``path``.
    * ``"wikitext"``: WikiText-103 raw. ``path`` is either a directory holding ``wiki.train.raw``,
      ``wiki.valid.raw`` and ``wiki.test.raw`` (returns ``{"train": ..., "valid": ..., "test": ...}``)
      or one such file (returns its text).

    Files are read as bytes and decoded as UTF-8 with no newline translation. A missing file
    raises FileNotFoundError; a file that is not UTF-8 raises ValueError.
    """
    if name not in CORPORA:
        raise ValueError(f"name {name!r} must be one of {CORPORA}")
    if name == "pydoc":
        if path is not None:
            raise ValueError(f"path must be None for name 'pydoc' (got {path!r})")
        from pydoc_data.topics import topics

        return "\n\n".join(topics[key].strip("\n") for key in sorted(topics)) + "\n"
    if path is None or not isinstance(path, (str, os.PathLike)):
        raise ValueError(f"path must be a file path (str or os.PathLike) for name {name!r}, got {path!r}")
    if name == "text":
        return _read_utf8(path)
    # wikitext
    if os.path.isdir(path):
        files = {split: os.path.join(path, f"wiki.{split}.raw") for split in WIKITEXT_SPLITS}
        missing = [os.path.basename(f) for f in files.values() if not os.path.isfile(f)]
        if missing:
            raise FileNotFoundError(
                f"path {str(path)!r} is a directory without {', '.join(missing)} "
                f"(WikiText-103 raw needs wiki.train.raw, wiki.valid.raw, wiki.test.raw)"
            )
        return {split: _read_utf8(f) for split, f in files.items()}
    return _read_utf8(path)


# ----------------------------------------------------------------------------------------------
# splits and batching


def split_tokens(ids, fractions=(0.9, 0.05, 0.05)):
    """Cut ``ids`` into contiguous ``{"train", "valid", "test"}`` slices (views) in that order.

    ``fractions`` are three numbers > 0 summing to 1 (within 1e-6). Boundaries are
    ``floor(len * f_train)`` and ``floor(len * (f_train + f_valid))``, so the three slices
    concatenate back to ``ids`` exactly; every slice must be non-empty.
    """
    arr = _ids(ids)
    try:
        fr = [float(f) for f in fractions]
    except (TypeError, ValueError):
        raise ValueError(f"fractions must be three numbers (train, valid, test), got {fractions!r}") from None
    if len(fr) != 3:
        raise ValueError(f"fractions must be three numbers (train, valid, test), got {len(fr)}")
    if not all(np.isfinite(f) and f > 0 for f in fr):
        raise ValueError(f"fractions {tuple(fr)} must each be > 0")
    if abs(sum(fr) - 1.0) > 1e-6:
        raise ValueError(f"fractions {tuple(fr)} must sum to 1, got {sum(fr)}")
    n = len(arr)
    a = int(np.floor(n * fr[0]))
    b = int(np.floor(n * (fr[0] + fr[1])))
    b = min(b, n)
    if not 0 < a < b < n:
        raise ValueError(
            f"ids of length {n} is too short: fractions {tuple(fr)} give an empty split (sizes {a}, {b - a}, {n - b})"
        )
    return {"train": arr[:a], "valid": arr[a:b], "test": arr[b:]}


def random_windows(ids, seq_len, batch, rng):
    """``batch`` windows of ``seq_len + 1`` consecutive tokens, each at a uniform random offset.

    Offsets are drawn independently (with replacement) from ``0 .. len(ids) - seq_len - 1`` with
    ``rng.integers``. Returns a ``(batch, seq_len + 1)`` array of ids' dtype (a copy).
    """
    arr = _ids(ids)
    n = _positive_int("seq_len", seq_len)
    b = _positive_int("batch", batch)
    rng = _generator("rng", rng)
    _min_length(arr, n + 1, f"seq_len {n} (one window of seq_len + 1)")
    starts = rng.integers(0, len(arr) - n, size=b)
    return arr[starts[:, None] + np.arange(n + 1)]


def chunks(ids, seq_len):
    """``ids`` cut into non-overlapping chunks of ``seq_len + 1`` tokens: ``(num, seq_len + 1)``.

    ``num = len(ids) // (seq_len + 1)``; the leftover tail is dropped. Chunk ``k`` is
    ``ids[k * (seq_len + 1) : (k + 1) * (seq_len + 1)]``. The result is a view of ``ids`` when
    ``ids`` is already a contiguous integer array (no copy of a large corpus).
    """
    arr = _ids(ids)
    n = _positive_int("seq_len", seq_len)
    _min_length(arr, n + 1, f"seq_len {n} (one chunk of seq_len + 1)")
    num = len(arr) // (n + 1)
    return arr[: num * (n + 1)].reshape(num, n + 1)


def batches(ids, seq_len, batch, rng=None, shuffle=True, drop_last=False):
    """One epoch over ``chunks(ids, seq_len)``: an iterator of ``(batch, seq_len + 1)`` arrays.

    With ``shuffle`` (default) the chunk order is ``rng.permutation(num)`` (``rng`` required);
    without it chunks come in order and ``rng`` is unused. Every chunk appears exactly once per
    epoch; the last batch has ``num % batch`` rows unless ``drop_last`` drops it. Arguments are
    checked when ``batches`` is called, not on the first ``next``.
    """
    all_chunks = chunks(ids, seq_len)
    b = _positive_int("batch", batch)
    if not isinstance(shuffle, (bool, np.bool_)):
        raise ValueError(f"shuffle must be a bool, got {shuffle!r}")
    if not isinstance(drop_last, (bool, np.bool_)):
        raise ValueError(f"drop_last must be a bool, got {drop_last!r}")
    num = len(all_chunks)
    if drop_last and num < b:
        raise ValueError(f"batch {b} must be at most the number of chunks {num} when drop_last is True")
    order = _generator("rng", rng).permutation(num) if shuffle else np.arange(num)
    stop = num - num % b if drop_last else num

    def epoch():
        for start in range(0, stop, b):
            yield all_chunks[order[start : start + b]]

    return epoch()


# ----------------------------------------------------------------------------------------------
# synthetic long-range copy task


def lag_copy(num, seq_len, lag, vocab=16, rng=None, low=0):
    """The lag-copy task: ``(tokens (num, seq_len + 1), target_mask (num, seq_len))``.

    Each row draws ``lag`` symbols uniformly from ``[low, low + vocab)`` and repeats them, so
    ``tokens[:, t] == tokens[:, t - lag]`` for all ``t >= lag``. In the (n+1)-stream convention the
    model reads ``tokens[:, :seq_len]`` and the target at input position ``i`` is
    ``tokens[:, i + 1]``; for ``i + 1 >= lag`` it is a copy of ``tokens[:, i + 1 - lag]`` (``lag``
    tokens before the target, ``lag - 1`` before the input position). ``target_mask[:, i]`` is True
    exactly there (the same for every row); the other targets are fresh random symbols.

    ``1 <= lag <= seq_len`` (so at least the last target is a copy), ``vocab >= 2`` (chance accuracy
    on the masked positions is ``1 / vocab``), ``low >= 0`` reserves the id range; ``rng`` is a
    numpy Generator (required). ``tokens`` is int64, ``target_mask`` bool.
    """
    num = _positive_int("num", num)
    n = _positive_int("seq_len", seq_len)
    lag = _positive_int("lag", lag)
    if lag > n:
        raise ValueError(f"lag {lag} must be at most seq_len {n} (otherwise no target is a copy)")
    if not _is_int(vocab) or vocab < 2:
        raise ValueError(f"vocab {vocab!r} must be an integer >= 2")
    if not _is_int(low) or low < 0:
        raise ValueError(f"low {low!r} must be a non-negative integer")
    rng = _generator("rng", rng)
    head = rng.integers(low, low + vocab, size=(num, lag), dtype=np.int64)
    tokens = head[:, np.arange(n + 1) % lag]
    mask = np.broadcast_to(np.arange(n) + 1 >= lag, (num, n)).copy()
    return tokens, mask


def copy_accuracy(logits_or_preds, tokens, mask):
    """Fraction of masked positions where the prediction equals the target ``tokens[:, 1:]``.

    ``logits_or_preds`` is either logits ``(num, seq_len, V)`` (argmax over the last axis) or
    integer predictions ``(num, seq_len)``; ``tokens`` is ``(num, seq_len + 1)`` and ``mask`` a
    bool array broadcastable to ``(num, seq_len)`` with at least one True. Returns a float.
    """
    tok = np.asarray(tokens)
    if tok.ndim != 2 or tok.shape[1] < 2 or tok.dtype.kind not in "iu":
        raise ValueError(
            f"tokens must be an integer array (num, seq_len + 1) with seq_len >= 1, "
            f"got shape {tok.shape} dtype {tok.dtype}"
        )
    shape = (tok.shape[0], tok.shape[1] - 1)
    out = np.asarray(logits_or_preds)
    if out.ndim == 3:
        if out.shape[:2] != shape:
            raise ValueError(
                f"logits_or_preds logits of shape {out.shape} must be {shape + ('V',)} to match tokens {tok.shape}"
            )
        preds = out.argmax(axis=-1)
    elif out.ndim == 2:
        if out.shape != shape or out.dtype.kind not in "iu":
            raise ValueError(
                f"logits_or_preds predictions must be an integer array of shape {shape} "
                f"to match tokens {tok.shape}, got shape {out.shape} dtype {out.dtype}"
            )
        preds = out
    else:
        raise ValueError(
            f"logits_or_preds must be logits (num, seq_len, V) or predictions (num, seq_len), got shape {out.shape}"
        )
    m = np.asarray(mask)
    if m.dtype != np.bool_:
        raise ValueError(f"mask must be a bool array, got dtype {m.dtype}")
    try:
        m = np.broadcast_to(m, shape)
    except ValueError:
        raise ValueError(f"mask of shape {m.shape} must broadcast to {shape}") from None
    count = int(m.sum())
    if count == 0:
        raise ValueError("mask must mark at least one position")
    return float((preds == tok[:, 1:])[m].sum() / count)


def load_tokens(corpus="pydoc", fractions=(0.9, 0.05, 0.05)):
    """Token ids of a corpus split into {"train", "valid", "test"}: "pydoc" (ships with Python),
    "wikitext:<dir>" (WikiText-103 raw, its own splits) or a path to any UTF-8 text file."""
    if corpus == "pydoc":
        return split_tokens(encode(load_corpus("pydoc")), fractions)
    if corpus.startswith("wikitext:"):
        texts = load_corpus("wikitext", corpus[len("wikitext:") :])
        if isinstance(texts, dict):
            return {k: encode(v) for k, v in texts.items()}
        return split_tokens(encode(texts), fractions)
    return split_tokens(encode(load_corpus("text", corpus)), fractions)
