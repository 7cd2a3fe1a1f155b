"""Replay: write a journal left on disk into an offline wandb run (``python -m instrument replay``).

Two kinds of journal end up on disk:

* a *call journal* (``instrument-journal-<id>-*/spill.jsonl``, :mod:`instrument._backends.call_journal`):
  a run that could not be started,
  or whose backend call failed mid-run; it holds the run's spec and every backend call after the
  failure, in order;
* the *record journals* (:mod:`instrument._journal`) of a pipeline whose owner died before draining them
  (``instrument-<id>-*/journal/journal-*.jsonl``, next to ``context.json``): what its eval
  subprocesses wrote for the pipeline run.

Either is written into an offline run with the journal's run id and ``resume="allow"``, so
``wandb sync`` of both folders adds the replayed part to the same run (how W&B's server merges
two segments of one run is up to W&B). ``--run-id`` writes a separate run instead.
The journal is removed once written, unless asked to keep it.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
from pathlib import Path
from typing import Any

import attrs

from instrument._backends.base import Backend, RunSpec
from instrument._backends.call_journal import SPILL_FILE, read_call_journal
from instrument._backends.wandb import WandbBackend
from instrument._context_file import ContextFile
from instrument._journal import JournalError, JournalReader, children_summary
from instrument._problems import Problem, report
from instrument._session import Session


class ReplayError(RuntimeError):
    """A journal cannot be replayed; the message names it and says why."""


@attrs.frozen
class Replayed:
    """What a replay wrote: the run's *run_id*, its offline folder *location*, how many journal
    lines (*count*) went in, *partial* (where the part written before the failure lives, if
    any) and whether the journal was *removed*."""

    run_id: str
    location: str
    count: int
    partial: str | None
    removed: bool

    def report(self) -> str:
        """Return the lines the CLI prints: where the run went and the ``instrument sync`` commands."""
        lines = [f"instrument: replayed {self.count} journal lines into run {self.run_id} at {self.location}",
                 f"upload it with: instrument sync {self.location}"]
        if self.partial and os.path.isdir(self.partial):
            lines.append(f"the part written before the failure is in {self.partial}: instrument sync {self.partial}")
        if not self.removed:
            lines.append("the journal was kept")
        return "\n".join(lines)


def replay(
    path: str | os.PathLike[str],
    *,
    run_id: str | None = None,
    keep: bool = False,
    force: bool = False,
    backend: Backend | None = None,
) -> Replayed:
    """Write the journal at *path* into an offline run and (unless *keep*) remove the journal.

    Args:
        path: a call-journal folder (holding ``spill.jsonl``) or that file; a dead pipeline
            owner's folder (``context.json`` and ``journal/``), its ``journal/`` folder, or one
            of the ``journal-*.jsonl`` files in it.
        run_id: write into a run with this id instead of the journal's own.
        keep: leave the journal on disk.
        force: replay a call journal even though the process that writes it seems alive.
        backend: the backend to write with (default: wandb, offline).

    Raises:
        ReplayError: *path* is no journal, a line is invalid or names a file outside the
            journal, the writer is still running, or the run could not be written.
    """
    target = Path(path)
    if target.is_file():
        target = target.parent
    if not target.is_dir():
        raise ReplayError(f"instrument replay: {os.fspath(path)!r} is not a journal folder or file")
    backend = backend or WandbBackend()
    try:
        if (target / SPILL_FILE).is_file():
            return _replay_calls(target, run_id=run_id, keep=keep, force=force, backend=backend)
        if (target / "journal").is_dir():
            return _replay_records(target / "journal", run_id=run_id, keep=keep, backend=backend)
        if any(target.glob("journal-*.jsonl")):
            return _replay_records(target, run_id=run_id, keep=keep, backend=backend)
    except JournalError as error:
        raise ReplayError(f"instrument replay: {error}") from None
    raise ReplayError(f"instrument replay: {os.fspath(path)!r} holds no journal ({SPILL_FILE} or journal-*.jsonl)")


def _spec(fields: dict[str, Any], run_id: str | None) -> RunSpec:
    names = {field.name for field in attrs.fields(RunSpec)}
    spec = RunSpec(**{key: value for key, value in fields.items() if key in names})
    return attrs.evolve(spec, id=run_id or spec.id, mode="offline", announce=False, resume="allow")


def _alive(header: dict[str, Any]) -> bool:
    pid = header.get("pid")
    if not isinstance(pid, int) or header.get("host") != socket.gethostname() or pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True
    return True


def _replay_calls(folder: Path, *, run_id: str | None, keep: bool, force: bool, backend: Backend) -> Replayed:
    header, calls, exit_code = read_call_journal(folder)
    if exit_code is None and not force and _alive(header):
        raise ReplayError(f"instrument replay: the process {header.get('pid')} that writes {folder} is still "
                          "running; replay it once that process ended (or pass --force)")
    spec = _spec(dict(header.get("spec") or {}), run_id)
    try:
        run = backend.start(spec)
        for method, args in calls:
            getattr(run, method)(**args)
        run.finish(1 if exit_code is None else exit_code)
        location = run.location()
    except Exception as error:  # reported, with the journal kept
        raise ReplayError(f"instrument replay: writing {folder} into run {spec.id} failed "
                          f"({type(error).__name__}: {error}); the journal was kept") from None
    if not keep:
        shutil.rmtree(folder, ignore_errors=True)
    return Replayed(spec.id, location, len(calls), header.get("partial"), not keep)


def _replay_records(journal: Path, *, run_id: str | None, keep: bool, backend: Backend) -> Replayed:
    owner = journal.parent
    context: ContextFile | None = None
    if (owner / "context.json").is_file():
        try:
            context = ContextFile.load(owner / "context.json", require_journal=False)  # the folder may have moved
        except ValueError as error:
            raise ReplayError(f"instrument replay: {error}") from None
    if context is None and run_id is None:
        raise ReplayError(f"instrument replay: {journal} has no context.json next to it to say which run it "
                          "belongs to; pass --run-id")
    fields: dict[str, Any] = {"job_type": "pipeline"}
    if context is not None:
        fields.update(id=context.run_id, project=context.project, entity=context.entity, group=context.group)
    spec = _spec(fields, run_id)
    session = Session(spec, backend)
    reader = JournalReader(journal)
    children: list[str] = []
    count = 0
    for record in reader.read_new():
        count += 1
        if isinstance(record, dict):
            if record.get("type") == "child":
                children.append(str(record["run_id"]))
            else:
                report(Problem("backend", f"instrument replay: {journal}: a line of unknown type "
                               f"{record.get('type')!r} was skipped"), once=True)
            continue
        session.write([record])
    if children:
        session.write([children_summary(children)])
    session.finish(1)  # the owner died before finishing the run
    run = session.written_run()
    if run is None:
        raise ReplayError(f"instrument replay: the run {spec.id} could not be written; {journal} was kept")
    if not keep:
        shutil.rmtree(owner if context is not None and owner.name.startswith("instrument-") else journal,
                      ignore_errors=True)
    return Replayed(spec.id, run.location(), count, None, not keep)


def _main_json(replayed: Replayed) -> str:
    return json.dumps(attrs.asdict(replayed))
