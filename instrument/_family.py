"""The process family: which process a child's values go to, and where it finds that process.

A multiprocessing child (a pool or DataLoader worker; forked, spawned or forkserver) and a bare
``os.fork`` child write no run of their own; their records go to their parent's *inbox*, a
folder named after the parent's process id and a secret the whole family shares (a digest of
multiprocessing's authentication key, which every child inherits), so nothing has to be handed
down through the environment. Reading and writing the inbox is :mod:`instrument._workers`'.
Loaded by ``import instrument`` (the fork hooks must be in place before the first fork), so it
imports only ``os`` and ``sys`` at the top.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Callable

_key: str | None = None
_forked_from: int | None = None  # in a forked child: the process it was forked from
_pid_at_fork: int | None = None


def family_key() -> str:
    """Return a secret shared by this process and every multiprocessing child it starts (forked,
    spawned or forkserver): a digest of multiprocessing's authentication key. Imports
    ``multiprocessing.process`` (small) on the first call."""
    global _key
    if _key is None:
        import hashlib
        import multiprocessing.process  # about 5 ms, only in a process whose family is looked for

        key = bytes(multiprocessing.process.current_process().authkey)
        _key = hashlib.sha256(b"instrument:" + key).hexdigest()[:24]
    return _key


def _before_fork() -> None:
    # A child forked before the key was read here could import multiprocessing afresh and get
    # another key, so it is read now (fork only: a spawned child gets the key from multiprocessing).
    global _pid_at_fork
    _pid_at_fork = os.getpid()
    try:
        family_key()
    except Exception:  # never stop a fork; the child then writes to an inbox nobody reads
        _pid_at_fork = None


def _after_fork_in_child() -> None:
    global _forked_from
    _forked_from = _pid_at_fork


os.register_at_fork(before=_before_fork, after_in_child=_after_fork_in_child)


def forked_from_parent() -> bool:
    """Return whether this process was forked from the process its values go to (``os.fork``, a
    fork-started worker), so it inherited that process's memory (a forkserver worker was forked
    from the fork server instead)."""
    return _forked_from is not None and _forked_from == parent_pid()


def parent_pid() -> int | None:
    """Return the process this one's values go to: its multiprocessing parent (a pool or
    DataLoader worker, however started: a forkserver worker is forked by the fork server, but its
    parent is the process that asked for it), else the process it was forked from (``os.fork``);
    None for any other process."""
    multiprocessing = sys.modules.get("multiprocessing")
    parent = multiprocessing.parent_process() if multiprocessing is not None else None
    if parent is not None:
        return int(parent.pid)
    return _forked_from


def inbox_folder(pid: int) -> Path:
    """Return the inbox of process *pid*: ``<temp dir>/instrument-workers-<pid>-<family key>``."""
    return Path(_temp_dir()) / f"instrument-workers-{pid}-{family_key()}"


def _temp_dir() -> str:
    """Return the temporary directory ``tempfile`` would choose (``tempfile.tempdir``, else the
    first existing of ``TMPDIR``, ``TEMP``, ``TMP``, the platform's folders, the working
    directory), without the file ``tempfile.gettempdir`` writes and deletes there on its first
    call: a pool's ``terminate`` can kill a worker between the two and leave the file behind."""
    import tempfile

    if tempfile.tempdir is not None:
        return tempfile.tempdir
    candidates = [os.environ.get(name) for name in ("TMPDIR", "TEMP", "TMP")]
    if os.name != "nt":  # tempfile's own list; only looked at, nothing is created here
        candidates += ["/tmp", "/var/tmp", "/usr/tmp"]  # noqa: S108
    for candidate in candidates:
        if candidate and os.path.isdir(candidate):
            return os.path.abspath(candidate)
    return tempfile.gettempdir()


def may_have_inbox() -> bool:
    """Return whether this process may have an inbox: it forked, or multiprocessing is imported
    (a process that did neither has no children writing to it). Cheap: looks at nothing on disk."""
    return _key is not None or "multiprocessing" in sys.modules


def live_children() -> list[int]:
    """Return the process ids of this process's multiprocessing children that still run and that
    multiprocessing waits for at exit (not daemonic: those it terminates); none when
    multiprocessing was never imported."""
    process = sys.modules.get("multiprocessing.process")
    if process is None:
        return []
    return [child.pid for child in process.active_children() if child.pid is not None and not child.daemon]


def after_children_end(callback: Callable[[], None]) -> None:
    """Call *callback* at interpreter exit once multiprocessing has waited for this process's
    children: multiprocessing's own exit hook joins them, then runs its finalizers of negative
    priority. Imports ``multiprocessing.util`` (loaded already where children exist)."""
    import multiprocessing.util

    multiprocessing.util.Finalize(None, callback, exitpriority=-1_000_000)
