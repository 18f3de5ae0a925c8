"""Where training rows come from: an explicit, resumable sampler over a stream, rows or a function.

All randomness comes from one ``numpy.random.Generator``; ``Sampler.state()`` / ``restore()`` move the
generator state and the current epoch order in and out of checkpoints, so a resumed run draws exactly
the rows the uninterrupted run would have drawn.
"""

import numpy as np

from minicp.lm.checkpoint import CheckpointError, jsonable
from minicp.nn.params import host_array


class Sampler:
    """Micro-batches of (batch, n + 1) rows from a stream, a row array or a function, drawn from ``rng``.

    Its whole state is ``rng`` plus, for rows, the current epoch order and position: ``state()`` and
    ``restore()`` move that in and out of checkpoints.
    """

    def __init__(self, data, seq_len, rng, sampling="chunks", vocab=None):
        self.rng, self.seq_len, self.sampling = rng, seq_len, sampling
        self.fn, self.rows, self.stream, self.vocab = None, None, None, vocab
        if callable(data):
            self.fn = data
            return
        arr = host_array("data", data)
        if arr.dtype.kind not in "iu":
            raise ValueError(f"training data must be integer token ids, got dtype {arr.dtype}")
        if arr.size and vocab is not None and (arr.min() < 0 or arr.max() >= vocab):
            raise ValueError(f"training data ids must lie in [0, vocab={vocab}), got min {arr.min()} max {arr.max()}")
        if arr.ndim == 1:
            if len(arr) < seq_len + 1:
                raise ValueError(
                    f"training stream of {len(arr)} tokens is shorter than one row of seq_len + 1 = {seq_len + 1}"
                )
            if sampling == "random":
                self.stream = arr
                return
            num = len(arr) // (seq_len + 1)
            arr = arr[: num * (seq_len + 1)].reshape(num, seq_len + 1)  # non-overlapping chunks (a view)
        elif arr.ndim != 2 or arr.shape[1] != seq_len + 1:
            raise ValueError(f"training rows must have shape (num, seq_len + 1 = {seq_len + 1}), got {arr.shape}")
        self.rows = arr
        self.order = np.zeros(0, dtype=np.int64)
        self.pos = 0

    def next(self, batch):
        if self.fn is not None:
            out = np.asarray(self.fn(self.rng, batch))
            if out.shape != (batch, self.seq_len + 1) or out.dtype.kind not in "iu":
                raise ValueError(
                    f"the sampling function must return integers of shape ({batch}, {self.seq_len + 1}), "
                    f"got {out.dtype} {out.shape}"
                )
            return out
        if self.stream is not None:
            starts = self.rng.integers(0, len(self.stream) - self.seq_len, size=batch)
            return self.stream[starts[:, None] + np.arange(self.seq_len + 1)]
        picked = []
        need = batch
        while need:
            if self.pos == len(self.order):  # new epoch: fresh random order of all rows
                self.order = self.rng.permutation(len(self.rows))
                self.pos = 0
            take = self.order[self.pos : self.pos + need]
            self.pos += len(take)
            need -= len(take)
            picked.append(take)
        return self.rows[np.concatenate(picked)]

    def state(self):
        meta = {"bit_generator": jsonable(self.rng.bit_generator.state)}
        arrays = {}
        if self.rows is not None:
            meta["pos"] = int(self.pos)
            arrays["data/order"] = np.asarray(self.order, dtype=np.int64)
        return meta, arrays

    def restore(self, meta, arrays):
        """Put back a ``state()``; CheckpointError for a state that does not fit this data."""
        try:
            self.rng.bit_generator.state = meta["bit_generator"]
        except (KeyError, TypeError, ValueError) as e:
            raise CheckpointError(f"checkpoint sampler state has no valid generator state ({e!r})") from None
        if self.rows is None:
            return
        if "data/order" not in arrays or "pos" not in meta:
            raise CheckpointError("checkpoint sampler state lacks the epoch order of row data (data/order, pos)")
        order = np.asarray(arrays["data/order"])
        if order.ndim != 1 or order.dtype.kind not in "iu" or len(order) not in (0, len(self.rows)):
            raise CheckpointError(
                f"checkpoint data order ({order.dtype} {order.shape}) does not fit {len(self.rows)} training rows"
            )
        if order.size and (order.min() < 0 or order.max() >= len(self.rows)):
            raise CheckpointError(
                f"checkpoint data order refers to {order.max() + 1} rows but the training data has {len(self.rows)}"
            )
        pos = meta["pos"]
        if isinstance(pos, bool) or not isinstance(pos, int) or not 0 <= pos <= len(order):
            raise CheckpointError(f"checkpoint sampler pos {pos!r} must be an integer in [0, {len(order)}]")
        self.order, self.pos = order.astype(np.int64), pos


def make_rng(seed):
    """The data generator of a run: PCG64 seeded with (seed, 1), independent of the init stream."""
    return np.random.Generator(np.random.PCG64([int(seed), 1]))
