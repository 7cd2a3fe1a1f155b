"""Markers a decorated function returns to say where a value goes, and the media values.

Markers override the decorator's role: ``Summary`` lands in ``run.summary`` even from a stage,
``Series`` is a history point even from an eval. All are frozen attrs value classes holding plain
data; none imports wandb (the wandb backend turns ``Table``/``Image``/``Histogram`` into
``wandb.Table``/``wandb.Image``/``wandb.Histogram``). Every key a decorated function returns gets
the decorator's prefix, markers included (README, "Where values land").
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
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
    prefix still applies, and a mapping key the marker sits under is part of the key
    (``{"final": Summary({"loss": 1})}`` from stage ``operator`` is ``operator/final/loss``).

    Raises:
        TypeError: *values* is not a mapping.
    """

    values: dict[str, Any] = attrs.field(converter=_mapping)


@attrs.frozen(slots=True)
class Series:
    """Send *values* (a mapping of numbers or media) to history as one point, also from an eval.

    From an eval the point lands on the eval's own step axis ``<prefix>/step`` (0, 1, 2, ...).

    Raises:
        TypeError: *values* is not a mapping.
    """

    values: dict[str, Any] = attrs.field(converter=_mapping)


@attrs.frozen(slots=True)
class Config:
    """Send *values* (a mapping, nesting kept) to ``run.config``; never history or summary.

    Returned from a decorated function it is deep-merged under the decorator's prefix
    (``config["eval_small"]["eval_samples"]``), so two evals never collide; the mapping key it
    is returned under (``{"nrmse": 0.1, "config": Config(...)}``) is not a config level. ``instrument.run_config`` and ``WandBContext.update_config``
    write at the top level instead. Paths become strings, tuples lists.

    Raises:
        TypeError: *values* is not a mapping.
    """

    values: dict[str, Any] = attrs.field(converter=_mapping)


@attrs.frozen(slots=True)
class Alert:
    """Send a W&B alert (``run.alert``): *title* and *text* strings, *level* INFO/WARN/ERROR.

    Offline, wandb records the alert in the run file and sends it when the run is synced.

    Raises:
        ValueError: *level* is not ``"INFO"``, ``"WARN"`` or ``"ERROR"``.
    """

    title: str = attrs.field(converter=str)
    text: str = attrs.field(default="", converter=str)
    level: AlertLevel = attrs.field(
        default="WARN", validator=attrs.validators.in_(("INFO", "WARN", "ERROR"))
    )


def _path(value: str | os.PathLike[str]) -> str:
    return os.fspath(value)


@attrs.frozen(slots=True)
class File:
    """Save the file (or every file of the folder) at *path* with the run (Files tab).

    The file keeps its path relative to *base_path*; without *base_path*, relative to the
    working directory when it lies under it, else only its name. A plain ``pathlib.Path``
    returned from a decorated function is ``File(path)``.

    *policy* is wandb's: ``"now"`` uploads at once, ``"end"`` at finish, ``"live"`` whenever it
    changes. wandb's ``run.save`` only symlinks the file (WANDB_FACTS 2.5), so instrument copies
    ``"now"`` files into the run's files folder at once and ``"end"`` files again at finish: the
    run keeps the contents of that moment even if the original changes or is deleted before a
    later ``wandb sync``. ``"live"`` stays a symlink (it is meant to follow the file), except
    from a subprocess writing through the pipeline's journal, which hands over a copy (so it
    becomes ``"now"``, as wandb itself does when it must copy).

    Raises:
        ValueError: *policy* is not ``"now"``, ``"end"`` or ``"live"``.
    """

    path: str = attrs.field(converter=_path)
    policy: FilePolicy = attrs.field(default="now", validator=attrs.validators.in_(("now", "end", "live")))
    base_path: str | None = attrs.field(default=None, converter=attrs.converters.optional(_path))


def _aliases(value: Iterable[str] | str) -> tuple[str, ...]:
    if isinstance(value, str):
        return (value,)
    return tuple(str(alias) for alias in value)


@attrs.frozen(slots=True)
class Artifact:
    """Log the file or folder at *path* as a W&B artifact of *type* (``"model"`` for checkpoints).

    *name* defaults to the file's or folder's stem (characters W&B does not allow in names
    become ``-``); *aliases* (``("best",)``, or one string) are added to wandb's ``latest``.
    wandb copies the content into its staging folder (``$WANDB_DATA_DIR``) when it is logged;
    offline, the artifact is uploaded by ``wandb sync``.
    """

    path: str = attrs.field(converter=_path)
    type: str = "model"
    name: str | None = None
    aliases: tuple[str, ...] = attrs.field(default=(), converter=_aliases)


def _columns(value: Iterable[Any]) -> tuple[str, ...]:
    return tuple(str(column) for column in value)


def _rows(value: Iterable[Iterable[Any]]) -> tuple[tuple[Any, ...], ...]:
    return tuple(tuple(row) for row in value)


@attrs.frozen(slots=True)
class Table:
    """A W&B table: *columns* (names) and *rows* (each a sequence as long as *columns*).

    Cells may be numbers (numpy and 0-d tensor scalars too), strings, booleans, None, and
    images (``Image``, a PIL image); any other cell is stored as its ``str()`` with a warning.
    From a stage the table is logged on the stage's step axis; from an eval it lands in the
    summary (W&B shows it in the run's Tables section either way).

    Raises:
        ValueError: a row's length differs from the number of columns.
    """

    columns: tuple[str, ...] = attrs.field(converter=_columns)
    rows: tuple[tuple[Any, ...], ...] = attrs.field(converter=_rows, factory=tuple)

    def __attrs_post_init__(self) -> None:
        for index, row in enumerate(self.rows):
            if len(row) != len(self.columns):
                raise ValueError(
                    f"instrument.Table: row {index} has {len(row)} values for {len(self.columns)} columns"
                )


@attrs.frozen(slots=True)
class Image:
    """A W&B image from *data*, with an optional *caption*.

    *data* is a numpy array (or a tensor), a PIL image, or the path of an image file. Arrays
    may be HxW, HxWx1/3/4 or CxHxW (C of 1, 3 or 4), uint8 in 0..255 or float in 0..1 (values
    outside are clipped, with a warning); a batch NxHxWxC (or NxCxHxW) becomes a list of
    images under one key. The array is copied and converted to uint8 HxW/HxWxC when the value
    is routed, so later changes to the caller's array do not show; other shapes are reported
    (key, shape, dtype) and dropped.
    """

    data: Any = attrs.field(eq=False)
    caption: str | None = attrs.field(default=None, converter=attrs.converters.optional(str))


def _floats(value: Iterable[Any]) -> tuple[float, ...]:
    return tuple(float(v) for v in value)


@attrs.frozen(slots=True)
class Histogram:
    """A W&B histogram of *values* (numbers), binned by wandb into *num_bins* bins (64).

    An unmarked 1-D array or tensor of more than one element becomes one. Non-finite values
    are left out, with a warning (numpy cannot bin them).
    """

    values: tuple[float, ...] = attrs.field(converter=_floats)
    num_bins: int = 64
