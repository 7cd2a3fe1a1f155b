"""The pipeline's own run: a run this process owns and shares with its subprocesses.

It writes the context file its subprocesses find through ``WANDB_CONTEXT_FILE`` (the newest open
pipeline's, process-wide), ingests the record journals they write while it runs, drains them at
the end, lists the children's runs (and the pipelines nested in it) in summary
``pipeline/children`` and prints the ``instrument sync`` command for an offline pipeline.
"""

from __future__ import annotations

import contextvars
import glob
import os
import shutil
import sys
import tempfile
import threading
from pathlib import Path

import attrs

from instrument import _finishing, _lifecycle, _linkage, _placement, _worker_inbox
from instrument._backends.base import new_run_id
from instrument._context_file import ContextFile
from instrument._env import WANDB_CONTEXT_FILE, exit_timeout
from instrument._journal import JournalReader, children_summary, ingest
from instrument._options import RunOptions
from instrument._pipeline_stack import OpenPipeline
from instrument._problems import Problem, report
from instrument._session import Session
from instrument._verdicts import failed_suites


class PipelineRun:
    """A run this process owns and shares with its subprocesses (a pipeline run).

    Starts the run at once (``job_type="pipeline"`` unless *options* say otherwise, group
    defaulting to the run's id), makes a private folder (mode 0700) for the context file and the
    journals, ingests the journals every second while it runs and drains them at :meth:`close`.
    ``with instrument.pipeline(...) as run:`` gives one. The run id is *options*' run id, else
    ``WANDB_RUN_ID`` (see :func:`instrument._placement.own_run_options`), else a fresh one.

    Entered where another pipeline is current (the same thread or task, or one carrying its
    context), it is that pipeline's child: its group, project, entity and mode unless *options*
    give their own, the tag ``parent:<id>``, listed in the parent's ``pipeline/children``; its
    offline folders are named in the parent's ``instrument sync`` line.

    In a process that writes no run of its own (a worker, a rank its policy keeps from writing)
    it is *plain*: no run, no folder, nothing exported; the block just runs and its records go
    where the process's records go. Then *id*, *folder*, *context* and *context_file* are None.

    Attributes:
        folder: the private folder holding ``context.json`` and ``journal/``.
        context: the context file's contents; context_file: its path (what
            ``WANDB_CONTEXT_FILE`` names in the subprocesses).
        children: the run ids of the children's runs ingested so far, and of the pipelines
            nested in this one.
        parent: the id of the pipeline run this one was entered in (None at the top level).
        failed_gates: after :meth:`close` with ``gate_exit``, the prefixes of the suites of gates
            that failed in the run (empty otherwise).
    """

    def __init__(self, options: RunOptions) -> None:
        self.children: list[str] = []
        self.failed_gates: list[str] = []
        self.child_locations: dict[str, str] = {}  # run id -> its folder, as the child reported it
        self._nested: set[str] = set()  # ids of the pipelines nested in this one
        self._nested_folders: list[str] = []  # their offline folders (and their children's), for the sync line
        self._sync_printed = False
        self._sync_lock = threading.Lock()
        self.parent: str | None = None
        self._parent: OpenPipeline | None = None
        self._token: contextvars.Token[OpenPipeline | None] | None = None
        self._exported = False
        self._closed = False
        self._close_lock = threading.Lock()
        self.plain = not _placement.placement().writes
        self.folder: Path | None = None
        self.context: ContextFile | None = None
        self.context_file: Path | None = None
        self.session: Session | None = None
        if self.plain:
            return
        self._parent = _linkage.enclosing_pipeline()
        if self._parent is not None:
            options = _nested(options, self._parent.session)
            self.parent = self._parent.session.id
        options = _placement.own_run_options(options, os.environ)
        run_id = options.run_id or new_run_id()
        self.folder = Path(tempfile.mkdtemp(prefix=f"instrument-{run_id}-"))  # mode 0700
        journal = self.folder / "journal"
        journal.mkdir(mode=0o700)
        options = attrs.evolve(options, run_id=run_id, group=options.group or run_id,
                               job_type=options.job_type or "pipeline")
        self.session = _linkage.new_session(options, os.environ)
        self.session.start()
        self.context = ContextFile(
            run_id=self.session.id,  # not run_id: a failed init may have fallen back to a fresh id
            project=options.project,
            entity=options.entity,
            group=self.session.spec.group,
            mode=self.session.spec.mode,
            journal_dir=str(journal),
        )
        self.context_file = self.context.save(self.folder / "context.json")
        self.reader = JournalReader(journal)
        self._token = _linkage.push_pipeline(self.session, self, self._parent)
        if self._parent is not None:
            self._parent.owner.add_child(self.session.id)
        _lifecycle.close_on_sigterm(self._terminate, _finishing.finish_state)
        self._stop = threading.Event()
        self._poller = threading.Thread(target=self._poll, name=f"instrument-ingest-{run_id}", daemon=True)
        self._poller.start()

    @property
    def id(self) -> str | None:
        """The run's id (None for a plain pipeline)."""
        return self.session.id if self.session is not None else None

    def add_child(self, run_id: str) -> None:
        """List run *run_id* in summary ``pipeline/children`` (a pipeline nested in this one)."""
        self._nested.add(run_id)
        self.children.append(run_id)

    def take_nested_folders(self, folders: list[str]) -> bool:
        """Name *folders* (a nested pipeline's offline folders) in this run's ``instrument sync``
        line; False when that line was printed already (the nested pipeline prints its own)."""
        with self._sync_lock:
            if self._sync_printed:
                return False
            self._nested_folders.extend(folders)
            return True

    def export(self) -> None:
        """Set ``WANDB_CONTEXT_FILE`` for subprocesses until :meth:`close` (a plain pipeline
        exports nothing).

        The variable is process-wide: it names the newest exported pipeline that is still open,
        and once none is, what it held before the first. A subprocess started for another
        pipeline of this process gets that one's file in its ``env=`` (``instrument.current()
        .context_file`` in the thread or task of that pipeline).
        """
        if self.context_file is None:
            return
        with _exports_lock:
            global _before_exports
            if not _exports:
                _before_exports = os.environ.get(WANDB_CONTEXT_FILE)
            _exports.append(self)
            os.environ[WANDB_CONTEXT_FILE] = str(self.context_file)
        self._exported = True

    def _unexport(self) -> None:
        with _exports_lock:
            if self in _exports:
                _exports.remove(self)
            if _exports:
                os.environ[WANDB_CONTEXT_FILE] = str(_exports[-1].context_file)
            elif _before_exports is None:
                os.environ.pop(WANDB_CONTEXT_FILE, None)
            else:
                os.environ[WANDB_CONTEXT_FILE] = _before_exports

    def _poll(self) -> None:
        while not self._stop.wait(1.0):
            self.ingest()

    def _target(self, session: Session) -> _linkage.Sink:
        """The pipeline's run; once other code finished it, where a process with no run writes."""
        if session.finished_by is None:
            return session
        return _linkage.resolve("summary") or session

    def ingest(self) -> bool:
        """Write what the subprocesses journaled so far into the run; return whether it all went."""
        if self.session is None:
            return True
        try:
            self.children.extend(ingest(self._target(self.session), self.reader, self.child_locations))
        except Exception as error:  # never raise into the orchestrator
            report(Problem("backend", f"instrument: reading the journal {self.reader.folder} failed ({error})"),
                   once=True)
            return False
        return True

    def _terminate(self, exit_code: int) -> None:
        self.close(exit_code=exit_code)

    def close(self, error: BaseException | None = None, exit_code: int | None = None, *,
              gate_exit: bool = False) -> None:
        """Drain the journals, record the children and finish the run; once.

        The exit code is *exit_code* if given, else derived from *error*: 0, n for
        ``SystemExit(n)``, 130 for Ctrl-C, 1 for any other exception. With *gate_exit*, an exit
        code of 0 becomes 1 when a suite of gates failed in the run, evals of subprocesses
        included (their journals are drained first); :attr:`failed_gates` names those suites.
        """
        with self._close_lock:  # the main thread and a SIGTERM's finisher may both close it
            if self._closed:
                return
            self._closed = True
        if self.session is None or self.folder is None:
            return
        _worker_inbox.drain_workers()  # the workers' records that belong in this run
        _linkage.pop_pipeline(self.session, self._token)
        _lifecycle.forget_sigterm(self._terminate, runs_left=bool(_linkage.own_sessions()))
        if self._exported:
            self._unexport()
        self._stop.set()
        timeout = exit_timeout()
        self._poller.join(timeout)
        drained = not self._poller.is_alive() and self.ingest()
        for path in self.reader.torn():
            report(Problem("backend", f"instrument: the journal {path} ends with an incomplete record (its "
                           "writer died while writing it); everything before it was kept"))
        try:
            target = self._target(self.session)
            if target is self.session or self.children:  # no run is started only to say there were none
                target.write([children_summary(self.children)])
        except Exception as failure:  # never raise into the orchestrator
            report(Problem("backend", f"instrument: recording the children of run {self.id} failed ({failure})"))
        code = exit_code if exit_code is not None else _lifecycle.exit_code_for(error)
        if gate_exit and code == 0:
            self.failed_gates = failed_suites(self.session.owned_summary())
            code = 1 if self.failed_gates else 0
        self.session.finish(code, timeout)
        parent = self._parent.owner if self._parent is not None else None
        if not (isinstance(parent, PipelineRun) and parent.take_nested_folders(self._offline_folders())):
            self._print_sync_command()
        if drained:
            shutil.rmtree(self.folder, ignore_errors=True)
        else:
            report(Problem("backend", f"instrument: the journals of run {self.id} were not fully read; they are "
                           f"kept in {self.folder}; write them into an offline run with "
                           f"`python -m instrument replay {self.folder}`"))

    def _offline_folders(self) -> list[str]:
        """Return the folders of an offline pipeline's run (a resumed run's earlier folders first)
        and of every child's run, nested pipelines' included; [] when it is not offline."""
        if self.session is None or self.session.spec.mode not in ("offline", "dryrun"):
            return []
        own = self.session.location()
        if not os.path.isdir(own):  # not a wandb run folder (disabled, recorded, a journal)
            return []
        wandb_dir = os.path.dirname(own)
        earlier = getattr(self.session.written_run(), "earlier_folders", None)
        resumed = earlier() if earlier is not None and self.session.spec.resume not in (None, "never") else []
        folders = [*resumed, own]
        for child in dict.fromkeys(self.children):
            if child in self._nested:
                continue  # its folders are in _nested_folders
            where = self.child_locations.get(child, "")
            folders.append(where if glob.glob(os.path.join(glob.escape(where), "run-*.wandb"))
                           else os.path.join(wandb_dir, f"offline-run-*-{child}"))
        with self._sync_lock:
            return [*folders, *self._nested_folders]

    def _print_sync_command(self) -> None:
        """Print, for an offline pipeline, one line with the ``instrument sync`` command for its run
        and every child's run, nested pipelines' included (wandb's own hint is silenced and would
        only name one run)."""
        with self._sync_lock:
            self._sync_printed = True
        folders = self._offline_folders()
        if not folders:
            return
        earlier = getattr(self.session.written_run(), "earlier_folders", None) if self.session else None
        resumed = len(earlier()) if earlier is not None and self.session and self.session.spec.resume not in (
            None, "never") else 0
        shown = " ".join(_short(folder) for folder in folders)
        count = len(folders) - 1 - resumed
        runs = (f"run {self.id} and its {count} child run{'s' if count > 1 else ''} were" if count
                else f"run {self.id} was")
        print(f"instrument: pipeline {runs} written offline; upload {'them' if count else 'it'} with "
              f"`instrument sync {shown}`", file=sys.stderr)


def _nested(options: RunOptions, parent: Session) -> RunOptions:
    """Return *options* for a pipeline entered in *parent*: its group, project, entity and mode
    unless *options* give their own, and the tag ``parent:<id>``."""
    spec = parent.spec
    return attrs.evolve(
        options, group=options.group or spec.group, project=options.project or spec.project,
        entity=options.entity or spec.entity, mode=options.mode or spec.mode,
        tags=(*options.tags, f"parent:{parent.id}"),
    )


_exports_lock = threading.Lock()
_exports: list[PipelineRun] = []  # the exported pipelines still open, oldest first
_before_exports: str | None = None  # WANDB_CONTEXT_FILE before the first of them


def _short(path: str) -> str:
    """Return *path* relative to the working directory when it lies under it."""
    relative = os.path.relpath(path)
    return path if relative.startswith("..") else relative
