"""A fork waits (bounded by ``INSTRUMENT_EXIT_TIMEOUT``) for the run starts in flight on other
threads: wandb.init starts wandb-core with a temporary folder for its port file, and a child
forked meanwhile that exits normally runs the parent's exit handlers and removes that folder, so
the parent's run never starts. A session marks its start with :class:`Starting`. A Ctrl-C during
that wait is sent to the main thread again once the fork returned: Python drops what a fork hook
raises.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
import time

from instrument import _env

_starts = threading.Condition()
_starting_threads: list[int] = []


class Starting:
    """Mark a run start in flight on this thread, for the fork hook."""

    def __enter__(self) -> None:
        with _starts:
            _starting_threads.append(threading.get_ident())

    def __exit__(self, *exc_info: object) -> None:
        with _starts:
            _starting_threads.remove(threading.get_ident())
            _starts.notify_all()


def _before_fork() -> None:
    global _interrupted
    me = threading.get_ident()
    try:
        with _starts:
            _starts.wait_for(lambda: not [ident for ident in _starting_threads if ident != me],
                             timeout=_env.exit_timeout())
    except KeyboardInterrupt:  # Python drops what a fork hook raises: Ctrl-C is sent again after the fork
        _interrupted = threading.current_thread() is threading.main_thread()


_interrupted = False  # Ctrl-C arrived while a fork waited for a start in flight


def _after_fork_in_parent() -> None:
    global _interrupted
    if _interrupted:  # run in this hook, the handler's KeyboardInterrupt would be dropped again
        _interrupted = False
        threading.Thread(target=_interrupt_main_soon, name="instrument-fork-interrupt", daemon=True).start()


def _interrupt_main_soon() -> None:
    """Send SIGINT to the main thread again once the fork has returned there."""
    time.sleep(0.05)
    with contextlib.suppress(OSError, ValueError):  # the main thread is gone: nothing to interrupt
        signal.pthread_kill(threading.main_thread().ident or 0, signal.SIGINT)


def _after_fork_in_child() -> None:
    global _starts, _interrupted
    _starts = threading.Condition()
    _starting_threads.clear()
    _interrupted = False  # the parent's Ctrl-C


os.register_at_fork(before=_before_fork, after_in_parent=_after_fork_in_parent,
                    after_in_child=_after_fork_in_child)
