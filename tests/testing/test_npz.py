"""minicp.testing.npz: .npz members read or mapped only after their directory entry and .npy header were
checked, in every order and size NumPy writes."""

import zipfile

import numpy as np
import pytest

from minicp.files import atomic_savez
from minicp.testing import npz

ARRAYS = {
    "a": np.arange(24.0).reshape(2, 3, 4),
    "f": np.asfortranarray(np.arange(6, dtype=np.float32).reshape(2, 3)),
    "big": np.random.default_rng(0).standard_normal((64, 300)),  # over 64 KiB: mapped
    "key": np.asarray("abc" * 10),
    "empty": np.zeros((0, 3)),
    "half": np.ones(5, np.float16),
}


@pytest.mark.parametrize("compressed", [False, True])
def test_every_member_reads_back_as_numpy_wrote_it(tmp_path, compressed):
    path = atomic_savez(str(tmp_path / "x.npz"), ARRAYS, compressed=compressed)
    with open(path, "rb") as fh, zipfile.ZipFile(fh) as zf:
        found = npz.members(zf, path)
        assert set(found) == set(ARRAYS)
        for name, a in ARRAYS.items():
            member = npz.header(zf, found[name], path, shape=a.shape, dtype=a.dtype)
            for got in (npz.read(zf, member, path), npz.read(zf, member, path, fh=fh)):
                assert got.dtype == a.dtype and np.array_equal(got, a), name
            if not compressed:
                mapped = npz.mapped(fh, member, path)
                assert np.array_equal(mapped, a) and not mapped.flags.writeable
            else:
                with pytest.raises(ValueError, match="only a stored member"):
                    npz.mapped(fh, member, path)


def test_a_header_other_than_expected_is_refused_before_reading(tmp_path):
    path = atomic_savez(str(tmp_path / "x.npz"), ARRAYS)
    with open(path, "rb") as fh, zipfile.ZipFile(fh) as zf:
        found = npz.members(zf, path)
        with pytest.raises(ValueError, match=r"'a' has shape \(2, 3, 4\), the config implies \(2, 3\)"):
            npz.header(zf, found["a"], path, shape=(2, 3))
        with pytest.raises(ValueError, match="'a' has dtype float64, the config implies float32"):
            npz.header(zf, found["a"], path, dtype="float32")
        with pytest.raises(ValueError, match="declares 153,600 bytes, more than 1,000"):
            npz.header(zf, found["big"], path, limit=1000)
    big_endian = tmp_path / "be.npz"
    np.savez(big_endian, a=ARRAYS["a"].astype(">f8"))
    with zipfile.ZipFile(big_endian) as zf:
        with pytest.raises(ValueError, match=r"dtype float64 \(>f8\), the config implies float64"):
            npz.header(zf, npz.members(zf, big_endian)["a"], big_endian, dtype="float64")
