"""Every environment variable instrument reads, one documented constant each.

Functions take ``environ: Mapping[str, str]`` so tests pass a dict instead of patching
``os.environ``. A leaf: it imports nothing of instrument's, and no wandb.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import NamedTuple

#: Path of the JSON context file written by a ``@pipeline`` (the name comes from the imperative
#: ``WandBContext`` API this library keeps). Set by the orchestrator for its subprocesses; a child
#: that finds it links its runs to the pipeline run.
WANDB_CONTEXT_FILE = "WANDB_CONTEXT_FILE"

#: wandb's own mode variable: ``online``, ``offline``, ``disabled`` (also ``dryrun``, ``run``),
#: in any case (``Offline`` is ``offline``; wandb itself rejects it at ``wandb.init``). Used when no
#: ``mode=`` argument is given; an unknown value is warned about once and runs are written
#: offline. wandb's ``shared`` mode (several processes writing one run, online only) is warned
#: about once and runs start as with the variable unset (online with credentials, else offline):
#: instrument writes each run from one process. A context file's mode wins over it in a child.
WANDB_MODE = "WANDB_MODE"

#: wandb's API key; its presence (or a ``~/.netrc`` entry for a W&B host) means "online".
WANDB_API_KEY = "WANDB_API_KEY"

#: wandb's switch for its error reports and usage telemetry (``true`` by default). instrument
#: sets it to ``false`` while an offline run starts, unless it is set: see
#: ``_backends.wandb.silence_telemetry``.
WANDB_ERROR_REPORTING = "WANDB_ERROR_REPORTING"

#: wandb's root folder for runs (``<WANDB_DIR>/wandb/...``); default: the working directory.
WANDB_DIR = "WANDB_DIR"

#: wandb's server address (default: wandb's own). ``instrument sync`` uploads there, through
#: ``wandb sync``, and records it with each attempt.
WANDB_BASE_URL = "WANDB_BASE_URL"

#: wandb's bounds on retrying a GraphQL request, a file-stream request and a file upload (wandb
#: reads ``WANDB__<NAME>`` as its setting ``x_<name>``). Unbounded, an unreachable file stream is
#: retried for days; ``instrument sync`` sets each to 3 for ``wandb sync`` unless set here.
WANDB_GRAPHQL_RETRY_MAX = "WANDB__GRAPHQL_RETRY_MAX"
WANDB_FILE_STREAM_RETRY_MAX = "WANDB__FILE_STREAM_RETRY_MAX"
WANDB_FILE_TRANSFER_RETRY_MAX = "WANDB__FILE_TRANSFER_RETRY_MAX"

#: Seconds one of wandb's GraphQL requests may take (its setting ``x_graphql_timeout_seconds``);
#: ``instrument sync`` sets 30 for ``wandb sync`` unless set here.
WANDB_HTTP_TIMEOUT = "WANDB_HTTP_TIMEOUT"

#: ``true`` silences wandb's console output; ``instrument sync`` removes it for ``wandb sync``,
#: whose printed errors are how it learns that an upload failed.
WANDB_SILENT = "WANDB_SILENT"

#: ``1``/``true`` turns instrumentation problems (unroutable values, key collisions, bad steps)
#: from warnings into exceptions. Default off; the pytest fixture turns it on.
INSTRUMENT_STRICT = "INSTRUMENT_STRICT"

#: Seconds without an answer from wandb after which finishing a run gives up: the queue's drain
#: at exit goes on as long as wandb keeps taking records (a progress line on stderr after a few
#: seconds) and stops once it took none for this long; finishing the run and wandb's own
#: teardown at exit are bounded by it too. Past it the records wandb did not write are kept in a
#: journal (``python -m instrument replay``), and at exit a wandb-core that still does not answer
#: is stopped (SIGKILL), with a warning. Default 30; also wandb's ``finish_timeout`` setting.
INSTRUMENT_EXIT_TIMEOUT = "INSTRUMENT_EXIT_TIMEOUT"

#: ``1``/``true`` makes every run write to wandb on the calling thread, in call order (debugging,
#: tests that want a backend's effects before the call returns). Default off: records go to a
#: queue and one thread per run calls wandb. ``configure(synchronous=True)`` does the same.
INSTRUMENT_SYNC = "INSTRUMENT_SYNC"

#: How many records (history rows, summary updates, ...) a run's queue holds before a writer
#: waits for the dispatcher thread (backpressure; nothing is dropped). Default 10000.
INSTRUMENT_QUEUE_SIZE = "INSTRUMENT_QUEUE_SIZE"

#: How many bytes of records (an estimate: about 100 bytes per plain number, the size of arrays
#: and strings) a run's queue holds before a writer waits, as ``INSTRUMENT_QUEUE_SIZE`` does for
#: their count. Default 67108864 (64 MiB); a quarter of it bounds the calls kept for a wandb-core
#: that stops answering.
INSTRUMENT_QUEUE_BYTES = "INSTRUMENT_QUEUE_BYTES"

#: ``0``/``false`` sends every history row through ``run.log``. Default on: rows of plain numbers
#: go to wandb-core by a faster route that writes the same ``.wandb`` records (only with the wandb
#: version it was checked against; anything else goes through ``run.log``).
INSTRUMENT_FAST_ROUTE = "INSTRUMENT_FAST_ROUTE"

#: Seconds the backend may make no progress while a writer waits on a full queue; after that,
#: records are kept in an on-disk journal (``<WANDB_DIR>/wandb/instrument-queue-<run id>-*/``)
#: and written to the run when it moves again; training goes on. Default 60.
INSTRUMENT_STALL_TIMEOUT = "INSTRUMENT_STALL_TIMEOUT"

#: This process's global rank in a distributed job, a whole number from 0; the most specific
#: source of the rank (see :mod:`instrument._ranks` for the launchers' variables read after it).
INSTRUMENT_RANK = "INSTRUMENT_RANK"

#: Which ranks of a distributed job write runs: ``rank0`` (default: only global rank 0) or
#: ``per_rank`` (one run per rank, all in one group). ``configure(rank_policy=...)`` wins over it;
#: an unknown value is warned about once and ``rank0`` is used.
INSTRUMENT_RANK_POLICY = "INSTRUMENT_RANK_POLICY"

#: wandb's run id variable: the id a standalone or pipeline run is started with (so a requeued
#: job continues the same run), unless ``configure(run_id=)``/``pipeline(run_id=)`` gives one.
#: A pipeline's training children never take it (they get ids of their own). wandb's characters
#: ``:;,#?/'`` are refused with a warning (a fresh id is used).
WANDB_RUN_ID = "WANDB_RUN_ID"

#: wandb's resume variable: ``allow``, ``must``, ``never`` or ``auto``, for the runs that take
#: ``WANDB_RUN_ID``; ``configure(resume=)``/``pipeline(resume=)`` win over it. Another value is
#: warned about once and ignored (wandb itself would refuse to start the run).
WANDB_RESUME = "WANDB_RESUME"

#: wandb's group variable: under ``per_rank`` the group every rank's run joins when no pipeline
#: names one (else a group derived from the launcher's job id, see :mod:`instrument._ranks`).
WANDB_RUN_GROUP = "WANDB_RUN_GROUP"

_TRUE = frozenset({"1", "true", "yes", "on"})
RESUME_MODES = ("allow", "must", "never", "auto")
#: The rank policies: ``rank0`` (only global rank 0 writes) and ``per_rank`` (every rank writes
#: a run of its own, all in one group).
RANK_POLICIES = ("rank0", "per_rank")
_RUN_ID_FORBIDDEN = frozenset(":;,#?/'")
_MODES = frozenset({"online", "offline", "disabled", "dryrun", "run"})
#: wandb's mode in which several processes write one run (online only); instrument does not use it.
SHARED_MODE = "shared"


def is_strict(environ: Mapping[str, str] = os.environ) -> bool:
    """Return whether ``INSTRUMENT_STRICT`` asks for exceptions instead of warnings."""
    return environ.get(INSTRUMENT_STRICT, "").strip().lower() in _TRUE


def _positive(environ: Mapping[str, str], name: str, default: float) -> float:
    """Return the positive number in *name*, else *default* (unset, unreadable or not above 0)."""
    try:
        value = float(environ.get(name, ""))
    except ValueError:
        return default
    return value if value > 0 else default


def exit_timeout(environ: Mapping[str, str] = os.environ) -> float:
    """Return the finish timeout in seconds from ``INSTRUMENT_EXIT_TIMEOUT`` (default 30.0)."""
    return _positive(environ, INSTRUMENT_EXIT_TIMEOUT, 30.0)


def is_synchronous(environ: Mapping[str, str] = os.environ) -> bool:
    """Return whether ``INSTRUMENT_SYNC`` asks for backend calls on the calling thread."""
    return environ.get(INSTRUMENT_SYNC, "").strip().lower() in _TRUE


def queue_size(environ: Mapping[str, str] = os.environ) -> int:
    """Return a run queue's bound in records from ``INSTRUMENT_QUEUE_SIZE`` (default 10000)."""
    return int(_positive(environ, INSTRUMENT_QUEUE_SIZE, 10_000))


def queue_bytes(environ: Mapping[str, str] = os.environ) -> int:
    """Return a run queue's bound in bytes from ``INSTRUMENT_QUEUE_BYTES`` (default 64 MiB)."""
    return int(_positive(environ, INSTRUMENT_QUEUE_BYTES, 64 * 1024 * 1024))


def fast_route(environ: Mapping[str, str] = os.environ) -> bool:
    """Return whether ``INSTRUMENT_FAST_ROUTE`` allows the fast route into wandb-core (default yes)."""
    return environ.get(INSTRUMENT_FAST_ROUTE, "").strip().lower() not in {"0", "false", "no", "off"}


def stall_timeout(environ: Mapping[str, str] = os.environ) -> float:
    """Return the seconds without backend progress before records spill to disk (default 60.0)."""
    return _positive(environ, INSTRUMENT_STALL_TIMEOUT, 60.0)


def journal_root(environ: Mapping[str, str] = os.environ) -> Path:
    """Return the folder under which a run's call journal is created when wandb fails:
    ``<WANDB_DIR>/wandb`` (default ``./wandb``), next to wandb's own run folders."""
    return Path(environ.get(WANDB_DIR) or os.getcwd()) / "wandb"


def has_credentials(environ: Mapping[str, str] = os.environ) -> bool:
    """Return whether W&B credentials exist: ``WANDB_API_KEY`` or a W&B host in ``~/.netrc``."""
    if environ.get(WANDB_API_KEY):
        return True
    netrc = Path(environ.get("NETRC", str(Path.home() / ".netrc")))
    try:
        return "wandb" in netrc.read_text(errors="replace")
    except OSError:
        return False


def check_mode(value: object, where: str) -> str:
    """Return the wandb mode *value* names, lower-cased (``"Offline"`` is ``"offline"``).

    Args:
        value: a mode from a ``mode=`` argument or a context file.
        where: what to name in the error (``"instrument.pipeline: mode"``).

    Raises:
        TypeError: *value* is not a string.
        ValueError: *value* is not a wandb mode in any case; the message lists the accepted ones.
    """
    if not isinstance(value, str):
        raise TypeError(f"{where} must be a string, one of {_accepted()}, got {type(value).__name__} {value!r}")
    mode = value.strip().lower()
    if mode == SHARED_MODE:
        raise ValueError(f"{where} {value!r} is wandb's shared mode, which instrument does not use: {_ONE_WRITER}; "
                         f"expected one of {_accepted()}")
    if mode not in _MODES:
        raise ValueError(f"{where} {value!r} is not a wandb mode; expected one of {_accepted()}")
    return mode


# Why instrument has no use for wandb's shared mode.
_ONE_WRITER = ("instrument writes each run from one process (a worker's values reach its parent's run, a pipeline "
               "child's evals the pipeline's run, and only rank 0 of a job writes unless rank_policy='per_rank')")


def _accepted() -> str:
    return ", ".join(repr(mode) for mode in sorted(_MODES)) + " (any case)"


class ResolvedMode(NamedTuple):
    """The mode a run is started in, and how it was found (see :func:`resolve_mode`)."""

    mode: str
    #: No mode was given and no credentials exist: the run is offline, and where it went is printed.
    announce: bool
    #: The ``WANDB_MODE`` value that was not used (not a wandb mode, or ``shared``), else None.
    unknown: str | None = None


def resolve_mode(explicit: str | None, environ: Mapping[str, str] = os.environ) -> ResolvedMode:
    """Return the mode a run is started in.

    The order: *explicit*, else ``WANDB_MODE``, else ``online`` when credentials exist, else
    ``offline`` (then *announce* is True so the caller can print where the run went). Modes are
    matched in any case. An unknown ``WANDB_MODE`` gives ``offline`` with the value in *unknown*,
    for the caller to report: wandb itself would raise at ``wandb.init``, far from the cause, and
    every value of the run would be lost. ``WANDB_MODE=shared`` gives what an unset variable
    gives, with the value in *unknown* (:func:`unknown_mode_message` says why).

    Raises:
        ValueError: *explicit* is not a wandb mode (the callers check ``mode=`` arguments when
            they are given, so this is the caller's own code).
    """
    if explicit:
        return ResolvedMode(check_mode(explicit, "mode="), False)
    value = environ.get(WANDB_MODE)
    shared = (value or "").strip().lower() == SHARED_MODE
    if value and not shared:
        mode = wandb_mode(environ)
        if mode is None:
            return ResolvedMode("offline", False, value)
        return ResolvedMode(mode, False)
    unused = value if shared else None
    if has_credentials(environ):
        return ResolvedMode("online", False, unused)
    return ResolvedMode("offline", True, unused)


def unknown_mode_message(value: str, mode: str) -> str:
    """Return the message for a ``WANDB_MODE`` *value* that was not used, runs being started in *mode*."""
    if value.strip().lower() == SHARED_MODE:
        instead = ("online (W&B credentials were found)" if mode == "online" else
                   "offline (no W&B credentials were found)")
        return (f"instrument: {WANDB_MODE}={value!r} asks for wandb's shared mode, in which several processes write "
                f"one run; {_ONE_WRITER}, so its runs are started as with {WANDB_MODE} unset: {instead}")
    return (f"instrument: {WANDB_MODE}={value!r} is not a wandb mode (expected one of {_accepted()}); runs are "
            "written offline instead, to be uploaded with `instrument sync`")


def wandb_mode(environ: Mapping[str, str] = os.environ) -> str | None:
    """Return the mode ``WANDB_MODE`` names, lower-cased; None if it is unset or not a wandb mode."""
    value = environ.get(WANDB_MODE, "").strip().lower()
    return value if value in _MODES else None


def check_run_id(value: object, where: str) -> str:
    """Return *value* as a run id wandb accepts.

    Raises:
        TypeError: *value* is not a string.
        ValueError: it is empty or holds one of wandb's forbidden characters ``:;,#?/'``; the
            message names *where*.
    """
    if not isinstance(value, str):
        raise TypeError(f"{where} must be a string, got {type(value).__name__} {value!r}")
    bad = sorted(set(value) & _RUN_ID_FORBIDDEN)
    if not value.strip() or bad:
        why = "is empty" if not value.strip() else f"holds {''.join(bad)!r}, which wandb refuses in a run id"
        raise ValueError(f"{where} {value!r} {why}")
    return value


def check_resume(value: object, where: str) -> str:
    """Return the wandb resume mode *value* names.

    Raises:
        TypeError: *value* is not a string.
        ValueError: *value* is not ``allow``, ``must``, ``never`` or ``auto``; the message names *where*.
    """
    if not isinstance(value, str):
        raise TypeError(f"{where} must be a string, one of {', '.join(map(repr, RESUME_MODES))}, got "
                        f"{type(value).__name__} {value!r}")
    if value not in RESUME_MODES:
        raise ValueError(f"{where} {value!r} is not a wandb resume mode; expected one of "
                         f"{', '.join(map(repr, RESUME_MODES))}")
    return value


def check_rank_policy(value: object, where: str) -> str:
    """Return the rank policy *value* names.

    Raises:
        TypeError: *value* is not a string.
        ValueError: *value* is not ``"rank0"`` or ``"per_rank"``; the message names *where*.
    """
    if not isinstance(value, str):
        raise TypeError(f"{where} must be 'rank0' or 'per_rank', got {type(value).__name__} {value!r}")
    if value not in RANK_POLICIES:
        raise ValueError(f"{where} {value!r} is not a rank policy; expected 'rank0' or 'per_rank'")
    return value


class RunIdentity(NamedTuple):
    """The run id and resume mode ``WANDB_RUN_ID`` and ``WANDB_RESUME`` ask for (see :func:`run_identity`)."""

    run_id: str | None
    resume: str | None
    #: ``(variable, message)`` for each variable that was set to something wandb would refuse.
    refused: tuple[tuple[str, str], ...] = ()


def run_identity(environ: Mapping[str, str] = os.environ) -> RunIdentity:
    """Return the run id and resume mode from ``WANDB_RUN_ID`` and ``WANDB_RESUME``.

    A value wandb would refuse is left out (None) and described in *refused*, for the caller to
    report: wandb itself would raise at ``wandb.init`` and the run would not start.
    """
    refused: list[tuple[str, str]] = []
    values: list[str | None] = []
    for name, check in ((WANDB_RUN_ID, check_run_id), (WANDB_RESUME, check_resume)):
        text = environ.get(name)
        if not text:
            values.append(None)
            continue
        try:
            values.append(check(text.strip() if name == WANDB_RESUME else text, name))
        except ValueError as error:
            values.append(None)
            refused.append((name, f"instrument: {error}; it is ignored"))
    return RunIdentity(values[0], values[1], tuple(refused))
