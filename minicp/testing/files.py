"""Safe opening for reading, and mapping of uncompressed .npz files.

Writing lives in ``minicp.files`` (atomic writes, writer locks, stale temporaries); its writers are
importable from here too.

Mapping: ``mapped_npz`` maps the arrays of an uncompressed .npz into memory without reading them.

Reading: ``open_regular`` opens without blocking and refuses anything but a regular file (a FIFO, a device,
a directory), with a ValueError naming the path.
"""

import os
import stat
import struct
import zipfile

import numpy as onp

from minicp.files import atomic_savez, atomic_write_text, check_target, stale_temporaries  # noqa: F401

__all__ = ["atomic_savez", "atomic_write_text", "open_regular", "stale_temporaries", "check_target", "mapped_npz"]


def open_regular(path):
    """Open ``path`` for binary reading; ValueError naming the path unless it is a readable regular file.
    Opens with O_NONBLOCK so that a FIFO never blocks, then checks the opened file itself."""
    path = os.fspath(path)
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    except FileNotFoundError:
        raise ValueError(f"{path}: no such file") from None
    except PermissionError:
        raise ValueError(f"{path}: permission denied (not readable)") from None
    except OSError as e:
        raise ValueError(f"{path}: cannot open ({e.strerror or e})") from None
    mode = os.fstat(fd).st_mode
    if not stat.S_ISREG(mode):
        os.close(fd)
        kind = "a FIFO" if stat.S_ISFIFO(mode) else "a directory" if stat.S_ISDIR(mode) else "not a regular file"
        raise ValueError(f"{path}: is {kind}; a golden file must be a regular file")
    if hasattr(os, "set_blocking"):
        os.set_blocking(fd, True)
    return os.fdopen(fd, "rb")


def _member(fh, info, path):
    """(shape, fortran order, dtype, data offset) of one stored .npy member of a zip file."""
    if info.compress_type != zipfile.ZIP_STORED or not info.filename.endswith(".npy"):
        raise ValueError(f"{path}: member {info.filename} is compressed or not an array")
    fh.seek(info.header_offset)
    local = fh.read(30)
    if len(local) < 30 or local[:4] != b"PK\x03\x04":
        raise ValueError(f"{path}: member {info.filename} has no local header")
    name_len, extra_len = struct.unpack("<HH", local[26:30])
    fh.seek(info.header_offset + 30 + name_len + extra_len)
    version = onp.lib.format.read_magic(fh)
    read = onp.lib.format.read_array_header_1_0 if version == (1, 0) else onp.lib.format.read_array_header_2_0
    shape, fortran, dtype = read(fh)
    if dtype.hasobject:
        raise ValueError(f"{path}: member {info.filename} holds Python objects")
    return shape, fortran, dtype, fh.tell()


def mapped_npz(path):
    """name -> read-only array of every array in an uncompressed .npz (``atomic_savez(..., compressed=False)``),
    mapped from the file (``numpy.memmap``: pages are read when used; never unpickled). ValueError for a
    compressed, truncated or malformed file."""
    arrays = {}
    try:
        with zipfile.ZipFile(path) as zf, open(path, "rb") as fh:
            for info in zf.infolist():
                shape, fortran, dtype, offset = _member(fh, info, path)
                name = info.filename[: -len(".npy")]
                if not shape or 0 in shape:  # nothing to map: read the few bytes
                    fh.seek(offset)
                    count = int(onp.prod(shape)) if shape else 1
                    arrays[name] = onp.frombuffer(fh.read(count * dtype.itemsize), dtype=dtype).reshape(shape)
                    continue
                order = "F" if fortran else "C"
                arrays[name] = onp.memmap(path, dtype=dtype, mode="r", shape=shape, order=order, offset=offset)
    except (zipfile.BadZipFile, EOFError, struct.error) as e:
        raise ValueError(f"{path}: not a readable .npz ({e})") from None
    return arrays
