"""The pipeline's own run: a run this process owns and shares with its subprocesses.

It writes the context file its subprocesses find through ``WANDB_CONTEXT_FILE``, ingests the
record journals they write while it runs, drains them at the end, lists the children's runs in
summary ``pipeline/children`` and prints the ``instrument sync`` command for an offline pipeline.
"""

from __future__ import annotations

import glob
import os
import shutil
import sys
import tempfile
import threading
from pathlib import Path

import attrs

from instrument import _lifecycle, _linkage
from instrument._backends.base import new_run_id
from instrument._context_file import ContextFile
from instrument._env import WANDB_CONTEXT_FILE, exit_timeout
from instrument._journal import JournalReader, children_summary, ingest
from instrument._options import RunOptions
from instrument._problems import Problem, report
from instrument._session import Session
from instrument._verdicts import failed_suites


class PipelineRun:
    """A run this process owns and shares with its subprocesses (a pipeline run).

    Starts the run at once (``job_type="pipeline"`` unless *options* say otherwise, group
    defaulting to the run's id), makes a private folder (mode 0700) for the context file and the
    journals, ingests the journals every second while it runs and drains them at :meth:`close`.
    ``with instrument.pipeline(...) as run:`` gives one. The run id is *options*' run id, else
    ``WANDB_RUN_ID`` (see :func:`instrument._linkage.own_run_options`), else a fresh one.

    In a process that writes no run of its own (a worker, a rank its policy keeps from writing)
    it is *plain*: no run, no folder, nothing exported; the block just runs and its records go
    where the process's records go. Then *id*, *folder*, *context* and *context_file* are None.

    Attributes:
        folder: the private folder holding ``context.json`` and ``journal/``.
        context: the context file's contents; context_file: its path (what
            ``WANDB_CONTEXT_FILE`` names in the subprocesses).
        children: the run ids of the children's runs ingested so far.
        failed_gates: after :meth:`close` with ``gate_exit``, the prefixes of the suites of gates
            that failed in the run (empty otherwise).
    """

    def __init__(self, options: RunOptions) -> None:
        self.children: list[str] = []
        self.failed_gates: list[str] = []
        self.child_locations: dict[str, str] = {}  # run id -> its folder, as the child reported it
        self._previous: str | None = None
        self._exported = False
        self._closed = False
        self._close_lock = threading.Lock()
        self.plain = not _linkage.placement().writes
        self.folder: Path | None = None
        self.context: ContextFile | None = None
        self.context_file: Path | None = None
        self.session: Session | None = None
        if self.plain:
            return
        options = _linkage.own_run_options(options, os.environ)
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
        _linkage.push_pipeline(self.session)
        _lifecycle.close_on_sigterm(self._terminate, _linkage.finish_state)
        self._stop = threading.Event()
        self._poller = threading.Thread(target=self._poll, name=f"instrument-ingest-{run_id}", daemon=True)
        self._poller.start()

    @property
    def id(self) -> str | None:
        """The run's id (None for a plain pipeline)."""
        return self.session.id if self.session is not None else None

    def export(self) -> None:
        """Set ``WANDB_CONTEXT_FILE`` for subprocesses until :meth:`close` restores it (a plain
        pipeline exports nothing)."""
        if self.context_file is None:
            return
        self._previous = os.environ.get(WANDB_CONTEXT_FILE)
        os.environ[WANDB_CONTEXT_FILE] = str(self.context_file)
        self._exported = True

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
        _linkage.drain_workers()  # the workers' records that belong in this run
        _linkage.pop_pipeline(self.session)
        _lifecycle.forget_sigterm(self._terminate, runs_left=bool(_linkage.own_sessions()))
        if self._exported:
            if self._previous is None:
                os.environ.pop(WANDB_CONTEXT_FILE, None)
            else:
                os.environ[WANDB_CONTEXT_FILE] = self._previous
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
        self._print_sync_command()
        if drained:
            shutil.rmtree(self.folder, ignore_errors=True)
        else:
            report(Problem("backend", f"instrument: the journals of run {self.id} were not fully read; they are "
                           f"kept in {self.folder}; write them into an offline run with "
                           f"`python -m instrument replay {self.folder}`"))

    def _print_sync_command(self) -> None:
        """Print, for an offline pipeline, one line with the ``instrument sync`` command for its run
        and every child's run (each child's run has a folder of its own; wandb's own hint is
        silenced and would only name one run); a resumed pipeline run's earlier folders first."""
        if self.session is None or self.session.spec.mode not in ("offline", "dryrun"):
            return
        own = self.session.location()
        if not os.path.isdir(own):  # not a wandb run folder (disabled, recorded, a journal)
            return
        wandb_dir = os.path.dirname(own)
        earlier = getattr(self.session.written_run(), "earlier_folders", None)
        resumed = earlier() if earlier is not None and self.session.spec.resume not in (None, "never") else []
        folders = [*resumed, own]
        for child in dict.fromkeys(self.children):
            where = self.child_locations.get(child, "")
            folders.append(where if glob.glob(os.path.join(glob.escape(where), "run-*.wandb"))
                           else os.path.join(wandb_dir, f"offline-run-*-{child}"))
        shown = " ".join(_short(folder) for folder in folders)
        count = len(folders) - 1 - len(resumed)
        runs = (f"run {self.id} and its {count} child run{'s' if count > 1 else ''} were" if count
                else f"run {self.id} was")
        print(f"instrument: pipeline {runs} written offline; upload {'them' if count else 'it'} with "
              f"`instrument sync {shown}`", file=sys.stderr)


def _short(path: str) -> str:
    """Return *path* relative to the working directory when it lies under it."""
    relative = os.path.relpath(path)
    return path if relative.startswith("..") else relative
