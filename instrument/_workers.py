"""Workers: values from child processes reach the run their parent writes to.

A multiprocessing child (a pool or DataLoader worker; forked, spawned or forkserver) and a bare
``os.fork`` child open no run of their own. Their records go to a record journal (the format of
:mod:`instrument._journal`) in their parent's *inbox*, a folder named after the parent's process
id and a secret the whole process family shares (:func:`instrument._ranks.family_key`), so no
variable has to be handed down. The parent ingests its inbox about every second while it has a
run, at ``flush``, before a run finishes and at exit, and writes each record where one of its own
records of the same role would go.
"""

from __future__ import annotations

import os
import shutil
import stat
import sys
import tempfile
import threading
from collections.abc import Callable
from pathlib import Path

from instrument import _ranks
from instrument._journal import JournalReader, JournalWriter
from instrument._problems import Problem, report
from instrument._records import Point, Record

#: Seconds between two looks at the inbox while this process has a run.
POLL_SECONDS = 1.0

_forked_from: int | None = None  # in a forked child: the process it was forked from
_pid_at_fork: int | None = None


def _before_fork() -> None:
    # The family key is read from multiprocessing's key; a child forked before it was read here
    # could import multiprocessing afresh and get another one, so it is read now.
    global _pid_at_fork
    _pid_at_fork = os.getpid()
    try:
        _family_key()
    except Exception:  # noqa: BLE001, S110 - never stop a fork; the child then journals nowhere
        pass


def _after_fork_in_child() -> None:
    global _forked_from, _inbox, _poller, _lock
    _forked_from = _pid_at_fork
    _inbox = None
    _poller = None
    _lock = threading.RLock()


os.register_at_fork(before=_before_fork, after_in_child=_after_fork_in_child)

_key: str | None = None


def _family_key() -> str:
    global _key
    if _key is None:
        _key = _ranks.family_key()
    return _key


def parent_pid() -> int | None:
    """Return the process this one's records go to: the one it was forked from (``os.fork``, a
    forked worker), else its multiprocessing parent (a spawned or forkserver worker); None for a
    process that is neither."""
    if _forked_from is not None:
        return _forked_from
    multiprocessing = sys.modules.get("multiprocessing")
    parent = multiprocessing.parent_process() if multiprocessing is not None else None
    return parent.pid if parent is not None else None


def inbox_folder(pid: int) -> Path:
    """Return the inbox of process *pid*: ``<temp dir>/instrument-workers-<pid>-<family key>``."""
    return Path(tempfile.gettempdir()) / f"instrument-workers-{pid}-{_family_key()}"


def _private(folder: Path) -> bool:
    """Return whether *folder* is a real folder of this user that nobody else can enter."""
    try:
        info = os.lstat(folder)
    except OSError:
        return False
    return stat.S_ISDIR(info.st_mode) and info.st_uid == os.getuid() and not info.st_mode & 0o077


class WorkerJournal:
    """Where a worker's records go: a journal file of its own in its parent's inbox.

    The inbox is created (mode 0700) by the first worker that writes; a folder of that name that
    is not this user's private folder is refused (a warning; the records are dropped).
    """

    def __init__(self, parent: int) -> None:
        self.parent = parent
        self.folder = inbox_folder(parent)
        self._writer: JournalWriter | None = None

    def write(self, records: list[Record]) -> None:
        """Append *records* to this worker's journal (one flushed line each).

        Raises:
            OSError: the inbox cannot be created or written, or is not private.
        """
        if self._writer is None:
            try:
                self.folder.mkdir(mode=0o700)
            except FileExistsError:
                pass
            if not _private(self.folder):
                raise PermissionError(f"{self.folder} is not a private folder of this user")
            self._writer = JournalWriter(self.folder)
        for record in records:
            self._writer.append(record)

    def close(self) -> None:
        """Close the journal file; it stays in the inbox for the parent."""
        if self._writer is not None:
            self._writer.close()


def role_of(record: Record) -> str:
    """Return the linkage role of a record from a worker: ``series`` for points, else ``summary``."""
    return "series" if isinstance(record, Point) else "summary"


class Inbox:
    """This process's inbox: what its workers journaled, read incrementally."""

    def __init__(self) -> None:
        self.folder = inbox_folder(os.getpid())
        self.reader = JournalReader(self.folder)
        self._lock = threading.Lock()

    def drain(self, write: Callable[[Record], None]) -> None:
        """Hand every record the workers journaled since the last call to *write*, in order.

        A record that fails to be written is reported (a warning naming the inbox) and the rest
        still go. A folder of the inbox's name that is not this user's private folder is left
        alone.
        """
        if not self.folder.is_dir():
            return
        if not _private(self.folder):
            report(Problem("backend", f"instrument: {self.folder} is not a private folder of this user; values "
                           "from worker processes there were not read"), once=True)
            return
        with self._lock:
            for record in self.reader.read_new():
                if isinstance(record, dict):
                    continue  # no plain messages come from workers
                try:
                    write(record)
                except Exception as error:  # noqa: BLE001 - never raise into the program
                    report(Problem("backend", f"instrument: writing a value from a worker process ({self.folder}) "
                                   f"failed ({type(error).__name__}: {error})"), once=True)

    def remove(self) -> None:
        """Warn about records cut in half (a worker killed mid-write), then delete the inbox."""
        for path in self.reader.torn():
            report(Problem("backend", f"instrument: the worker journal {path} ends with an incomplete record (its "
                           "process died while writing it); everything before it was kept"))
        shutil.rmtree(self.folder, ignore_errors=True)


_lock = threading.RLock()
_inbox: Inbox | None = None
_poller: threading.Thread | None = None


def inbox() -> Inbox:
    """Return this process's inbox (nothing is created on disk)."""
    global _inbox
    with _lock:
        if _inbox is None:
            _inbox = Inbox()
        return _inbox


def watch(write: Callable[[Record], None]) -> None:
    """Start, once per process, a daemon thread that drains the inbox into *write* every
    :data:`POLL_SECONDS` (called when this process starts writing a run)."""
    global _poller
    with _lock:
        if _poller is not None:
            return
        box = inbox() if _inbox is None else _inbox

        def poll() -> None:
            stop = threading.Event()
            while not stop.wait(POLL_SECONDS):
                box.drain(write)

        _poller = threading.Thread(target=poll, name="instrument-workers", daemon=True)
        _poller.start()
