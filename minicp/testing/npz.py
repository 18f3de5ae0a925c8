"""Reading .npz files before trusting them: the zip directory and each member's .npy header are checked
against what the caller expects before any array data is read or decompressed.

A zip file's central directory gives every member's name, compression method and sizes; a member's .npy
header (its first bytes: at most ``HEADER_LIMIT`` of them are decompressed to read it) gives its shape and
dtype. ``members`` refuses a directory with a member that is not an .npy array, a name given twice (NumPy's
reader takes the last, others the first), members whose data overlap, or a compression other than none or
deflate; ``header`` refuses object arrays (pickle) and a directory size that differs from what the header
implies; ``read`` reads exactly the data the header declares, into a fresh array (``mapped`` maps an
uncompressed member instead). So a small file whose members would decompress to gigabytes is refused from
its directory and headers, in milliseconds and without allocating their sizes. Errors are ValueErrors
naming the file.
"""

import os
import struct
import zipfile
from dataclasses import dataclass

import numpy as onp

__all__ = ["HEADER_LIMIT", "Member", "members", "header", "read", "mapped"]

HEADER_LIMIT = 1 << 16  # bytes of an .npy header (NumPy writes < 200 for the arrays here)
LOCAL_HEADER = 30  # bytes of a zip local file header before its name and extra field
CHUNK = 1 << 24  # bytes decompressed per read
METHODS = (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED)


@dataclass
class Member:
    """One .npy member: its zip entry and what its header declares (``offset``: header bytes before the data)."""

    name: str
    info: zipfile.ZipInfo
    shape: tuple = ()
    dtype: onp.dtype = None
    fortran: bool = False
    offset: int = 0

    @property
    def nbytes(self):
        return int(onp.prod(self.shape, dtype=onp.int64)) * self.dtype.itemsize


def members(zf, path):
    """name (without ``.npy``) -> ``Member`` for every entry of the open ``zipfile.ZipFile`` ``zf``, after
    the directory's checks (only its central directory has been read)."""
    found = {}
    for info in zf.infolist():
        if not info.filename.endswith(".npy") or info.is_dir():
            raise ValueError(f"{path}: member {info.filename!r} is not an .npy array")
        name = info.filename[: -len(".npy")]
        if name in found:
            raise ValueError(
                f"{path}: member {info.filename!r} appears twice (readers disagree on which one counts); refused"
            )
        if info.compress_type not in METHODS:
            raise ValueError(f"{path}: member {info.filename!r} uses zip compression {info.compress_type} (not 0 or 8)")
        if info.flag_bits & 0x1:
            raise ValueError(f"{path}: member {info.filename!r} is encrypted")
        found[name] = Member(name, info)
    spans = sorted(
        (m.info.header_offset, m.info.header_offset + LOCAL_HEADER + m.info.compress_size, m.name)
        for m in found.values()
    )
    for (_, end, a), (start, _, b) in zip(spans, spans[1:]):
        if end > start:
            raise ValueError(f"{path}: members {a!r} and {b!r} overlap in the file; refused")
    return found


def header(zf, member, path, shape=None, dtype=None, limit=None):
    """Fill ``member``'s shape, dtype, order and data offset from its .npy header, decompressing only the
    header; then refuse (ValueError) a header that is not ``shape`` / ``dtype`` (where given), data over
    ``limit`` bytes, or a directory size other than header + data. Returns the member."""
    name, info = member.name, member.info
    try:
        with zf.open(info) as f:
            version = onp.lib.format.read_magic(f)
            if version not in ((1, 0), (2, 0), (3, 0)):
                raise ValueError(f"{path}: member {name!r} has .npy format version {version}")
            read = onp.lib.format.read_array_header_1_0 if version == (1, 0) else onp.lib.format.read_array_header_2_0
            got_shape, fortran, got_dtype = read(f, max_header_size=HEADER_LIMIT)
            offset = f.tell()
    except (zipfile.BadZipFile, EOFError, OSError, RuntimeError, NotImplementedError, SyntaxError) as e:
        raise ValueError(f"{path}: member {name!r} has no readable .npy header ({type(e).__name__}: {e})") from None
    if got_dtype.hasobject:
        raise ValueError(f"{path}: member {name!r} holds Python objects (only readable with pickle); refused")
    member.shape, member.dtype, member.fortran, member.offset = tuple(got_shape), got_dtype, bool(fortran), offset
    if shape is not None and member.shape != tuple(shape):
        raise ValueError(f"{path}: array {name!r} has shape {member.shape}, the config implies {tuple(shape)}")
    if dtype is not None and got_dtype != onp.dtype(dtype):
        raise ValueError(f"{path}: array {name!r} has dtype {_text(got_dtype)}, the config implies {_text(dtype)}")
    if limit is not None and member.nbytes > limit:
        raise ValueError(f"{path}: array {name!r} declares {member.nbytes:,} bytes, more than {limit:,}; refused")
    if info.file_size != offset + member.nbytes:
        raise ValueError(
            f"{path}: member {name!r}: the zip directory says {info.file_size:,} bytes, its .npy header implies "
            f"{offset + member.nbytes:,}; refused before decompressing"
        )
    return member


def _text(dtype):
    """A dtype's name, with its byte order when that is not the machine's."""
    dtype = onp.dtype(dtype)
    return dtype.name if dtype.isnative else f"{dtype.name} ({dtype.str})"


def read(zf, member, path, fh=None):
    """The array of a member whose ``header`` was read: exactly its declared bytes, read (and decompressed)
    ``CHUNK`` bytes at a time into a fresh array; ValueError when the data
    end early or fail the zip's CRC. With ``fh`` (the open file under ``zf``) an uncompressed member is read
    straight from the file into the array, without the CRC pass: for callers that check a digest of their own."""
    order = "F" if member.fortran and len(member.shape) > 1 else "C"
    out = onp.empty(member.shape, member.dtype, order=order)
    raw = out.reshape(-1, order="A").view(onp.uint8) if out.size else onp.zeros(0, onp.uint8)
    try:
        if fh is not None and member.info.compress_type == zipfile.ZIP_STORED:
            _read_stored(fh, member, raw, path)
            return out
        with zf.open(member.info) as f:
            f.read(member.offset)
            done = 0
            while done < raw.size:
                chunk = f.read(min(CHUNK, raw.size - done))
                if not chunk:
                    raise ValueError(f"{path}: array {member.name!r} ends after {done:,} of {raw.size:,} bytes")
                raw[done : done + len(chunk)] = onp.frombuffer(chunk, onp.uint8)
                done += len(chunk)
            f.read(1)  # at the end: the zip reader compares the CRC
    except (zipfile.BadZipFile, EOFError, OSError, RuntimeError, struct.error) as e:
        raise ValueError(f"{path}: array {member.name!r} is damaged ({type(e).__name__}: {e})") from None
    return out


def _data_start(fh, member, path):
    """Where an uncompressed member's array data start in the file (after its local header and .npy header)."""
    info = member.info
    if info.compress_type != zipfile.ZIP_STORED or info.compress_size != info.file_size:
        raise ValueError(f"{path}: member {member.name!r} is compressed; only a stored member is read in place")
    fh.seek(info.header_offset)
    local = fh.read(LOCAL_HEADER)
    if len(local) < LOCAL_HEADER or local[:4] != b"PK\x03\x04":
        raise ValueError(f"{path}: member {member.name!r} has no local header")
    name_len, extra_len = struct.unpack("<HH", local[26:30])
    return info.header_offset + LOCAL_HEADER + name_len + extra_len + member.offset


def mapped(fh, member, path):
    """A read-only ``numpy.memmap`` of an uncompressed member whose ``header`` was read (its pages are read
    when used, from the file ``fh`` is open on). Only for files that are replaced, never rewritten in place,
    and whose content the caller verifies (a digest). Small members are read instead."""
    start, size = _data_start(fh, member, path), os.fstat(fh.fileno()).st_size
    if start + member.nbytes > size:
        raise ValueError(f"{path}: array {member.name!r} ends after the file does")
    if member.nbytes < (1 << 16):
        out = read(None, member, path, fh=fh)
        out.flags.writeable = False
        return out
    order = "F" if member.fortran and len(member.shape) > 1 else "C"
    return onp.memmap(fh, dtype=member.dtype, mode="r", shape=member.shape, order=order, offset=start)


def _read_stored(fh, member, raw, path):
    fh.seek(_data_start(fh, member, path))
    view, done = memoryview(raw), 0
    while done < raw.size:
        got = fh.readinto(view[done:])
        if not got:
            raise ValueError(f"{path}: array {member.name!r} ends after {done:,} of {raw.size:,} bytes")
        done += got
