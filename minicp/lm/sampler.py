"""Where training rows come from: an explicit, resumable sampler over a stream, rows or a function.

All randomness comes from one ``numpy.random.Generator``; ``Sampler.state()`` / ``restore()`` move the
generator state and the current epoch order in and out of checkpoints, so a resumed run draws exactly
the rows the uninterrupted run would have drawn.
"""

import numpy as np

from minicp.lm.checkpoint import CheckpointError, _jsonable


class Sampler:
    """Micro-batches of (batch, n + 1) rows from a stream, a row array or a function, drawn from ``rng``.

    Its whole state is ``rng`` plus, for rows, the current epoch order and position: ``state()`` and
    ``restore()`` move that in and out of checkpoints.
    """

    def __init__(self, data, seq_len, rng, sampling="chunks"):
        self.rng, self.seq_len, self.sampling = rng, seq_len, sampling
        self.fn, self.rows, self.stream = None, None, None
        if callable(data):
            self.fn = data
            return
        arr = np.asarray(data)
        if arr.dtype.kind not in "iu":
            raise ValueError(f"training data must be integer token ids, got dtype {arr.dtype}")
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
        meta = {"bit_generator": _jsonable(self.rng.bit_generator.state)}
        arrays = {}
        if self.rows is not None:
            meta["pos"] = int(self.pos)
            arrays["data/order"] = np.asarray(self.order, dtype=np.int64)
        return meta, arrays

    def restore(self, meta, arrays):
        self.rng.bit_generator.state = meta["bit_generator"]
        if self.rows is not None:
            order = np.asarray(arrays["data/order"], dtype=np.int64)
            if order.size and (order.min() < 0 or order.max() >= len(self.rows)):
                raise CheckpointError(
                    f"checkpoint data order refers to {order.max() + 1} rows but the training data has {len(self.rows)}"
                )
            self.order, self.pos = order, int(meta["pos"])


def make_rng(seed):
    """The data generator of a run: PCG64 seeded with (seed, 1), independent of the init stream."""
    return np.random.Generator(np.random.PCG64([int(seed), 1]))
