"""The imperative API: ``WandBContext`` and the functions around it.

``current``, ``configure``, ``finish``, ``flush``, ``create_wandb_context``,
``save_wandb_context`` and ``load_wandb_context_from_env`` (the names of the imperative API
this library grew from are kept). ``WandBContext`` methods use the decorators' routing, so the
two never disagree: ``log_training_metric`` is a stage point, ``log_eval_summary`` an eval
summary.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

from instrument import _finishing, _linkage, _worker_inbox
from instrument._backends import wandb_sharing
from instrument._config import plain_config
from instrument._context_file import ContextFile
from instrument._env import WANDB_CONTEXT_FILE
from instrument._kinds import as_step
from instrument._options import RunOptions
from instrument._pipeline_run import PipelineRun
from instrument._problems import InstrumentationError, Origin, Problem, report
from instrument._records import ConfigUpdate, Record
from instrument._routing import Role, route, route_numbers
from instrument._values import Alert, Artifact, File, Image, Table

Resolver = Callable[[Role], "_linkage.Sink | None"]


class _Started(Protocol):
    """A run a stage's points go to (a session): its id, whether it started, its library run."""

    @property
    def id(self) -> str: ...
    @property
    def started(self) -> bool: ...
    def native(self) -> Any: ...


class WandBContext:
    """The imperative API: log to the run a decorated call at this point would write to.

    Obtain one with :func:`instrument.current`, :func:`create_wandb_context` (an orchestrator's
    own run) or :func:`load_wandb_context_from_env` (a subprocess). Every method routes its values
    with the decorators' rules; series go where a stage's points go, everything else where an
    eval's summary goes. Bad values warn (raise in strict mode); a failing backend never raises.
    """

    def __init__(self, resolver: Resolver = _linkage.resolve, owner: PipelineRun | None = None, *,
                 environ: Mapping[str, str] | None = None) -> None:
        self._resolve = resolver
        self.owner = owner
        self._environ = environ

    @property
    def context_file(self) -> Path | None:
        """The context file that links a subprocess to this context's pipeline run: give it as
        ``WANDB_CONTEXT_FILE`` in the subprocess's environment.

        The pipeline this context writes to (for :func:`current`: the one entered in this thread
        or asyncio task, see docs/guarantees.md, "Threads"); in a pipeline's subprocess, the file
        it was handed; None where no pipeline is open (a subprocess started then writes a
        standalone run). ``os.environ["WANDB_CONTEXT_FILE"]`` names the newest open pipeline of
        the process only, so a subprocess started for another one needs this (checked for None:
        ``str(None)`` would hand the subprocess the path ``"None"``)::

            env = dict(os.environ)
            path = instrument.current().context_file
            if path is not None:
                env["WANDB_CONTEXT_FILE"] = str(path)
            subprocess.run([sys.executable, "train.py"], env=env, check=True)
        """
        if self.owner is not None:
            return self.owner.context_file
        if self._environ is not None:
            path = self._environ.get(WANDB_CONTEXT_FILE)
            return Path(path) if path else None
        return _linkage.pipeline_context_file()

    def _session(self) -> _Started | None:
        """The run a stage's point written now would go to; None when it would go nowhere."""
        if self._off():
            return None
        try:
            sink = self._resolve("series")
        except InstrumentationError:
            raise
        except Exception:  # a bad context file is reported by resolve itself
            return None
        return sink if hasattr(sink, "native") else None  # type: ignore[return-value]

    @property
    def run_id(self) -> str | None:
        """The id of the run a stage's point written now goes to, known before the run starts:
        a pipeline's run in its body, this process's training run in a pipeline's subprocess, a
        run other code started that is ``wandb.run``, else this process's standalone run (whose
        id is ``WANDB_RUN_ID`` or ``configure(run_id=)`` when given: store it with a checkpoint to
        resume). None when the mode is disabled, in a worker process (its values go to its
        parent's run) and on a rank that writes nothing.
        """
        session = self._session()
        return session.id if session is not None else None

    @property
    def url(self) -> str | None:
        """That run's W&B page once it started online; None offline, disabled or not started yet."""
        session = self._session()
        native = session.native() if session is not None and session.started else None
        if native is None or getattr(native, "offline", False) is True:  # wandb's url warns offline
            return None
        url = getattr(native, "url", None)
        return url if isinstance(url, str) and url else None

    @property
    def run(self) -> Any:
        """That run's ``wandb.Run`` (as Lightning's ``logger.experiment``), started now if it has
        not started yet, and waited for. It is ``wandb.run`` (unless a run other code started
        was ``wandb.run`` first), so ``instrument.current().run`` followed by ``wandb.log(...)``
        works anywhere, even as the first line of a decorated function. With mode disabled: a
        wandb run that keeps nothing (``wandb.init(mode="disabled")``, imports wandb); None
        under the test recorder.
        """
        if self._off():
            return wandb_sharing.disabled_run()  # imports wandb: only when asked
        session = self._session()
        return session.native() if session is not None else None

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
                with Origin(function):
                    sink.write(records, problems)
        except InstrumentationError:
            raise
        except Exception as error:  # instrumentation never breaks training
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
        """Merge *config* (a mapping or settings object: a dataclass, attrs or pydantic instance, an
        ``argparse.Namespace``, an OmegaConf config) into ``run.config`` at the top level, nesting
        kept; a changed value keeps the last one, with a warning naming the key."""
        problems: list[Problem] = []
        values = plain_config(config, problems)
        self._write("summary", [ConfigUpdate(values=values)], problems, function="WandBContext.update_config")

    def _refuse(self, function: str, key: str, message: str) -> None:
        """Report a bad argument of a method (an error in strict mode); nothing is logged."""
        report(Problem("unroutable", f"instrument: WandBContext.{function}: {message}", key))

    def log_table(self, key: str, columns: Sequence[str], data: Sequence[Sequence[Any]]) -> None:
        """Log a W&B table under *key* (in the summary: tables compare, they are not a series).

        *columns* are names; *data* rows of cells as ``instrument.Table`` takes them.

        Raises:
            ValueError: a row's length differs from the number of columns (at the call).
        """
        self._route({key: Table(columns, data)}, "summary", None, "WandBContext.log_table")

    def log_image(self, key: str, image: Any, caption: str | None = None) -> None:
        """Log an image under *key* (summary): a numpy array (HxW, HxWxC, CxHxW; uint8 or float,
        mapped to 0..255 as ``instrument.Image`` maps it; a batch NxHxWxC is a list of images), a
        PIL image, a path, or a ``wandb.Image``."""
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
        """Finish the run this context owns, else this process's own runs (standalone, training),
        after writing what its worker processes journaled."""
        if self.owner is not None:
            self.owner.close(exit_code=exit_code)
            return
        _worker_inbox.drain_workers()
        for session in _linkage.own_sessions():
            session.finish(exit_code)


def current() -> WandBContext:
    """Return the context a decorated call at this point would write to; never None.

    The pipeline entered in this thread or asyncio task (else the newest open in this process),
    else the context named by ``WANDB_CONTEXT_FILE``, else this process's standalone run (a
    no-op context when the mode is disabled). It starts nothing by itself: a run starts on the
    first record written through it. Each use resolves again: a context kept and used in another
    thread writes where that thread's calls write.
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
    run_id: str | None = None,
    resume: str | None = None,
    rank_policy: str | None = None,
) -> None:
    """Set what standalone and training runs of this process are started with.

    Args:
        project, entity, name, tags, job_type: ``wandb.init``'s arguments. A training
            subprocess still joins the pipeline's group and gets the ``parent:<id>`` tag.
        mode: ``online``/``offline``/``disabled`` (any case); default ``WANDB_MODE``, else online
            with credentials, else offline. A pipeline's context file wins over it in a child. An
            unknown ``WANDB_MODE`` is warned about once and runs are written offline; wandb's
            ``shared`` (several processes writing one run) is warned about once and runs start as
            with ``WANDB_MODE`` unset: instrument writes each run from one process.
        redact_secrets: replace the value of config keys that look like secrets (a segment of
            the name, split on ``_ - . /``, is ``api_key``/``apikey``, ``token``, ``password``,
            ``passwd`` or ``secret``; ``max_tokens`` is not) by ``"<redacted>"`` before config
            leaves the process (to wandb or to a journal), with one warning per key. Default True.
        synchronous: make runs created from now on call wandb on the calling thread, in call
            order, instead of on their dispatcher thread (debugging; as ``INSTRUMENT_SYNC=1``).
            Slower: each ``run.log`` then costs the caller about 0.4 ms.
        run_id: the W&B run id of this process's standalone or training run, so that a
            requeued job continues it (store ``instrument.current().run_id`` with a checkpoint);
            default ``WANDB_RUN_ID`` (taken by the first run this process starts, standalone or
            pipeline; a pipeline's training child never takes it from the environment), else a
            fresh id. Under ``per_rank`` in a distributed job it becomes ``<run_id>-rank<k>``.
            wandb refuses the characters ``:;,#?/'``.
        resume: wandb's resume mode for *run_id*: ``"allow"`` (continue the run if it exists),
            ``"must"``, ``"never"`` or ``"auto"``; default ``WANDB_RESUME``. A resumed run's
            stage axes continue one past their last recorded step (docs/runs.md, "Preemption and
            resume").
        rank_policy: which ranks of a distributed job write runs: ``"rank0"`` (only global rank 0;
            the others write nothing, import no wandb and create no folder) or ``"per_rank"``
            (a run per rank, all in one group, tagged ``rank:<k>``, config ``instrument/rank``
            and ``instrument/world_size``); default ``INSTRUMENT_RANK_POLICY``, else ``"rank0"``.
            The rank comes from the launcher's variables or ``torch.distributed``
            (docs/frameworks.md, "Ranks and distributed jobs").

    Raises:
        ValueError: *mode* is not a mode instrument starts runs in (wandb's ``shared`` included),
            *resume* not a resume mode, *rank_policy* not a rank policy, or *run_id* holds a
            character wandb refuses (the message names it and what is accepted).
        TypeError: an argument has the wrong type (the message names it and the type).
    """
    _linkage.configure(RunOptions.checked(
        "instrument.configure", project=project, entity=entity, name=name, tags=tags, job_type=job_type, mode=mode,
        redact_secrets=redact_secrets, synchronous=synchronous, run_id=run_id, resume=resume,
        rank_policy=rank_policy,
    ))


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
        timeout: seconds wandb may go without taking a record before the wait gives up (the
            wait goes on as long as wandb keeps taking them; a progress line on stderr past a
            few seconds); default ``INSTRUMENT_EXIT_TIMEOUT`` (30).

    Returns:
        True if everything was handed to wandb; False if a queue still held records when wandb
        stopped answering (they stay queued, or on disk if the backend stalled; nothing is
        dropped).
    """
    return _finishing.flush_state(timeout)


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
    """Start an orchestrator's run now and return a context that owns it.

    Decorated calls in this process write into it until :meth:`WandBContext.finish`. Pass it to
    :func:`save_wandb_context` to hand it to subprocesses.

    Args:
        config: the run's config (nesting kept).
        run_id: the W&B run id; default ``WANDB_RUN_ID`` (resumed as ``WANDB_RESUME`` says) for
            the first run this process starts, else a fresh one. Under ``per_rank`` in a
            distributed job it becomes ``<run_id>-rank<k>``.
        mode, project, entity, name, group, tags, job_type: as ``wandb.init``'s arguments;
            *mode* in any case.
        redact_secrets: as for :func:`pipeline`; None follows :func:`configure` (default True).

    In a process that writes no run of its own (a worker, a rank its policy keeps from writing)
    no run is started and what is written through the returned context is dropped; decorated
    calls write where the process's records go (a worker's to its parent's run).

    Raises:
        ValueError: *mode* is not a mode instrument starts runs in (the message lists the
            accepted ones), or *run_id* holds a character wandb refuses.
        TypeError: an argument has the wrong type (the message names it and the type).
    """
    owner = PipelineRun(RunOptions.checked(
        "instrument.create_wandb_context", config=config, run_id=run_id, mode=mode, project=project, entity=entity,
        name=name, group=group, tags=tags, job_type=job_type, redact_secrets=redact_secrets,
    ))
    return WandBContext(lambda role: owner.session, owner=owner)


def save_wandb_context(context: WandBContext, path: str | os.PathLike[str]) -> Path:
    """Write *context*'s context file to *path* (atomic, mode 0600) for subprocesses.

    Set ``WANDB_CONTEXT_FILE=<path>`` in their environment. In a process that writes no run of
    its own (a rank its policy keeps from writing, a worker) nothing is written: the
    subprocesses resolve their own rank and write nothing either.

    Raises:
        ValueError: *context* does not own a run (only :func:`create_wandb_context` ones do).
    """
    if context.owner is None:
        raise ValueError("instrument.save_wandb_context: this WandBContext owns no run; "
                         "use one from create_wandb_context()")
    if context.owner.context is None:
        return Path(path)
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
    ContextFile.load(path)
    return WandBContext(lambda role: _linkage.resolve(role, environ), environ=environ)
