"""The decorators: thin wrappers that call the function and hand what it returns on.

Options are validated when a decorator is applied; the kind of callable (plain, generator,
coroutine, async generator) is classified once; each of the four small wrappers calls one shared
lifecycle (:class:`_Emitter`). The run is looked up at call time, never at decoration time.
"""

from __future__ import annotations

import contextvars
import copy
import functools
import importlib
import inspect
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from types import TracebackType
from typing import Any, ParamSpec, Protocol, TypeVar, cast, overload

import wrapt

from instrument import _env, _linkage
from instrument._imperative import OwnerRun, check_run_arguments
from instrument._problems import InstrumentationError, Problem, origin, report
from instrument._records import ConfigUpdate
from instrument._routing import Role, is_config_mapping, join, plain_config, route, route_numbers

P = ParamSpec("P")
R = TypeVar("R")
T = TypeVar("T")


class Decorator(Protocol):
    """What ``training_stage(...)``, ``eval_summary(...)`` and ``run_config()`` return.

    It keeps the decorated callable's exact type (its ``ParamSpec`` and return type), so type
    checkers and IDEs see the original signature; ``classmethod`` and ``staticmethod`` objects
    (the decorator written above ``@classmethod``) keep theirs too.
    """

    @overload
    def __call__(self, function: classmethod[T, P, R], /) -> classmethod[T, P, R]: ...
    @overload
    def __call__(self, function: staticmethod[P, R], /) -> staticmethod[P, R]: ...
    @overload
    def __call__(self, function: Callable[P, R], /) -> Callable[P, R]: ...

def _by_name(module: str, qualname: str) -> Any:
    """Return the object *qualname* (dotted) of *module*: how a pickled decorated function is found."""
    found: Any = importlib.import_module(module)
    for part in qualname.split("."):
        found = getattr(found, part)
    return found


class _BoundWrapper(wrapt.BoundFunctionWrapper):  # type: ignore[type-arg]
    """A decorated method bound to its instance or class; pickles like a bound method."""

    def __reduce_ex__(self, protocol: Any) -> Any:
        bound = self.__wrapped__
        owner = getattr(bound, "__self__", None)
        if owner is not None:  # obj.method, Class.classmethod: found again on the same object
            return getattr, (owner, bound.__name__)
        return _by_name, (self.__module__, self.__wrapped__.__qualname__)  # Class.method, a staticmethod

    def __copy__(self) -> Any:
        return self

    def __deepcopy__(self, memo: dict[int, Any]) -> Any:
        bound = self.__wrapped__
        owner = getattr(bound, "__self__", None)
        if owner is None or isinstance(owner, type):
            return self
        return getattr(copy.deepcopy(owner, memo), bound.__name__)  # as a bound method deep-copies


class _Wrapper(wrapt.FunctionWrapper):  # type: ignore[type-arg]
    """A decorated function. It pickles by reference, as the original function does: the module
    attribute named by its ``__qualname__`` is this wrapper, so a process pool's worker finds it
    by importing the module (where it runs as a plain function, see ``_linkage.resolve``)."""

    __bound_function_wrapper__ = _BoundWrapper

    def __reduce_ex__(self, protocol: Any) -> Any:
        qualname: str = self.__wrapped__.__qualname__
        if "." in qualname and "<locals>" not in qualname:  # a method: the class attribute binds
            return _by_name, (self.__module__, qualname)
        # A string: pickle looks the name up in the module and checks it is this very object, with
        # the same error as for an original function defined in a local scope.
        return qualname

    def __copy__(self) -> Any:  # a function is atomic for copy and deepcopy
        return self

    def __deepcopy__(self, memo: dict[int, Any]) -> Any:
        return self


#: ``wrapt.decorator`` making :class:`_Wrapper` proxies (picklable decorated functions).
_decorator = functools.partial(wrapt.decorator, proxy=_Wrapper)


_SUMMARY_OPS = frozenset({"min", "max", "mean", "last", "first", "none"})

_disabled = _linkage.disabled

#: The stage whose call is running in this context (``instrument.log`` adds points to it).
_current: contextvars.ContextVar[_Emitter | None] = contextvars.ContextVar("instrument_stage", default=None)


class _Emitter:
    """The shared lifecycle: route a returned value and write it where linkage says, safely."""

    __slots__ = ("role", "prefix", "function", "summary", "full_summary")

    def __init__(self, role: Role, prefix: str | None, function: str, summary: Mapping[str, str]) -> None:
        self.role = role
        self.prefix = prefix
        self.function = function
        self.summary = dict(summary)
        self.full_summary = {join(prefix, key): op for key, op in self.summary.items()}

    def emit(self, value: Any, step: int | None = None) -> None:
        """Route *value* and write it; problems warn (raise in strict mode), faults never raise.

        Does nothing at all when the mode is ``disabled`` (resolved once per state).
        """
        if value is None or _disabled():
            return
        try:
            sink = _linkage.resolve(self.role)
            if sink is None:
                return
            routed = (route_numbers(value, self.prefix, step, self.full_summary) if self.role == "series" else None) or route(
                value, role=self.role, prefix=self.prefix, function=self.function, step=step, summary=self.summary
            )
            with origin(self.function):
                sink.write(routed.records, routed.problems)
        except InstrumentationError:
            raise
        except Exception as error:  # noqa: BLE001 - instrumentation never breaks training
            report(Problem("backend", f"instrument: {self.function}: logging failed "
                           f"({type(error).__name__}: {error}); the function's value was returned"), once=True)


def _kind(function: Any) -> str:
    """Classify a callable once: ``asyncgen``, ``coroutine``, ``generator`` or ``plain``.

    A ``classmethod``/``staticmethod`` object (the decorator written above it) is classified by
    the function it holds.
    """
    target = function.__func__ if isinstance(function, classmethod | staticmethod) else function
    if inspect.isasyncgenfunction(target):
        return "asyncgen"
    if inspect.iscoroutinefunction(target):
        return "coroutine"
    if inspect.isgeneratorfunction(target):
        return "generator"
    return "plain"


def _wrap(emitter: _Emitter, function: Any, *, returns: bool = True) -> Any:
    """Return *function* wrapped for its kind, each wrapper calling *emitter*."""
    kind = _kind(function)
    if kind == "asyncgen":

        @_decorator
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

    if kind == "coroutine":

        @_decorator
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

    if kind == "generator":

        @_decorator
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

    @_decorator
    def function_wrapper(wrapped: Any, instance: Any, args: Any, kwargs: Any) -> Any:
        if _disabled():  # the fast path: nothing would be written anywhere
            return wrapped(*args, **kwargs)
        token = _current.set(emitter)
        try:
            result = wrapped(*args, **kwargs)
        finally:
            _current.reset(token)
        if returns:
            emitter.emit(result)
        return result

    return function_wrapper(function)


def _qualname(function: Any) -> str:
    name = getattr(function, "__qualname__", None) or getattr(function, "__name__", None)
    return name if isinstance(name, str) else repr(function)


def _check_name(decorator: str, argument: str, value: object) -> str:
    if callable(value) and not isinstance(value, str):  # used bare: @training_stage above a def
        raise TypeError(
            f"instrument.{decorator} needs the {argument} as its argument: write "
            f"@instrument.{decorator}(\"<{argument}>\") above {_qualname(value)!r}, not a bare "
            f"@instrument.{decorator}"
        )
    if not isinstance(value, str) or not value or value.startswith("/") or value.endswith("/"):
        raise ValueError(
            f"instrument.{decorator}: {argument} must be a non-empty string without a leading or "
            f"trailing '/', got {type(value).__name__} {value!r}"
        )
    return value


def _check_callable(decorator: str, function: object) -> None:
    """Raise TypeError naming *decorator* when *function* is not something it can decorate."""
    if not (callable(function) or isinstance(function, classmethod | staticmethod)):
        raise TypeError(
            f"instrument.{decorator} decorates a function or method, got {type(function).__name__} {function!r}"
        )


def training_stage(name: str, *, summary: Mapping[str, str] | None = None) -> Decorator:
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
        TypeError: the decorator was used bare (``@training_stage`` without a name), *summary*
            is not a mapping, or what is decorated is not a function.
    """
    _check_name("training_stage", "name", name)
    if summary is not None and not isinstance(summary, Mapping):
        raise TypeError(
            f"instrument.training_stage({name!r}): summary must be a mapping of metric name to wandb "
            f"summary op, such as {{'loss': 'min'}}, got {type(summary).__name__} {summary!r}"
        )
    ops = dict(summary or {})
    for key, op in ops.items():
        parts = op.split(",") if isinstance(op, str) else [op]
        if not all(p in _SUMMARY_OPS for p in parts):
            raise ValueError(
                f"instrument.training_stage({name!r}): summary[{key!r}] = {op!r} is not a wandb summary "
                f"op; use one or more of {sorted(_SUMMARY_OPS)} joined with ','"
            )

    def decorate(function: Any) -> Any:
        _check_callable(f"training_stage({name!r})", function)
        return _wrap(_Emitter("series", name, _qualname(function), ops), function)

    return cast(Decorator, decorate)


@overload
def eval_summary(function: Callable[P, R], /) -> Callable[P, R]: ...
@overload
def eval_summary(function: str = ..., /, *, prefix: str = ...) -> Decorator: ...


def eval_summary(function: Any = None, /, *, prefix: str = "eval") -> Any:
    """Decorate an evaluation: the returned mapping goes to ``run.summary`` as ``<prefix>/key``.

    Never into history. Usable bare (``@eval_summary``) or called (``@eval_summary(prefix="x")``,
    or ``@eval_summary("x")``). Inside a pipeline's subprocess the summary lands in the pipeline
    run (through the journal). Tables and images go to the summary too; a ``Series`` marker is a
    point on the axis ``<prefix>/step``; a ``Config`` marker is merged into
    ``run.config[<prefix>]``.

    Args:
        function: the function, when used bare; or the prefix, when called with one argument.
        prefix: put before every key (``"eval"``).

    Raises:
        ValueError: *prefix* is empty or not a string.
        TypeError: what is decorated is not a function.
    """
    if isinstance(function, str):
        function, prefix = None, function
    _check_name("eval_summary", "prefix", prefix)

    def decorate(function: Any) -> Any:
        _check_callable(f"eval_summary(prefix={prefix!r})", function)
        return _wrap(_Emitter("summary", prefix, _qualname(function), {}), function)

    return decorate(function) if function is not None else cast(Decorator, decorate)


def _write_config(name: str, result: Any) -> None:
    """Write what a ``run_config`` function returned to ``run.config``; never raises a fault."""
    if result is None or _disabled():
        return
    try:
        if not is_config_mapping(result):
            report(Problem("unroutable", f"instrument: {name}: run_config expects a mapping (dict, attrs or "
                           f"dataclass instance, OmegaConf config), got {type(result).__module__}."
                           f"{type(result).__qualname__}; nothing was written to the config", "config"))
            return
        sink = _linkage.resolve("summary")
        if sink is not None:
            with origin(name):
                sink.write([ConfigUpdate(values=plain_config(result))])
    except InstrumentationError:
        raise
    except Exception as error:  # noqa: BLE001 - instrumentation never breaks the program
        report(Problem("backend", f"instrument: {name}: writing the config failed ({error})"), once=True)


@overload
def run_config(function: Callable[P, R], /) -> Callable[P, R]: ...
@overload
def run_config() -> Decorator: ...


def run_config(function: Any = None, /) -> Any:
    """Decorate a function that returns the run's config: it goes to ``run.config``, nesting kept.

    The returned mapping (a dict, an attrs or dataclass instance, an OmegaConf config if
    OmegaConf is installed) is written at the top level of the config and returned unchanged.
    Paths become strings, tuples lists. Works on plain functions and coroutine functions
    (the awaited result is written), methods included; usable bare or called
    (``@run_config()``). Anything but a mapping is reported, naming the function and the type.

    Raises:
        TypeError: when applied to a generator or async generator function (a config is one
            value, not a stream), or to something that is not a function.
    """

    def decorate(function: Any) -> Any:
        _check_callable("run_config", function)
        name = _qualname(function)
        kind = _kind(function)
        if kind in ("generator", "asyncgen"):
            raise TypeError(f"instrument.run_config: {name} is a {kind} function; a config is one returned "
                            "mapping, so decorate a plain or async function")
        if kind == "coroutine":

            @_decorator
            async def async_wrapper(wrapped: Any, instance: Any, args: Any, kwargs: Any) -> Any:
                result = await wrapped(*args, **kwargs)
                _write_config(name, result)
                return result

            return async_wrapper(function)

        @_decorator
        def wrapper(wrapped: Any, instance: Any, args: Any, kwargs: Any) -> Any:
            result = wrapped(*args, **kwargs)
            _write_config(name, result)
            return result

        return wrapper(function)

    return decorate(function) if function is not None else cast(Decorator, decorate)


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
                           f"{type(step).__name__} {step!r}", "step", "the next automatic step was used"))
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

    Also usable bare (``@pipeline`` on a function): the project then comes from
    ``instrument.configure`` or ``WANDB_PROJECT``.

    Args:
        project, name, group, entity: strings, as ``wandb.init``'s arguments.
        tags: a list or tuple of strings.
        config: the run's config: a mapping, an attrs or dataclass instance, an OmegaConf config.
        mode: ``online``, ``offline``, ``disabled`` (any case); default ``WANDB_MODE``, else
            online with credentials, else offline.
        redact_secrets: replace secret-looking config values of this run by ``"<redacted>"``
            (see :func:`instrument.configure`); None (default) follows ``configure``, which
            defaults to True.

    Raises:
        TypeError: an argument has the wrong type (the message names it and the type), or what
            is decorated is not a function.
        ValueError: *mode* is not a wandb mode.
    """

    project: str | None
    name: str | None
    group: str | None
    tags: tuple[str, ...]
    config: Any
    mode: str | None
    entity: str | None
    redact_secrets: bool | None
    _active: list[OwnerRun]

    @overload
    def __new__(cls, function: Callable[P, R], /) -> Callable[P, R]: ...  # type: ignore[misc]
    @overload
    def __new__(
        cls,
        project: str | None = None,
        *,
        name: str | None = None,
        group: str | None = None,
        tags: tuple[str, ...] | list[str] = (),
        config: Any = None,
        mode: str | None = None,
        entity: str | None = None,
        redact_secrets: bool | None = None,
    ) -> pipeline: ...

    def __new__(
        cls,
        project: Any = None,
        *,
        name: str | None = None,
        group: str | None = None,
        tags: tuple[str, ...] | list[str] = (),
        config: Any = None,
        mode: str | None = None,
        entity: str | None = None,
        redact_secrets: bool | None = None,
    ) -> Any:
        if callable(project) and not isinstance(project, str):  # used bare: @pipeline above a def
            given = (name, group, config, mode, entity, redact_secrets)
            if any(option is not None for option in given) or (tags != () and tags != []):
                raise TypeError("instrument.pipeline: project must be a string, got a function; to give "
                                "options write @instrument.pipeline(project=..., ...) above the function")
            return cls()(project)
        check_run_arguments("instrument.pipeline", project=project, name=name, group=group, entity=entity,
                            tags=tags, config=config, redact_secrets=redact_secrets)
        self = super().__new__(cls)
        self.project = project
        self.redact_secrets = redact_secrets
        self.name = name
        self.group = group
        self.tags = tuple(tags)
        self.config = plain_config(config) if config is not None else {}
        self.mode = _env.check_mode(mode, "instrument.pipeline: mode") if mode is not None else None
        self.entity = entity
        self._active = []
        return self

    def __enter__(self) -> OwnerRun:
        # In a pool worker (forked or spawned) a pipeline is a plain block, like every decorated
        # call there: its run is disabled, so nothing is written anywhere.
        mode = "disabled" if _linkage.in_child() else self.mode
        active = OwnerRun(
            project=self.project, entity=self.entity, name=self.name, group=self.group,
            tags=self.tags, config=self.config, mode=mode, redact_secrets=self.redact_secrets,
        )
        active.export()
        self._active.append(active)
        return active

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._active.pop().close(error)

    def __call__(self, function: Callable[P, R]) -> Callable[P, R]:
        """Run *function* inside this pipeline (a new pipeline run per call); coroutine
        functions are awaited inside it.

        Raises:
            TypeError: *function* is not a function.
        """
        _check_callable("pipeline", function)
        @_decorator
        def wrapper(wrapped: Any, instance: Any, args: Any, kwargs: Any) -> Any:
            with self:
                return wrapped(*args, **kwargs)

        if inspect.iscoroutinefunction(function):

            @_decorator
            async def async_wrapper(wrapped: Any, instance: Any, args: Any, kwargs: Any) -> Any:
                with self:
                    return await wrapped(*args, **kwargs)

            return cast("Callable[P, R]", async_wrapper(function))
        return cast("Callable[P, R]", wrapper(function))
