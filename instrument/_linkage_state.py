"""The process-wide linkage state: the runs, journals, settings and open pipelines of this process.

One :class:`State` is current at a time, behind :data:`lock`; ``use_backend`` (tests) replaces it
whole, and a fork replaces it by one that keeps only the settings (the runs are the parent's).
Other modules read it as ``_linkage_state.state`` at each use, never keeping a reference. It also
answers what the state says without resolving a run: the context file ``WANDB_CONTEXT_FILE``
names, and this process's mode.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Mapping

from instrument import _env
from instrument._backends.base import Backend
from instrument._context_file import ContextFile, ContextFileError
from instrument._journal import JournalSink
from instrument._options import RunOptions
from instrument._pipeline_stack import PipelineStack
from instrument._problems import Problem, report
from instrument._session import Session


class State:
    """The process-wide linkage state; replaced whole by a fork or a swapped backend."""

    def __init__(self, backend: Backend | None = None, settings: RunOptions | None = None) -> None:
        self.backend = backend  # None: production (wandb, or disabled), with the process's exit hooks
        self.pipelines = PipelineStack()
        self.standalone: Session | None = None
        self.training: dict[str, Session] = {}
        self.journals: dict[str, JournalSink] = {}
        self.adopted: Session | None = None
        self.contexts: dict[str, ContextFile] = {}
        self.sessions: list[Session] = []
        #: What standalone and training runs are started with (``instrument.configure``).
        self.settings = settings if settings is not None else RunOptions(redact_secrets=True)
        self.disabled: bool | None = None  # cache of _linkage.disabled(); None: not computed yet
        self.identity_taken = False  # WANDB_RUN_ID/WANDB_RESUME went to a run of this state already


lock = threading.RLock()
state = State()


def replace(new: State) -> State:
    """Make *new* the current state; return the one it replaced."""
    global state
    with lock:
        previous, state = state, new
    return previous


def context_file(environ: Mapping[str, str]) -> ContextFile | None:
    """Return the context file ``WANDB_CONTEXT_FILE`` names (read once per path), or None.

    Raises:
        ContextFileError: the file is missing or corrupt.
    """
    path = environ.get(_env.WANDB_CONTEXT_FILE)
    if not path:
        return None
    context = state.contexts.get(path)
    if context is None:
        context = ContextFile.load(path)
        state.contexts[path] = context
    return context


def resolve_mode(explicit: str | None, environ: Mapping[str, str]) -> _env.ResolvedMode:
    """Resolve a run's mode; an unknown ``WANDB_MODE`` is reported once (an error when strict)."""
    resolved = _env.resolve_mode(explicit, environ)
    if resolved.unknown is not None:
        message = _env.unknown_mode_message(resolved.unknown, resolved.mode)
        report(Problem("config", message, _env.WANDB_MODE), once=True)
    return resolved


def mode_disabled() -> bool:
    """Whether this process's mode is ``disabled``: its current pipeline's, else the context
    file's, else ``configure(mode=)``/``WANDB_MODE``."""
    with lock:
        pipeline = state.pipelines.current()
        if pipeline is not None:
            return pipeline.session.spec.mode == "disabled"
        try:
            context = context_file(os.environ)
            if context is not None:
                return context.mode == "disabled"
            mode = resolve_mode(state.settings.mode, os.environ).mode
        except (ContextFileError, ValueError):
            return False
        return mode == "disabled"


def _after_fork_in_child() -> None:
    global state, lock
    lock = threading.RLock()
    state = State(settings=state.settings)  # the runs are the parent's; its settings still hold


os.register_at_fork(after_in_child=_after_fork_in_child)
