"""The imperative layer: ``WandBContext`` (the seed's API) and the run an orchestrator owns.

``WandBContext`` methods use the same routing as the decorators, so the two layers never
disagree: ``log_training_metric`` is a stage point, ``log_eval_summary`` an eval summary.
"""

from __future__ import annotations

import glob
import os
import shutil
import sys
import tempfile
import threading
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from instrument import _linkage
from instrument._env import WANDB_CONTEXT_FILE, check_mode, exit_timeout
from instrument._journal import JournalReader
from instrument._problems import InstrumentationError, Problem, origin, report
from instrument._records import ConfigUpdate, Record
from instrument._routing import Role, as_step, is_config_mapping, plain_config, route, route_numbers
from instrument._values import Alert, Artifact, File, Image, Table

Resolver = Callable[[Role], "_linkage.Sink | None"]


def _shown(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 60 else f"{text[:57]}..."


def check_run_arguments(
    where: str, *, tags: Any = (), config: Any = None, redact_secrets: Any = None, **texts: Any
) -> None:
    """Check the run arguments given to *where* (``"instrument.pipeline"``).

    *texts* (project, name, group, entity, job_type) must be strings or None; *tags* a list,
    tuple or set of strings; *config* None or a mapping (dict, attrs or dataclass instance,
    OmegaConf config); *redact_secrets* None or a bool.

    Raises:
        TypeError: an argument has the wrong type; the message names *where*, the argument and
            the value's type.
    """
    for argument, value in texts.items():
        if value is not None and not isinstance(value, str):
            raise TypeError(f"{where}: {argument} must be a string, got {type(value).__name__} {_shown(value)}")
    if isinstance(tags, str) or not isinstance(tags, list | tuple | set | frozenset) or not all(
        isinstance(tag, str) for tag in tags
    ):
        raise TypeError(f"{where}: tags must be a list or tuple of strings, got {type(tags).__name__} {_shown(tags)}")
    if config is not None and not is_config_mapping(config):
        raise TypeError(f"{where}: config must be a mapping (a dict, an attrs or dataclass instance, an OmegaConf "
                        f"config), got {type(config).__name__} {_shown(config)}")
    if redact_secrets is not None and not isinstance(redact_secrets, bool):
        raise TypeError(f"{where}: redact_secrets must be True, False or None, got {type(redact_secrets).__name__} "
                        f"{_shown(redact_secrets)}")


class OwnerRun:
    """A run this process owns and shares with its subprocesses (a pipeline run).

    Starts the run at once (``job_type="pipeline"``, group defaulting to the run's id), makes a
    private folder (mode 0700) for the context file and the journals, ingests the journals every
    second while it runs and drains them at :meth:`close`.
    """

    def __init__(
        self,
        *,
        project: str | None = None,
        entity: str | None = None,
        name: str | None = None,
        group: str | None = None,
        tags: Sequence[str] = (),
        config: Mapping[str, Any] | None = None,
        mode: str | None = None,
        run_id: str | None = None,
        job_type: str = "pipeline",
        redact_secrets: bool | None = None,
    ) -> None:
        from instrument._backends.base import new_run_id

        run_id = run_id or new_run_id()
        self.folder = Path(tempfile.mkdtemp(prefix=f"instrument-{run_id}-"))  # mode 0700
        journal = self.folder / "journal"
        journal.mkdir(mode=0o700)
        self.session = _linkage.new_session(
            {
                "id": run_id,
                "project": project,
                "entity": entity,
                "name": name,
                "group": group or run_id,
                "job_type": job_type,
                "tags": tuple(tags),
                "config": dict(config or {}),
                "mode": mode,
                "redact_secrets": redact_secrets,
            },
            os.environ,
        )
        self.session.journal_dir = str(journal)
        self.session.start()
        self.context = _linkage.RunContext(
            run_id=self.session.id,  # not run_id: a failed init may have fallen back to a fresh id
            project=project,
            entity=entity,
            group=self.session.spec.group,
            mode=self.session.spec.mode,
            journal_dir=str(journal),
        )
        self.context_file = self.context.save(self.folder / "context.json")
        self.reader = JournalReader(journal)
        self.children: list[str] = []
        self.child_locations: dict[str, str] = {}  # run id -> its folder, as the child reported it
        self._previous: str | None = None
        self._exported = False
        self._closed = False
        self._close_lock = threading.Lock()
        _linkage.push_pipeline(self.session)
        _linkage.close_on_sigterm(self._terminate)
        self._stop = threading.Event()
        self._poller = threading.Thread(target=self._poll, name=f"instrument-ingest-{run_id}", daemon=True)
        self._poller.start()

    @property
    def id(self) -> str:
        """The run's id."""
        return self.session.id

    def export(self) -> None:
        """Set ``WANDB_CONTEXT_FILE`` for subprocesses until :meth:`close` restores it."""
        self._previous = os.environ.get(WANDB_CONTEXT_FILE)
        os.environ[WANDB_CONTEXT_FILE] = str(self.context_file)
        self._exported = True

    def _poll(self) -> None:
        while not self._stop.wait(1.0):
            self.ingest()

    def ingest(self) -> bool:
        """Write what the subprocesses journaled so far into the run; return whether it all went."""
        try:
            self.children.extend(_linkage.ingest(self.session, self.reader, self.child_locations))
        except Exception as error:  # noqa: BLE001 - never raise into the orchestrator
            report(Problem("backend", f"instrument: reading the journal {self.reader.folder} failed ({error})"),
                   once=True)
            return False
        return True

    def _terminate(self, exit_code: int) -> None:
        self.close(exit_code=exit_code)

    def close(self, error: BaseException | None = None, exit_code: int | None = None) -> None:
        """Drain the journals, record the children and finish the run; once.

        The exit code is *exit_code* if given, else derived from *error*: 0, n for
        ``SystemExit(n)``, 130 for Ctrl-C, 1 for any other exception.
        """
        with self._close_lock:  # the main thread and a SIGTERM's finisher may both close it
            if self._closed:
                return
            self._closed = True
        _linkage.pop_pipeline(self.session)
        _linkage.forget_sigterm(self._terminate)
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
            self.session.write([_linkage.pipeline_children_summary(self.children)])
        except Exception as failure:  # noqa: BLE001 - never raise into the orchestrator
            report(Problem("backend", f"instrument: recording the children of run {self.id} failed ({failure})"))
        self.session.finish(exit_code if exit_code is not None else _linkage.exit_code_for(error), timeout)
        self._print_sync_command()
        if drained:
            shutil.rmtree(self.folder, ignore_errors=True)
        else:
            report(Problem("backend", f"instrument: the journals of run {self.id} were not fully read; they are "
                           f"kept in {self.folder}; write them into an offline run with "
                           f"`python -m instrument replay {self.folder}`"))


    def _print_sync_command(self) -> None:
        """Print, for an offline pipeline, one line with the ``wandb sync`` command for its run
        and every child's run (each child's run has a folder of its own; wandb's own hint is
        silenced and would only name one run)."""
        if self.session.spec.mode not in ("offline", "dryrun"):
            return
        own = self.session.location()
        if not os.path.isdir(own):  # not a wandb run folder (disabled, recorded, a journal)
            return
        wandb_dir = os.path.dirname(own)
        folders = [own]
        for child in dict.fromkeys(self.children):
            where = self.child_locations.get(child, "")
            folders.append(where if glob.glob(os.path.join(glob.escape(where), "run-*.wandb"))
                           else os.path.join(wandb_dir, f"offline-run-*-{child}"))
        shown = " ".join(_short(folder) for folder in folders)
        count = len(folders) - 1
        runs = f"run {self.id} and its {count} child run{'s' if count > 1 else ''} were" if count else f"run {self.id} was"
        print(f"instrument: pipeline {runs} written offline; upload {'them' if count else 'it'} with "
              f"`wandb sync {shown}`", file=sys.stderr)


def _short(path: str) -> str:
    """Return *path* relative to the working directory when it lies under it."""
    relative = os.path.relpath(path)
    return path if relative.startswith("..") else relative


class WandBContext:
    """The imperative API: log to the run a decorated call at this point would write to.

    Obtain one with :func:`instrument.current`, :func:`create_wandb_context` (an orchestrator's
    own run) or :func:`load_wandb_context_from_env` (a subprocess). Every method routes its values
    with the decorators' rules; series go where a stage's points go, everything else where an
    eval's summary goes. Bad values warn (raise in strict mode); a failing backend never raises.
    """

    def __init__(self, resolver: Resolver = _linkage.resolve, owner: OwnerRun | None = None) -> None:
        self._resolve = resolver
        self.owner = owner

    @property
    def run_id(self) -> str | None:
        """The id of the run this context owns (an orchestrator's), else None."""
        return self.owner.id if self.owner is not None else None

    def _off(self) -> bool:
        """Whether this context writes nowhere for sure (mode disabled): skip all work."""
        return self._resolve is _linkage.resolve and _linkage.disabled()

    def _write(
        self, role: Role, records: Sequence[Record], problems: Sequence[Problem] = (), function: str = "WandBContext"
    ) -> None:
        if self._off():
            return
        try:
            sink = self._resolve(role)
            if sink is not None:
                with origin(function):
                    sink.write(records, problems)
        except InstrumentationError:
            raise
        except Exception as error:  # noqa: BLE001 - instrumentation never breaks training
            report(Problem("backend", f"instrument: WandBContext: logging failed ({type(error).__name__}: "
                           f"{error})"), once=True)

    def _route(self, value: Any, role: Role, prefix: str | None, function: str, step: int | None = None) -> None:
        if self._off():
            return
        routed = route(value, role=role, prefix=prefix, function=function, step=step)
        self._write(role, routed.records, routed.problems, function)

    def log_training_metric(self, stage: str, name: str, value: Any, step: int | None = None) -> None:
        """Log one metric point: history key ``<stage>/<name>`` on the axis ``<stage>/step``.

        Args:
            stage: the stage name (``"operator"``).
            name: the metric name (``"loss"``).
            value: a number (numpy and 0-d tensor scalars accepted).
            step: the stage step; None for the stage's next step.
        """
        if self._off():
            return
        exact = step if step is None or type(step) is int else as_step(step)
        if step is not None and exact is None:
            report(Problem("bad_step", f"instrument: WandBContext.log_training_metric: step must be a whole "
                           f"number, got {type(step).__name__} {step!r}", name, "the next automatic step was used"))
        routed = route_numbers({name: value}, stage, exact, {})
        if routed is None:
            self._route({name: value}, "series", stage, "WandBContext.log_training_metric", exact)
        else:
            self._write("series", routed.records, (), "WandBContext.log_training_metric")

    def log_eval_summary(self, metrics: Mapping[str, Any], prefix: str = "eval") -> None:
        """Set final metrics in ``run.summary`` as ``<prefix>/<key>``; never in history.

        Args:
            metrics: a mapping of numbers (nested mappings flatten with ``/``).
            prefix: put before every key; ``""`` for none.
        """
        self._route(metrics, "summary", prefix or None, "WandBContext.log_eval_summary")

    def update_config(self, config: Any) -> None:
        """Merge *config* (a mapping, attrs or dataclass instance) into ``run.config`` at the top
        level, nesting kept; a changed value keeps the last one, with a warning naming the key."""
        self._write("summary", [ConfigUpdate(values=plain_config(config))], function="WandBContext.update_config")

    def _refuse(self, function: str, key: str, message: str) -> None:
        """Report a bad argument of a method (an error in strict mode); nothing is logged."""
        report(Problem("unroutable", f"instrument: WandBContext.{function}: {message}", key))

    def log_table(self, key: str, columns: Sequence[str], data: Sequence[Sequence[Any]]) -> None:
        """Log a W&B table under *key* (in the summary: tables compare, they are not a series).

        *columns* are names; *data* rows of cells as ``instrument.Table`` takes them.

        Raises:
            ValueError: a row's length differs from the number of columns (at the call, as the
                seed's ``log_table`` documents).
        """
        self._route({key: Table(columns, data)}, "summary", None, "WandBContext.log_table")

    def log_image(self, key: str, image: Any, caption: str | None = None) -> None:
        """Log an image under *key* (summary): a numpy array (HxW, HxWxC, CxHxW; uint8 or float
        0..1; a batch NxHxWxC is a list of images), a PIL image, a path, or a ``wandb.Image``."""
        value = image if type(image).__module__.startswith("wandb") else Image(image, caption=caption)
        self._route({key: value}, "summary", None, "WandBContext.log_image")

    def save_file(self, path: str | os.PathLike[str], base_path: str | None = None, policy: str = "now") -> None:
        """Save the file (or folder) at *path* with the run (Files tab), as ``instrument.File``.

        It keeps its path relative to *base_path*, else to the working directory (else only its
        name). *policy* is wandb's: ``now`` (copied into the run at once), ``end`` (copied again
        at finish) or ``live`` (a symlink that follows the file).
        """
        if policy not in ("now", "end", "live"):
            self._refuse("save_file", os.fspath(path), f"policy {policy!r} is not one of now, end, live; "
                         f"{os.fspath(path)!r} was not saved")
            return
        value = File(path, policy=policy, base_path=base_path)  # type: ignore[arg-type]
        self._route({"file": value}, "summary", None, "WandBContext.save_file")

    def log_artifact(
        self, path: str | os.PathLike[str], type: str = "model", name: str | None = None, aliases: Sequence[str] = ()
    ) -> None:
        """Log the file or folder at *path* as a W&B artifact (``instrument.Artifact``).

        *name* defaults to the path's stem; *aliases* are added to ``latest``.
        """
        value = Artifact(path, type=type, name=name, aliases=tuple(aliases))
        self._route({"artifact": value}, "summary", None, "WandBContext.log_artifact")

    def alert(self, title: str, text: str = "", level: str = "WARN") -> None:
        """Send a W&B alert with *title*, *text* and *level* (``INFO``, ``WARN``, ``ERROR``).

        Another level is reported (an error in strict mode) and no alert is sent.
        """
        if level not in ("INFO", "WARN", "ERROR"):
            self._refuse("alert", title, f"level {level!r} is not one of INFO, WARN, ERROR; alert {title!r} "
                         "was not sent")
            return
        value = Alert(title, text, level)  # type: ignore[arg-type]
        self._route({"alert": value}, "summary", None, "WandBContext.alert")

    def finish(self, exit_code: int = 0) -> None:
        """Finish the run this context owns, else this process's own runs (standalone, training)."""
        if self.owner is not None:
            self.owner.close(exit_code=exit_code)
            return
        for session in _linkage.own_sessions():
            session.finish(exit_code)


def current() -> WandBContext:
    """Return the context a decorated call at this point would write to; never None.

    A pipeline active in this process, else the context named by ``WANDB_CONTEXT_FILE``, else
    this process's standalone run (a no-op context when the mode is disabled). It starts nothing
    by itself: a run starts on the first record written through it.
    """
    return WandBContext()


def configure(
    project: str | None = None,
    *,
    entity: str | None = None,
    name: str | None = None,
    tags: Sequence[str] = (),
    job_type: str | None = None,
    mode: str | None = None,
    redact_secrets: bool = True,
    synchronous: bool = False,
) -> None:
    """Set what standalone and training runs of this process are started with.

    Args:
        project, entity, name, tags, job_type: ``wandb.init``'s arguments. A training
            subprocess still joins the pipeline's group and gets the ``parent:<id>`` tag.
        mode: ``online``/``offline``/``disabled`` (any case); default ``WANDB_MODE``, else online
            with credentials, else offline. A pipeline's context file wins over it in a child. An
            unknown ``WANDB_MODE`` is warned about once and runs are written offline.
        redact_secrets: replace the value of config keys that look like secrets (a segment of
            the name, split on ``_ - . /``, is ``api_key``/``apikey``, ``token``, ``password``,
            ``passwd`` or ``secret``; ``max_tokens`` is not) by ``"<redacted>"`` before config
            leaves the process (to wandb or to a journal), with one warning per key. Default True.
        synchronous: make runs created from now on call wandb on the calling thread, in call
            order, instead of on their dispatcher thread (debugging; as ``INSTRUMENT_SYNC=1``).
            Slower: each ``run.log`` then costs the caller about 0.4 ms.

    Raises:
        ValueError: *mode* is not a wandb mode (the message names it and the accepted ones).
        TypeError: an argument has the wrong type (the message names it and the type).
    """
    check_run_arguments("instrument.configure", project=project, entity=entity, name=name, job_type=job_type,
                        tags=tags, redact_secrets=redact_secrets)
    _linkage.configure(project=project, entity=entity, name=name, tags=tuple(tags), job_type=job_type, mode=mode,
                       redact_secrets=redact_secrets, synchronous=synchronous)


def finish(exit_code: int = 0) -> None:
    """Finish this process's own runs now (notebooks, where no exit hook runs)."""
    WandBContext().finish(exit_code)


def flush(timeout: float | None = None) -> bool:
    """Write everything logged so far to its run and wait until wandb took it.

    Records leave the calling thread at once and a thread per run calls wandb; rows of a stage
    at an explicit step are held until the stage moves on (about a second at most) so that
    several calls make one history row. ``flush`` writes the held rows and waits for every
    queue to drain; the runs stay open. Finishing and interpreter exit do the same by
    themselves.

    Args:
        timeout: seconds to wait at most; default ``INSTRUMENT_EXIT_TIMEOUT`` (30).

    Returns:
        True if everything was handed to wandb in time; False if a queue still held records
        (they stay queued, or on disk if the backend stalled; nothing is dropped).
    """
    return _linkage.flush_state(timeout)


def create_wandb_context(
    config: Mapping[str, Any] | None = None,
    *,
    run_id: str | None = None,
    mode: str | None = None,
    project: str | None = None,
    entity: str | None = None,
    name: str | None = None,
    group: str | None = None,
    tags: Sequence[str] = (),
    job_type: str = "pipeline",
    redact_secrets: bool | None = None,
) -> WandBContext:
    """Start an orchestrator's run now and return a context that owns it (the seed's API).

    Decorated calls in this process write into it until :meth:`WandBContext.finish`. Pass it to
    :func:`save_wandb_context` to hand it to subprocesses.

    Args:
        config: the run's config (nesting kept).
        run_id: the run id (default: a fresh one).
        mode, project, entity, name, group, tags, job_type: as ``wandb.init``'s arguments;
            *mode* in any case.
        redact_secrets: as for :func:`pipeline`; None follows :func:`configure` (default True).

    Raises:
        ValueError: *mode* is not a wandb mode (the message lists the accepted ones).
        TypeError: an argument has the wrong type (the message names it and the type).
    """
    check_run_arguments("instrument.create_wandb_context", project=project, entity=entity, name=name, group=group,
                        job_type=job_type, run_id=run_id, tags=tags, config=config, redact_secrets=redact_secrets)
    if mode is not None:
        mode = check_mode(mode, "instrument.create_wandb_context: mode")
    owner = OwnerRun(
        project=project, entity=entity, name=name, group=group, tags=tags,
        config=plain_config(config or {}), mode=mode, run_id=run_id, job_type=job_type,
        redact_secrets=redact_secrets,
    )
    return WandBContext(lambda role: owner.session, owner=owner)


def save_wandb_context(context: WandBContext, path: str | os.PathLike[str]) -> Path:
    """Write *context*'s context file to *path* (atomic, mode 0600) for subprocesses.

    Set ``WANDB_CONTEXT_FILE=<path>`` in their environment.

    Raises:
        ValueError: *context* does not own a run (only :func:`create_wandb_context` ones do).
    """
    if context.owner is None:
        raise ValueError("instrument.save_wandb_context: this WandBContext owns no run; "
                         "use one from create_wandb_context()")
    return context.owner.context.save(path)


def load_wandb_context_from_env(environ: Mapping[str, str] = os.environ) -> WandBContext | None:
    """Return the context named by ``WANDB_CONTEXT_FILE``, or None if the variable is unset.

    Raises:
        ContextFileError: the file is missing or corrupt, or its journal folder does not exist
            (a file left over from a pipeline that has ended); the message names it and the fault.
    """
    path = environ.get(WANDB_CONTEXT_FILE)
    if not path:
        return None
    _linkage.RunContext.load(path)
    return WandBContext(lambda role: _linkage.resolve(role, environ))
