"""The pipeline: ``instrument.pipeline``, the orchestrator's decorator and context manager.

``pipeline(...)`` checks its options at once and returns a :class:`Pipeline`; entering it (or
calling a function it decorates) starts the pipeline's own run (:mod:`instrument._pipeline_run`,
loaded then through :mod:`instrument._runtime`), which its subprocesses link to.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from types import TracebackType
from typing import TYPE_CHECKING, Any, ParamSpec, TypeVar, overload

from instrument import _runtime
from instrument._options import RunOptions
from instrument._problems import remember_call_site
from instrument._wrapping import Hooks, check_callable, wrap

if TYPE_CHECKING:
    from instrument._pipeline_run import PipelineRun

P = ParamSpec("P")
R = TypeVar("R")


@overload
def pipeline(function: Callable[P, R], /) -> Callable[P, R]: ...
@overload
def pipeline(
    project: str | None = None,
    *,
    name: str | None = None,
    group: str | None = None,
    tags: tuple[str, ...] | list[str] = (),
    config: Any = None,
    mode: str | None = None,
    entity: str | None = None,
    redact_secrets: bool | None = None,
    run_id: str | None = None,
    resume: str | None = None,
    gate_exit: bool = False,
) -> Pipeline: ...


def pipeline(
    project: Any = None,
    *,
    name: str | None = None,
    group: str | None = None,
    tags: tuple[str, ...] | list[str] = (),
    config: Any = None,
    mode: str | None = None,
    entity: str | None = None,
    redact_secrets: bool | None = None,
    run_id: str | None = None,
    resume: str | None = None,
    gate_exit: bool = False,
) -> Any:
    """Mark the orchestrator: it owns the pipeline run and links its subprocesses to it.

    Usable as ``@pipeline(project="p")`` on the entry point and as ``with pipeline(project="p"):``.
    On entry it starts the pipeline run (``job_type="pipeline"``, group defaulting to the run's
    id), writes a context file (mode 0600, no secret) and exports ``WANDB_CONTEXT_FILE`` to
    subprocesses. Stages and evals called in this process write into the pipeline run; a
    training subprocess makes its own run in the group tagged ``parent:<id>``; an eval
    subprocess's summary lands in the pipeline run (through a journal this run ingests). On exit
    it drains the journals, records the children's run ids in summary ``pipeline/children`` and
    finishes the run: exit code 0, 1 with the exception re-raised unchanged, n for
    ``SystemExit(n)``, 130 for Ctrl-C. Entering it again (a hyperparameter loop) makes a new run.

    In a process that writes no run of its own (a pool or DataLoader worker, a rank its
    ``rank_policy`` keeps from writing) it is a plain block: no run, no context file, nothing
    exported; the values of its body go where the process's values go.

    Also usable bare (``@pipeline`` on a function): the project then comes from
    ``instrument.configure`` or ``WANDB_PROJECT``. On a coroutine, generator or async generator
    function the run spans the awaited body or the whole iteration, so stages called inside
    write into it.

    Args:
        project, name, group, entity: strings, as ``wandb.init``'s arguments.
        tags: a list or tuple of strings.
        config: the run's config: a mapping, an attrs or dataclass instance, an OmegaConf config.
        mode: ``online``, ``offline``, ``disabled`` (any case); default ``WANDB_MODE``, else
            online with credentials, else offline (see :func:`instrument.configure`). The children
            get it through the context file.
        redact_secrets: replace secret-looking config values of this run by ``"<redacted>"``
            (see :func:`instrument.configure`); None (default) follows ``configure``, which
            defaults to True.
        run_id: the pipeline run's W&B id, so that a requeued orchestrator continues it;
            default ``WANDB_RUN_ID`` (taken by the first run this process starts, standalone or
            pipeline), else a fresh id. Its children's runs get ids of their own. Under
            ``per_rank`` in a distributed job it becomes ``<run_id>-rank<k>``.
        resume: wandb's resume mode for *run_id* (``"allow"``, ``"must"``, ``"never"``,
            ``"auto"``); default ``WANDB_RESUME``. A resumed run's stage axes continue one past
            their last recorded step.
        gate_exit: when the body ended normally but a ``fail`` gate of an eval failed in this
            pipeline (its subprocesses' evals included), finish the run with exit code 1 and
            raise ``SystemExit(1)``, with one line on stderr naming the failed suites
            (docs/gates.md). Without it, gates never change an exit code.

    Raises:
        TypeError: an argument has the wrong type (the message names it and the type), or what
            is decorated is not a function.
        ValueError: *mode* is not a mode instrument starts runs in (wandb's ``shared``
            included), *resume* not a resume mode, or *run_id* holds a character wandb refuses.

    Returns:
        A :class:`Pipeline`: ``with`` it to get the running
        :class:`~instrument._pipeline_run.PipelineRun`, or decorate a function with it. Used
        bare, the decorated function.
    """
    if callable(project) and not isinstance(project, str):  # used bare: @pipeline above a def
        given = (name, group, config, mode, entity, redact_secrets, run_id, resume)
        if any(option is not None for option in given) or tags not in ((), []) or gate_exit:
            raise TypeError("instrument.pipeline: project must be a string, got a function; to give "
                            "options write @instrument.pipeline(project=..., ...) above the function")
        return Pipeline(RunOptions())(project)
    if not isinstance(gate_exit, bool):
        raise TypeError(f"instrument.pipeline: gate_exit must be True or False, got {type(gate_exit).__name__} "
                        f"{gate_exit!r}")
    return Pipeline(RunOptions.checked(
        "instrument.pipeline", project=project, name=name, group=group, tags=tags, config=config, mode=mode,
        entity=entity, redact_secrets=redact_secrets, run_id=run_id, resume=resume,
    ), gate_exit=gate_exit)


class Pipeline:
    """A pipeline's options, used as a context manager or a decorator (see :func:`pipeline`).

    Attributes:
        options: the checked :class:`~instrument._options.RunOptions` every run it starts gets.
        gate_exit: exit with status 1 when a ``fail`` gate failed in a run (see :func:`pipeline`).
    """

    def __init__(self, options: RunOptions, *, gate_exit: bool = False) -> None:
        self.options = options
        self.gate_exit = gate_exit
        self._active: list[PipelineRun] = []

    def start_run(self) -> PipelineRun:
        """Start a pipeline run (plain in a worker or a rank that writes nothing) and export it."""
        run = _runtime.pipeline_run(self.options)
        run.export()
        self._active.append(run)
        return run

    def finish_run(self, run: PipelineRun, error: BaseException | None) -> None:
        """Finish *run*, one this pipeline started (exit code from *error*, see :func:`pipeline`).

        Raises:
            SystemExit: with ``gate_exit``, status 1 when the body ended normally and a ``fail``
                gate failed in the run (after the run was finished with exit code 1).
        """
        self._active.remove(run)
        run.close(error, gate_exit=self.gate_exit)
        if run.failed_gates and error is None:
            print(f"instrument: pipeline run {run.id}: the gates of {', '.join(map(repr, run.failed_gates))} failed; "
                  "exiting with status 1 (gate_exit=True)", file=sys.stderr)
            raise SystemExit(1)

    def __enter__(self) -> PipelineRun:
        """Start a pipeline run and export ``WANDB_CONTEXT_FILE``; return the run."""
        remember_call_site()  # the with statement: where warnings found off the user's stack point
        return self.start_run()

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, tb: TracebackType | None
    ) -> None:
        """Finish the run entered last (exit code from *error*); the exception is not swallowed."""
        self.finish_run(self._active[-1], error)

    def __call__(self, function: Callable[P, R]) -> Callable[P, R]:
        """Run *function* inside this pipeline, a new pipeline run per call.

        Every kind of callable keeps its run open while its body runs: a coroutine function's
        run spans the awaited body, a generator's run spans its iteration (from the first item to
        its end, or to ``close()``), and so does an async generator's.

        Raises:
            TypeError: *function* is not a function.
        """
        check_callable("pipeline", function)
        decorated: Callable[P, R] = wrap(function, _PipelineHooks(self))
        return decorated


class _PipelineHooks(Hooks):
    """The lifecycle of a function decorated with a pipeline: its run spans the body."""

    returns = False

    def __init__(self, pipeline: Pipeline) -> None:
        self.pipeline = pipeline

    def begin(self) -> PipelineRun:
        """Start the pipeline run before the body first runs."""
        return self.pipeline.start_run()

    def end(self, state: PipelineRun, error: BaseException | None) -> None:
        """Finish it when the body is over (exit code from *error*)."""
        self.pipeline.finish_run(state, error)
