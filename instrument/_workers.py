"""Workers: the record journal that carries a child process's values to its parent's run.

A worker (see :mod:`instrument._family`) appends its records to a journal file of its own in its
parent's inbox (:class:`WorkerJournal`); the parent reads the inbox (:class:`Inbox`) while it has
a run, at ``flush``, before its runs finish and at exit, and writes each record where one of its
own records of the same role would go. The journal is the one eval subprocesses use
(:mod:`instrument._journal`): flushed per record, media and files copied beside it, config
redacted before it reaches the disk.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import stat
import threading
from collections.abc import Callable, Iterable

from instrument import _family
from instrument._journal import JournalReader, JournalSink, Writable, ingest
from instrument._problems import Problem, report
from instrument._records import Point, Record

#: Seconds between two looks at the inbox while this process has a run.
POLL_SECONDS = 1.0


def _private(path: str | os.PathLike[str]) -> bool:
    """Return whether *path* is a real folder of this user that nobody else can enter."""
    try:
        info = os.lstat(path)
    except OSError:
        return False
    return stat.S_ISDIR(info.st_mode) and info.st_uid == os.getuid() and not info.st_mode & 0o077


class WorkerJournal:
    """Where a worker's records go: a journal file of its own in the inbox of process *parent*.

    The inbox is created (mode 0700) by the first worker that writes. A folder of that name that
    is not this user's private folder is refused: the records are dropped, with one warning.
    """

    def __init__(self, parent: int, *, redact_secrets: bool = True) -> None:
        self.parent = parent
        self.folder = _family.inbox_folder(parent)
        self.redact_secrets = redact_secrets
        self._sink: JournalSink | None = None
        self._refused = False

    def write(self, records: Iterable[Record], problems: Iterable[Problem] = ()) -> None:
        """Append *records* to this worker's journal (one flushed line each) after reporting
        *problems*; a record that cannot be written is reported (once per kind), never raised."""
        if self._sink is None and not self._refused:
            try:
                self.folder.mkdir(mode=0o700, exist_ok=True)
            except OSError as error:
                report(Problem("backend", f"instrument: the inbox {self.folder} of process {self.parent} cannot be "
                               f"created ({error}); values of this worker process are dropped", "worker"), once=True)
            if _private(self.folder):
                self._sink = JournalSink(str(self.folder), redact_secrets=self.redact_secrets)
            else:
                self._refused = True
                report(Problem("backend", f"instrument: {self.folder} is not a private folder of this user; values "
                               "of this worker process are dropped", "worker"), once=True)
        if self._sink is None:
            for problem in problems:
                report(problem, once=problem.kind == "non_finite")
            return
        self._sink.redact_secrets = self.redact_secrets  # configure() may have changed it
        self._sink.write(records, problems)

    def close(self) -> None:
        """Close the journal file; it stays in the inbox for the parent."""
        if self._sink is not None:
            self._sink.close()


def role_of(record: Record) -> str:
    """Return the role a worker's record is written with: ``series`` for points, else ``summary``."""
    return "series" if isinstance(record, Point) else "summary"


class Inbox:
    """This process's inbox: what its workers journaled, read incrementally.

    Args:
        target: writes one worker's records where this process writes its own (linkage).
    """

    def __init__(self, target: Writable) -> None:
        self.folder = _family.inbox_folder(os.getpid())
        self.target = target
        self._reader = JournalReader(self.folder)
        self._lock = threading.Lock()

    def open(self) -> None:
        """Create the inbox (mode 0700) if it does not exist: its workers then know that this
        process reads what they write (:meth:`is_read`). A failure only costs that signal."""
        with contextlib.suppress(OSError):
            self.folder.mkdir(mode=0o700, exist_ok=True)

    @staticmethod
    def is_read(parent: int) -> bool:
        """Return whether process *parent* reads its inbox: it made it, as this user's private folder."""
        return _private(_family.inbox_folder(parent))

    def drain(self) -> None:
        """Write every record the workers journaled since the last call, in order.

        A problem a record raises in strict mode came from another process: it is a warning
        here. A folder of the inbox's name that is not this user's private folder is left alone.
        """
        if not self.folder.is_dir():
            return
        if not _private(self.folder):
            report(Problem("backend", f"instrument: {self.folder} is not a private folder of this user; values "
                           "there were not read", "inbox"), once=True)
            return
        with self._lock:
            ingest(self.target, self._reader)

    def unread(self) -> int:
        """Return how many records the workers journaled since the last drain, reading past them."""
        if not _private(self.folder):
            return 0
        with self._lock:
            return sum(not isinstance(record, dict) for record in self._reader.read_new())

    def remove(self) -> None:
        """Warn about records cut in half (a worker killed mid-write) and delete the inbox (its
        runs took everything: the files its records name were copied, or are written by now)."""
        for path in self._reader.torn():
            report(Problem("backend", f"instrument: the worker journal {path} ends with an incomplete record (its "
                           "process died while writing it); everything before it was kept"))
        if _private(self.folder):
            shutil.rmtree(self.folder, ignore_errors=True)


class Poller:
    """A daemon thread that calls *drain* every :data:`POLL_SECONDS` while this process has a run."""

    def __init__(self, drain: Callable[[], None]) -> None:
        self._drain = drain
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="instrument-workers", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(POLL_SECONDS):
            try:
                self._drain()
            except Exception as error:  # never end the thread: the next round or the exit drains
                report(Problem("backend", f"instrument: reading values from worker processes failed "
                               f"({type(error).__name__}: {error})"), once=True)

    def stop(self) -> None:
        """Stop the thread (it ends within a round)."""
        self._stop.set()
