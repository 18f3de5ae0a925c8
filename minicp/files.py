"""Files: written atomically, with a lock held for the writer's lifetime, errors that name the file; and
opened for reading only when they are regular files.

Every file minicp writes (checkpoints, golden files, reports, figures, cached references) goes through here.

Atomic writes. The new content goes to a temporary file ``.<name>.<pid>.tmp-<random><suffix>`` beside the
target (``pid``: the writer's process id), which is flushed, fsynced and renamed over the target
(``os.replace``; with ``overwrite=False``, ``os.link``, which fails if the target appeared meanwhile). So the
target is always either the previous complete file or the new complete one. A symlink at the target is
refused, never written through. The temporary file is created with mode 0666 minus the umask, as any other
program's files are, and keeps that mode when renamed.

Temporaries. A writer removes its own temporary when the write fails (exceptions, Ctrl-C). One that was
killed outright (SIGKILL, power loss) leaves it behind; ``remove_stale_temporaries`` removes those whose
writer process no longer exists, and only those: a live writer's temporary is never touched.

Locks. ``locked(path)`` holds an exclusive ``fcntl.flock`` lock on ``.<name>.lock`` beside the target for
as long as the block runs, with the holder's pid written in it; the holder removes the file when it is done
(a writer that locked a file removed meanwhile takes the new one, so two writers never hold two different
files). A second writer, in this or another process, gets ``FileInUseError`` ("<path> is in use by process
N") and has touched nothing. The lock is re-entrant in the thread that holds it, released when the holder
exits (even by SIGKILL, which leaves the file behind for the next writer to take and remove), and not
inherited by forked children.

Errors. An OSError while writing (disk full, permission denied, file too large) is raised again as an
OSError of the same errno whose message names the target and says that its previous content is unchanged.

Reading. ``open_regular`` opens without blocking and refuses anything but a regular file (a FIFO, a device,
a directory), with a ValueError naming the path.
"""

import contextlib
import errno
import fcntl
import os
import secrets
import stat
import threading
import time

import numpy as np

__all__ = [
    "open_regular",
    "FileInUseError",
    "atomic_write",
    "atomic_savez",
    "atomic_write_text",
    "check_target",
    "locked",
    "lock_path",
    "remove_stale_temporaries",
    "stale_temporaries",
    "temporary_path",
]

TEMP_MARK = ".tmp-"  # a temporary's name: .<name>.<pid>.tmp-<random><suffix>
OWNER_WAIT_S = 1.0  # how long a refused writer waits for the lock holder's pid to appear in the lock file


class FileInUseError(OSError):
    """Another writer holds the lock of the target; nothing was written or removed."""


def _temp_prefix(path):
    return f".{os.path.basename(path)}."


def temporary_path(path, suffix=""):
    """A fresh temporary name beside ``path`` that carries this process's pid (not created)."""
    directory, base = os.path.split(os.path.abspath(path))
    return os.path.join(directory, f".{base}.{os.getpid()}{TEMP_MARK}{secrets.token_hex(4)}{suffix}")


def lock_path(path):
    """The lock file of ``path``: ``.<name>.lock`` in the same directory."""
    directory, base = os.path.split(os.path.abspath(path))
    return os.path.join(directory, f".{base}.lock")


def _pid_alive(pid):
    if pid <= 0:
        return False
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
    for name in sorted(names):
        rest = name[len(prefix) :] if name.startswith(prefix) else ""
        pid, _, tail = rest.partition(TEMP_MARK)
        if pid.isdigit() and tail and not _pid_alive(int(pid)):
            stale.append(os.path.join(directory, name))
    return stale


def remove_stale_temporaries(path):
    """Remove what killed writers of ``path`` left behind (their process is gone); returns the names."""
    removed = []
    for name in stale_temporaries(path):
        with contextlib.suppress(FileNotFoundError):
            os.unlink(name)
            removed.append(name)
    return removed


def check_target(path, overwrite=True, replace_symlink=False):
    """``path`` as str; ValueError if it is a symlink (unless ``replace_symlink``: then the link itself is
    replaced), an existing non-regular file, or (``overwrite=False``) an existing file."""
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"path must be a str or os.PathLike, got {type(path).__name__} {path!r}")
    path = os.fspath(path)
    if os.path.islink(path):
        if replace_symlink and overwrite:
            return path
        raise ValueError(f"{path}: is a symlink; refusing to write through it (remove it or choose another path)")
    if os.path.exists(path):
        if not stat.S_ISREG(os.stat(path).st_mode):
            raise ValueError(f"{path}: exists and is not a regular file; refusing to replace it")
        if not overwrite:
            raise ValueError(f"{path}: already exists; refusing to overwrite it (pass overwrite=True / --overwrite)")
    return path


# ----------------------------------------------------------------------------------------------------
# Locks
# ----------------------------------------------------------------------------------------------------

_held = {}  # lock file path -> [fd, owning thread id, depth] of the locks this process holds
_held_guard = threading.Lock()


def _forget_locks_in_child():
    """A forked child does not own its parent's locks: close its copies (the parent's lock stays held)."""
    for fd, _, _ in _held.values():
        with contextlib.suppress(OSError):
            os.close(fd)
    _held.clear()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_locks_in_child)


def _pid_in(fd):
    try:
        text = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
    except OSError:
        return None
    return int(text) if text.isdigit() and _pid_alive(int(text)) else None


def _try_flock(fd, path, lock):
    """True if this open file now holds the lock, False if another one does."""
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except OSError as e:
        if e.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
            return False
        os.close(fd)
        raise type(e)(e.errno, f"cannot lock {path}: {e.strerror} ({lock})") from None


def _in_use(path, lock, owner):
    who = f"process {owner}" if owner is not None else "another process"
    if owner == os.getpid():
        who += " (this process: another thread or an enclosing call)"
    return FileInUseError(
        f"{path} is in use by {who}: another writer holds its lock ({lock}); nothing was written. "
        "Wait for that run to finish, stop it, or choose another path"
    )


def _lock_fd(path, lock):
    """An open file descriptor of ``lock`` that holds its flock, the file still being the one at ``lock``.

    The holder removes the lock file when it is done, so a writer that locked a file which was removed
    meanwhile opens the new one and tries again. A refused writer reads the holder's pid from the file (the
    holder writes it right after locking; a holder that is just leaving is waited for)."""
    for _ in range(1000):
        try:
            fd = os.open(lock, os.O_RDWR | os.O_CREAT | getattr(os, "O_CLOEXEC", 0), 0o666)
        except OSError as e:
            raise type(e)(e.errno, f"cannot lock {path}: {e.strerror} ({lock})") from None
        deadline = time.monotonic() + OWNER_WAIT_S
        while not _try_flock(fd, path, lock):
            owner = _pid_in(fd)
            if owner is not None or time.monotonic() > deadline:
                os.close(fd)
                raise _in_use(path, lock, owner)
            time.sleep(0.01)
        try:
            current = os.stat(lock)
        except FileNotFoundError:
            current = None
        opened = os.fstat(fd)
        if current is not None and (current.st_dev, current.st_ino) == (opened.st_dev, opened.st_ino):
            return fd
        os.close(fd)  # the previous holder removed this file after we opened it: take the new one
    raise FileInUseError(f"{path}: its lock file {lock} keeps changing; another writer is busy with it")


def _acquire(path):
    lock = lock_path(path)
    me = threading.get_ident()
    with _held_guard:
        entry = _held.get(lock)
        if entry is not None and entry[1] == me:
            entry[2] += 1
            return lock
    fd = _lock_fd(path, lock)
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    with _held_guard:
        _held[lock] = [fd, me, 1]
    return lock


def _release(lock):
    with _held_guard:
        entry = _held.get(lock)
        if entry is None:
            return
        entry[2] -= 1
        if entry[2]:
            return
        del _held[lock]
    fd = entry[0]
    with contextlib.suppress(OSError):
        os.ftruncate(fd, 0)
        os.unlink(lock)  # while still locked: a writer waiting on this file sees it gone and opens a new one
    os.close(fd)  # releases the flock


@contextlib.contextmanager
def locked(path):
    """Hold the exclusive writer's lock of ``path`` while the block runs (re-entrant in this thread).

    FileInUseError ("<path> is in use by process N") when another writer holds it."""
    lock = _acquire(os.fspath(path))
    try:
        yield path
    finally:
        _release(lock)


# ----------------------------------------------------------------------------------------------------
# Atomic writes
# ----------------------------------------------------------------------------------------------------


def _named(e, path):
    """The same OSError (same errno, so the same subclass), its message naming ``path``."""
    text = e.strerror or str(e)
    return OSError(e.errno, f"cannot write {path}: {text}; its previous content (if any) is unchanged")


def _create_temporary(path, suffix):
    for _ in range(100):
        tmp = temporary_path(path, suffix)
        try:
            return tmp, os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0), 0o666)
        except FileExistsError:
            continue
    raise FileExistsError(errno.EEXIST, f"cannot create a temporary file beside {path}")


def _sync_directory(directory):
    with contextlib.suppress(OSError):  # not every file system lets a directory be opened or synced
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _place(tmp, path, overwrite):
    if overwrite:
        os.replace(tmp, path)
        return
    try:
        os.link(tmp, path)  # atomic create-if-absent
    except FileExistsError:
        raise ValueError(
            f"{path}: already exists; refusing to overwrite it (pass overwrite=True / --overwrite)"
        ) from None
    os.unlink(tmp)


def atomic_write(path, write, *, suffix="", overwrite=True, lock=False, by_path=False, replace_symlink=False):
    """Write ``path`` atomically: ``write(fh)`` fills a binary file object (``by_path=True``: ``write(name)``
    writes the file of that name, for writers that need one), then fsync and rename. Returns ``path``.

    ``overwrite=False`` refuses an existing target (ValueError); ``lock=True`` holds the target's writer
    lock during the write (FileInUseError if another writer has it). A symlink at ``path`` is refused.
    (``replace_symlink=True``: the link is replaced by the file, never written through). Temporaries of dead
    writers are removed after the target was found acceptable."""
    path = check_target(path, overwrite, replace_symlink)
    with locked(path) if lock else contextlib.nullcontext():
        remove_stale_temporaries(path)
        directory = os.path.dirname(os.path.abspath(path))
        try:
            tmp, fd = _create_temporary(path, suffix)
        except OSError as e:
            raise _named(e, path) from e
        try:
            try:
                if by_path:
                    os.close(fd)
                    write(tmp)
                    fd = os.open(tmp, os.O_RDONLY)
                    os.fsync(fd)
                    os.close(fd)
                else:
                    with os.fdopen(fd, "wb") as fh:
                        write(fh)
                        fh.flush()
                        os.fsync(fh.fileno())
                _place(tmp, path, overwrite)
            except OSError as e:
                raise _named(e, path) from e
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
        _sync_directory(directory)
    return path


def atomic_write_text(path, text, overwrite=True, lock=False):
    """Write ``text`` (UTF-8) to ``path`` atomically (never through a symlink). Returns the path."""
    return atomic_write(path, lambda fh: fh.write(text.encode()), suffix=".txt", overwrite=overwrite, lock=lock)


def atomic_savez(path, arrays, compressed=True, overwrite=True, lock=False):
    """Write ``arrays`` (name -> array) to ``path`` as .npz atomically; ``overwrite=False`` refuses an existing
    target, ``lock=True`` holds the target's writer lock meanwhile. A symlink at ``path`` is refused."""
    save = np.savez_compressed if compressed else np.savez
    return atomic_write(path, lambda fh: save(fh, **arrays), suffix=".npz", overwrite=overwrite, lock=lock)


# ----------------------------------------------------------------------------------------------------
# Reading
# ----------------------------------------------------------------------------------------------------


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
        raise ValueError(f"{path}: is {kind}; expected a regular file")
    if hasattr(os, "set_blocking"):
        os.set_blocking(fd, True)
    return os.fdopen(fd, "rb")
