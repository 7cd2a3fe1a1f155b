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
from typing import Any, Literal

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
    warn(with_origin(message))


def warn(message: str) -> None:
    """Warn *message* as an :class:`InstrumentationWarning` pointing at the user's code.

    On a stack that holds the user's code (a decorated function's call), the warning points at
    the user's line that led to it. On instrument's own threads (the writer of a run, the exit
    drain) there is none: it points at the definition of the decorated function whose record
    was being written (:func:`working_for`), else at the last place the user's code was seen
    (:func:`register_site`, :func:`remember_call_site`), so never at ``threading.py`` or a line
    inside instrument.
    """
    level = _user_level(1)  # relative to this function, which calls warnings.warn
    site = _fallback_site() if level is None else None
    if site is None:
        warnings.warn(message, InstrumentationWarning, stacklevel=level or 1)
        return
    filename, lineno, module = site
    namespace = getattr(sys.modules.get(module), "__dict__", None)
    registry = namespace.setdefault("__warningregistry__", {}) if isinstance(namespace, dict) else None
    try:
        warnings.warn_explicit(message, InstrumentationWarning, filename, lineno, module=module, registry=registry,
                               module_globals=namespace)
    except ImportError:  # the module's loader has no source (``python -c``: BuiltinImporter's __main__)
        warnings.warn_explicit(message, InstrumentationWarning, filename, lineno, module=module, registry=registry)


#: Where the user's code is, as ``(filename, line, module)``: what a warning points at.
Site = tuple[str, int, str]
#: The definition of each decorated function, by the name its records and messages give it.
_sites: dict[str, Site] = {}
#: The last place the user's code was seen: a function decorated, a pipeline opened.
_last_site: Site | None = None
#: Per thread: the decorated function whose record the thread is writing (:func:`working_for`).
_work = threading.local()


def register_site(name: str, function: Any) -> None:
    """Remember where the decorated *function* (named *name* in its records and messages) is
    defined: a problem found off the user's stack while writing its records points there."""
    global _last_site
    target = function.__func__ if isinstance(function, classmethod | staticmethod) else function
    code = getattr(inspect.unwrap(target), "__code__", None)
    if code is None:
        return
    site = (code.co_filename, code.co_firstlineno, str(getattr(target, "__module__", None) or ""))
    _sites[name] = _last_site = site


def remember_call_site() -> None:
    """Remember the user's line that called into instrument (a pipeline opened), if the stack holds one."""
    global _last_site
    frame: Any = sys._getframe(1)  # noqa: SLF001 - the caller's frame, as inspect.currentframe().f_back
    while frame is not None and _internal(frame.f_code.co_filename):
        frame = frame.f_back
    if frame is not None:
        _last_site = (frame.f_code.co_filename, frame.f_lineno, str(frame.f_globals.get("__name__", "")))


def working_for(function: str) -> None:
    """Say that this thread is writing a record of the decorated *function* (``""``: of none): a
    problem it reports off the user's stack points at that function's definition."""
    _work.function = function


def _fallback_site() -> Site | None:
    """Where a warning with no user frame on the stack points (see :func:`warn`); None if nowhere."""
    function = getattr(_work, "function", "") or _origin.get() or ""
    site = _sites.get(function) or _last_site
    if site is not None:
        return site
    main = sys.modules.get("__main__")
    filename = getattr(main, "__file__", None)
    return (filename, 1, "__main__") if isinstance(filename, str) else None


_PACKAGE = os.path.dirname(os.path.abspath(__file__)) + os.sep
#: Frames that are never the user's: Python's own thread machinery, under instrument's threads.
_THREADING = os.path.abspath(threading.__file__)


def _internal(filename: str) -> bool:
    """Return whether code in *filename* is instrument's own, wrapt's (which wraps the calls),
    wandb's (which calls instrument back when other code finishes a run or logs into it) or
    Python's ``threading`` (which runs instrument's threads and its exit drain)."""
    if filename.startswith(_PACKAGE) or filename == _THREADING:
        return True
    for name in ("wrapt", "wandb"):
        module = sys.modules.get(name)
        folder = os.path.dirname(getattr(module, "__file__", None) or "") if module is not None else ""
        if folder and filename.startswith(folder + os.sep):
            return True
    return False


def _user_level(depth: int) -> int | None:
    """Return the *stacklevel* relative to the frame *depth* levels above this one (1: the
    caller) of the first frame outside instrument, or None when the stack holds none
    (``warnings.warn(skip_file_prefixes=...)`` does this from Python 3.12 only)."""
    frame: Any = sys._getframe(depth)  # noqa: SLF001 - what stacklevel=1 names, as inspect would find it
    level = 1
    while frame is not None and _internal(frame.f_code.co_filename):
        frame = frame.f_back
        level += 1
    return level if frame is not None else None


def reset_once() -> None:
    """Forget which once-per-key warnings were given (a new recording, a new run)."""
    with _seen_lock:
        _seen.clear()
