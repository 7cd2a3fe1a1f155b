"""Records: what the routing makes of a returned value and what a session hands a backend.

Frozen, slotted attrs classes of plain data (numbers, strings, nested dicts, and the media values
of :mod:`instrument._values`). Keys are final W&B keys, prefix included.
"""

from __future__ import annotations

from typing import Any

import attrs


@attrs.frozen(slots=True)
class Point:
    """One point of a series: *values* for history on the axis ``<axis>/step``.

    *axis* is the stage name (or an eval's prefix for ``Series``); ``None`` means a plain
    ``wandb.log`` row with no axis of its own. *step* is the explicit step, or ``None`` for the
    axis' next one. *summary* maps full keys to the summary aggregation a stage declared.
    *auto* marks a step the session counted itself in a run that may be resumed: the run adds
    one past the axis' last step recorded before the resume when it writes the point.
    """

    values: dict[str, Any]
    axis: str | None = None
    step: int | None = None
    summary: dict[str, str] = attrs.field(factory=dict)  # full key -> define_metric summary op
    function: str = attrs.field(default="", eq=False)  # the decorated function, named in messages
    auto: bool = False


@attrs.frozen(slots=True)
class SummaryUpdate:
    """Set summary keys (``run.summary.update``); creates no history row."""

    values: dict[str, Any]
    owned: bool = True  # an eval's value: re-asserted at finish if a series overwrote it
    function: str = attrs.field(default="", eq=False)  # the decorated function, named in messages


@attrs.frozen(slots=True)
class ConfigUpdate:
    """Deep-merge *values* into ``run.config``, under *prefix* when one is given."""

    values: dict[str, Any]
    prefix: str | None = None


@attrs.frozen(slots=True)
class SaveFile:
    """Save a file with the run (``run.save(path, base_path, policy)``)."""

    path: str
    base_path: str | None = None
    policy: str = "now"


@attrs.frozen(slots=True)
class LogArtifact:
    """Log a file or folder as an artifact (``run.log_artifact``), with its version's *metadata*
    and *description*; or, with *native*, a ``wandb.Artifact`` the user built, as it is (*path*
    is then ``""`` and the other fields repeat the artifact's own)."""

    path: str
    type: str = "model"
    name: str | None = None
    aliases: tuple[str, ...] = ()
    metadata: dict[str, Any] | None = None
    description: str | None = None
    native: Any = attrs.field(default=None, eq=False)


@attrs.frozen(slots=True)
class DeclareChart:
    """Declare the custom chart *key* (a ``wandb.plot`` chart): *spec* is its panel configuration,
    which wandb keeps in the run's config under ``_wandb.visualize.<key>``; the chart's table is
    logged beside it under ``<key>_table``."""

    key: str
    spec: dict[str, Any]


@attrs.frozen(slots=True)
class SendAlert:
    """Send an alert (``run.alert``)."""

    title: str
    text: str
    level: str = "WARN"


Record = Point | SummaryUpdate | ConfigUpdate | SaveFile | LogArtifact | SendAlert | DeclareChart
