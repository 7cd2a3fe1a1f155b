"""Finishing this process's runs: at interpreter exit (then tearing wandb down within what is
left of ``INSTRUMENT_EXIT_TIMEOUT``), after SIGTERM, at the end of a test's backend block; and
flushing them. When the process ends, what its workers journaled is written first and their
inbox removed. How the process ends (exit status, the hooks themselves) is
:mod:`instrument._lifecycle`'s.
"""

from __future__ import annotations

import threading

from instrument import _dispatch, _env, _lifecycle, _linkage_state
from instrument._backends import wandb_core
from instrument._backends.base import Backend, Stopped
from instrument._problems import Problem, report
from instrument._session import Session
from instrument._worker_inbox import close_inbox, drain_workers


def arm(session: Session) -> None:
    """*session*'s run started: in production, have it finished at interpreter exit and after SIGTERM."""
    if _linkage_state.state.backend is None:
        _lifecycle.finish_at_exit(_finish_at_exit)  # after wandb.init registered wandb's teardown
        if session.spec.mode != "disabled":
            _lifecycle.finish_on_sigterm(finish_state)  # a preempted job (SLURM, Kubernetes) finishes its runs


_exiting = False
_stopped: Stopped | None = None
_stop_lock = threading.Lock()


def _finish_at_exit(exit_code: int) -> None:
    """Interpreter exit: finish every run, tear wandb down, bounded (:func:`stop_wandb_at_exit`), then
    keep what the drain at exit could not write (:meth:`Session.keep_held_at_exit`). After SIGTERM,
    the finish already under way is waited for first, and the process then ends as SIGTERM would have."""
    global _exiting
    _lifecycle.wait_for_sigterm_finish(_dispatch.exit_time_left(_env.exit_timeout()))
    _exiting = True
    finish_state(exit_code)
    stopped = stop_wandb_at_exit()
    with _linkage_state.lock:
        sessions = list(_linkage_state.state.sessions)
    for session in sessions:
        session.keep_held_at_exit()
    if stopped is not None and stopped.killed is not None and not any(s.lost_at_exit for s in sessions):
        report(Problem("backend", f"instrument: wandb-core (pid {stopped.killed}) did not end within what was left "
                       f"of {_env.INSTRUMENT_EXIT_TIMEOUT} ({stopped.waited:g} s) after every run was finished; it "
                       "was stopped with SIGKILL so that the process could exit (the runs were written in full)"))
    _lifecycle.end_as_terminated()


def stop_wandb_at_exit() -> Stopped | None:
    """At interpreter exit, tear wandb down (once) within what is left of ``INSTRUMENT_EXIT_TIMEOUT``.

    wandb's own teardown waits for wandb-core without a limit; run here, a wandb-core that does
    not answer within the time left is killed, and the process exits with its own status.
    Returns what stopping did, or None when the interpreter is not exiting (the drain at exit
    has not run and runs are not being finished at exit).
    """
    global _stopped
    if not (_exiting or _dispatch.exit_deadline is not None) or _lifecycle._forked:  # noqa: SLF001 - a forked child stops nothing
        return None
    with _stop_lock:
        if _stopped is None:
            waited = _env.exit_timeout()
            killed = wandb_core.teardown(_lifecycle.exit_code(), _dispatch.exit_time_left(waited))
            _stopped = Stopped(killed=killed, exit_code=_lifecycle.exit_code(), waited=waited)
        return _stopped


def finish_state(exit_code: int) -> None:
    """Finish every unfinished run of the current state with *exit_code*, newest first, after
    writing what this process's workers journaled. When the process is ending (at exit, after
    SIGTERM) their inbox is removed once the runs took it; otherwise it stays for the workers
    that go on (a pool that outlives a test's recording)."""
    drain_workers()
    with _linkage_state.lock:
        state = _linkage_state.state
        sessions = list(state.sessions)
        journals = list(state.journals.values())
        state.disabled = None
    for session in reversed(sessions):
        session.finish(exit_code)
    for journal in journals:
        journal.close()
    if _exiting or _lifecycle.terminating():
        close_inbox(wait_for_children=not _lifecycle.terminating())


def flush_state(timeout: float | None = None) -> bool:
    """Write what every run of the current state holds or queued; True if all of it was taken.

    Each run's wait gives up once its backend took nothing for *timeout* seconds (default
    ``INSTRUMENT_EXIT_TIMEOUT``); it goes on while the backend keeps taking records. What this
    process's workers journaled so far is written first.
    """
    timeout = _env.exit_timeout() if timeout is None else timeout
    drain_workers()
    with _linkage_state.lock:
        state = _linkage_state.state
        sessions = [s for s in dict.fromkeys((*state.sessions, state.adopted)) if s is not None and not s.finished]
    done = True
    for session in sessions:
        done = session.flush(timeout) and done
    return done


def flush_backend(backend: Backend) -> None:
    """Flush the current state's runs if they write to *backend* (a recording being read)."""
    if _linkage_state.state.backend is backend:
        flush_state()


def drain_workers_at_exit() -> None:
    """The main thread ended: write what the workers journaled. A run this makes (the process
    wrote nothing itself) is started now, inside threading's exit hooks (which wandb's imports
    register more of, :func:`instrument._lifecycle.late_exit_hooks`), and written, so that the
    exit hooks, which run next, finish it (and remove the inbox); a process with no run at all (a
    rank that writes nothing) removes the inbox now."""
    with _linkage_state.lock:
        before = len(_linkage_state.state.sessions)
    with _lifecycle.late_exit_hooks():
        drain_workers()
        with _linkage_state.lock:
            after = len(_linkage_state.state.sessions)
        if after > before:
            flush_state()
    if after == 0:
        close_inbox(wait_for_children=True)
