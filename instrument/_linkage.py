"""Linkage: which run a call writes to, resolved at call time, and the process's runs.

First, where this process stands: a worker (a pool or DataLoader worker, an ``os.fork`` child)
writes every record into its parent's inbox, for the run its parent writes to
(:mod:`instrument._workers`); a rank of a distributed job that its rank policy keeps from
writing (:mod:`instrument._ranks`) writes nothing. Then the order, per record role (``series``
for stages, ``summary`` for evals and everything else):

1. a ``@pipeline`` open in this process: the one entered in this thread or asyncio task (or in
   the context it was copied from), else the newest; its run, for every role;
2. ``WANDB_CONTEXT_FILE`` in the environment (a subprocess of a pipeline): series go to this
   process's training run (the pipeline's group, ``job_type="train"``, tag ``parent:<id>``),
   everything else to the pipeline run through the record journal;
3. a ``wandb.run`` that some other code started (a framework): logged into, never finished;
4. this process's standalone run, started on the first record, finished at interpreter exit.

The state is process-wide (threads find the run) and replaced whole by ``use_backend`` (tests)
and by a fork (a forked child keeps only the settings); which pipeline is the current one is a
``ContextVar`` (docs/guarantees.md, "Threads"). How the process ends is
:mod:`instrument._lifecycle`'s.
"""

from __future__ import annotations

import contextlib
import contextvars
import os
import sys
import threading
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any, Protocol

import attrs

from instrument import _dispatch, _env, _family, _lifecycle, _ranks
from instrument._backends import wandb_core
from instrument._backends.base import Backend, BackendRun, RunSpec, Stopped, new_run_id
from instrument._backends.disabled import DisabledBackend
from instrument._backends.wandb import WandbBackend
from instrument._config import nan_config_problems
from instrument._context_file import ContextFile, ContextFileError
from instrument._journal import JournalSink
from instrument._options import RunOptions
from instrument._problems import Problem, report
from instrument._records import Record
from instrument._redact import redact_config
from instrument._session import Session
from instrument._workers import Inbox, Poller, WorkerJournal, role_of


class Sink(Protocol):
    """Where records go: a session (a run this process writes) or a journal (the pipeline's run)."""

    def write(self, records: Iterable[Record], problems: Iterable[Problem] = ()) -> None:
        """Write *records*, reporting *problems* first."""


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


#: The pipeline entered last in this thread or asyncio task (asyncio tasks, ``asyncio.to_thread``
#: and ``contextvars.copy_context().run`` carry it; a plain ``threading.Thread`` starts without it).
_current_pipeline: contextvars.ContextVar[OpenPipeline | None] = contextvars.ContextVar(
    "instrument_pipeline", default=None)


class _State:
    """The process-wide linkage state; replaced whole by a fork or a swapped backend."""

    def __init__(self, backend: Backend | None = None, settings: RunOptions | None = None) -> None:
        self.backend = backend  # None: production (wandb, or disabled), with the process's exit hooks
        self.pipelines: list[OpenPipeline] = []  # open, in the order they were entered
        self.standalone: Session | None = None
        self.training: dict[str, Session] = {}
        self.journals: dict[str, JournalSink] = {}
        self.adopted: Session | None = None
        self.contexts: dict[str, ContextFile] = {}
        self.sessions: list[Session] = []
        #: What standalone and training runs are started with (``instrument.configure``).
        self.settings = settings if settings is not None else RunOptions(redact_secrets=True)
        self.disabled: bool | None = None  # cache of disabled(); None: not computed yet
        self.identity_taken = False  # WANDB_RUN_ID/WANDB_RESUME went to a run of this state already


_lock = threading.RLock()
_state = _State()


def backend_for(mode: str) -> Backend:
    """Return the backend that starts a production run in *mode* (no backend swapped in).

    A module attribute on purpose: the project's own fault tests replace it in a subprocess, to
    wrap the wandb backend while keeping the real exit path (``use_backend`` finishes its runs
    when its block ends instead).
    """
    return DisabledBackend() if mode == "disabled" else WandbBackend()


def configure(settings: RunOptions) -> None:
    """Make *settings* what standalone and training runs are started with (``instrument.configure``).

    A standalone or training run this process already has keeps what it was started with: that
    is reported (an error in strict mode), the settings applying to runs started from now on.
    """
    global _placement
    with _lock:
        _state.settings = settings
        _state.disabled = None
        _placement = None
        for sink in _state.journals.values():
            sink.redact_secrets = settings.redact_secrets is not False
        for journal in _worker_journals.values():
            journal.redact_secrets = settings.redact_secrets is not False
    running = own_sessions()
    if running:
        report(Problem("config", f"instrument.configure: run {running[-1].id} was started before this call and keeps "
                       "what it was started with (project, name, tags, mode, ...); the settings apply to runs "
                       "started from now on: call configure before the first record", "configure"))


def settings() -> RunOptions:
    """Return what standalone and training runs are started with."""
    return _state.settings


def push_backend(backend: Backend | None, *, inherit_settings: bool = True) -> object:
    """Route everything to *backend* with fresh state until :func:`pop_backend`; return a token.

    A *backend* of None is a fresh production state (wandb, or nothing when disabled).
    *inherit_settings* carries ``instrument.configure``'s settings into the new state (changes
    made there stay there).
    """
    global _state, _placement
    with _lock:
        previous = _state
        _state = _State(backend, previous.settings if inherit_settings else None)
        _placement = None
        _ranks.forget()  # a test may have set a launcher's variables for the block
    if backend is not None:  # its workers write to it whatever mode they see (WANDB_MODE=disabled in CI)
        _open_inbox()
    return previous


def pop_backend(token: object) -> None:
    """Restore the state that the :func:`push_backend` which returned *token* replaced."""
    global _state, _placement
    if not isinstance(token, _State):
        raise TypeError(f"pop_backend needs what push_backend returned, got {type(token).__name__}")
    with _lock:
        _state = token
        _placement = None
        _ranks.forget()


def _backend(mode: str) -> Backend:
    return _state.backend if _state.backend is not None else backend_for(mode)


def _resolve_mode(explicit: str | None, environ: Mapping[str, str]) -> _env.ResolvedMode:
    """Resolve a run's mode; an unknown ``WANDB_MODE`` is reported once (an error when strict)."""
    resolved = _env.resolve_mode(explicit, environ)
    if resolved.unknown is not None:
        message = _env.unknown_mode_message(resolved.unknown, resolved.mode)
        report(Problem("config", message, _env.WANDB_MODE), once=True)
    return resolved


def new_session(
    options: RunOptions,
    environ: Mapping[str, str],
    *,
    on_start: Callable[[Session], None] | None = None,
) -> Session:
    """Return a new session for *options*: resolves the mode, redacts the config, picks the backend.

    Secret-looking config keys are redacted unless ``options.redact_secrets`` (else
    ``configure(redact_secrets=...)``) is False. *on_start* is called with the session once its
    run started (after the exit hooks are set). Once SIGTERM is finishing this process's runs,
    the session is disabled: the process ends in a moment and would leave the run half written.
    """
    settings = _state.settings
    resolved = _resolve_mode(options.mode, environ)
    if _state.backend is None and _lifecycle.terminating():  # a run started now would be cut short
        report(Problem("backend", "instrument: SIGTERM finished this process's runs and is ending it; what is "
                       "logged from now on is not kept (no new run is started)", "SIGTERM"), once=True)
        resolved = _env.ResolvedMode("disabled", announce=False)
    config = options.config or {}
    for problem in nan_config_problems(config):
        report(problem, once=True)
    redact = options.redact_secrets if options.redact_secrets is not None else settings.redact_secrets is not False
    if redact and config:
        config = redact_config(config)
    spec = RunSpec(
        id=options.run_id or new_run_id(), project=options.project, entity=options.entity, name=options.name,
        group=options.group, job_type=options.job_type, tags=options.tags, config=config, mode=resolved.mode,
        announce=resolved.announce, redact_secrets=redact, resume=options.resume,
    )

    def started(session: Session) -> None:
        _on_start(session)
        if on_start is not None:
            on_start(session)

    production = _state.backend is None
    synchronous = settings.synchronous or options.synchronous or _env.is_synchronous(environ)
    session = Session(spec, _backend(spec.mode), on_start=started, synchronous=synchronous, environ=environ,
                      stop_backend=stop_wandb_at_exit if production and spec.mode != "disabled" else None)
    if production and not session.synchronous:
        _lifecycle.watch_exit_code()  # the program may fail before the dispatcher thread started the run
    if production and spec.mode != "disabled":
        # Here, on the caller's thread: with background dispatch the run starts on the
        # dispatcher thread, where no signal handler can be installed.
        _lifecycle.finish_on_sigterm(finish_state)
    _state.sessions.append(session)
    if spec.mode != "disabled":
        _watch_workers()
    return session


def _on_start(session: Session) -> None:
    if _state.backend is None:
        _lifecycle.finish_at_exit(_finish_at_exit)  # after wandb.init registered wandb's teardown
        if session.spec.mode != "disabled":
            _lifecycle.finish_on_sigterm(finish_state)  # a preempted job (SLURM, Kubernetes) finishes its runs


_exiting = False
_stopped: Stopped | None = None
_stop_lock = threading.Lock()


def _finish_at_exit(exit_code: int) -> None:
    """Interpreter exit: finish every run, tear wandb down, bounded (:func:`stop_wandb_at_exit`), then
    keep what the drain at exit could not write (:meth:`Session.keep_held_at_exit`)."""
    global _exiting
    _exiting = True
    finish_state(exit_code)
    stopped = stop_wandb_at_exit()
    with _lock:
        sessions = list(_state.sessions)
    for session in sessions:
        session.keep_held_at_exit()
    if stopped is not None and stopped.killed is not None and not any(s.lost_at_exit for s in sessions):
        report(Problem("backend", f"instrument: wandb-core (pid {stopped.killed}) did not end within what was left "
                       f"of {_env.INSTRUMENT_EXIT_TIMEOUT} ({stopped.waited:g} s) after every run was finished; it "
                       "was stopped with SIGKILL so that the process could exit (the runs were written in full)"))


def stop_wandb_at_exit() -> Stopped | None:
    """At interpreter exit, tear wandb down (once) within what is left of ``INSTRUMENT_EXIT_TIMEOUT``.

    wandb's own teardown waits for wandb-core without a limit; run here, a wandb-core that does
    not answer within the time left is killed, and the process exits with its own status.
    Returns what stopping did, or None when the interpreter is not exiting (the drain at exit
    has not run and runs are not being finished at exit).
    """
    global _stopped
    if not (_exiting or _dispatch.exit_deadline is not None) or _lifecycle._forked:  # noqa: SLF001 - a forked child stops nothing
        return None
    with _stop_lock:
        if _stopped is None:
            waited = _env.exit_timeout()
            killed = wandb_core.teardown(_lifecycle.exit_code(), _dispatch.exit_time_left(waited))
            _stopped = Stopped(killed=killed, exit_code=_lifecycle.exit_code(), waited=waited)
        return _stopped


def finish_state(exit_code: int) -> None:
    """Finish every unfinished run of the current state with *exit_code*, newest first, after
    writing what this process's workers journaled. When the process is ending (at exit, after
    SIGTERM) their inbox is removed once the runs took it; otherwise it stays for the workers
    that go on (a pool that outlives a test's recording)."""
    drain_workers()
    with _lock:
        sessions = list(_state.sessions)
        journals = list(_state.journals.values())
        _state.disabled = None
    for session in reversed(sessions):
        session.finish(exit_code)
    for journal in journals:
        journal.close()
    if _exiting or _lifecycle.terminating():
        _close_inbox(wait_for_children=not _lifecycle.terminating())


def flush_state(timeout: float | None = None) -> bool:
    """Write what every run of the current state holds or queued; True if all of it was taken.

    Each run's wait gives up once its backend took nothing for *timeout* seconds (default
    ``INSTRUMENT_EXIT_TIMEOUT``); it goes on while the backend keeps taking records. What this
    process's workers journaled so far is written first.
    """
    timeout = _env.exit_timeout() if timeout is None else timeout
    drain_workers()
    with _lock:
        sessions = [s for s in dict.fromkeys((*_state.sessions, _state.adopted)) if s is not None and not s.finished]
    done = True
    for session in sessions:
        done = session.flush(timeout) and done
    return done


def flush_backend(backend: Backend) -> None:
    """Flush the current state's runs if they write to *backend* (a recording being read)."""
    if _state.backend is backend:
        flush_state()


def disabled() -> bool:
    """Return whether a record written now would certainly go nowhere.

    The decorators' fast path: when True they call the function and do nothing else. Computed
    once per state (``configure``, a pipeline starting or ending, finishing, and placing the
    process at its first record reset it): True for a rank its policy keeps from writing and a
    worker whose parent writes nothing; else, for a worker, False; else whether the mode is
    ``disabled`` (the pipeline's, else the context file's, else ``configure(mode=)``/
    ``WANDB_MODE``). Never True under a swapped backend or while a ``wandb.run`` is active (a
    framework's run is logged into).
    """
    if _state.pipelines and _state.backend is None:  # which pipeline depends on the thread or task
        pipeline = current_pipeline()
        if pipeline is not None:
            return pipeline.session.spec.mode == "disabled" and not _active_wandb_run()
    answer = _state.disabled
    if answer is None:
        answer = _state.disabled = _compute_disabled()
    return answer and not _active_wandb_run()


def _active_wandb_run() -> bool:
    """Whether a ``wandb.run`` that keeps data is active; never imports wandb to find out."""
    run = getattr(sys.modules.get("wandb"), "run", None)
    return run is not None and not getattr(run, "disabled", False)


def _compute_disabled() -> bool:
    if _state.backend is not None:
        return False
    where = _placement  # resolved at the first record (the rank may not be known before)
    if where is None and _family.parent_pid() is not None:
        where = placement()  # a worker: its parent's mode counts, not the one it sees
    if where is not None and not where.writes:  # a worker writes to its parent's inbox; a rank
        return where.parent is None  # that writes nothing, nowhere
    return _mode_disabled()


def _mode_disabled() -> bool:
    """Whether this process's mode is ``disabled``: its pipeline's, else the context file's, else
    ``configure(mode=)``/``WANDB_MODE``."""
    with _lock:
        pipeline = current_pipeline()
        if pipeline is not None:
            return pipeline.session.spec.mode == "disabled"
        try:
            context = _context_file(os.environ)
            if context is not None:
                return context.mode == "disabled"
            mode = _resolve_mode(_state.settings.mode, os.environ).mode
        except (ContextFileError, ValueError):
            return False
        return mode == "disabled"


def _context_file(environ: Mapping[str, str]) -> ContextFile | None:
    """Return the context file ``WANDB_CONTEXT_FILE`` names (read once per path), or None."""
    path = environ.get(_env.WANDB_CONTEXT_FILE)
    if not path:
        return None
    context = _state.contexts.get(path)
    if context is None:
        context = ContextFile.load(path)
        _state.contexts[path] = context
    return context


def training_session(context: ContextFile, environ: Mapping[str, str]) -> Session:
    """Return this process's training run for *context*, creating it on first use."""
    session = _state.training.get(context.run_id)
    if session is None or session.finished:  # finished by hand: later points make a new run
        settings = _state.settings
        journal = journal_sink(context)
        options = own_run_options(attrs.evolve(
            settings,
            project=context.project or settings.project,
            entity=context.entity or settings.entity,
            group=context.group,
            job_type=settings.job_type or "train",
            tags=(*settings.tags, f"parent:{context.run_id}"),
            mode=context.mode,
            redact_secrets=None,
        ), environ, from_environment=False)
        session = new_session(options, environ,
                              on_start=lambda started: journal.announce_child(started.id, started.location()))
        _state.training[context.run_id] = session
    return session


def journal_sink(context: ContextFile) -> JournalSink:
    """Return this process's journal into the pipeline run of *context*."""
    sink = _state.journals.get(context.run_id)
    if sink is None:
        redact = _state.settings.redact_secrets is not False
        sink = _state.journals[context.run_id] = JournalSink(context.journal_dir, redact_secrets=redact)
    return sink


def standalone_session(environ: Mapping[str, str]) -> Session:
    """Return this process's standalone run (one per process), creating it on first use."""
    if _state.standalone is None or _state.standalone.finished:
        options = own_run_options(attrs.evolve(_state.settings, redact_secrets=None), environ)
        _state.standalone = new_session(options, environ)
    return _state.standalone


def resolve(role: str, environ: Mapping[str, str] = os.environ) -> Sink | None:
    """Return where a record of *role* written now goes; None where nothing is written.

    A worker's records go to its parent's inbox; a rank its policy keeps from writing gets None
    (the first record resolves the rank, see :func:`placement`).

    Args:
        role: ``"series"`` (stage points) or ``"summary"`` (evals, config, media, files, alerts).
        environ: the environment to read ``WANDB_CONTEXT_FILE`` from.

    Raises:
        InstrumentationError: in strict mode, when the context file is missing or corrupt
            (otherwise a warning and the standalone run).
    """
    where = _placement if _placement is not None else placement(environ)
    if not where.writes:
        return None if where.parent is None else _worker_journal(where.parent)
    with _lock:
        pipeline = current_pipeline(warn=True) if _state.pipelines else None
        if pipeline is not None:
            return pipeline.session
        try:
            context = _context_file(environ)
        except ContextFileError as error:
            report(Problem("config", f"instrument: {error}; writing to a standalone run instead"), once=True)
            context = None
        if context is not None and any(p.session.id == context.run_id for p in _state.pipelines):
            context = None  # this process's own pipeline, whose run other code finished
        if context is not None:
            return training_session(context, environ) if role == "series" else journal_sink(context)
        if _state.backend is None and "wandb" in sys.modules:
            adopted = _adopt()
            if adopted is not None:
                return adopted
        return standalone_session(environ)


def _adopt() -> Session | None:
    if not _active_wandb_run():  # the common case, without an import; a disabled wandb.run keeps nothing
        return None
    run: BackendRun | None = WandbBackend().adopt()
    if run is None:
        return None
    if _state.adopted is None or _state.adopted.id != run.id or _state.adopted.finished:
        _state.adopted = Session(RunSpec(id=run.id), WandbBackend(), run=run)
        _state.sessions.append(_state.adopted)  # at exit: write the points still waiting for its owner's rows
        _on_start(_state.adopted)
    return _state.adopted


@attrs.frozen
class Placement:
    """Where this process stands, resolved at its first record (see :func:`placement`).

    Attributes:
        rank: its rank in a distributed job (rank 0 of 1 for a plain process).
        policy: the rank policy in force (``rank0`` or ``per_rank``).
        parent: for a worker, the process its records go to (None otherwise).
        writes: whether it writes runs of its own (not a worker, and its rank writes under the
            policy); a worker's *writes* is False.
    """

    rank: _ranks.Rank
    policy: str
    parent: int | None
    writes: bool


_placement: Placement | None = None


def placement(environ: Mapping[str, str] = os.environ) -> Placement:
    """Return where this process stands; resolved once (again after ``configure`` or a fork).

    A worker is a multiprocessing child, or a process forked from one that imported instrument,
    unless it initialized ``torch.distributed`` itself (the ranks ``torch.multiprocessing.spawn``
    starts do; a child forked from a rank only inherits its process group). A worker whose parent,
    as far as it can tell, writes nothing (a rank its policy keeps from writing, mode
    ``disabled``) has no parent here: its records go nowhere and no inbox is created. A parent
    that made its inbox (it started a run, or records under a swapped backend) reads it: then
    only the parent's rank counts, not the mode the worker sees.
    """
    global _placement
    with _lock:
        if _placement is not None:
            return _placement
        policy = _ranks.resolve_policy(_state.settings.rank_policy, environ)
        parent = _family.parent_pid()
        if (parent is not None and not _family.forked_from_parent()
                and _ranks.current_rank(environ).source == "torch.distributed"):
            parent = None  # a rank that torch.multiprocessing.spawn started: its own process of the job
        if parent is None:
            rank = _ranks.current_rank(environ)
            found = Placement(rank, policy, None, _ranks.writes(rank, policy))
        else:
            rank = _ranks.cached_rank(parent) or _ranks.resolve_rank(environ)  # the parent's, as seen from here
            parent_writes = _ranks.writes(rank, policy) and (Inbox.is_read(parent) or not _mode_disabled())
            found = Placement(rank, policy, parent if parent_writes else None, False)
        _placement = found
        _state.disabled = None  # a rank that writes nothing takes the decorators' fast path from now on
        return found


def own_run_options(options: RunOptions, environ: Mapping[str, str], *, from_environment: bool = True) -> RunOptions:
    """Return *options* completed for a run this process starts as its own.

    *from_environment* (standalone and pipeline runs; not a pipeline's training child, which
    inherits its parent's environment): ``WANDB_RUN_ID`` and ``WANDB_RESUME`` fill the run id and
    resume mode not given, for the first such run of the process; a value wandb would refuse is
    reported once and ignored. Under ``per_rank`` in a distributed job the run joins the ranks'
    group (the one given, else :func:`instrument._ranks.job_group`), gets the tag ``rank:<k>`` and
    config ``instrument/rank`` (and ``instrument/world_size``), and a given run id gets the
    suffix ``-rank<k>`` (every rank sees the same ``WANDB_RUN_ID``).
    """
    run_id, resume = options.run_id, options.resume
    if from_environment and not _state.identity_taken:
        _state.identity_taken = True
        identity = _env.run_identity(environ)
        for name, message in identity.refused:
            report(Problem("config", message, name), once=True)
        run_id = run_id or identity.run_id
        resume = resume or identity.resume
    where = placement(environ)
    group, tags, config = options.group, options.tags, options.config
    if where.policy == "per_rank" and where.rank.distributed and where.rank.index is not None:
        group = group or _ranks.job_group(environ)
        if group is None:
            report(Problem("config", "instrument: per_rank: no job id found (TORCHELASTIC_RUN_ID, SLURM_JOB_ID, "
                           f"MASTER_ADDR and MASTER_PORT, ...) and {_env.WANDB_RUN_GROUP} is unset, so the ranks' runs "
                           "share no group; set WANDB_RUN_GROUP", "per_rank"), once=True)
        tags = (*tags, f"rank:{where.rank.index}")
        ranked = {"rank": where.rank.index, **({"world_size": where.rank.size} if where.rank.size else {})}
        mine = (config or {}).get("instrument")
        config = {**(config or {}), "instrument": {**(mine if isinstance(mine, dict) else {}), **ranked}}
        run_id = f"{run_id}-rank{where.rank.index}" if run_id else None
    return attrs.evolve(options, run_id=run_id, resume=resume, group=group, tags=tags, config=config)


# Workers ------------------------------------------------------------------------------------------
_worker_journals: dict[int, WorkerJournal] = {}
_inbox: Inbox | None = None
_poller: Poller | None = None


def _worker_journal(parent: int) -> WorkerJournal:
    """Return this worker's journal into the inbox of process *parent*."""
    journal = _worker_journals.get(parent)
    if journal is None:
        with _lock:
            journal = _worker_journals.setdefault(
                parent, WorkerJournal(parent, redact_secrets=_state.settings.redact_secrets is not False))
    return journal


class _AsParent:
    """Writes a worker's record where this process writes its own records of the same role."""

    id = "of this process"

    def write(self, records: Iterable[Record], problems: Iterable[Problem] = ()) -> None:
        for record in records:
            sink = resolve(role_of(record))
            if sink is not None:
                sink.write([record])


def drain_workers() -> None:
    """Write what this process's workers journaled into its runs. Does nothing in a process that
    never forked nor imported multiprocessing, or whose inbox does not exist."""
    if _family.may_have_inbox():
        _own_inbox().drain()


def drain_workers_at_exit() -> None:
    """The main thread ended: write what the workers journaled. A run this makes (the process
    wrote nothing itself) is started now, inside threading's exit hooks (which wandb's imports
    register more of, :func:`instrument._lifecycle.late_exit_hooks`), and written, so that the
    exit hooks, which run next, finish it (and remove the inbox); a process with no run at all (a
    rank that writes nothing) removes the inbox now."""
    with _lock:
        before = len(_state.sessions)
    with _lifecycle.late_exit_hooks():
        drain_workers()
        with _lock:
            after = len(_state.sessions)
        if after > before:
            flush_state()
    if after == 0:
        _close_inbox(wait_for_children=True)


def _own_inbox() -> Inbox:
    """Return this process's inbox (its reader keeps its place for the life of the process)."""
    global _inbox
    with _lock:
        if _inbox is None:
            _inbox = Inbox(_AsParent())
        return _inbox


def _open_inbox() -> None:
    """Make this process's inbox now, so its workers know that it reads what they write."""
    _own_inbox().open()


def _close_inbox(*, wait_for_children: bool) -> None:
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


def _watch_workers() -> None:
    """This process has a run: make its inbox if it may have workers, and in production drain
    it about every second from now on (one thread)."""
    global _poller
    if _family.may_have_inbox():
        _open_inbox()
    if _poller is None and _state.backend is None:
        _poller = Poller(drain_workers)


@attrs.frozen(slots=True)
class GatedRun:
    """The run a sink writes to, as an eval's gates see it (``_gating.GatedRun``).

    Attributes:
        sink: where the verdicts are written (the same sink as the eval's values).
        run_id, project: the run's id and project (the pipeline run's, for a journal).
        config: the run config this process wrote (None through a journal).
        keeps_files: False under a swapped-in backend (a test's recording): no gate file is written.
    """

    sink: Sink
    run_id: str
    project: str | None
    config: dict[str, Any] | None
    keeps_files: bool

    def write(self, records: Iterable[Record], problems: Iterable[Problem] = ()) -> None:
        """Write *records* to the sink."""
        self.sink.write(records, problems)


def gated_run(sink: Sink) -> GatedRun:
    """Return what an eval's gates need to know about the run *sink* writes to."""
    keeps_files = _state.backend is None
    if isinstance(sink, Session):
        return GatedRun(sink, sink.id, sink.spec.project, sink.config(), keeps_files)
    with _lock:
        run_id = next((run_id for run_id, journal in _state.journals.items() if journal is sink), None)
        context = next((c for c in _state.contexts.values() if c.run_id == run_id), None)
    if run_id is None:
        raise ValueError(f"instrument: the sink {sink!r} is neither a run of this process nor a pipeline's journal")
    return GatedRun(sink, run_id, context.project if context is not None else None, None, keeps_files)


def own_sessions() -> list[Session]:
    """Return the runs this process owns and has not finished (standalone and training runs)."""
    with _lock:
        found = [s for s in (_state.standalone, *_state.training.values()) if s is not None]
        return [s for s in found if not s.finished]


def push_pipeline(session: Session, owner: PipelineOwner, parent: OpenPipeline | None) -> contextvars.Token[
        OpenPipeline | None]:
    """Make *session* the current pipeline of this thread or task until :func:`pop_pipeline`.

    Calls in this thread or task, and in the ones that carry its context, write to it; *parent*
    is the pipeline it was entered in (:func:`enclosing_pipeline`). Returns the token that
    :func:`pop_pipeline` restores the previous current pipeline with.
    """
    entry = OpenPipeline(session, owner, parent)
    with _lock:
        _state.pipelines.append(entry)
        _state.disabled = None
    return _current_pipeline.set(entry)


def pop_pipeline(session: Session, token: contextvars.Token[OpenPipeline | None] | None = None) -> None:
    """Stop routing calls to *session*; restore the current pipeline *token* was taken from (in
    the context that set it; elsewhere, calls there pass over the closed pipeline by themselves)."""
    with _lock:
        _state.pipelines[:] = [p for p in _state.pipelines if p.session is not session]
        _state.disabled = None
    if token is not None:
        with contextlib.suppress(ValueError, RuntimeError):  # closed in another context (SIGTERM's finisher)
            _current_pipeline.reset(token)


def enclosing_pipeline() -> OpenPipeline | None:
    """Return the open pipeline current in this thread or task (carried by its context), or None.

    A pipeline entered now nests in it. A closed one, or one whose run other code finished, is
    passed over for the pipeline it was entered in.
    """
    entry = _current_pipeline.get()
    with _lock:
        while entry is not None and (entry not in _state.pipelines or entry.session.finished):
            entry = entry.parent
    return entry


def current_pipeline(*, warn: bool = False) -> OpenPipeline | None:
    """Return the pipeline a call made now writes to: this thread's or task's
    (:func:`enclosing_pipeline`), else the newest open one of the process.

    The newest is the right one when it is the only pipeline open, or when the others are the
    ones it was entered in. While pipelines of several threads or tasks are open, a call whose
    context carries none of them (a plain ``threading.Thread``, a thread pool's worker) cannot
    tell which is its own: with *warn*, that is said once.
    """
    entry = enclosing_pipeline()
    if entry is not None:
        return entry
    with _lock:
        open_ = [p for p in _state.pipelines if not p.session.finished]
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
                           f"no pipeline in its context while pipelines of several threads or tasks are open (runs "
                           f"{', '.join(others)} and {newest.session.id}), so its records go to the newest, "
                           f"{newest.session.id}: open the pipeline in that thread, or start the thread inside its "
                           "pipeline with contextvars.copy_context().run (docs/guarantees.md, Threads)", "pipeline"),
               once=True)
    return newest


def pipeline_context_file(environ: Mapping[str, str] = os.environ) -> Path | None:
    """Return the context file that links a subprocess started now to the run this thread's calls
    write to: the current pipeline's (:func:`current_pipeline`), else, in a pipeline's subprocess,
    the one ``WANDB_CONTEXT_FILE`` names (when it can be read); None otherwise."""
    pipeline = current_pipeline()
    if pipeline is not None:
        return pipeline.owner.context_file
    try:
        context = _context_file(environ)
    except ContextFileError:
        return None
    return Path(environ[_env.WANDB_CONTEXT_FILE]) if context is not None else None


def _after_fork_in_child() -> None:
    global _state, _lock, _placement, _inbox, _poller
    _lock = threading.RLock()
    _state = _State(settings=_state.settings)  # the runs are the parent's; its settings still hold
    _placement = None
    _inbox = None
    _poller = None
    _worker_journals.clear()


os.register_at_fork(after_in_child=_after_fork_in_child)
