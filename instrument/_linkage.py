"""Linkage: which run a call writes to, resolved at call time.

First, where this process stands (:mod:`instrument._placement`): a worker (a pool or DataLoader
worker, an ``os.fork`` child) writes every record into its parent's inbox, for the run its parent
writes to (:mod:`instrument._worker_inbox`); a rank of a distributed job that its rank policy
keeps from writing writes nothing. Then the order, per record role (``series`` for stages,
``summary`` for evals and everything else):

1. a ``@pipeline`` open in this process: the one entered in this thread or asyncio task (or in
   the context it was copied from), else the newest (:mod:`instrument._pipeline_stack`); its
   run, for every role;
2. ``WANDB_CONTEXT_FILE`` in the environment (a subprocess of a pipeline): series go to this
   process's training run (the pipeline's group, ``job_type="train"``, tag ``parent:<id>``),
   everything else to the pipeline run through the record journal;
3. a ``wandb.run`` that some other code started (a framework): logged into, never finished;
4. this process's standalone run, started on the first record, finished at interpreter exit.

The runs it makes are kept in the process-wide state (:mod:`instrument._linkage_state`),
replaced whole by ``use_backend`` (tests) and by a fork. How they are finished is
:mod:`instrument._finishing`'s.
"""

from __future__ import annotations

import contextvars
import os
import sys
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Protocol

import attrs

from instrument import _env, _family, _finishing, _lifecycle, _linkage_state, _placement, _ranks, _worker_inbox
from instrument._backends.base import Backend, BackendRun, RunSpec, new_run_id
from instrument._backends.disabled import DisabledBackend
from instrument._backends.wandb import WandbBackend
from instrument._config import nan_config_problems
from instrument._context_file import ContextFile, ContextFileError
from instrument._journal import JournalSink
from instrument._linkage_state import State
from instrument._options import RunOptions
from instrument._pipeline_stack import OpenPipeline, PipelineOwner
from instrument._problems import Problem, report
from instrument._records import Record
from instrument._redact import redact_config
from instrument._session import Session


class Sink(Protocol):
    """Where records go: a session (a run this process writes) or a journal (the pipeline's run)."""

    def write(self, records: Iterable[Record], problems: Iterable[Problem] = ()) -> None:
        """Write *records*, reporting *problems* first."""


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
    redact = settings.redact_secrets is not False
    with _linkage_state.lock:
        state = _linkage_state.state
        state.settings = settings
        state.disabled = None
        _placement.forget()
        for sink in state.journals.values():
            sink.redact_secrets = redact
    _worker_inbox.redact_secrets(redact)
    running = own_sessions()
    if running:
        report(Problem("config", f"instrument.configure: run {running[-1].id} was started before this call and keeps "
                       "what it was started with (project, name, tags, mode, ...); the settings apply to runs "
                       "started from now on: call configure before the first record", "configure"))


def settings() -> RunOptions:
    """Return what standalone and training runs are started with."""
    return _linkage_state.state.settings


def push_backend(backend: Backend | None, *, inherit_settings: bool = True) -> object:
    """Route everything to *backend* with fresh state until :func:`pop_backend`; return a token.

    A *backend* of None is a fresh production state (wandb, or nothing when disabled).
    *inherit_settings* carries ``instrument.configure``'s settings into the new state (changes
    made there stay there).
    """
    with _linkage_state.lock:
        settings = _linkage_state.state.settings if inherit_settings else None
        previous = _linkage_state.replace(State(backend, settings))
        _placement.forget()
        _ranks.forget()  # a test may have set a launcher's variables for the block
    if backend is not None:  # its workers write to it whatever mode they see (WANDB_MODE=disabled in CI)
        _worker_inbox.open_inbox()
    return previous


def pop_backend(token: object) -> None:
    """Restore the state that the :func:`push_backend` which returned *token* replaced."""
    if not isinstance(token, State):
        raise TypeError(f"pop_backend needs what push_backend returned, got {type(token).__name__}")
    with _linkage_state.lock:
        _linkage_state.replace(token)
        _placement.forget()
        _ranks.forget()


def _backend(mode: str) -> Backend:
    backend = _linkage_state.state.backend
    return backend if backend is not None else backend_for(mode)


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
    state = _linkage_state.state
    settings = state.settings
    resolved = _linkage_state.resolve_mode(options.mode, environ)
    if state.backend is None and _lifecycle.terminating():  # a run started now would be cut short
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
        _finishing.arm(session)
        if on_start is not None:
            on_start(session)

    production = state.backend is None
    synchronous = settings.synchronous or options.synchronous or _env.is_synchronous(environ)
    session = Session(spec, _backend(spec.mode), on_start=started, synchronous=synchronous, environ=environ,
                      stop_backend=_finishing.stop_wandb_at_exit if production and spec.mode != "disabled" else None)
    if production and not session.synchronous:
        _lifecycle.watch_exit_code()  # the program may fail before the dispatcher thread started the run
    if production and spec.mode != "disabled":
        # Here, on the caller's thread: with background dispatch the run starts on the
        # dispatcher thread, where no signal handler can be installed.
        _lifecycle.finish_on_sigterm(_finishing.finish_state)
    state.sessions.append(session)
    if spec.mode != "disabled":
        _worker_inbox.watch_workers()
    return session


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
    state = _linkage_state.state
    if state.pipelines.entries and state.backend is None:  # which pipeline depends on the thread or task
        pipeline = state.pipelines.current()
        if pipeline is not None:
            return pipeline.session.spec.mode == "disabled" and not _active_wandb_run()
    answer = state.disabled
    if answer is None:
        answer = state.disabled = _compute_disabled()
    return answer and not _active_wandb_run()


def _active_wandb_run() -> bool:
    """Whether a ``wandb.run`` that keeps data is active; never imports wandb to find out."""
    run = getattr(sys.modules.get("wandb"), "run", None)
    return run is not None and not getattr(run, "disabled", False)


def _compute_disabled() -> bool:
    if _linkage_state.state.backend is not None:
        return False
    where = _placement.cached()  # resolved at the first record (the rank may not be known before)
    if where is None and _family.parent_pid() is not None:
        where = _placement.placement()  # a worker: its parent's mode counts, not the one it sees
    if where is not None and not where.writes:  # a worker writes to its parent's inbox; a rank
        return where.parent is None  # that writes nothing, nowhere
    return _linkage_state.mode_disabled()


def training_session(context: ContextFile, environ: Mapping[str, str]) -> Session:
    """Return this process's training run for *context*, creating it on first use."""
    state = _linkage_state.state
    session = state.training.get(context.run_id)
    if session is None or session.finished:  # finished by hand: later points make a new run
        settings = state.settings
        journal = journal_sink(context)
        options = _placement.own_run_options(attrs.evolve(
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
        state.training[context.run_id] = session
    return session


def journal_sink(context: ContextFile) -> JournalSink:
    """Return this process's journal into the pipeline run of *context*."""
    state = _linkage_state.state
    sink = state.journals.get(context.run_id)
    if sink is None:
        redact = state.settings.redact_secrets is not False
        sink = state.journals[context.run_id] = JournalSink(context.journal_dir, redact_secrets=redact)
    return sink


def standalone_session(environ: Mapping[str, str]) -> Session:
    """Return this process's standalone run (one per process), creating it on first use."""
    state = _linkage_state.state
    if state.standalone is None or state.standalone.finished:
        options = _placement.own_run_options(attrs.evolve(state.settings, redact_secrets=None), environ)
        state.standalone = new_session(options, environ)
    return state.standalone


def resolve(role: str, environ: Mapping[str, str] = os.environ) -> Sink | None:
    """Return where a record of *role* written now goes; None where nothing is written.

    A worker's records go to its parent's inbox; a rank its policy keeps from writing gets None
    (the first record resolves the rank, see :func:`instrument._placement.placement`).

    Args:
        role: ``"series"`` (stage points) or ``"summary"`` (evals, config, media, files, alerts).
        environ: the environment to read ``WANDB_CONTEXT_FILE`` from.

    Raises:
        InstrumentationError: in strict mode, when the context file is missing or corrupt
            (otherwise a warning and the standalone run).
    """
    where = _placement.cached() or _placement.placement(environ)
    if not where.writes:
        return None if where.parent is None else _worker_inbox.worker_journal(where.parent)
    with _linkage_state.lock:
        state = _linkage_state.state
        pipeline = state.pipelines.current(warn=True) if state.pipelines.entries else None
        if pipeline is not None:
            return pipeline.session
        try:
            context = _linkage_state.context_file(environ)
        except ContextFileError as error:
            report(Problem("config", f"instrument: {error}; writing to a standalone run instead"), once=True)
            context = None
        if context is not None and state.pipelines.holds(context.run_id):
            context = None  # this process's own pipeline, whose run other code finished
        if context is not None:
            return training_session(context, environ) if role == "series" else journal_sink(context)
        if state.backend is None and "wandb" in sys.modules:
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
    state = _linkage_state.state
    if state.adopted is None or state.adopted.id != run.id or state.adopted.finished:
        state.adopted = Session(RunSpec(id=run.id), WandbBackend(), run=run)
        state.sessions.append(state.adopted)  # at exit: write the points still waiting for its owner's rows
        _finishing.arm(state.adopted)
    return state.adopted


def own_sessions() -> list[Session]:
    """Return the runs this process owns and has not finished (standalone and training runs)."""
    with _linkage_state.lock:
        state = _linkage_state.state
        found = [s for s in (state.standalone, *state.training.values()) if s is not None]
        return [s for s in found if not s.finished]


def push_pipeline(session: Session, owner: PipelineOwner, parent: OpenPipeline | None) -> contextvars.Token[
        OpenPipeline | None]:
    """Make *session* the current pipeline of this thread or task until :func:`pop_pipeline`
    (:meth:`instrument._pipeline_stack.PipelineStack.push`); return the token that restores the
    previous one."""
    with _linkage_state.lock:
        _linkage_state.state.disabled = None
        return _linkage_state.state.pipelines.push(session, owner, parent)


def pop_pipeline(session: Session, token: contextvars.Token[OpenPipeline | None] | None = None) -> None:
    """Stop routing calls to *session*; restore the current pipeline *token* was taken from."""
    with _linkage_state.lock:
        _linkage_state.state.disabled = None
        _linkage_state.state.pipelines.pop(session, token)


def enclosing_pipeline() -> OpenPipeline | None:
    """Return the open pipeline current in this thread or task, which a pipeline entered now nests
    in, or None."""
    return _linkage_state.state.pipelines.enclosing()


def pipeline_context_file(environ: Mapping[str, str] = os.environ) -> Path | None:
    """Return the context file that links a subprocess started now to the run this thread's calls
    write to: the current pipeline's, else, in a pipeline's subprocess,
    the one ``WANDB_CONTEXT_FILE`` names (when it can be read); None otherwise."""
    pipeline = _linkage_state.state.pipelines.current()
    if pipeline is not None:
        return pipeline.owner.context_file
    try:
        context = _linkage_state.context_file(environ)
    except ContextFileError:
        return None
    return Path(environ[_env.WANDB_CONTEXT_FILE]) if context is not None else None


_worker_inbox.route_with(resolve)  # a worker's record goes where this process's own of its role goes
