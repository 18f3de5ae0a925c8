"""Atomic .npz writing (temp file in the same directory + os.replace; never through a symlink)."""

import os
import tempfile

import numpy as onp

__all__ = ["atomic_savez", "atomic_write_text"]


def _target(path, suffix):
    path = os.fspath(path)
    if os.path.islink(path):
        raise ValueError(f"refusing to write through the symlink {path!r}; remove it or choose another path")
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=suffix, dir=directory)
    return path, fd, tmp


def atomic_write_text(path, text):
    """Write ``text`` to ``path`` atomically (never through a symlink). Returns the path."""
    path, fd, tmp = _target(path, ".txt")
    try:
        with os.fdopen(fd, "w") as fh:
            fh.write(text)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def atomic_savez(path, arrays, compressed=True):
    """Write ``arrays`` (name -> array) to ``path`` atomically. Refuses a ``path`` that is a symlink, so a
    link planted where the file goes is never followed. Returns the path."""
    path, fd, tmp = _target(path, ".npz")
    try:
        with os.fdopen(fd, "wb") as fh:
            (onp.savez_compressed if compressed else onp.savez)(fh, **arrays)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path
