"""Hand-made zip files for the golden reader's tests: members written byte by byte (names given twice, members
that overlap, sizes in the directory that lie), and deflate streams of a gigabyte of zeros that take a
megabyte on disk (zip bombs)."""

import io
import struct
import zlib

import numpy as np

ZEROS = 1 << 20  # bytes of zeros per deflate segment


def npy_header(shape, dtype="<f4"):
    """The .npy header (magic, version 1.0, dict, padding) of an array of ``shape`` and ``dtype``."""
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, {"descr": dtype, "fortran_order": False, "shape": tuple(shape)})
    return buf.getvalue()


def npy_bytes(array):
    buf = io.BytesIO()
    np.lib.format.write_array(buf, np.asarray(array), allow_pickle=False)
    return buf.getvalue()


def deflated(data):
    """(raw deflate stream, crc32, uncompressed size) of ``data``."""
    co = zlib.compressobj(6, zlib.DEFLATED, -15)
    return co.compress(data) + co.flush(), zlib.crc32(data), len(data)


def zero_bomb(header, nbytes):
    """(raw deflate stream, crc32, uncompressed size) of ``header`` followed by ``nbytes`` zeros (a multiple of
    ``ZEROS``): independent segments of a megabyte of zeros each, about 1 kB apiece, then a final empty block."""
    assert nbytes % ZEROS == 0
    zeros = bytes(ZEROS)
    first = zlib.compressobj(9, zlib.DEFLATED, -15)
    head = first.compress(header) + first.flush(zlib.Z_FULL_FLUSH)
    seg = zlib.compressobj(9, zlib.DEFLATED, -15)
    segment = seg.compress(zeros) + seg.flush(zlib.Z_FULL_FLUSH)
    tail = zlib.compressobj(9, zlib.DEFLATED, -15).flush(zlib.Z_FINISH)
    crc = zlib.crc32(header)
    for _ in range(nbytes // ZEROS):
        crc = zlib.crc32(zeros, crc)
    return head + segment * (nbytes // ZEROS) + tail, crc, len(header) + nbytes


def zip_bytes(members, offsets=None, sizes=None):
    """A zip file of ``members`` [(name, (stream, crc, size))], all deflated. ``offsets`` (name -> name) makes
    a directory entry point at another member's data (overlap); ``sizes`` (name -> n) makes the directory
    state another uncompressed size."""
    out, central, where = bytearray(), bytearray(), {}
    for name, (stream, crc, size) in members:
        raw = name.encode()
        where[name] = len(out)
        out += struct.pack("<4sHHHHHIIIHH", b"PK\x03\x04", 20, 0, 8, 0, 0, crc, len(stream), size, len(raw), 0)
        out += raw + stream
    for name, (stream, crc, size) in members:
        raw = name.encode()
        offset = where[(offsets or {}).get(name, name)]
        size = (sizes or {}).get(name, size)
        central += struct.pack(
            "<4sHHHHHHIIIHHHHHII",
            b"PK\x01\x02",
            20,
            20,
            0,
            8,
            0,
            0,
            crc,
            len(stream),
            size,
            len(raw),
            0,
            0,
            0,
            0,
            0,
            offset,
        )
        central += raw
    start = len(out)
    out += central + struct.pack("<4sHHHHIIH", b"PK\x05\x06", 0, 0, len(members), len(members), len(central), start, 0)
    return bytes(out)


def members_of(path):
    """[(name, deflated .npy bytes)] of every array of an .npz, in file order: the parts to rebuild it from."""
    with np.load(path, allow_pickle=False) as z:
        return [(f"{key}.npy", deflated(npy_bytes(z[key]))) for key in z.files]
