"""Markers a decorated function returns to say where a value goes, and the media values.

Markers override the decorator's role: ``Summary`` lands in ``run.summary`` even from a stage,
``Series`` is a history point even from an eval. All are frozen attrs value classes holding plain
data; none imports wandb (the wandb backend turns ``Table``/``Image``/``Histogram`` into
``wandb.Table``/``wandb.Image``/``wandb.Histogram``).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any, Literal

import attrs

AlertLevel = Literal["INFO", "WARN", "ERROR"]
FilePolicy = Literal["now", "end", "live"]


def _mapping(value: Mapping[str, Any]) -> dict[str, Any]:
    if not isinstance(value, Mapping):
        raise TypeError(f"expected a mapping, got {type(value).__name__}")
    return dict(value)


@attrs.frozen(slots=True)
class Summary:
    """Send *values* (a mapping, nested allowed) to ``run.summary``, never to history.

    From a stage this records final values of the stage (``operator/best_loss``); the decorator's
    prefix still applies.
    """

    values: dict[str, Any] = attrs.field(converter=_mapping)


@attrs.frozen(slots=True)
class Series:
    """Send *values* (a mapping of numbers) to history as one point, also from an eval.

    From an eval the point lands on the eval's own step axis ``<prefix>/step``.
    """

    values: dict[str, Any] = attrs.field(converter=_mapping)


@attrs.frozen(slots=True)
class Config:
    """Send *values* (a mapping, nesting kept) to ``run.config``; never history or summary.

    Returned from a decorated function it is deep-merged under the decorator's prefix
    (``config["eval_small"]["eval_samples"]``), so two evals never collide.
    """

    values: dict[str, Any] = attrs.field(converter=_mapping)


@attrs.frozen(slots=True)
class Alert:
    """Send a W&B alert (``run.alert``): *title* and *text* strings, *level* INFO/WARN/ERROR."""

    title: str
    text: str = ""
    level: AlertLevel = attrs.field(default="WARN", validator=attrs.validators.in_(("INFO", "WARN", "ERROR")))


def _path(value: str | os.PathLike[str]) -> str:
    return os.fspath(value)


@attrs.frozen(slots=True)
class File:
    """Save the file at *path* with the run (Files tab), keeping its path relative to *base_path*.

    *policy* is wandb's: ``"now"`` uploads at once, ``"end"`` at finish, ``"live"`` whenever it
    changes. Without *base_path* the file keeps its path relative to the working directory when it
    lies under it, else only its name.
    """

    path: str = attrs.field(converter=_path)
    policy: FilePolicy = attrs.field(default="now", validator=attrs.validators.in_(("now", "end", "live")))
    base_path: str | None = attrs.field(default=None, converter=attrs.converters.optional(_path))


@attrs.frozen(slots=True)
class Artifact:
    """Log the file or folder at *path* as a W&B artifact of *type* (``model`` for checkpoints).

    *name* defaults to the file's stem; *aliases* (``("best",)``) are added to wandb's ``latest``.
    """

    path: str = attrs.field(converter=_path)
    type: str = "model"
    name: str | None = None
    aliases: tuple[str, ...] = attrs.field(default=(), converter=tuple)


def _rows(value: Sequence[Sequence[Any]]) -> tuple[tuple[Any, ...], ...]:
    return tuple(tuple(row) for row in value)


@attrs.frozen(slots=True)
class Table:
    """A W&B table: *columns* (names) and *rows* (each a sequence as long as *columns*).

    Raises:
        ValueError: a row's length differs from the number of columns.
    """

    columns: tuple[str, ...] = attrs.field(converter=tuple)
    rows: tuple[tuple[Any, ...], ...] = attrs.field(converter=_rows, factory=tuple)

    def __attrs_post_init__(self) -> None:
        for index, row in enumerate(self.rows):
            if len(row) != len(self.columns):
                raise ValueError(
                    f"instrument.Table: row {index} has {len(row)} values for {len(self.columns)} columns"
                )


@attrs.frozen(slots=True)
class Image:
    """A W&B image from *data*: a numpy array or a PIL image, with an optional *caption*.

    Arrays may be HxW, HxWx1/3/4 or CxHxW (C of 1, 3 or 4), uint8 in 0..255 or float in 0..1;
    a batch NxHxWxC becomes a list of images. The array is converted when the value is routed
    (a copy, so later changes to the caller's array do not show).
    """

    data: Any = attrs.field(eq=False)
    caption: str | None = None


@attrs.frozen(slots=True)
class Histogram:
    """A W&B histogram of *values* (a flat tuple of numbers); made from unmarked 1-D arrays."""

    values: tuple[float, ...] = attrs.field(converter=tuple)
