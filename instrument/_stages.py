"""The stage decorators: ``training_stage``, ``eval_summary``, ``run_config`` and ``log``.

Thin: options are validated when a decorator is applied, the callable is wrapped once by
:mod:`instrument._wrapping`, and each call hands what the function returned (or yielded) to one
shared lifecycle (:class:`_Emitter`), which routes it and writes it where linkage says. The run
is looked up at call time, never at decoration time; the layers below load on the first record
(:mod:`instrument._runtime`).
"""

from __future__ import annotations

import contextvars
import threading
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, ParamSpec, Protocol, TypeVar, cast, overload

from instrument import _runtime
from instrument._config import CONFIG_KINDS, plain_config
from instrument._gates import Baseline, Gate, GateError, OnFail, Regression, Suite, declare
from instrument._kinds import as_step
from instrument._problems import InstrumentationError, Origin, Problem, report
from instrument._records import ConfigUpdate, Point
from instrument._reduce import check_op, reduce_across_ranks
from instrument._settings import is_settings
from instrument._wrapping import Hooks, check_callable, kind_of, qualname, wrap

if TYPE_CHECKING:
    from instrument._records import Record
    from instrument._routing import Role

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


_SUMMARY_OPS = frozenset({"min", "max", "mean", "last", "first", "none"})

#: The call of a stage or eval running in this context (``instrument.log`` adds to it).
_current: contextvars.ContextVar[_Call | None] = contextvars.ContextVar("instrument_call", default=None)
#: Guards the point a call's ``instrument.log`` values wait in (a thread handed the call's
#: context may log while the call returns).
_pending_lock = threading.Lock()


class _Call:
    """One call of a stage or eval (a generator's whole iteration), what ``instrument.log`` adds to.

    In a stage, logged values wait as the call's point and join the point of what the call
    returns or yields next, so a call is still one point; a key logged again first writes the
    point so far (nothing is overwritten), a logged ``step=`` is a point of its own, and what is
    still waiting when the body is over is written then. In an eval, logged values are written at
    once. *records* keeps everything the call wrote, for an eval's gates.
    """

    __slots__ = ("emitter", "open", "pending", "records")

    def __init__(self, emitter: _Emitter, *, keep: bool = False) -> None:
        self.emitter = emitter
        self.open = True
        self.pending: Point | None = None
        self.records: list[Record] | None = [] if keep else None

    def logged(self, records: tuple[Record, ...]) -> tuple[Record, ...]:
        """Return what to write now of the records of an ``instrument.log`` call; keep its point."""
        index, point = self._point(records)
        if point is None:
            return records
        with _pending_lock:
            if not self.open:
                return records
            pending = self.pending
            if point.step is not None:  # a point of its own, after what waits
                self.pending = None
            elif pending is None or pending.values.keys().isdisjoint(point.values):
                self.pending = point if pending is None else _joined(pending, point)
                return records[:index] + records[index + 1:]
            else:
                self.pending = point
                records = records[:index] + records[index + 1:]
        return records if pending is None else (pending, *records)

    def returned(self, records: tuple[Record, ...]) -> tuple[Record, ...]:
        """Return the records of a returned or yielded value, the waiting point joined with theirs
        (or written first when they share a key)."""
        if self.pending is None:
            return records
        with _pending_lock:
            pending, self.pending = self.pending, None
        if pending is None:
            return records
        index, point = self._point(records)
        if point is not None and pending.values.keys().isdisjoint(point.values):
            return (*records[:index], _joined(pending, point), *records[index + 1:])
        return (pending, *records)

    def close(self) -> None:
        """The body is over: write the point still waiting; later ``log`` calls make points of their own."""
        with _pending_lock:
            self.open = False
            pending, self.pending = self.pending, None
        if pending is not None:
            self.emitter.write((pending,))

    def _point(self, records: tuple[Record, ...]) -> tuple[int, Point | None]:
        """Return the index and the stage's own point among *records* (``(0, None)`` if none)."""
        if self.emitter.role == "series":
            for index, record in enumerate(records):
                if isinstance(record, Point) and record.axis == self.emitter.prefix:
                    return index, record
        return 0, None


def _joined(first: Point, then: Point) -> Point:
    """Return one point holding *first*'s values and then *then*'s, at *then*'s step."""
    return Point({**first.values, **then.values}, then.axis, then.step, {**first.summary, **then.summary},
                 then.function)


class _Emitter(Hooks):
    """The shared lifecycle of ``training_stage``, ``eval_summary`` and ``instrument.log``: route a
    returned or yielded value and write it where linkage says, safely."""

    __slots__ = ("full_summary", "function", "prefix", "reduce", "role", "summary")

    def __init__(self, role: Role, prefix: str | None, function: str, summary: Mapping[str, str],
                 reduce: str | None = None) -> None:
        self.role = role
        self.prefix = prefix
        self.function = function
        self.summary = dict(summary)
        self.full_summary = {(f"{prefix}/{key}" if prefix else key): op for key, op in self.summary.items()}
        self.reduce = reduce

    def skip(self) -> bool:
        """Whether the mode is ``disabled``: then a plain function is only called. Never for a
        stage that reduces across ranks: every rank must join each ``all_reduce``."""
        return self.reduce is None and _runtime.disabled()

    def begin(self) -> _Call:
        """Return the call, which ``instrument.log`` inside it adds to."""
        return _Call(self)

    def resume(self, state: _Call) -> Any:
        """Make this call the running one (``instrument.log`` adds to it)."""
        return _current.set(state)

    def suspend(self, state: _Call, token: Any) -> None:
        """Leave the call."""
        _current.reset(token)

    def value(self, state: _Call, value: Any) -> None:
        """Reduce across ranks when asked (on every rank), then route and write what the function
        returned or yielded, with what the call logged."""
        self.emit(self.reduced(value), call=state)

    def end(self, state: _Call, error: BaseException | None) -> None:
        """Write what the call logged that is still waiting."""
        state.close()

    def reduced(self, value: Any) -> Any:
        """Return *value* reduced across the ranks when the decorator asked for it (every rank
        joins the ``all_reduce``), else as it is."""
        if self.reduce is None or value is None:
            return value
        return reduce_across_ranks(value, self.reduce, function=self.function, keep_step=self.role == "series")

    def emit(self, value: Any, step: int | None = None, call: _Call | None = None, *, logged: bool = False) -> None:
        """Route *value* and write it: with *call*, joined with what the call logged (*logged*: it
        is an ``instrument.log`` of the call). Problems warn (raise in strict mode), faults never
        raise. Does nothing at all when the mode is ``disabled``."""
        if value is None or _runtime.disabled():
            return
        try:
            sink = _runtime.resolve(self.role)
            if sink is None:
                return
            routed = (_runtime.route_numbers(value, self.prefix, step, self.full_summary)
                      if self.role == "series" else None) or _runtime.route(
                value, role=self.role, prefix=self.prefix, function=self.function, step=step, summary=self.summary
            )
            records = routed.records
            if call is not None:
                records = call.logged(records) if logged else call.returned(records)
                if call.records is not None:
                    call.records.extend(routed.records)
            with Origin(self.function):
                sink.write(records, routed.problems)
        except InstrumentationError:
            raise
        except Exception as error:  # instrumentation never breaks training
            self._failed(error)

    def write(self, records: tuple[Record, ...]) -> None:
        """Write records already routed (a call's logged point); faults never raise."""
        try:
            sink = _runtime.resolve(self.role)
            if sink is not None:
                with Origin(self.function):
                    sink.write(records)
        except InstrumentationError:
            raise
        except Exception as error:  # instrumentation never breaks training
            self._failed(error)

    def _failed(self, error: Exception) -> None:
        report(Problem("backend", f"instrument: {self.function}: logging failed "
                       f"({type(error).__name__}: {error}); the function's value was returned"), once=True)


class _GatedEval(_Emitter):
    """An eval with gates: its values are written as any eval's, and when the body is over (a
    plain function returned, a generator was exhausted or closed) its gates run on everything the
    call wrote, logged values included (:mod:`instrument._gating`, loaded then)."""

    __slots__ = ("suite",)

    def __init__(self, prefix: str, function: str, suite: Suite, reduce: str | None = None) -> None:
        super().__init__("summary", prefix, function, {}, reduce)
        self.suite = suite

    def begin(self) -> _Call:
        """Return the call, which keeps the records it writes."""
        return _Call(self, keep=True)

    def end(self, state: _Call, error: BaseException | None) -> None:
        """Run the gates on the call's records, unless the body raised; never raises but
        :class:`GateError` (``on_fail="raise"``) and strict mode's errors."""
        state.close()
        if error is not None or _runtime.disabled():
            return
        try:
            with Origin(self.function):
                _runtime.run_gates(self.suite, state.records or [], self.function)
        except (InstrumentationError, GateError):
            raise
        except Exception as fault:  # instrumentation never breaks the evaluation
            report(Problem("backend", f"instrument: {self.function}: evaluating the gates of {self.suite.prefix!r} "
                           f"failed ({type(fault).__name__}: {fault}); the function's value was returned"), once=True)


def _check_name(decorator: str, argument: str, value: object) -> str:
    if callable(value) and not isinstance(value, str):  # used bare: @training_stage above a def
        raise TypeError(
            f"instrument.{decorator} needs the {argument} as its argument: write "
            f'@instrument.{decorator}("<{argument}>") above {qualname(value)!r}, not a bare '
            f"@instrument.{decorator}"
        )
    if not isinstance(value, str) or not value or value.startswith("/") or value.endswith("/"):
        raise ValueError(
            f"instrument.{decorator}: {argument} must be a non-empty string without a leading or "
            f"trailing '/', got {type(value).__name__} {value!r}"
        )
    return value



def training_stage(name: str, *, summary: Mapping[str, str] | None = None, reduce: str | None = None) -> Decorator:
    """Decorate a training step: each call (or each yield) is one point of the stage's series.

    A returned mapping ``{"loss": 0.1}`` becomes ``<name>/loss`` in history, on the stage's own
    step axis ``<name>/step`` (0, 1, 2, ... in call order). A top-level ``step`` key of the
    mapping is the point's step on that axis, not a value (a whole number; anything else is
    warned about and the next step used). Each key is declared once with ``define_metric(key,
    step_metric="<name>/step")``, by exact name, never a glob, and ``step=`` is never passed to
    ``run.log``: a second stage starting again at 0 loses nothing (W&B drops backward ``step=``).
    ``None`` is no point; a bare number is ``<name>/value``; strings go to the summary. A
    generator function yields one mapping per point (its items reach the caller unchanged) and
    a ``return {...}`` is its last point. ``instrument.log(mapping)`` inside the call adds to
    the call's point (docs/values.md, "Steps").

    Args:
        name: the stage name, the prefix of its keys (``"operator"``).
        summary: per-metric summary aggregation, ``{"loss": "min"}``; one or several of ``min``,
            ``max``, ``mean``, ``last``, ``first``, ``none`` joined with commas (wandb's
            ``define_metric(summary=...)``; the summary value becomes ``{"min": v}``).
        reduce: ``"mean"``, ``"sum"``, ``"max"`` or ``"min"``: in a distributed job, the returned
            numbers (ints, floats, numpy scalars, one-element tensors; nested mappings too; not
            the ``step`` key) are reduced across the ranks with one packed ``all_reduce`` of the
            default process group before they are written (by rank 0; under ``per_rank`` every
            rank's run gets the reduced values), as Lightning's ``sync_dist``; strings and media
            stay each rank's own, and the function returns its own value unchanged. Every rank
            must call the stage (a collective). Ranks whose numeric keys differ keep their own
            values, with a warning naming the function. Without an initialized
            ``torch.distributed`` process group it does nothing. Values logged with
            ``instrument.log`` inside the call are not reduced. Default None.

    Raises:
        ValueError: *name* is empty or not a string, a summary op is not one wandb accepts, or
            *reduce* is not None nor one of the reductions (any other type included).
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

    reduction = check_op(reduce, f"instrument.training_stage({name!r})")

    def decorate(function: Any) -> Any:
        check_callable(f"training_stage({name!r})", function)
        return wrap(function, _Emitter("series", name, qualname(function), ops, reduction))

    return cast("Decorator", decorate)


Gates = Mapping[str, "str | Gate"] | list[Gate] | tuple[Gate, ...]


@overload
def eval_summary(function: Callable[P, R], /) -> Callable[P, R]: ...
@overload
def eval_summary(
    function: str = ...,
    /,
    *,
    prefix: str = ...,
    gates: Gates | None = ...,
    regression: Regression | list[Regression] | tuple[Regression, ...] | None = ...,
    baseline: Baseline | None = ...,
    on_fail: OnFail | None = ...,
    reduce: str | None = ...,
) -> Decorator: ...


def eval_summary(
    function: Any = None,
    /,
    *,
    prefix: str = "eval",
    gates: Any = None,
    regression: Any = None,
    baseline: Baseline | None = None,
    on_fail: OnFail | None = None,
    reduce: str | None = None,
) -> Any:
    """Decorate an evaluation: the returned mapping goes to ``run.summary`` as ``<prefix>/key``.

    Never into history. Usable bare (``@eval_summary``) or called (``@eval_summary(prefix="x")``,
    or ``@eval_summary("x")``). Inside a pipeline's subprocess the summary lands in the pipeline
    run (through the journal). Tables and images go to the summary too; a ``Series`` marker is a
    point on the axis ``<prefix>/step``; a ``Config`` marker is merged into
    ``run.config[<prefix>]``.

    With *gates* or *regression*, the eval says whether it passed (docs/gates.md): when the body
    is over, what it returned is compared with thresholds and a baseline, and the verdicts land
    in the same run (summary ``gates/<prefix>/...``, table ``gates/<prefix>/table``, an alert
    per failing call), in ``.instrument/runs/<run id>/gates.json`` (written before the call
    returns) and in ``.instrument/history/<project>/<prefix>.jsonl``. The returned value is
    never changed.

    Args:
        function: the function, when used bare; or the prefix, when called with one argument.
        prefix: put before every key (``"eval"``).
        gates: threshold gates by metric, ``{"nrmse": "< 0.1", "drift": "<= 1e-3 warn"}`` (a
            gate string ``<op> <threshold> [warn]`` or an ``instrument.Gate``), or a list of
            ``instrument.Gate``.
        regression: an ``instrument.Regression`` or a list of them: the metric must not get
            worse than the baseline by more than ``max(abs, rel * |baseline|)``.
        baseline: where regression gates find the baseline; default ``Baseline.pinned()`` (the
            store ``.instrument/baselines/<project>/<prefix>.json``).
        on_fail: ``"alert"`` (default: a W&B alert, ERROR or WARN), ``"record"`` (no alert) or
            ``"raise"`` (also raise ``instrument.GateError`` after writing, when a ``fail`` gate
            failed).
        reduce: ``"mean"``, ``"sum"``, ``"max"`` or ``"min"``: reduce the returned numbers
            across the ranks of a distributed job before rank 0 writes them (and its gates see
            them), as for :func:`training_stage`. Default None.

    Raises:
        ValueError: *prefix* is empty or not a string; a gate string is malformed, a metric is
            gated twice the same way, *baseline* or *on_fail* is given with no gate, or
            *on_fail* is unknown (the message names the prefix and the gate), or *reduce* is not
            one of the reductions.
        TypeError: what is decorated is not a function; a gate option has the wrong type.
    """
    if isinstance(function, str):
        function, prefix = None, function
    _check_name("eval_summary", "prefix", prefix)
    suite = declare(prefix, gates, regression, baseline, on_fail)
    reduction = check_op(reduce, f"instrument.eval_summary(prefix={prefix!r})")

    def decorate(function: Any) -> Any:
        check_callable(f"eval_summary(prefix={prefix!r})", function)
        name = qualname(function)
        hooks = (_Emitter("summary", prefix, name, {}, reduction) if suite is None
                 else _GatedEval(prefix, name, suite, reduction))
        return wrap(function, hooks)

    return decorate(function) if function is not None else cast("Decorator", decorate)


class _RunConfig(Hooks):
    """The lifecycle of ``run_config``: write what the function returned to ``run.config``."""

    def __init__(self, name: str) -> None:
        self.name = name

    def value(self, state: Any, value: Any) -> None:
        """Write *value* to ``run.config`` at the top level; never raises a fault."""
        if value is None or _runtime.disabled():
            return
        try:
            if not is_settings(value):
                report(Problem("unroutable", f"instrument: {self.name}: run_config expects {CONFIG_KINDS}, got "
                               f"{type(value).__module__}.{type(value).__qualname__}; nothing was written to the "
                               "config", "config"))
                return
            sink = _runtime.resolve("summary")
            if sink is not None:
                problems: list[Problem] = []
                values = plain_config(value, problems)
                with Origin(self.name):
                    sink.write([ConfigUpdate(values=values)], problems)
        except InstrumentationError:
            raise
        except Exception as error:  # instrumentation never breaks the program
            report(Problem("backend", f"instrument: {self.name}: writing the config failed ({error})"), once=True)


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
        check_callable("run_config", function)
        name = qualname(function)
        kind = kind_of(function)
        if kind in ("generator", "asyncgen"):
            raise TypeError(f"instrument.run_config: {name} is a {kind} function; a config is one returned "
                            "mapping, so decorate a plain or async function")
        return wrap(function, _RunConfig(name))

    return decorate(function) if function is not None else cast("Decorator", decorate)


def log(values: Mapping[str, Any], step: int | None = None) -> None:
    """Log *values* into the running stage or eval call, or as a plain history row outside them.

    Inside a ``training_stage`` call the keys get the stage prefix and the values join the
    call's point: they are written with what the call returns (or yields) next, on that point's
    step, so a call stays one point. A key the call already logged first writes the point so
    far, and the call goes on with the next step (logging per batch inside an epoch stage makes
    a point per batch, and what the call returns joins the last). With *step* the values are a
    point of their own at that step (points of one stage at one step share a row). Inside an
    ``eval_summary`` call the values are the eval's summary keys, as if returned. Outside any
    call it is ``wandb.log(values)`` with unprefixed keys on wandb's own step (a ``step`` key is
    then a value like any other).

    Args:
        values: a mapping of values, as a decorated function returns them (nested mappings
            flatten with ``/``).
        step: the stage step of this point; a whole number (``10.0`` and numpy ints are
            accepted). Outside a stage there is no axis for it: a warning, and it is not used.

    Raises:
        InstrumentationError: in strict mode, for a step that is not a whole number or that
            has no stage axis to go on.
    """
    call = _current.get()
    if step is not None:
        exact = as_step(step)
        if exact is None:
            report(Problem("bad_step", f"instrument.log: step must be a whole number within 64 bits, got "
                           f"{type(step).__name__} {step!r}", "step", "the next automatic step was used"))
        step = exact
    if call is None:
        _PLAIN.emit(values, step)
    else:
        call.emitter.emit(values, step, call, logged=True)


_PLAIN = _Emitter("series", None, "instrument.log", {})
