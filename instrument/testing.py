"""Test your instrumented code without wandb: record everything in memory.

``recording()`` routes everything decorated code writes, in this thread and in threads it
starts, into memory, and restores the previous backend on exit. It works without pytest; the
pytest plugin's ``instrument_recorder`` fixture is a thin layer over it.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

from instrument import _linkage
from instrument._env import WANDB_CONTEXT_FILE
from instrument._problems import pop_strict, push_strict, reset_once
from instrument._recording import RecordedRun, RecordingBackend

__all__ = ["RecordedRun", "Recording", "recording"]


class Recording:
    """What a ``recording()`` block recorded: its runs, in creation order."""

    def __init__(self, backend: RecordingBackend) -> None:
        self.backend = backend

    @property
    def runs(self) -> list[RecordedRun]:
        """Every run started inside the block, in creation order (held rows written first)."""
        _linkage.flush_backend(self.backend)
        return list(self.backend.runs)

    def run(self) -> RecordedRun:
        """Return the only run.

        Raises:
            LookupError: there is not exactly one run; the message says how many there are.
        """
        runs = self.runs
        if len(runs) != 1:
            described = ", ".join(f"{r.id} ({r.job_type or 'standalone'})" for r in runs)
            raise LookupError(f"expected exactly one recorded run, found {len(runs)}" + (f": {described}" if runs else ""))
        return runs[0]

    @contextlib.contextmanager
    def subprocess(self) -> Iterator[None]:
        """Run the block as if in a subprocess of the active pipeline (the environment a child sees).

        Inside, ``WANDB_CONTEXT_FILE`` names the pipeline's context file and this process's runs
        are the child's own: stages make a training run in the pipeline's group tagged
        ``parent:<id>``, evals write to the pipeline run through the journal. The child's runs are
        finished when the block ends, as at a child's exit.

        Raises:
            RuntimeError: no pipeline is active.
        """
        path = os.environ.get(WANDB_CONTEXT_FILE)
        if not path:
            raise RuntimeError("Recording.subprocess() needs an active instrument.pipeline")
        parent = _linkage.push_backend(self.backend, inherit_settings=False)
        try:
            yield
        except BaseException:
            _linkage.finish_state(1)
            raise
        else:
            _linkage.finish_state(0)
        finally:
            _linkage.pop_backend(parent)


@contextlib.contextmanager
def recording(*, strict: bool = True) -> Iterator[Recording]:
    """Record every run decorated code starts inside the block, in memory; no wandb involved.

    The block gets its own standalone run (started on its first record), finished when the block
    ends: exit code 1 if the block raised, else 0. The previous backend is restored on exit.

    Args:
        strict: raise :class:`~instrument.InstrumentationError` for problems production would
            only warn about (an unroutable value, a key collision, a bad step). Default True.
    """
    backend = RecordingBackend()
    previous = _linkage.push_backend(backend)
    push_strict(strict)
    reset_once()
    try:
        yield Recording(backend)
    except BaseException:
        _linkage.finish_state(1)
        raise
    else:
        _linkage.finish_state(0)
    finally:
        pop_strict()
        _linkage.pop_backend(previous)
