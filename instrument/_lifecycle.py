"""Process lifecycle: how the program ends (exit status), interpreter exit, SIGTERM and fork.

What linkage asks of the process around its runs: record the exit status the program ends with,
finish the runs at interpreter exit (after wandb registered its own teardown) and on SIGTERM,
and make a forked child leave its parent's runs alone (it never finishes them, and drops the
parent's SIGTERM handler). Linkage passes the function that finishes its runs; this module
imports only leaves.

The exit status needs a hook on ``sys.exit``: ``atexit`` handlers run inside the interpreter's
finalisation, after ``SystemExit`` was handled in C, and nothing in Python holds the status by
then. An uncaught exception is different: Python keeps it in ``sys.last_value`` before the exit
hooks run. So :func:`watch_exit_code` wraps ``sys.exit`` once, and :func:`exit_code` says how the
program is ending: 0, ``n`` for ``sys.exit(n)``, 1 for an uncaught exception, 130 for Ctrl-C,
143 after SIGTERM; in an interactive session only ``sys.exit`` counts.
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import os
import signal
import sys
import threading
import traceback
from collections.abc import Callable, Iterator
from typing import Any

#: What finishes every run of the process with an exit code (linkage's ``finish_state``).
Finisher = Callable[[int], None]

_exit_code: int | None = None
_exit_code_watched = False
_exit_hook_installed = False
_forked = False


def exit_code() -> int:
    """Return the interpreter's exit status as far as it is known at exit.

    ``sys.exit(n)`` that ends the interpreter: n; SIGTERM: 143; an uncaught exception (Python
    keeps it in ``sys.last_value`` before the exit hooks run): 1, 130 for Ctrl-C; else 0. In an
    interactive session (``python -i``, ``PYTHONINSPECT``, the REPL) an exception at the prompt
    does not end the interpreter, so there only ``sys.exit`` counts.
    """
    if _exit_code is not None:
        return _exit_code
    if _interactive():
        return 0
    error = getattr(sys, "last_exc", None) or getattr(sys, "last_value", None)
    if error is None:
        return 0
    return 130 if isinstance(error, KeyboardInterrupt) else 1


def _interactive() -> bool:
    """Whether the interpreter shows (or goes on to) an interactive prompt."""
    return hasattr(sys, "ps1") or bool(sys.flags.interactive or sys.flags.inspect or os.environ.get("PYTHONINSPECT"))


def exit_code_for(error: BaseException | None) -> int:
    """Return the run exit code for how a block ended: 0, n for ``SystemExit(n)``, 130 for
    Ctrl-C, 1 for any other exception."""
    if error is None:
        return 0
    if isinstance(error, SystemExit):
        code = error.code
        return code if isinstance(code, int) else (0 if code is None else 1)
    if isinstance(error, KeyboardInterrupt):
        return 130
    return 1


def watch_exit_code() -> None:
    """Record the code of a ``sys.exit(n)`` that ends the interpreter, for :func:`exit_code`; once.

    Installed when the first run starts, or earlier, when the first run that starts in the
    background (on its dispatcher thread) is created: the program may end before it started.
    ``sys.excepthook`` is left alone (an uncaught exception is read at exit): wandb's own hook
    prints the traceback and then calls any other hook it finds, which printed it a second time.
    Under ``python -i`` a ``sys.exit`` in the script only leads to the prompt, so it counts only
    once the prompt is there.
    """
    global _exit_code_watched
    if _exit_code_watched:
        return
    _exit_code_watched = True
    original_exit = sys.exit

    def exit_recording_status(code: Any = None) -> None:
        global _exit_code
        if not _interactive() or hasattr(sys, "ps1"):
            _exit_code = code if isinstance(code, int) else (0 if code is None else 1)
        original_exit(code)

    sys.exit = exit_recording_status  # type: ignore[assignment]


def finish_at_exit(finish: Finisher) -> None:
    """Call *finish* with :func:`exit_code` at interpreter exit (never in a forked child); once.

    Called when the first run started: wandb registers its teardown at its first ``wandb.init``
    and ``atexit`` runs the last-registered hook first, so this one runs before wandb tears down.
    """
    global _exit_hook_installed
    if _exit_hook_installed:
        return
    _exit_hook_installed = True
    watch_exit_code()

    def at_exit() -> None:
        if not _forked:
            finish(exit_code())
            if _exit_code is None and exit_code() == 130:
                _keep_ctrl_c_status()

    atexit.register(at_exit)


def _keep_ctrl_c_status() -> None:
    """Have the interpreter end by SIGINT again (status 130), as it would without instrument.

    CPython remembers an uncaught ``KeyboardInterrupt`` in a flag that the next code run from a
    string clears (``PyRun_String``, which C extensions call while they are imported, as
    protobuf's does when wandb is imported on the thread that starts a run). Then the process exits
    1 instead of dying of SIGINT. Running ``raise KeyboardInterrupt`` the same way sets the flag
    again; where that is not possible the status is left as it is.
    """
    try:
        run = ctypes.pythonapi.PyRun_StringFlags
        run.restype = ctypes.py_object
        run.argtypes = [ctypes.c_char_p, ctypes.c_int, ctypes.py_object, ctypes.py_object, ctypes.c_void_p]
        file_input = 257  # Py_file_input
        run(b"raise KeyboardInterrupt", file_input, {"__builtins__": __builtins__}, {}, None)
    except KeyboardInterrupt:  # raised as intended: the flag is set
        pass
    except Exception:  # noqa: S110 - no ctypes or another Python: the status stays what it is
        pass


@contextlib.contextmanager
def late_exit_hooks() -> Iterator[None]:
    """Let the block register threading exit hooks while threading runs its own; run them after it.

    Once the main thread ended, ``threading`` runs its exit hooks and refuses new ones ("can't
    register atexit after shutdown"); importing ``concurrent.futures.thread``, which wandb does,
    registers one. Inside the block new hooks are accepted, and when it ends they are run newest
    first, as ``threading`` runs its own (thread pools started in the block are shut down before
    the interpreter joins its threads). Outside threading's exit hooks, or on a Python without
    these internals, the block runs unchanged.
    """
    hooks = getattr(threading, "_threading_atexits", None)
    if not getattr(threading, "_SHUTTING_DOWN", False) or not isinstance(hooks, list):
        yield
        return
    first = len(hooks)
    threading._SHUTTING_DOWN = False  # type: ignore[attr-defined]  # noqa: SLF001 - the flag threading refuses hooks by
    try:
        yield
    finally:
        threading._SHUTTING_DOWN = True  # type: ignore[attr-defined]  # noqa: SLF001
        late = hooks[first:]
        del hooks[first:]
        for hook in reversed(late):
            try:
                hook()
            except Exception:  # printed as threading prints it, without skipping the hooks after it
                traceback.print_exc()


# Forked children ------------------------------------------------------------------------------------
def _after_fork_in_child() -> None:
    global _forked, _lock
    _forked = True
    _lock = threading.RLock()
    _terminators.clear()
    _sigterm_finished.clear()
    _sigterm_finishing.clear()
    try:
        if signal.getsignal(signal.SIGTERM) is _on_sigterm:
            signal.signal(signal.SIGTERM, signal.SIG_DFL)  # the child owns no run of the parent
    except (ValueError, OSError):  # not the main thread
        pass


os.register_at_fork(after_in_child=_after_fork_in_child)


# SIGTERM --------------------------------------------------------------------------------------------
_lock = threading.RLock()
_terminators: list[Finisher] = []
_finish: Finisher | None = None
_sigterm_finished = threading.Event()
_sigterm_finishing = threading.Event()


def finish_on_sigterm(finish: Finisher) -> None:
    """Install the SIGTERM handler that calls *finish(143)*, if this is the main thread and
    SIGTERM still has its default handler (a framework's own handler is left alone).

    Called when a run this process owns is made (standalone, training, pipeline): SLURM and
    Kubernetes send SIGTERM on preemption, and with the default handler the process dies at once,
    so the run is never finished and the points wandb had not yet flushed to its file are lost.
    """
    global _finish
    _finish = finish
    if threading.current_thread() is not threading.main_thread():
        return
    try:
        if signal.getsignal(signal.SIGTERM) is signal.SIG_DFL:
            signal.signal(signal.SIGTERM, _on_sigterm)
    except (ValueError, OSError):  # not the main interpreter (a subinterpreter), or no signals here
        pass


def close_on_sigterm(close: Finisher, finish: Finisher) -> None:
    """Call *close(143)* if this process gets SIGTERM while it owns a pipeline run.

    The handler (see :func:`finish_on_sigterm`) runs on a thread of its own: it closes every
    registered owner, newest first, then calls *finish(143)* for this process's other runs (each
    bounded by ``INSTRUMENT_EXIT_TIMEOUT``) while the main thread goes on; then the default
    handler is restored and SIGTERM raised again, so the process ends as it would have without
    instrument. A second SIGTERM meanwhile ends it at once.
    """
    with _lock:
        _terminators.append(close)
        finish_on_sigterm(finish)


def forget_sigterm(close: Finisher, *, runs_left: bool) -> None:
    """Undo :func:`close_on_sigterm`; restore the default handler once no owner is left and
    *runs_left* says no other run of this process is unfinished."""
    with _lock:
        if close in _terminators:
            _terminators.remove(close)
        if _terminators or runs_left or threading.current_thread() is not threading.main_thread():
            return
        try:
            if signal.getsignal(signal.SIGTERM) is _on_sigterm:
                signal.signal(signal.SIGTERM, signal.SIG_DFL)
        except (ValueError, OSError):
            pass


def terminating() -> bool:
    """Return whether SIGTERM is finishing this process's runs, the process ending right after."""
    return _sigterm_finishing.is_set() or _sigterm_finished.is_set()


def wait_for_sigterm_finish(timeout: float) -> None:
    """If SIGTERM is finishing this process's runs, wait until that is done, at most *timeout* seconds.

    The main thread goes on after SIGTERM and may reach the interpreter's exit meanwhile: a
    process group's SIGTERM (SLURM, ``kill -TERM -<pgid>``) also ends the subprocess it was waiting
    for. Finishing the runs again or tearing wandb down before the finish in flight is done would
    cut it short (the run left without its exit record and summary).
    """
    if _sigterm_finishing.is_set():
        _sigterm_finished.wait(timeout)


def end_as_terminated() -> None:
    """If SIGTERM finished (or is finishing) this process's runs, end the process now as SIGTERM
    would have (a shell reports status 143); else do nothing. Called by the main thread at exit."""
    if not terminating():
        return
    with contextlib.suppress(OSError, ValueError):  # not the main thread: the process ends as it goes on
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        os.kill(os.getpid(), signal.SIGTERM)


def _on_sigterm(signum: int, frame: Any) -> None:
    # The main thread may have been interrupted while holding a lock (wandb's console wrapper,
    # a run's lock), so the runs are finished on a thread of their own while the main thread goes
    # on; that thread then signals the main thread again, which dies of the default action.
    if _sigterm_finished.is_set() or _sigterm_finishing.is_set():  # finished, or a second SIGTERM
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        os.kill(os.getpid(), signal.SIGTERM)
        return
    _sigterm_finishing.set()
    threading.Thread(target=_finish_after_sigterm, name="instrument-sigterm", daemon=True).start()


def _finish_after_sigterm() -> None:
    global _exit_code
    _exit_code = code = 128 + signal.SIGTERM
    try:
        for close in reversed(list(_terminators)):
            with contextlib.suppress(Exception):  # dying anyway: finish what can be finished
                close(code)
        if _finish is not None:
            _finish(code)
    finally:
        _sigterm_finished.set()
        _sigterm_finishing.clear()
        with contextlib.suppress(OSError, ValueError):  # the main thread ended: the interpreter is exiting
            signal.pthread_kill(threading.main_thread().ident or 0, signal.SIGTERM)
