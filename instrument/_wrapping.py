"""The classify-once wrapper every decorator uses: one lifecycle for four kinds of callable.

:func:`wrap` classifies the callable once (plain, generator, coroutine, async generator; the
function inside a ``classmethod``/``staticmethod`` too) and returns a transparent, picklable
wrapt proxy whose wrapper calls the decorator's :class:`Hooks`: ``begin`` once before the body
first runs, ``resume``/``suspend`` around each stretch of the body (a call, each step of a
generator), ``value`` for each yielded item or the returned value, and ``end`` once when the
body is over. A generator's body runs inside begin/end, so ``@pipeline`` on a generator keeps
its run open while the generator runs. Imports only wrapt.
"""

from __future__ import annotations

import copy
import functools
import importlib
import inspect
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import wrapt

from instrument._problems import register_site


class Hooks:
    """What a decorator does around its function's body; every method does nothing by default.

    Attributes:
        skip: when set and it returns True, a plain function is called and nothing else happens
            (the decorators' fast path when the mode is ``disabled``).
        returns: whether a function's returned value goes to :meth:`value`: a plain or coroutine
            function's result, and a generator's ``return`` value (not None) after its items.
    """

    skip: Callable[[], bool] | None = None
    returns = True

    def begin(self) -> Any:
        """Called once before the body first runs; returns the call's state (handed to the rest)."""
        return None

    def resume(self, state: Any) -> Any:
        """Called before each stretch of the body runs; returns a token for :meth:`suspend`."""
        return None

    def suspend(self, state: Any, token: Any) -> None:
        """Called after each stretch of the body, however it ended."""

    def value(self, state: Any, value: Any) -> None:
        """Called with each yielded item, with a plain or coroutine function's result, and with a
        generator's ``return`` value when it is not None (when :attr:`returns`)."""

    def end(self, state: Any, error: BaseException | None) -> None:
        """Called once when the body is over: *error* is what it raised (None: it returned, or a
        generator was closed early)."""


def kind_of(function: Any) -> str:
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


def qualname(function: Any) -> str:
    """Return the qualified name of *function* for messages (its ``repr`` if it has none)."""
    name = getattr(function, "__qualname__", None) or getattr(function, "__name__", None)
    return name if isinstance(name, str) else repr(function)


def check_callable(decorator: str, function: object) -> None:
    """Raise TypeError naming *decorator* when *function* is not something it can decorate."""
    if not (callable(function) or isinstance(function, classmethod | staticmethod)):
        raise TypeError(
            f"instrument.{decorator} decorates a function or method, got {type(function).__name__} {function!r}"
        )


# Picklable proxies ----------------------------------------------------------------------------------
def _by_name(module: str, name: str) -> Any:
    """Return the object *name* (dotted) of *module*: how a pickled decorated function is found."""
    found: Any = importlib.import_module(module)
    for part in name.split("."):
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
    by importing the module (where it runs as a plain function: linkage knows a pool worker)."""

    __bound_function_wrapper__ = _BoundWrapper

    def __reduce_ex__(self, protocol: Any) -> Any:
        name: str = self.__wrapped__.__qualname__
        if "." in name and "<locals>" not in name:  # a method: the class attribute binds
            return _by_name, (self.__module__, name)
        # A string: pickle looks the name up in the module and checks it is this very object, with
        # the same error as for an original function defined in a local scope.
        return name

    def __copy__(self) -> Any:  # a function is atomic for copy and deepcopy
        return self

    def __deepcopy__(self, memo: dict[int, Any]) -> Any:
        return self


#: ``wrapt.decorator`` making :class:`_Wrapper` proxies (picklable decorated functions).
_decorator = functools.partial(wrapt.decorator, proxy=_Wrapper)


# The four wrappers ----------------------------------------------------------------------------------
def wrap(function: Any, hooks: Hooks) -> Any:
    """Return *function* wrapped for its kind (see :func:`kind_of`), each wrapper calling *hooks*.

    The wrapper keeps the function's name, docstring, signature and kind (a coroutine function's
    wrapper is itself ``async def``, or its awaited body would run outside the hooks); a user's
    exception propagates unchanged.
    """
    register_site(qualname(function), function)
    kind = kind_of(function)
    if kind == "asyncgen":
        return _decorator(functools.partial(_async_generator, hooks))(function)
    if kind == "coroutine":
        return _decorator(functools.partial(_coroutine, hooks))(function)
    if kind == "generator":
        return _decorator(functools.partial(_generator, hooks))(function)
    return _decorator(functools.partial(_plain, hooks))(function)


def _plain(hooks: Hooks, wrapped: Any, instance: Any, args: Any, kwargs: Any) -> Any:
    skip = hooks.skip
    if skip is not None and skip():  # the fast path: nothing would be written anywhere
        return wrapped(*args, **kwargs)
    state = hooks.begin()
    failure: BaseException | None = None
    try:
        token = hooks.resume(state)
        try:
            result = wrapped(*args, **kwargs)
        finally:
            hooks.suspend(state, token)
        if hooks.returns:
            hooks.value(state, result)
    except BaseException as error:
        failure = error
        raise
    else:
        return result
    finally:
        hooks.end(state, failure)


async def _coroutine(hooks: Hooks, wrapped: Any, instance: Any, args: Any, kwargs: Any) -> Any:
    state = hooks.begin()
    failure: BaseException | None = None
    try:
        token = hooks.resume(state)
        try:
            result = await wrapped(*args, **kwargs)
        finally:
            hooks.suspend(state, token)
        if hooks.returns:
            hooks.value(state, result)
    except BaseException as error:
        failure = error
        raise
    else:
        return result
    finally:
        hooks.end(state, failure)


def _generator(hooks: Hooks, wrapped: Any, instance: Any, args: Any, kwargs: Any) -> Iterator[Any]:
    gen = wrapped(*args, **kwargs)
    state = hooks.begin()  # at the first next(): the body runs inside begin/end
    failure: BaseException | None = None
    sent: Any = None
    thrown: BaseException | None = None
    try:
        while True:
            token = hooks.resume(state)
            try:
                item = gen.throw(thrown) if thrown is not None else gen.send(sent)
            except StopIteration as stop:
                returned = stop.value
                break
            finally:
                hooks.suspend(state, token)
            hooks.value(state, item)
            try:
                sent, thrown = (yield item), None
            except GeneratorExit:  # closed early (a ``break``): what it yielded stays
                gen.close()
                raise
            except BaseException as error:  # thrown in by the caller: forwarded into the generator
                sent, thrown = None, error
        if hooks.returns and returned is not None:  # ``return value`` in a generator: its last value
            hooks.value(state, returned)
    except GeneratorExit:
        raise
    except BaseException as error:
        failure = error
        raise
    else:
        return returned  # type: ignore[no-any-return]
    finally:
        hooks.end(state, failure)


async def _async_generator(hooks: Hooks, wrapped: Any, instance: Any, args: Any, kwargs: Any) -> AsyncIterator[Any]:
    agen = wrapped(*args, **kwargs)
    state = hooks.begin()  # at the first step: the body runs inside begin/end
    failure: BaseException | None = None
    sent: Any = None
    thrown: BaseException | None = None
    try:
        while True:
            token = hooks.resume(state)
            try:
                item = await (agen.athrow(thrown) if thrown is not None else agen.asend(sent))
            except StopAsyncIteration:
                return
            finally:
                hooks.suspend(state, token)
            hooks.value(state, item)
            try:
                sent, thrown = (yield item), None
            except GeneratorExit:  # closed early (a ``break``): what it yielded stays
                await agen.aclose()
                raise
            except BaseException as error:  # thrown in by the caller: forwarded into the generator
                sent, thrown = None, error
    except GeneratorExit:
        raise
    except BaseException as error:
        failure = error
        raise
    finally:
        hooks.end(state, failure)
