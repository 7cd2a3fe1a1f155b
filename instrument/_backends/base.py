"""The backend seam: the only side effect of the library, behind two small protocols.

A :class:`Backend` starts runs from a :class:`RunSpec`; a :class:`BackendRun` takes plain data
(numbers, strings, nested dicts and the media values of :mod:`instrument._values`) in calls that
mirror wandb's own. The implementations live beside this module: ``wandb`` (imports wandb
lazily), ``recording`` (in memory, the oracle for tests), ``disabled``, and ``call_journal`` (a
run written to disk). Swap the backend with ``instrument.testing.use_backend``.
"""

from __future__ import annotations

import secrets
import string
from collections.abc import Iterable, Mapping
from typing import Any, Protocol, runtime_checkable

import attrs

_ID_ALPHABET = string.ascii_lowercase + string.digits


def new_run_id() -> str:
    """Return a fresh 8-character run id in wandb's alphabet (lowercase letters and digits)."""
    return "".join(secrets.choice(_ID_ALPHABET) for _ in range(8))


def _strings(values: Iterable[str]) -> tuple[str, ...]:
    return tuple(values)


@attrs.frozen(slots=True)
class RunSpec:
    """Everything a run is started with; fields are W&B's ``wandb.init`` arguments."""

    id: str = attrs.field(factory=new_run_id)
    project: str | None = None
    entity: str | None = None
    name: str | None = None
    group: str | None = None
    job_type: str | None = None
    tags: tuple[str, ...] = attrs.field(default=(), converter=_strings)
    config: Mapping[str, Any] = attrs.field(factory=dict)
    mode: str = "offline"
    announce: bool = False  # print where an offline run went (mode was defaulted to offline)
    redact_secrets: bool = True  # replace secret-looking config values (instrument._redact)
    resume: str | None = None  # wandb.init's resume= (``"allow"`` when a journal is replayed)


class ValuesDropped(Exception):  # noqa: N818 - it reports values dropped, not an error of the caller's
    """Raised by a backend after writing a record without some of its values, which it could not write.

    The rest of the record was written. *dropped* lists ``(key, type name, reason)`` for each
    value left out; the session reports each, naming the function the record came from.
    """

    def __init__(self, dropped: list[tuple[str, str, str]]) -> None:
        super().__init__("; ".join(f"{key!r} ({kind}): {reason}" for key, kind, reason in dropped))
        self.dropped = dropped


class BackendRun(Protocol):
    """One started run. Every method takes plain data; none returns anything useful.

    ``log`` and ``update_summary`` write every value they can: when some cannot be written, the
    rest is written and :class:`ValuesDropped` names the others.

    Two optional members, which the session looks for (the wandb backend has them): ``native``,
    the library's own run object (what ``instrument.current().run`` returns; None if absent),
    and ``watch(settle, finished)``, through which the run tells the session what other code
    in the process does to it: ``settle(timeout)`` before that code takes the run over (the
    session writes what it queued), ``finished(call)`` once that code finished the run.
    """

    id: str

    def log(self, row: dict[str, Any]) -> None:
        """Append one history row (``run.log(row)``, never with ``step=``)."""

    def define_metric(self, name: str, step_metric: str | None, summary: str | None) -> None:
        """Declare the exact key *name* on *step_metric* (``run.define_metric``)."""

    def update_summary(self, values: dict[str, Any]) -> None:
        """Set summary keys (``run.summary.update``)."""

    def update_config(self, values: dict[str, Any]) -> None:
        """Set top-level config keys (``run.config.update(..., allow_val_change=True)``)."""

    def save(self, path: str, base_path: str | None, policy: str) -> None:
        """Save a file with the run (``run.save``)."""

    def log_artifact(self, path: str, type: str, name: str, aliases: tuple[str, ...], *,
                     metadata: dict[str, Any] | None = None, description: str | None = None) -> None:
        """Log a file or folder as an artifact (``run.log_artifact``), with its version's *metadata*
        and *description*."""

    def log_wandb_artifact(self, artifact: Any, aliases: tuple[str, ...]) -> None:
        """Log a ``wandb.Artifact`` the user built, as it is (``run.log_artifact(artifact)``)."""

    def declare_chart(self, key: str, spec: dict[str, Any]) -> None:
        """Declare the custom chart *key* with its panel *spec* (what ``run.log`` of a ``wandb.plot``
        chart keeps in the config under ``_wandb.visualize.<key>``)."""

    def alert(self, title: str, text: str, level: str) -> None:
        """Send an alert (``run.alert``)."""

    def finish(self, exit_code: int) -> None:
        """Finish the run with *exit_code*."""

    def location(self) -> str:
        """Return where the run's data lives (a folder, or a short description)."""


#: A backend call as a call journal stores it: the method's name and its keyword arguments.
Call = tuple[str, dict[str, Any]]


@runtime_checkable
class BufferedRun(Protocol):
    """A run that holds some calls back to hand them over together, and that can say which of the
    calls it was given its backend never made durable (the wandb backend's fast route)."""

    def send_pending(self) -> None:
        """Hand over every call held back (the dispatcher's batch ended, or another call comes).

        Raises:
            Exception: whatever the backend raises; the calls stay for :meth:`unsent`.
        """

    def unsent(self) -> list[Call]:
        """Return, once, the calls held back that a failed :meth:`send_pending` never handed over."""

    def unwritten(self) -> list[Call]:
        """Return, once, the calls that the backend's process, stopped because it no longer
        answered, took but never wrote to the run's file (plus those never handed over), in order."""


@attrs.frozen
class Stopped:
    """What stopping the backend at interpreter exit did, once it stopped answering.

    Attributes:
        killed: the pid of the backend's process killed because it did not end in time (wandb-core),
            or None when it ended by itself.
        exit_code: the exit status the program ends with (the journal of a lost run records it).
        waited: the seconds the backend was given to answer (``INSTRUMENT_EXIT_TIMEOUT``).
    """

    killed: int | None
    exit_code: int
    waited: float


class Backend(Protocol):
    """Starts runs; the session holds the run it returns.

    Optional: ``expect(spec)``, called when a run will be started on a dispatcher thread (its
    first record was queued); it returns what the session calls once that start is over (the
    wandb backend makes other code's ``wandb.init`` wait for the start meanwhile).

    A backend whose class sets ``synchronous = True`` (the recording and disabled ones) is
    written on the calling thread, in call order; any other gets a dispatcher thread per run.
    """

    def start(self, spec: RunSpec) -> BackendRun:
        """Start a run from *spec*. Raises whatever the underlying library raises."""

    def adopt(self) -> BackendRun | None:
        """Return a run that some other code started and that is still active, or None."""
