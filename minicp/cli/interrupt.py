"""Ctrl-C for the ``minicp`` command: at any moment, one line on stderr and exit status 130, no traceback.

Three stretches of a command's life, three handlers:

* start-up, while Python imports minicp (about a second: NumPy, autograd, the package): ``guard_startup``,
  called from the top of ``minicp/__init__.py``, sees that the process is the ``minicp`` command (or
  ``python -m minicp``) and lets SIGINT print ``minicp: interrupted`` and exit 130 at once: nothing has
  been read or written yet. Imported as a library, minicp leaves SIGINT alone;
* the command itself: ``begin`` puts back Python's KeyboardInterrupt, so that ``minicp train`` can save its
  checkpoint, and ``minicp.cli.main`` turns the KeyboardInterrupt into its one line and 130; ``quiet``
  ignores further Ctrl-C while that line is printed;
* after the command returned: ``end`` flushes stdout and stderr and ends the process at once with the
  command's status (``os._exit``). Python's own shutdown would otherwise run for a while with SIGINT back
  at its default action, so a late Ctrl-C killed the process by the signal (status -2) instead of 130.
  Everything a command writes is complete (fsynced and renamed) before it returns.

Only the ``minicp`` process itself is affected: ``minicp.cli.main`` called from Python (tests, notebooks)
changes no signal handler.
"""

import os
import signal
import sys
import threading

_guarded = False  # True in the process that is the minicp command


def _is_command():
    """True when this process is the ``minicp`` console script or ``python -m minicp``: while ``python -m``
    imports the package, ``sys.argv[0]`` is the string ``-m``."""
    argv0 = sys.argv[0] if sys.argv else ""
    return argv0 == "-m" or os.path.basename(argv0) in ("minicp", "minicp.exe")


def _exit_now(signum, frame):
    try:
        sys.stdout.flush()
        os.write(2, b"minicp: interrupted\n")
    except (OSError, ValueError):
        pass
    os._exit(130)


def guard_startup():
    """In the minicp command only: Ctrl-C during the imports exits 130 with one line."""
    global _guarded
    if _guarded or not _is_command() or threading.current_thread() is not threading.main_thread():
        return
    if signal.getsignal(signal.SIGINT) is not signal.default_int_handler:
        return  # a shell or parent chose otherwise (e.g. SIGINT ignored in a background job)
    signal.signal(signal.SIGINT, _exit_now)
    _guarded = True


def begin():
    """The command starts: Ctrl-C raises KeyboardInterrupt again (the command saves what it must)."""
    if _guarded and signal.getsignal(signal.SIGINT) is _exit_now:
        signal.signal(signal.SIGINT, signal.default_int_handler)


def quiet():
    """The command was interrupted and prints its line: further Ctrl-C are ignored meanwhile."""
    if _guarded and threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGINT, signal.SIG_IGN)


def end(code):
    """The command returned ``code`` (an int, or a SystemExit code): in the minicp process, flush the output
    and exit with it now; called from Python (tests, notebooks), do nothing."""
    if not _guarded or threading.current_thread() is not threading.main_thread():
        return
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the work is done: nothing left to interrupt
    if code is None:
        code = 0
    elif not isinstance(code, int):  # SystemExit("message"): Python would print it and exit with 1
        print(code, file=sys.stderr)
        code = 1
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
    os._exit(code)


guard_startup()  # on import, first thing in minicp/__init__.py
