"""Atomic file writing and safe opening for reading.

Writing: a temporary file ``.<name>.<pid>.tmp-XXXX`` in the target's directory, flushed and fsynced, then
``os.replace`` (or, with ``overwrite=False``, ``os.link``, which fails if the target exists), so the target
is always either the old complete file or the new complete one. A symlink at the target is refused, never
followed. The temporary file is removed when the write fails (exceptions, KeyboardInterrupt); temporaries
of writers killed outright (SIGKILL) are removed by the next write to the same target, when their process
no longer exists.

Mapping: ``mapped_npz`` maps the arrays of an uncompressed .npz into memory without reading them.

Reading: ``open_regular`` opens without blocking and refuses anything but a regular file (a FIFO, a device,
a directory), with a ValueError naming the path.
"""

import os
import stat
import struct
import tempfile
import zipfile

import numpy as onp

__all__ = ["atomic_savez", "atomic_write_text", "open_regular", "stale_temporaries", "check_target", "mapped_npz"]


def _temp_prefix(path):
    return f".{os.path.basename(path)}."


def _pid_alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's live process
        return True
    return True


def stale_temporaries(path):
    """Temporary files of interrupted writes to ``path`` whose writer process no longer exists."""
    directory = os.path.dirname(os.path.abspath(path))
    prefix = _temp_prefix(path)
    stale = []
    try:
        names = os.listdir(directory)
    except OSError:
        return stale
    for name in names:
        rest = name[len(prefix) :] if name.startswith(prefix) else ""
        pid, _, tail = rest.partition(".tmp-")
        if pid.isdigit() and tail and not _pid_alive(int(pid)):
            stale.append(os.path.join(directory, name))
    return stale


def check_target(path, overwrite=True):
    """ValueError if ``path`` is a symlink, an existing non-regular file, or (``overwrite=False``) exists."""
    path = os.fspath(path)
    if os.path.islink(path):
        raise ValueError(f"{path}: is a symlink; refusing to write through it (remove it or choose another path)")
    if os.path.exists(path):
        if not stat.S_ISREG(os.stat(path).st_mode):
            raise ValueError(f"{path}: exists and is not a regular file; refusing to replace it")
        if not overwrite:
            raise ValueError(f"{path}: already exists; refusing to overwrite it (pass overwrite=True / --overwrite)")
    return path


def _write_atomic(path, write, suffix, overwrite):
    path = check_target(path, overwrite)
    for old in stale_temporaries(path):
        try:
            os.unlink(old)
        except OSError:
            pass
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=f"{_temp_prefix(path)}{os.getpid()}.tmp-", suffix=suffix, dir=directory)
    try:
        with os.fdopen(fd, "wb") as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        if overwrite:
            os.replace(tmp, path)
        else:
            try:
                os.link(tmp, path)  # atomic create-if-absent
            except FileExistsError:
                raise ValueError(f"{path}: already exists; refusing to overwrite it (pass --overwrite)") from None
            os.unlink(tmp)
    except BaseException:
        if os.path.lexists(tmp):
            os.unlink(tmp)
        raise
    return path


def atomic_write_text(path, text, overwrite=True):
    """Write ``text`` (UTF-8) to ``path`` atomically (never through a symlink). Returns the path."""
    return _write_atomic(path, lambda fh: fh.write(text.encode()), ".txt", overwrite)


def atomic_savez(path, arrays, compressed=True, overwrite=True):
    """Write ``arrays`` (name -> array) to ``path`` atomically; ``overwrite=False`` refuses an existing
    target. A symlink at ``path`` is refused. Returns the path."""
    save = onp.savez_compressed if compressed else onp.savez
    return _write_atomic(path, lambda fh: save(fh, **arrays), ".npz", overwrite)


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
