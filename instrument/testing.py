"""Test your instrumented code without wandb: everything it writes is recorded in memory.

``recording()`` routes everything decorated code (and ``WandBContext``) writes, in this thread
and in threads it starts, into a :class:`RecordingBackend`, and restores the previous backend on
exit. It works without pytest; the pytest plugin's ``instrument_recorder`` fixture is a thin
layer over it. ``use_backend()`` does the same for any backend (the :class:`Backend` and
:class:`BackendRun` protocols)::

    from instrument.testing import recording

    with recording() as recorded:
        train()                       # decorated code
    run = recorded.run()              # the only run
    assert 3 == len(run.history)
    assert 0.09 == run.summary["eval/nrmse"]

Nothing here imports wandb; no file, process or network is touched (except the journal folder
a simulated subprocess writes into, under the system temp dir, as a real child would).
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Iterator
from typing import Any

from instrument import _finishing, _lifecycle, _linkage
from instrument._backends.base import Backend, BackendRun, RunSpec
from instrument._backends.recording import RecordedRun, RecordingBackend
from instrument._env import WANDB_CONTEXT_FILE
from instrument._problems import InstrumentationError, pop_strict, push_strict, reset_once

__all__ = [
    "Backend",
    "BackendRun",
    "RecordedRun",
    "Recording",
    "RecordingBackend",
    "RunSpec",
    "recording",
    "use_backend",
]

_ANY: Any = object()


@contextlib.contextmanager
def _environ(name: str, value: str | None) -> Iterator[None]:
    """Set (or, for None, unset) the environment variable *name* inside the block."""
    previous = os.environ.get(name)
    if value is None:
        os.environ.pop(name, None)
    else:
        os.environ[name] = value
    try:
        yield
    finally:
        if previous is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = previous


class Recording:
    """What a :func:`recording` block recorded: its runs, in creation order.

    Attributes:
        backend: the :class:`RecordingBackend` every run of the block was started with (spy on
            its ``start`` with pytest-mock to see each run as it starts).
    """

    def __init__(self, backend: RecordingBackend) -> None:
        self.backend = backend

    @property
    def runs(self) -> list[RecordedRun]:
        """Every run started inside the block, in creation order (a new list each time).

        Rows held for coalescing (metrics of a stage at an explicit step, waiting for more of
        the same step) are written first, so the history is complete up to this point.
        """
        _finishing.flush_backend(self.backend)
        return list(self.backend.runs)

    def run(self, *, job_type: str | None = _ANY) -> RecordedRun:
        """Return the only run, or the only run of *job_type* when given.

        Args:
            job_type: ``"pipeline"``, ``"train"``, None (a standalone run), or omitted for any.

        Raises:
            LookupError: not exactly one run matches; the message says how many there are and
                lists every run.
        """
        runs = self.runs
        matching = runs if job_type is _ANY else [r for r in runs if r.job_type == job_type]
        if len(matching) == 1:
            return matching[0]
        what = "recorded run" if job_type is _ANY else f"recorded run with job_type={job_type!r}"
        listing = "".join(f"\n  {r!r}" for r in runs) or " (no run was started: nothing was logged)"
        raise LookupError(f"expected exactly one {what}, found {len(matching)}; runs:{listing}")

    @contextlib.contextmanager
    def subprocess(self, context_file: str | os.PathLike[str] | None = None) -> Iterator[None]:
        """Run the block as if it were a subprocess of a pipeline, with the environment it would see.

        Inside, ``WANDB_CONTEXT_FILE`` names the pipeline's context file and this process's runs
        are the child's own: a stage makes a training run in the pipeline's group, ``job_type
        "train"``, tagged ``parent:<pipeline id>``; an eval, config, files and alerts write into
        the pipeline run through the journal (ingested when the pipeline ends). When the block
        ends, the child's runs are finished as at a child's exit (1 if the block raised).

        Args:
            context_file: the context file to link to (from ``save_wandb_context``); default:
                the one the active ``instrument.pipeline`` exported.

        Raises:
            RuntimeError: no *context_file* was given and no pipeline is active.
        """
        path = os.fspath(context_file) if context_file is not None else os.environ.get(WANDB_CONTEXT_FILE)
        if not path:
            raise RuntimeError(
                "Recording.subprocess() needs an active instrument.pipeline, or the context_file "
                "that save_wandb_context() wrote"
            )
        with _environ(WANDB_CONTEXT_FILE, path), _swapped(self.backend, inherit_settings=False):
            yield

    def __repr__(self) -> str:
        runs = "".join(f"\n  {r!r}" for r in self.runs)
        count = len(self.backend.runs)
        return f"<Recording of {count} run{'' if count == 1 else 's'}{runs}>"


@contextlib.contextmanager
def _thread_errors() -> Iterator[list[tuple[str, InstrumentationError]]]:
    """Collect the InstrumentationErrors that end threads inside the block, so the block raises
    them in its own thread; every other thread exception goes to the previous hook."""
    caught: list[tuple[str, InstrumentationError]] = []
    previous = threading.excepthook

    def hook(args: threading.ExceptHookArgs) -> None:
        if isinstance(args.exc_value, InstrumentationError):
            caught.append((args.thread.name if args.thread is not None else "?", args.exc_value))
        else:
            previous(args)

    threading.excepthook = hook
    try:
        yield caught
    finally:
        if threading.excepthook is hook:
            threading.excepthook = previous


@contextlib.contextmanager
def _swapped(backend: Backend, *, inherit_settings: bool = True, strict: bool | None = None) -> Iterator[None]:
    """Route everything to *backend* with fresh linkage state for the block; finish its runs when
    the block ends (with the exit code of how it ended), then restore the state and strictness."""
    previous = _linkage.push_backend(backend, inherit_settings=inherit_settings)
    if strict is not None:
        push_strict(strict)
        reset_once()
    try:
        try:
            yield
        except BaseException as error:
            _finishing.finish_state(_lifecycle.exit_code_for(error))
            raise
        _finishing.finish_state(0)
    finally:
        if strict is not None:
            pop_strict()
        _linkage.pop_backend(previous)


@contextlib.contextmanager
def use_backend(backend: Backend, *, strict: bool | None = None) -> Iterator[Backend]:
    """Start every run inside the block with *backend*; restore the previous backend on exit.

    The block gets fresh linkage state, as :func:`recording` does: no active pipeline, its own
    standalone run, settings from ``instrument.configure`` carried in (changes made inside stay
    inside). Every run started in the block is finished when it ends: exit code 0, or 1 if the
    block raised, ``n`` for ``SystemExit(n)``, 130 for Ctrl-C. Blocks nest. No exit hook or
    SIGTERM handler is installed for these runs.

    Args:
        backend: anything with the :class:`Backend` protocol's ``start`` and ``adopt``; its
            runs need the :class:`BackendRun` methods. A class attribute ``synchronous = True``
            makes sessions call it on the calling thread, in call order (else a dispatcher thread
            per run calls it).
        strict: True raises :class:`~instrument.InstrumentationError` where production warns,
            False warns, None (default) leaves it as it is (``INSTRUMENT_STRICT``).

    Yields:
        *backend*.
    """
    with _swapped(backend, strict=strict):
        yield backend


@contextlib.contextmanager
def recording(*, strict: bool = True) -> Iterator[Recording]:
    """Record every run that decorated code starts inside the block, in memory; no wandb involved.

    The block gets fresh linkage state: its own standalone run (started on the first record,
    finished when the block ends: exit code 0, or 1 if the block raised, ``n`` for
    ``SystemExit(n)``, 130 for Ctrl-C), no active pipeline, and ``WANDB_CONTEXT_FILE`` hidden so
    a test run inside a real pipeline never writes into it. Settings from ``instrument.configure``
    carry in, and changes made inside stay inside. Threads started in the block write to it too.
    The previous backend, state and strictness are restored on exit. Blocks nest. In strict
    mode a problem that ended a thread started in the block is raised again when the block ends.

    Args:
        strict: raise :class:`~instrument.InstrumentationError` where production only warns (an
            unroutable value, a key collision, a bad or backward step, a config value changed, a
            call wandb would reject); the message names the function and the key. Default True.

    Yields:
        The :class:`Recording`; read it inside the block or after it.
    """
    backend = RecordingBackend()
    recorded = Recording(backend)
    with _environ(WANDB_CONTEXT_FILE, None), _thread_errors() as in_threads:
        with _swapped(backend, strict=strict):
            yield recorded
        if in_threads:
            name, error = in_threads[0]
            raise InstrumentationError(f"{error} (raised in thread {name!r})") from error
