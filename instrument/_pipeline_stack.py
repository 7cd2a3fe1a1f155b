"""The pipelines open in this process, and which one is current in a thread or asyncio task.

Which pipeline a call writes to is a ``ContextVar``: asyncio tasks, ``asyncio.to_thread`` and
``contextvars.copy_context().run`` carry it, a plain ``threading.Thread`` starts without it
(docs/guarantees.md, "Threads"). A :class:`PipelineStack` belongs to one linkage state, so a
pipeline of another state (outside ``use_backend``) is passed over.
"""

from __future__ import annotations

import contextlib
import contextvars
import threading
from pathlib import Path
from typing import Protocol

import attrs

from instrument._problems import Problem, report
from instrument._session import Session


class PipelineOwner(Protocol):
    """What owns a pipeline run (a ``PipelineRun``), as linkage sees it."""

    @property
    def context_file(self) -> Path | None:
        """The context file its subprocesses get in ``WANDB_CONTEXT_FILE``."""

    def add_child(self, run_id: str) -> None:
        """List run *run_id* among its children (summary ``pipeline/children``)."""


@attrs.frozen(eq=False)
class OpenPipeline:
    """A pipeline run open in this process.

    Attributes:
        session: its run.
        owner: what owns it (the ``PipelineRun``).
        parent: the open pipeline it was entered in (the current one of the thread or task that
            entered it), or None for a top-level pipeline.
    """

    session: Session
    owner: PipelineOwner
    parent: OpenPipeline | None


Token = contextvars.Token[OpenPipeline | None]

#: The pipeline entered last in this thread or asyncio task.
_current: contextvars.ContextVar[OpenPipeline | None] = contextvars.ContextVar("instrument_pipeline", default=None)


class PipelineStack:
    """The pipelines open in one linkage state, in the order they were entered."""

    def __init__(self) -> None:
        #: The open pipelines, oldest first: read it (a cheap test for "any open"), change it
        #: through :meth:`push` and :meth:`pop`.
        self.entries: list[OpenPipeline] = []
        self._lock = threading.Lock()

    def holds(self, run_id: str) -> bool:
        """Return whether a pipeline of run *run_id* is open (its run finished by other code or not)."""
        with self._lock:
            return any(p.session.id == run_id for p in self.entries)

    def push(self, session: Session, owner: PipelineOwner, parent: OpenPipeline | None) -> Token:
        """Make *session* the current pipeline of this thread or task until :meth:`pop`.

        Calls in this thread or task, and in the ones that carry its context, write to it;
        *parent* is the pipeline it was entered in (:meth:`enclosing`). Returns the token that
        :meth:`pop` restores the previous current pipeline with.
        """
        entry = OpenPipeline(session, owner, parent)
        with self._lock:
            self.entries.append(entry)
        return _current.set(entry)

    def pop(self, session: Session, token: Token | None = None) -> None:
        """Close the pipeline of *session*; restore the current pipeline *token* was taken from (in
        the context that set it; elsewhere, calls there pass over the closed pipeline by themselves)."""
        with self._lock:
            self.entries[:] = [p for p in self.entries if p.session is not session]
        if token is not None:
            with contextlib.suppress(ValueError, RuntimeError):  # closed in another context (SIGTERM's finisher)
                _current.reset(token)

    def enclosing(self) -> OpenPipeline | None:
        """Return the open pipeline current in this thread or task (carried by its context), or None.

        A pipeline entered now nests in it. A closed one, or one whose run other code finished,
        is passed over for the pipeline it was entered in.
        """
        entry = _current.get()
        with self._lock:
            while entry is not None and (entry not in self.entries or entry.session.finished):
                entry = entry.parent
        return entry

    def current(self, *, warn: bool = False) -> OpenPipeline | None:
        """Return the pipeline a call made now writes to: this thread's or task's
        (:meth:`enclosing`), else the newest open one.

        The newest is the right one when it is the only pipeline open, or when the others are
        the ones it was entered in. While pipelines of several threads or tasks are open, a call
        whose context carries none of them (a plain ``threading.Thread``, a thread pool's worker)
        cannot tell which is its own: with *warn*, that is said once.
        """
        entry = self.enclosing()
        if entry is not None:
            return entry
        with self._lock:
            open_ = [p for p in self.entries if not p.session.finished]
        if not open_:
            return None
        newest = open_[-1]
        if warn:
            ancestors = set()
            parent = newest.parent
            while parent is not None:
                ancestors.add(id(parent))
                parent = parent.parent
            others = [p.session.id for p in open_[:-1] if id(p) not in ancestors]
            if others:
                report(Problem("shared", f"instrument: a call in thread {threading.current_thread().name!r} carries "
                               f"no pipeline in its context while pipelines of several threads or tasks are open "
                               f"(runs {', '.join(others)} and {newest.session.id}), so its records go to the "
                               f"newest, {newest.session.id}: open the pipeline in that thread, or start the thread "
                               "inside its pipeline with contextvars.copy_context().run (docs/guarantees.md, "
                               "Threads)", "pipeline"), once=True)
        return newest
