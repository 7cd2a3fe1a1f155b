"""Fault injection for tests: a backend wrapper that raises, times out or hangs on command.

Wraps any backend (the recording one by default, real wandb in subprocess tests)::

    backend = FaultyBackend().fail("start", modes=("online",)).fail("log", after=1)
    with faulty(backend):            # instrument.testing.use_backend for the block
        ...

Each fault names a method (``start`` or any ``BackendRun`` method), lets *after* calls through,
then acts on every later call (or *times* calls): ``raise`` the given error, ``timeout`` (raise a
``TimeoutError`` as wandb's init and finish timeouts do), or ``hang`` until :meth:`release`.
"""

from __future__ import annotations

import contextlib
import threading
from collections import Counter
from collections.abc import Iterator
from typing import Any

import attrs

from instrument.testing import Backend, BackendRun, RecordedRun, RecordingBackend, RunSpec, use_backend


class InjectedError(RuntimeError):
    """The error a ``raise`` fault raises by default."""


@attrs.define
class Fault:
    """One injected fault: on *method*, after *after* good calls, *action* (raise/timeout/hang)."""

    method: str
    action: str = "raise"
    error: BaseException | None = None
    after: int = 0
    times: int | None = None
    modes: tuple[str, ...] = ()
    fired: int = 0


class FaultyBackend:
    """A backend that delegates to *inner* and injects the faults it was told to."""


    def __init__(self, inner: Backend | None = None) -> None:
        self.inner: Backend = inner if inner is not None else RecordingBackend()
        self.faults: list[Fault] = []
        self.calls: Counter[str] = Counter()
        self.released = threading.Event()
        self._lock = threading.Lock()

    # Commands --------------------------------------------------------------------------------
    def fail(self, method: str, error: BaseException | None = None, *, after: int = 0, times: int | None = None,
             modes: tuple[str, ...] = ()) -> FaultyBackend:
        """Make *method* raise *error* (default :class:`InjectedError`) after *after* good calls."""
        self.faults.append(Fault(method, "raise", error, after, times, tuple(modes)))
        return self

    def timeout(self, method: str, *, after: int = 0, times: int | None = None,
                modes: tuple[str, ...] = ()) -> FaultyBackend:
        """Make *method* raise ``TimeoutError`` (as a timed-out ``wandb.init`` does) after *after* calls."""
        return self.fail(method, TimeoutError(f"injected: {method} timed out"), after=after, times=times, modes=modes)

    def hang(self, method: str, *, after: int = 0) -> FaultyBackend:
        """Make *method* block until :meth:`release` after *after* good calls."""
        self.faults.append(Fault(method, "hang", None, after))
        return self

    def release(self) -> None:
        """Let every hung call return."""
        self.released.set()

    # Plumbing ---------------------------------------------------------------------------------
    def check(self, method: str, mode: str | None = None) -> None:
        """Count a call of *method*; raise or hang if a fault says so."""
        with self._lock:
            self.calls[method] += 1
            count = self.calls[method]
            fault = next(
                (f for f in self.faults if f.method == method and (not f.modes or mode in f.modes)
                 and count > f.after and (f.times is None or f.fired < f.times)),
                None,
            )
            if fault is not None:
                fault.fired += 1
        if fault is None:
            return
        if fault.action == "hang":
            self.released.wait()
            return
        raise fault.error if fault.error is not None else InjectedError(f"injected: {method} failed")

    def start(self, spec: RunSpec) -> BackendRun:
        """Start a run on the inner backend unless a ``start`` fault fires for this mode."""
        self.check("start", spec.mode)
        return FaultyRun(self.inner.start(spec), self)

    def adopt(self) -> BackendRun | None:
        """Never adopt."""
        return None

    @property
    def synchronous(self) -> bool:
        """Written on the caller's thread exactly when the wrapped backend is (the recording one is)."""
        return bool(getattr(self.inner, "synchronous", False))

    @property
    def runs(self) -> list[RecordedRun]:
        """The inner recording backend's runs."""
        return list(getattr(self.inner, "runs", []))


class FaultyRun:
    """A started run whose calls go through :meth:`FaultyBackend.check` first."""

    def __init__(self, run: BackendRun, backend: FaultyBackend) -> None:
        self.run = run
        self.backend = backend
        self.id = run.id

    def __getattr__(self, method: str) -> Any:
        target = getattr(self.run, method)
        if not callable(target) or method == "location":
            return target

        def call(*args: Any, **kwargs: Any) -> Any:
            self.backend.check(method)
            return target(*args, **kwargs)

        return call


@contextlib.contextmanager
def faulty(backend: FaultyBackend, *, strict: bool = False) -> Iterator[FaultyBackend]:
    """Route every run to *backend* for the block (``use_backend``); finish its runs at the end.

    Production mode (warnings) unless *strict*; the once-per-key warnings are reset on entry.
    """
    try:
        with use_backend(backend, strict=strict):
            yield backend
    finally:
        backend.release()
