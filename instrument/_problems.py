"""How instrumentation problems reach the user: a warning in production, an error when strict.

Fail open in production, loud in tests: ``INSTRUMENT_STRICT=1`` or the pytest fixture raise
:class:`InstrumentationError` where production only warns. A user's own exception is never
touched by this module.
"""

from __future__ import annotations

import contextvars
import inspect
import os
import sys
import threading
import warnings
from typing import Literal

import attrs

from instrument import _env

Kind = Literal[
    "unroutable", "bad_key", "collision", "bad_step", "non_finite", "step_back", "config", "backend", "redacted",
    "shared", "converted", "limit", "resumed",
]

#: Kinds that are about the user's data, a chosen rule or a failing backend rather than about bad
#: input: never raised, even in strict mode (a secret is redacted, a backend fault is absorbed, a
#: rule of a run shared with other code is applied: the owner's config value kept, points waiting
#: for the owner's rows, a run finished by other code; a value converted to what wandb can store
#: keeps its data; a resumed run's explicit step not past its last one is kept, as a restarted
#: loop logs it). ``limit`` (part of a value lost to a wandb limit) and the kinds that drop a
#: value are raised.
_ADVISORY: frozenset[str] = frozenset({"non_finite", "backend", "redacted", "shared", "converted", "resumed"})

#: Kinds said once per key (and kind): a stage repeats its values every step.
ONCE_PER_KEY: frozenset[str] = frozenset({"non_finite", "converted"})


class InstrumentationWarning(UserWarning):
    """Warning category of every instrumentation problem (filter it with ``warnings``)."""


class InstrumentationError(Exception):
    """An instrumentation problem raised in strict mode (``INSTRUMENT_STRICT=1``, the fixture)."""


@attrs.frozen(slots=True)
class Problem:
    """One problem found while routing or logging: *kind*, *message*, and the *key* it concerns.

    *outcome* says what production does instead of raising (``"it was dropped"``): the warning
    ends with it, a strict-mode error does not (there the value is not written at all).
    """

    kind: Kind
    message: str
    key: str = ""
    outcome: str = ""


_strict_override: list[bool] = []
#: The decorated function (or ``WandBContext`` method) whose values are being written: problems
#: found below the routing (in the session, in a backend) name it in their message.
_origin: contextvars.ContextVar[str | None] = contextvars.ContextVar("instrument_origin", default=None)
_seen: set[tuple[str, str]] = set()
_seen_lock = threading.RLock()  # re-entrant: a SIGTERM handler may report while the main thread does


def _after_fork_in_child() -> None:
    global _seen_lock
    _seen_lock = threading.RLock()  # another thread may have held it at fork


os.register_at_fork(after_in_child=_after_fork_in_child)


def describe(error: BaseException) -> str:
    """Return ``Type: first line of the message`` of *error*, for a problem's reason (wandb's
    messages run over several lines)."""
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[0]}" if text else type(error).__name__


def strict() -> bool:
    """Return whether problems raise: the innermost ``strict_mode`` override, else the env."""
    if _strict_override:
        return _strict_override[-1]
    return _env.is_strict()


def push_strict(value: bool) -> None:
    """Force strict mode on or off until :func:`pop_strict` (used by ``testing.recording``)."""
    _strict_override.append(value)


def pop_strict() -> None:
    """Undo the last :func:`push_strict`."""
    _strict_override.pop()


class Origin:
    """Name *function* in the message of every problem reported inside ``with Origin(function):``.

    A small class rather than a ``contextlib.contextmanager``: it wraps every logging call, and
    a generator-based context manager costs several times more.
    """

    __slots__ = ("function", "token")

    def __init__(self, function: str) -> None:
        self.function = function

    def __enter__(self) -> None:
        self.token = _origin.set(self.function)

    def __exit__(self, *exc_info: object) -> None:
        _origin.reset(self.token)


def with_origin(message: str) -> str:
    """Return *message* (``"instrument: ..."``) naming the function of the enclosing :class:`Origin`."""
    function = _origin.get()
    if function and message.startswith("instrument: ") and not message.startswith(f"instrument: {function}:"):
        return f"instrument: {function}: {message[len('instrument: '):]}"
    return message


def report(problem: Problem, *, once: bool = False) -> None:
    """Raise *problem* in strict mode, else warn; with *once*, warn once per kind and key.

    The message names the function being written for (:class:`Origin`) when it does not already.

    Raises:
        InstrumentationError: strict mode is on and the problem is not advisory.
    """
    if problem.kind not in _ADVISORY and strict():
        raise InstrumentationError(with_origin(problem.message))
    if once:
        with _seen_lock:
            marker = (problem.kind, problem.key)
            if marker in _seen:
                return
            _seen.add(marker)
    message = f"{problem.message}; {problem.outcome}" if problem.outcome else problem.message
    warnings.warn(with_origin(message), InstrumentationWarning, stacklevel=user_stacklevel())


_PACKAGE = os.path.dirname(os.path.abspath(__file__)) + os.sep


def _internal(filename: str) -> bool:
    """Return whether code in *filename* is instrument's own, wrapt's (which wraps the calls) or
    wandb's (which calls instrument back when other code finishes a run or logs into it)."""
    if filename.startswith(_PACKAGE):
        return True
    for name in ("wrapt", "wandb"):
        module = sys.modules.get(name)
        folder = os.path.dirname(getattr(module, "__file__", None) or "") if module is not None else ""
        if folder and filename.startswith(folder + os.sep):
            return True
    return False


def user_stacklevel() -> int:
    """Return the ``warnings.warn`` *stacklevel*, for the function that calls this one, that
    points at the first frame outside instrument: the user's line that led to the warning.

    (``warnings.warn(skip_file_prefixes=...)`` does this from Python 3.12 only.) With no such
    frame (a thread of instrument's own) it is 1, the calling function.
    """
    here = inspect.currentframe()
    frame = here.f_back if here is not None else None  # the caller: what stacklevel=1 names
    level = 1
    while frame is not None and _internal(frame.f_code.co_filename):
        frame = frame.f_back
        level += 1
    return level if frame is not None else 1


def reset_once() -> None:
    """Forget which once-per-key warnings were given (a new recording, a new run)."""
    with _seen_lock:
        _seen.clear()
