"""The decorators: thin wrappers that call the function and hand what it returns on.

Options are validated when a decorator is applied; the kind of callable (plain, generator,
coroutine, async generator) is classified once; each of the four small wrappers calls one shared
lifecycle (:class:`_Emitter`). The run is looked up at call time, never at decoration time.
"""

from __future__ import annotations

import contextvars
import inspect
import os
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from types import TracebackType
from typing import Any, TypeVar

import wrapt

from instrument import _linkage
from instrument._context import OwnerRun
from instrument._problems import InstrumentationError, Problem, origin, report
from instrument._records import ConfigUpdate
from instrument._routing import Role, plain_config, route

F = TypeVar("F", bound=Callable[..., Any])

_SUMMARY_OPS = frozenset({"min", "max", "mean", "last", "first", "none"})

#: The stage whose call is running in this context (``instrument.log`` adds points to it).
_current: contextvars.ContextVar[_Emitter | None] = contextvars.ContextVar("instrument_stage", default=None)


class _Emitter:
    """The shared lifecycle: route a returned value and write it where linkage says, safely."""

    __slots__ = ("role", "prefix", "function", "summary")

    def __init__(self, role: Role, prefix: str | None, function: str, summary: Mapping[str, str]) -> None:
        self.role = role
        self.prefix = prefix
        self.function = function
        self.summary = dict(summary)

    def emit(self, value: Any, step: int | None = None) -> None:
        """Route *value* and write it; problems warn (raise in strict mode), faults never raise."""
        if value is None:
            return
        try:
            sink = _linkage.resolve(self.role)
            if sink is None:
                return
            routed = route(
                value, role=self.role, prefix=self.prefix, function=self.function, step=step, summary=self.summary
            )
            with origin(self.function):
                sink.write(routed.records, routed.problems)
        except InstrumentationError:
            raise
        except Exception as error:  # noqa: BLE001 - instrumentation never breaks training
            report(Problem("backend", f"instrument: {self.function}: logging failed "
                           f"({type(error).__name__}: {error}); the function's value was returned"), once=True)


def _wrap(emitter: _Emitter, function: Callable[..., Any], *, returns: bool = True) -> Any:
    """Return *function* wrapped for its kind, each wrapper calling *emitter*."""
    if inspect.isasyncgenfunction(function):

        @wrapt.decorator
        async def async_gen_wrapper(wrapped: Any, instance: Any, args: Any, kwargs: Any) -> AsyncIterator[Any]:
            agen = wrapped(*args, **kwargs)
            sent: Any = None
            thrown: BaseException | None = None
            while True:
                token = _current.set(emitter)
                try:
                    item = await (agen.athrow(thrown) if thrown is not None else agen.asend(sent))
                except StopAsyncIteration:
                    return
                finally:
                    _current.reset(token)
                emitter.emit(item)
                try:
                    sent, thrown = (yield item), None
                except GeneratorExit:
                    await agen.aclose()
                    raise
                except BaseException as error:  # noqa: BLE001 - forwarded into the generator
                    sent, thrown = None, error

        return async_gen_wrapper(function)

    if inspect.iscoroutinefunction(function):

        @wrapt.decorator
        async def coroutine_wrapper(wrapped: Any, instance: Any, args: Any, kwargs: Any) -> Any:
            token = _current.set(emitter)
            try:
                result = await wrapped(*args, **kwargs)
            finally:
                _current.reset(token)
            if returns:
                emitter.emit(result)
            return result

        return coroutine_wrapper(function)

    if inspect.isgeneratorfunction(function):

        @wrapt.decorator
        def generator_wrapper(wrapped: Any, instance: Any, args: Any, kwargs: Any) -> Iterator[Any]:
            gen = wrapped(*args, **kwargs)
            sent: Any = None
            thrown: BaseException | None = None
            while True:
                token = _current.set(emitter)
                try:
                    item = gen.throw(thrown) if thrown is not None else gen.send(sent)
                except StopIteration as stop:
                    return stop.value  # type: ignore[no-any-return]
                finally:
                    _current.reset(token)
                emitter.emit(item)
                try:
                    sent, thrown = (yield item), None
                except GeneratorExit:
                    gen.close()
                    raise
                except BaseException as error:  # noqa: BLE001 - forwarded into the generator
                    sent, thrown = None, error

        return generator_wrapper(function)

    @wrapt.decorator
    def function_wrapper(wrapped: Any, instance: Any, args: Any, kwargs: Any) -> Any:
        token = _current.set(emitter)
        try:
            result = wrapped(*args, **kwargs)
        finally:
            _current.reset(token)
        if returns:
            emitter.emit(result)
        return result

    return function_wrapper(function)


def _qualname(function: Callable[..., Any]) -> str:
    return getattr(function, "__qualname__", None) or getattr(function, "__name__", repr(function))


def _check_name(decorator: str, argument: str, value: object) -> str:
    if not isinstance(value, str) or not value or value.startswith("/") or value.endswith("/"):
        raise ValueError(
            f"instrument.{decorator}: {argument} must be a non-empty string without a leading or "
            f"trailing '/', got {type(value).__name__} {value!r}"
        )
    return value


def training_stage(name: str, *, summary: Mapping[str, str] | None = None) -> Callable[[F], F]:
    """Decorate a training step: each call (or each yield) is one point of the stage's series.

    A returned mapping ``{"loss": 0.1}`` becomes ``<name>/loss`` in history, on the stage's own
    step axis ``<name>/step`` (0, 1, 2, ... unless ``instrument.log(..., step=k)`` or a ``step``
    key says otherwise). Each key is declared once with ``define_metric(key,
    step_metric="<name>/step")``, by exact name, never a glob, and ``step=`` is never passed to
    ``run.log``: a second stage starting again at 0 loses nothing (W&B drops backward ``step=``).
    ``None`` is no point; a bare number is ``<name>/value``; strings go to the summary. A
    generator function yields one mapping per point and its items reach the caller unchanged.
    ``instrument.log(mapping)`` inside the call adds separate points to the stage.

    Args:
        name: the stage name, the prefix of its keys (``"operator"``).
        summary: per-metric summary aggregation, ``{"loss": "min"}``; one or several of ``min``,
            ``max``, ``mean``, ``last``, ``first``, ``none`` joined with commas (wandb's
            ``define_metric(summary=...)``; the summary value becomes ``{"min": v}``).

    Raises:
        ValueError: *name* is empty or not a string, or a summary op is not one wandb accepts.
    """
    _check_name("training_stage", "name", name)
    ops = dict(summary or {})
    for key, op in ops.items():
        parts = op.split(",") if isinstance(op, str) else [op]
        if not all(p in _SUMMARY_OPS for p in parts):
            raise ValueError(
                f"instrument.training_stage({name!r}): summary[{key!r}] = {op!r} is not a wandb summary "
                f"op; use one or more of {sorted(_SUMMARY_OPS)} joined with ','"
            )

    def decorate(function: F) -> F:
        return _wrap(_Emitter("series", name, _qualname(function), ops), function)  # type: ignore[no-any-return]

    return decorate


def eval_summary(function: F | None = None, *, prefix: str = "eval") -> Any:
    """Decorate an evaluation: the returned mapping goes to ``run.summary`` as ``<prefix>/key``.

    Never into history. Usable bare (``@eval_summary``) or called (``@eval_summary(prefix="x")``).
    Inside a pipeline's subprocess the summary lands in the pipeline run (through the journal).

    Args:
        function: the function, when used bare.
        prefix: put before every key (``"eval"``).

    Raises:
        ValueError: *prefix* is empty or not a string.
    """
    _check_name("eval_summary", "prefix", prefix)

    def decorate(function: F) -> F:
        return _wrap(_Emitter("summary", prefix, _qualname(function), {}), function)  # type: ignore[no-any-return]

    return decorate(function) if function is not None else decorate


def run_config(function: F) -> F:
    """Decorate a function that returns the run's config: it goes to ``run.config``, nesting kept.

    The returned mapping (a dict, an attrs or dataclass instance, an OmegaConf config) is written
    at the top level of the config and returned unchanged. Paths become strings, tuples lists.
    """
    name = _qualname(function)

    @wrapt.decorator
    def wrapper(wrapped: Any, instance: Any, args: Any, kwargs: Any) -> Any:
        result = wrapped(*args, **kwargs)
        try:
            sink = _linkage.resolve("summary")
            if sink is not None and result is not None:
                with origin(name):
                    sink.write([ConfigUpdate(values=plain_config(result))])
        except InstrumentationError:
            raise
        except Exception as error:  # noqa: BLE001 - instrumentation never breaks the program
            report(Problem("backend", f"instrument: {name}: writing the config failed ({error})"), once=True)
        return result

    return wrapper(function)  # type: ignore[no-any-return]


def log(values: Mapping[str, Any], step: int | None = None) -> None:
    """Log *values* as one point of the running stage, or as a plain history row outside stages.

    Inside a ``training_stage`` call the keys get the stage prefix and the point lands on the
    stage's axis (*step* if given, else the next step). Outside any stage it behaves like
    ``wandb.log(values)`` without a step: keys unprefixed.

    Args:
        values: a mapping of numbers (nested mappings flatten with ``/``).
        step: the stage step of this point; a whole number (``10.0`` and numpy ints are accepted).

    Raises:
        InstrumentationError: in strict mode, for a step that is not a whole number.
    """
    from instrument._routing import as_step

    emitter = _current.get() or _PLAIN
    if step is not None:
        exact = as_step(step)
        if exact is None:
            report(Problem("bad_step", f"instrument.log: step must be a whole number, got "
                           f"{type(step).__name__} {step!r}; the next automatic step was used", "step"))
        step = exact
    emitter.emit(values, step=step)


_PLAIN = _Emitter("series", None, "instrument.log", {})


class pipeline:  # noqa: N801 - a decorator and context manager, named like one
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

    Args:
        project, name, group, tags, config, mode: as ``wandb.init``'s arguments; *mode* defaults
            to ``WANDB_MODE``, else online with credentials, else offline.
        redact_secrets: replace secret-looking config values of this run by ``"<redacted>"``
            (see :func:`instrument.configure`); None (default) follows ``configure``, which
            defaults to True.
    """

    def __init__(
        self,
        project: str | None = None,
        *,
        name: str | None = None,
        group: str | None = None,
        tags: tuple[str, ...] | list[str] = (),
        config: Any = None,
        mode: str | None = None,
        entity: str | None = None,
        redact_secrets: bool | None = None,
    ) -> None:
        self.project = project
        self.redact_secrets = redact_secrets
        self.name = name
        self.group = group
        self.tags = tuple(tags)
        self.config = plain_config(config) if config is not None else {}
        self.mode = mode
        self.entity = entity
        self._active: list[OwnerRun] = []

    def __enter__(self) -> OwnerRun:
        active = OwnerRun(
            project=self.project, entity=self.entity, name=self.name, group=self.group,
            tags=self.tags, config=self.config, mode=self.mode, redact_secrets=self.redact_secrets,
        )
        active.export()
        self._active.append(active)
        return active

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._active.pop().close(error)

    def __call__(self, function: F) -> F:
        @wrapt.decorator
        def wrapper(wrapped: Any, instance: Any, args: Any, kwargs: Any) -> Any:
            with self:
                return wrapped(*args, **kwargs)

        if inspect.iscoroutinefunction(function):

            @wrapt.decorator
            async def async_wrapper(wrapped: Any, instance: Any, args: Any, kwargs: Any) -> Any:
                with self:
                    return await wrapped(*args, **kwargs)

            return async_wrapper(function)  # type: ignore[no-any-return]
        return wrapper(function)  # type: ignore[no-any-return]
