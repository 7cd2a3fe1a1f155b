"""This process's side of its workers' records: a worker's journal into its parent's inbox, and,
in a parent, reading its own inbox into its runs (about every second, at flush and finish, at
exit) and removing it when the process ends.

Where a parent writes a worker's record is linkage's to say: :func:`route_with` gives the
function (``_linkage.resolve``) once, when linkage is imported.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterable

from instrument import _family, _linkage_state
from instrument._journal import Writable
from instrument._problems import Problem, report
from instrument._records import Record
from instrument._workers import Inbox, Poller, WorkerJournal, role_of

_worker_journals: dict[int, WorkerJournal] = {}
_inbox: Inbox | None = None
_poller: Poller | None = None
_route: Callable[[str], Writable | None] | None = None
_lock = threading.RLock()


def route_with(route: Callable[[str], Writable | None]) -> None:
    """Write each worker record where *route* says a record of its role goes (``_linkage.resolve``)."""
    global _route
    _route = route


def worker_journal(parent: int) -> WorkerJournal:
    """Return this worker's journal into the inbox of process *parent*."""
    journal = _worker_journals.get(parent)
    if journal is None:
        with _lock:
            journal = _worker_journals.setdefault(parent, WorkerJournal(
                parent, redact_secrets=_linkage_state.state.settings.redact_secrets is not False))
    return journal


def redact_secrets(redact: bool) -> None:
    """Make the journals of this worker redact secret-looking config keys, or not (``configure``)."""
    with _lock:
        for journal in _worker_journals.values():
            journal.redact_secrets = redact


class _AsParent:
    """Writes a worker's record where this process writes its own records of the same role."""

    id = "of this process"

    def write(self, records: Iterable[Record], problems: Iterable[Problem] = ()) -> None:
        if _route is None:
            raise RuntimeError("instrument: worker records were read before linkage set where they go")
        for record in records:
            sink = _route(role_of(record))
            if sink is not None:
                sink.write([record])


def drain_workers() -> None:
    """Write what this process's workers journaled into its runs. Does nothing in a process that
    never forked nor imported multiprocessing, or whose inbox does not exist."""
    if _family.may_have_inbox():
        _own_inbox().drain()


def _own_inbox() -> Inbox:
    """Return this process's inbox (its reader keeps its place for the life of the process)."""
    global _inbox
    with _lock:
        if _inbox is None:
            _inbox = Inbox(_AsParent())
        return _inbox


def open_inbox() -> None:
    """Make this process's inbox now, so its workers know that it reads what they write."""
    _own_inbox().open()


def close_inbox(*, wait_for_children: bool) -> None:
    """The process is ending: remove its inbox. With *wait_for_children*, while multiprocessing
    children still run (Python waits for them after the exit hooks that finish the runs), it is
    removed once they ended, with a warning counting the values they journaled too late."""
    global _inbox
    with _lock:
        inbox, _inbox = _inbox, None
    if inbox is None:
        return
    children = _family.live_children() if wait_for_children else []
    if not children:
        inbox.remove()
        return

    def once_children_ended() -> None:
        late = inbox.unread()
        if late:
            several = len(children) > 1
            report(Problem("backend", f"instrument: worker process{'es' if several else ''} "
                           f"{', '.join(map(str, sorted(children)))} {'were' if several else 'was'} still running "
                           f"when this process's main thread ended and journaled {late} "
                           f"record{'' if late == 1 else 's'} after its runs were finished; "
                           f"{'those were' if late > 1 else 'it was'} not written: join worker processes before "
                           "the program ends"))
        inbox.remove()

    _family.after_children_end(once_children_ended)


def watch_workers() -> None:
    """This process has a run: make its inbox if it may have workers, and in production drain
    it about every second from now on (one thread)."""
    global _poller
    if _family.may_have_inbox():
        open_inbox()
    if _poller is None and _linkage_state.state.backend is None:
        _poller = Poller(drain_workers)


def _after_fork_in_child() -> None:
    global _lock, _inbox, _poller
    _lock = threading.RLock()
    _inbox = None
    _poller = None
    _worker_journals.clear()


os.register_at_fork(after_in_child=_after_fork_in_child)
