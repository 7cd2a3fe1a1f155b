"""Linkage: which run a call writes to, resolved at call time.

The order, per record role (``series`` for stages, ``summary`` for evals and everything else):

1. a ``@pipeline`` active in this process: its run, for every role;
2. ``WANDB_CONTEXT_FILE`` in the environment (a subprocess of a pipeline): series go to this
   process's training run (the pipeline's group, ``job_type="train"``, tag ``parent:<id>``),
   everything else to the pipeline run through the journal;
3. a ``wandb.run`` that some other code started (a framework): logged into, never finished;
4. this process's standalone run, started on the first record, finished at interpreter exit.

The state is process-wide (threads find the run); a forked child drops it and runs decorated
calls as plain functions.
"""

from __future__ import annotations

import atexit
import json
import os
import signal
import sys
import tempfile
import threading
import time
import warnings
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any, Protocol

import attrs

from instrument import _env
from instrument._backends.base import Backend, DisabledBackend, RunSpec
from instrument._journal import JournalReader, JournalWriter
from instrument._problems import InstrumentationError, InstrumentWarning, Problem, report, user_stacklevel
from instrument._records import ConfigUpdate, Record, SummaryUpdate
from instrument._redact import redact_config
from instrument._routing import nan_config_problems
from instrument._session import Session

CONTEXT_VERSION = 1


class ContextFileError(ValueError):
    """The file named by ``WANDB_CONTEXT_FILE`` is missing, is not a valid context file, or names
    a journal folder that does not exist (left over from a pipeline that has ended)."""


@attrs.frozen(slots=True)
class RunContext:
    """What a pipeline tells its subprocesses (the context file); never a secret.

    Attributes:
        run_id: the pipeline run's id.
        project, entity, group: where the children's runs go (the pipeline's group).
        mode: the pipeline's wandb mode; it wins over a child's ``WANDB_MODE``.
        journal_dir: the folder where non-owners append records for the pipeline run.
    """

    run_id: str
    project: str | None
    entity: str | None
    group: str | None
    mode: str
    journal_dir: str
    version: int = CONTEXT_VERSION

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write the context to *path* atomically with mode 0600; return the path."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".context-", suffix=".tmp")
        try:
            with os.fdopen(fd, "w") as handle:
                json.dump(attrs.asdict(self), handle, indent=2)
            os.chmod(tmp, 0o600)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return path

    @classmethod
    def load(cls, path: str | os.PathLike[str], *, require_journal: bool = True) -> RunContext:
        """Read a context file.

        Args:
            path: the context file.
            require_journal: reject a file whose *journal_dir* does not exist (a file left over
                from a pipeline that has ended: what a child writes there would be lost).

        Raises:
            ContextFileError: the file is missing, unreadable, empty, not a JSON object, lacks a
                field, has a field of the wrong type, names a mode wandb does not know, names a
                journal folder that does not exist (with *require_journal*), or was written by a
                newer instrument; the message names the file and what is wrong.
        """
        where = f"{_env.WANDB_CONTEXT_FILE}={os.fspath(path)!r}"
        try:
            text = Path(path).read_text()
        except (OSError, UnicodeDecodeError) as error:
            detail = getattr(error, "strerror", None) or str(error)
            raise ContextFileError(f"{where}: cannot read the context file ({detail})") from None
        try:
            data = json.loads(text)
        except json.JSONDecodeError as error:
            detail = "the file is empty" if not text.strip() else f"not JSON: {error}"
            raise ContextFileError(f"{where}: not a valid context file ({detail})") from None
        if not isinstance(data, dict):
            raise ContextFileError(
                f"{where}: not a valid context file (expected a JSON object, got {type(data).__name__})"
            )
        wrong = [f"{name} is missing" for name in ("run_id", "mode", "journal_dir") if name not in data]
        for name in ("run_id", "mode", "journal_dir"):
            if name in data and (not isinstance(data[name], str) or not data[name]):
                wrong.append(f"{name} must be a non-empty string, got {type(data[name]).__name__} {data[name]!r}")
        for name in ("project", "entity", "group"):
            if data.get(name) is not None and not isinstance(data[name], str):
                wrong.append(f"{name} must be a string or null, got {type(data[name]).__name__} {data[name]!r}")
        if isinstance(data.get("mode"), str) and data["mode"]:
            try:
                data["mode"] = _env.check_mode(data["mode"], "mode")
            except ValueError:
                wrong.append(f"mode {data['mode']!r} is not a wandb mode")
        journal = data.get("journal_dir")
        if require_journal and isinstance(journal, str) and journal and not os.path.isdir(journal):
            wrong.append(f"its journal folder journal_dir={journal!r} does not exist (the pipeline that wrote "
                         "this file has ended, or the file is left over from an earlier run)")
        version = data.get("version", CONTEXT_VERSION)
        if not isinstance(version, int) or isinstance(version, bool) or version > CONTEXT_VERSION:
            wrong.append(f"version {version!r} is not one this instrument reads (up to {CONTEXT_VERSION})")
        if wrong:
            raise ContextFileError(f"{where}: not a valid context file: {'; '.join(wrong)}")
        return cls(
            run_id=data["run_id"], project=data.get("project"), entity=data.get("entity"),
            group=data.get("group"), mode=data["mode"], journal_dir=data["journal_dir"], version=version,
        )


class Sink(Protocol):
    """Where records go: a session (owned run) or a journal (someone else's run)."""

    def write(self, records: Iterable[Record], problems: Iterable[Problem] = ()) -> None:
        """Write *records*, reporting *problems* first."""


class JournalSink:
    """Write records for the pipeline run into this process's journal."""

    def __init__(self, context: RunContext) -> None:
        self.context = context
        self.writer = JournalWriter(context.journal_dir)

    def write(self, records: Iterable[Record], problems: Iterable[Problem] = ()) -> None:
        """Append *records* to the journal (one flushed line each) after reporting *problems*."""
        for problem in problems:
            report(problem, once=problem.kind == "non_finite")
        for record in records:
            if isinstance(record, ConfigUpdate) and _state.settings.redact_secrets:
                record = attrs.evolve(record, values=redact_config(record.values))  # before it hits the disk
            try:
                self.writer.append(record)
            except Exception as error:  # noqa: BLE001 - never raise into user code
                report(Problem("backend", f"instrument: writing to the journal {self.writer.path} failed "
                               f"({type(error).__name__}: {error})"), once=True)


@attrs.define
class Settings:
    """What standalone and training runs are started with (``instrument.configure``)."""

    project: str | None = None
    entity: str | None = None
    name: str | None = None
    tags: tuple[str, ...] = ()
    job_type: str | None = None
    mode: str | None = None
    redact_secrets: bool = True
    synchronous: bool = False


class _State:
    """The process-wide linkage state; replaced whole by a fork or a recording."""

    def __init__(self, backend: Backend | None = None) -> None:
        self.backend = backend
        self.pipelines: list[Session] = []
        self.standalone: Session | None = None
        self.training: dict[str, Session] = {}
        self.journals: dict[str, JournalSink] = {}
        self.adopted: Session | None = None
        self.contexts: dict[str, RunContext] = {}
        self.sessions: list[Session] = []
        self.settings = Settings()
        self.disabled: bool | None = None  # cache of disabled(); None: not computed yet


_lock = threading.RLock()
_state = _State()
_backend_stack: list[Backend] = []
_forked = False
_exit_hook_installed = False
_exit_code: int | None = None


def configure(**values: Any) -> None:
    """Set what standalone and training runs are started with (see ``instrument.configure``).

    Raises:
        TypeError, ValueError: *mode* is given and is not a wandb mode.
    """
    if values.get("mode") is not None:
        values["mode"] = _env.check_mode(values["mode"], "instrument.configure: mode")
    with _lock:
        _state.settings = attrs.evolve(_state.settings, **values)
        _state.disabled = None


def push_backend(backend: Backend, *, inherit_settings: bool = True) -> _State:
    """Route everything to *backend* with fresh state until :func:`pop_backend`; return the old state."""
    global _state
    with _lock:
        previous = _state
        _backend_stack.append(backend)
        _state = _State(backend)
        if inherit_settings:
            _state.settings = previous.settings
        return previous


def pop_backend(previous: _State) -> None:
    """Restore the state :func:`push_backend` replaced."""
    global _state
    with _lock:
        _backend_stack.pop()
        _state = previous


def _backend_for(mode: str) -> Backend:
    if _state.backend is not None:
        return _state.backend
    if mode == "disabled":
        return DisabledBackend()
    from instrument._backends.wandb import WandbBackend

    return WandbBackend()


def new_session(
    spec_fields: dict[str, Any],
    environ: Mapping[str, str],
    on_start: Callable[[Session], None] | None = None,
) -> Session:
    """Return a new session for a run spec; resolves the mode and picks the backend.

    Secret-looking config keys of the spec are redacted unless ``redact_secrets`` (a spec field
    here, else ``configure(redact_secrets=...)``) is False. *on_start* is called with the session
    once its run started (after the exit hooks are set).
    """
    mode, announce = _env.resolve_mode(spec_fields.pop("mode", None), environ)
    for problem in nan_config_problems(spec_fields.get("config") or {}):
        report(problem, once=True)
    redact = spec_fields.pop("redact_secrets", None)
    redact = _state.settings.redact_secrets if redact is None else redact
    if redact and spec_fields.get("config"):
        spec_fields["config"] = redact_config(spec_fields["config"])
    spec = RunSpec(mode=mode, announce=announce, redact_secrets=redact, **spec_fields)

    def started(session: Session) -> None:
        _on_start(session)
        if on_start is not None:
            on_start(session)

    synchronous = _state.settings.synchronous or _env.is_synchronous(environ)
    session = Session(spec, _backend_for(mode), on_start=started, synchronous=synchronous, environ=environ)
    if not session.synchronous and _state.backend is None:
        _watch_exit_code()
    if _state.backend is None and mode != "disabled":
        # Here, on the caller's thread: with background dispatch the run starts on the
        # dispatcher thread, where no signal handler can be installed.
        _finish_runs_on_sigterm()
    _state.sessions.append(session)
    return session


def _on_start(session: Session) -> None:
    # wandb registers its teardown at its first init and exit hooks run last-registered first,
    # so ours is registered after a run started: it runs before wandb tears down.
    global _exit_hook_installed
    if not _exit_hook_installed and _state.backend is None:
        _exit_hook_installed = True
        _install_exit_hooks()
    if _state.backend is None and session.spec.mode != "disabled":
        _finish_runs_on_sigterm()  # a preempted job (SLURM, Kubernetes) still finishes its runs


def _install_exit_hooks() -> None:
    _watch_exit_code()
    atexit.register(finish_all)


_exit_code_watched = False


def _watch_exit_code() -> None:
    """Record how the program ends in ``_exit_code`` (an uncaught exception, ``sys.exit(n)``); once.

    Installed when the first run starts, or earlier, when the first run that starts in the
    background (on its dispatcher thread) is created: the program may fail before it started.
    """
    global _exit_code_watched
    if _exit_code_watched:
        return
    _exit_code_watched = True
    previous_excepthook = sys.excepthook

    def excepthook(kind: type[BaseException], error: BaseException, tb: Any) -> None:
        global _exit_code
        _exit_code = 130 if isinstance(error, KeyboardInterrupt) else 1
        previous_excepthook(kind, error, tb)

    sys.excepthook = excepthook
    original_exit = sys.exit

    def exit(code: Any = None) -> None:  # noqa: A001 - mirrors sys.exit
        global _exit_code
        _exit_code = code if isinstance(code, int) else (0 if code is None else 1)
        original_exit(code)

    sys.exit = exit  # type: ignore[assignment]


def finish_all() -> None:
    """Finish every run this process started and has not finished (interpreter exit)."""
    if not _forked:
        finish_state(_exit_code or 0)


def finish_state(exit_code: int) -> None:
    """Finish every unfinished run of the current state with *exit_code*, newest first."""
    with _lock:
        sessions = list(_state.sessions)
        journals = list(_state.journals.values())
        _state.disabled = None
    for session in reversed(sessions):
        session.finish(exit_code)
    for journal in journals:
        journal.writer.close()


def flush_state(timeout: float | None = None) -> bool:
    """Write what every run of the current state holds or queued; True if done within *timeout* s.

    *timeout* defaults to ``INSTRUMENT_EXIT_TIMEOUT``.
    """
    deadline = time.monotonic() + (_env.exit_timeout() if timeout is None else timeout)
    with _lock:
        sessions = [s for s in (*_state.sessions, _state.adopted) if s is not None and not s.finished]
    done = True
    for session in sessions:
        done = session.flush(max(0.0, deadline - time.monotonic())) and done
    return done


def flush_backend(backend: Backend) -> None:
    """Flush the current state's runs if they write to *backend* (a recording being read)."""
    if _state.backend is backend:
        flush_state()


def disabled() -> bool:
    """Return whether a record written now would certainly go nowhere (mode ``disabled``).

    The decorators' fast path: when True they call the function and do nothing else. Computed
    once per state (``configure``, a pipeline starting or ending, and finishing reset it) from
    the pipeline's mode, else the context file's, else ``configure(mode=)``/``WANDB_MODE``; never
    True under a recording or while a ``wandb.run`` is active (a framework's run is logged into).
    """
    answer = _state.disabled
    if answer is None:
        answer = _state.disabled = _compute_disabled()
    return answer and (sys.modules.get("wandb") is None or getattr(sys.modules["wandb"], "run", None) is None)


def _compute_disabled() -> bool:
    if _forked or _state.backend is not None:
        return False
    with _lock:
        if _state.pipelines:
            return _state.pipelines[-1].spec.mode == "disabled"
        try:
            context = _context(os.environ)
            if context is not None:
                return context.mode == "disabled"
            mode, _ = _env.resolve_mode(_state.settings.mode, os.environ)
        except (ContextFileError, ValueError):
            return False
        return mode == "disabled"


def _context(environ: Mapping[str, str]) -> RunContext | None:
    path = environ.get(_env.WANDB_CONTEXT_FILE)
    if not path:
        return None
    context = _state.contexts.get(path)
    if context is None:
        context = RunContext.load(path)
        _state.contexts[path] = context
    return context


def training_session(context: RunContext, environ: Mapping[str, str]) -> Session:
    """Return this process's training run for *context*, creating it on first use."""
    session = _state.training.get(context.run_id)
    if session is None or session.finished:  # finished by hand: later points make a new run
        settings = _state.settings
        journal = journal_sink(context)
        session = new_session(
            {
                "project": context.project or settings.project,
                "entity": context.entity or settings.entity,
                "name": settings.name,
                "group": context.group,
                "job_type": settings.job_type or "train",
                "tags": (*settings.tags, f"parent:{context.run_id}"),
                "mode": context.mode,
            },
            environ,
            on_start=lambda started: journal.writer.append(
                {"type": "child", "run_id": started.id, "location": started.location()}
            ),
        )
        _state.training[context.run_id] = session
    return session


def journal_sink(context: RunContext) -> JournalSink:
    """Return this process's journal into the pipeline run of *context*."""
    sink = _state.journals.get(context.run_id)
    if sink is None:
        sink = _state.journals[context.run_id] = JournalSink(context)
    return sink


def standalone_session(environ: Mapping[str, str]) -> Session:
    """Return this process's standalone run (one per process), creating it on first use."""
    if _state.standalone is None or _state.standalone.finished:
        settings = _state.settings
        _state.standalone = new_session(
            {
                "project": settings.project,
                "entity": settings.entity,
                "name": settings.name,
                "tags": settings.tags,
                "job_type": settings.job_type,
                "mode": settings.mode,
            },
            environ,
        )
    return _state.standalone


def resolve(role: str, environ: Mapping[str, str] = os.environ) -> Sink | None:
    """Return where a record of *role* written now goes; None in a forked child.

    Args:
        role: ``"series"`` (stage points) or ``"summary"`` (evals, config, media, files, alerts).
        environ: the environment to read ``WANDB_CONTEXT_FILE`` from.

    Raises:
        ContextFileError: in strict mode, when the context file is missing or corrupt (otherwise
            a warning and the standalone run).
    """
    if in_child():
        return None
    with _lock:
        if _state.pipelines:
            return _state.pipelines[-1]
        try:
            context = _context(environ)
        except ContextFileError as error:
            report(Problem("config", f"instrument: {error}; writing to a standalone run instead"), once=True)
            context = None
        if context is not None:
            return training_session(context, environ) if role == "series" else journal_sink(context)
        if _state.backend is None and "wandb" in sys.modules:
            adopted = _adopt()
            if adopted is not None:
                return adopted
        return standalone_session(environ)


def _adopt() -> Session | None:
    if getattr(sys.modules.get("wandb"), "run", None) is None:  # the common case, without an import
        return None
    from instrument._backends.wandb import WandbBackend

    run = WandbBackend().adopt()
    if run is None:
        return None
    if _state.adopted is None or _state.adopted.id != run.id:
        _state.adopted = Session(RunSpec(id=run.id), WandbBackend(), run=run)
    return _state.adopted


def own_sessions(environ: Mapping[str, str] = os.environ) -> list[Session]:
    """Return the runs this process owns and has not finished (standalone and training runs)."""
    with _lock:
        found = [s for s in (_state.standalone, *_state.training.values()) if s is not None]
        return [s for s in found if not s.finished]


def push_pipeline(session: Session) -> None:
    """Make *session* the run every call in this process writes to, until :func:`pop_pipeline`."""
    with _lock:
        _state.pipelines.append(session)
        _state.disabled = None


def pop_pipeline(session: Session) -> None:
    """Stop routing calls to *session*."""
    with _lock:
        if session in _state.pipelines:
            _state.pipelines.remove(session)
        _state.disabled = None


def ingest(session: Session, reader: JournalReader, locations: dict[str, str] | None = None) -> list[str]:
    """Write the journal records found by *reader* into *session*; return children's run ids.

    Every record read is written. A problem a record raises in strict mode comes from another
    process and cannot be raised there, so here it is a warning that names the run. Where a
    child said where its run lives (its wandb folder), *locations* gets ``{run id: folder}``.
    """
    children: list[str] = []
    for record in reader.read_new():
        if isinstance(record, dict):
            if record.get("type") == "child":
                children.append(str(record["run_id"]))
                if locations is not None and isinstance(record.get("location"), str):
                    locations[str(record["run_id"])] = record["location"]
            else:
                report(Problem("backend", f"instrument: journal {reader.folder}: a line of unknown type "
                               f"{record.get('type')!r} was skipped"), once=True)
            continue
        try:
            session.write([record])
        except InstrumentationError as error:
            warnings.warn(f"{error} (a record journaled for run {session.id})", InstrumentWarning,
                          stacklevel=user_stacklevel())
    return children


_forked_warned = False


def in_child() -> bool:
    """Return whether this is a forked or multiprocessing child (a pool worker, a DataLoader
    worker); then warn once that its decorated calls run as plain functions and log nothing."""
    if _forked or _multiprocessing_child():
        _warn_forked()
        return True
    return False


def _warn_forked() -> None:
    global _forked_warned
    if not _forked_warned:
        _forked_warned = True
        warnings.warn(
            "instrument: this is a forked or multiprocessing child process (a DataLoader worker, a "
            "pool); decorated calls here run as plain functions and log nothing (the parent's run is "
            "left alone)",
            InstrumentWarning,
            stacklevel=user_stacklevel(),
        )


def _multiprocessing_child() -> bool:
    # A spawned or forkserver worker imports instrument afresh, so no fork hook marks it.
    multiprocessing = sys.modules.get("multiprocessing")
    return multiprocessing is not None and multiprocessing.parent_process() is not None


def _after_fork_in_child() -> None:
    global _state, _forked, _lock, _forked_warned
    _forked = True
    _forked_warned = False
    _lock = threading.RLock()
    _state = _State()
    _terminators.clear()
    _sigterm_finished.clear()
    _sigterm_finishing.clear()
    try:
        if signal.getsignal(signal.SIGTERM) is _on_sigterm:
            signal.signal(signal.SIGTERM, signal.SIG_DFL)  # the child owns no pipeline run
    except (ValueError, OSError):  # not the main thread
        pass


os.register_at_fork(after_in_child=_after_fork_in_child)


_terminators: list[Callable[[int], None]] = []


def close_on_sigterm(close: Callable[[int], None]) -> None:
    """Call *close(143)* if this process gets SIGTERM while it owns a pipeline run.

    The handler (also installed when any run this process owns starts) is installed only in the
    main thread and only if SIGTERM still has its default handler (a framework's own handler is
    left alone). On SIGTERM a thread closes every
    registered owner, newest first, and finishes this process's other runs with exit code 143
    (each bounded by ``INSTRUMENT_EXIT_TIMEOUT``) while the main thread goes on; then the default
    handler is restored and SIGTERM raised again, so the process ends as it would have without
    instrument. A second SIGTERM meanwhile ends it at once.
    """
    with _lock:
        _terminators.append(close)
        _finish_runs_on_sigterm()


def _finish_runs_on_sigterm() -> None:
    """Install the SIGTERM handler that finishes this process's runs with exit code 143, if this
    is the main thread and SIGTERM still has its default handler (a framework's is left alone).

    Called when a run this process owns starts (standalone, training, pipeline): SLURM and
    Kubernetes send SIGTERM on preemption, and with the default handler the run is never
    finished and loses up to wandb's flush interval of data (WANDB_FACTS 7, trap 9).
    """
    if threading.current_thread() is not threading.main_thread():
        return
    try:
        if signal.getsignal(signal.SIGTERM) is signal.SIG_DFL:
            signal.signal(signal.SIGTERM, _on_sigterm)
    except (ValueError, OSError):  # not the main interpreter (a subinterpreter), or no signals here
        pass


def forget_sigterm(close: Callable[[int], None]) -> None:
    """Undo :func:`close_on_sigterm`; restore the default handler once no owner is left and no
    standalone or training run of this process is unfinished."""
    with _lock:
        if close in _terminators:
            _terminators.remove(close)
        if _terminators or threading.current_thread() is not threading.main_thread():
            return
        if any(not session.finished for session in (_state.standalone, *_state.training.values()) if session):
            return
        try:
            if signal.getsignal(signal.SIGTERM) is _on_sigterm:
                signal.signal(signal.SIGTERM, signal.SIG_DFL)
        except (ValueError, OSError):
            pass


_sigterm_finished = threading.Event()
_sigterm_finishing = threading.Event()


def _on_sigterm(signum: int, frame: Any) -> None:
    # The main thread may have been interrupted while holding a lock (wandb's console wrapper,
    # a run's lock), so the runs are finished on a thread of their own while the main thread goes
    # on; that thread then signals the main thread again, which dies of the default action.
    if _sigterm_finished.is_set() or _sigterm_finishing.is_set():  # finished, or a second SIGTERM
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        os.kill(os.getpid(), signal.SIGTERM)
        return
    _sigterm_finishing.set()
    threading.Thread(target=_finish_after_sigterm, name="instrument-sigterm", daemon=True).start()


def _finish_after_sigterm() -> None:
    global _exit_code
    _exit_code = 128 + signal.SIGTERM
    try:
        for close in reversed(list(_terminators)):
            try:
                close(_exit_code)
            except Exception:  # noqa: BLE001, S110 - dying anyway; finish what can be finished
                pass
        finish_state(_exit_code)
    finally:
        _sigterm_finished.set()
        _sigterm_finishing.clear()
        try:
            signal.pthread_kill(threading.main_thread().ident or 0, signal.SIGTERM)
        except (OSError, ValueError):  # the main thread already ended: the interpreter is exiting
            pass


def pipeline_children_summary(children: list[str]) -> SummaryUpdate:
    """Return the summary record that lists a pipeline's child runs (``pipeline/children``)."""
    return SummaryUpdate(values={"pipeline/children": sorted(set(children))}, owned=True)


def exit_code_for(error: BaseException | None) -> int:
    """Return the run exit code for how a block ended: 0, n for ``SystemExit(n)``, 130 for
    Ctrl-C, 1 for any other exception."""
    if error is None:
        return 0
    if isinstance(error, SystemExit):
        code = error.code
        return code if isinstance(code, int) else (0 if code is None else 1)
    if isinstance(error, KeyboardInterrupt):
        return 130
    return 1
