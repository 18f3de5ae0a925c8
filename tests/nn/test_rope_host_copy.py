"""RoPE with a device-resident ``freqs`` buffer reads it to the host once per array object, not per call
(each read would hold the host until the GPU has finished everything queued before)."""

import numpy as np

from minicp.nn import rope


class FakeDeviceArray:
    """Stands in for a CuPy array: not a NumPy array, converted by ``B.to_numpy``."""

    def __init__(self, values):
        self.values = values


def test_device_freqs_are_read_once_per_array(monkeypatch):
    reads = []

    def to_numpy(a):
        reads.append(a)
        return a.values

    monkeypatch.setattr(rope.B, "to_numpy", to_numpy)
    monkeypatch.setattr(rope, "_host_copies", {})
    x = np.random.default_rng(0).standard_normal((1, 2, 6, 8))
    pos = np.arange(6)
    want = rope.rope(x, pos, freqs=rope.rope_frequencies(8, 10000.0))
    a = FakeDeviceArray(rope.rope_frequencies(8, 10000.0))
    for _ in range(3):
        np.testing.assert_array_equal(rope.rope(x, pos, freqs=a), want)
    assert reads == [a]
    b = FakeDeviceArray(rope.rope_frequencies(8, 10000.0) * 2)  # another buffer: read, and used
    assert not np.allclose(rope.rope(x, pos, freqs=b), want) and reads == [a, b]
