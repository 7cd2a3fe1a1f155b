"""A fork waits (bounded by ``INSTRUMENT_EXIT_TIMEOUT``) for the run starts in flight on other
threads: wandb.init starts wandb-core with a temporary folder for its port file, and a child
forked meanwhile that exits normally runs the parent's exit handlers and removes that folder, so
the parent's run never starts. A session marks its start with :class:`Starting`.
"""

from __future__ import annotations

import os
import threading

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
    me = threading.get_ident()
    with _starts:
        _starts.wait_for(lambda: not [ident for ident in _starting_threads if ident != me],
                         timeout=_env.exit_timeout())


def _after_fork_in_child() -> None:
    global _starts
    _starts = threading.Condition()
    _starting_threads.clear()


os.register_at_fork(before=_before_fork, after_in_child=_after_fork_in_child)
