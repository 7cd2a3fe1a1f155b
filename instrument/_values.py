"""Markers a decorated function returns to say where a value goes, and the media values.

Markers override the decorator's role: ``Summary`` lands in ``run.summary`` even from a stage,
``Series`` is a history point even from an eval. All are frozen attrs value classes holding plain
data; none imports wandb (the wandb backend turns ``Table``/``Image``/``Histogram`` into
``wandb.Table``/``wandb.Image``/``wandb.Histogram``). Every key a decorated function returns gets
the decorator's prefix, markers included (docs/values.md).
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Iterable, Mapping
from typing import Any, Literal

import attrs

from instrument._kinds import is_array, is_tensor, shown, tensor_to_numpy
from instrument._settings import Note, fields, plain

AlertLevel = Literal["INFO", "WARN", "ERROR"]
FilePolicy = Literal["now", "end", "live"]


def _mapping(value: Mapping[str, Any]) -> dict[str, Any]:
    # A converter sees no class; the validator below names it.
    return dict(value) if isinstance(value, Mapping) else value


def _settings_mapping(value: Any) -> Any:
    # A settings object (a dataclass, a Namespace, a pydantic model...) is its fields; anything
    # else stays as it is for the validator below to name.
    try:
        found = fields(value)
    except Exception:  # a broken settings object: the validator names it
        return value
    return dict(found) if found is not None else value


def _is_mapping(instance: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
    if not isinstance(value, dict):
        raise TypeError(f"instrument.{type(instance).__name__}: {attribute.name} must be a mapping, such as "
                        f"{{'loss': 0.1}}, got {shown(value)}")


@attrs.frozen(slots=True, repr=False)
class _OneOfValidator:
    """Check that a field holds one of *options*; the error names the class, the field and the value."""

    options: tuple[str, ...]

    def __call__(self, instance: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
        if value not in self.options:
            raise ValueError(f"instrument.{type(instance).__name__}: {attribute.name} must be one of "
                             f"{', '.join(repr(option) for option in self.options)}, got {shown(value)}")

    def __repr__(self) -> str:
        return f"<one_of validator for {self.options!r}>"


def one_of(*options: str) -> _OneOfValidator:
    """Return a validator that accepts only *options* (``attrs.validators.in_`` with a readable error)."""
    return _OneOfValidator(options)


@attrs.frozen(slots=True)
class Summary:
    """Send *values* (a mapping, nested allowed) to ``run.summary``, never to history.

    From a stage this records final values of the stage (``operator/best_loss``); the decorator's
    prefix still applies, and a mapping key the marker sits under is part of the key
    (``{"final": Summary({"loss": 1})}`` from stage ``operator`` is ``operator/final/loss``).

    Raises:
        TypeError: *values* is not a mapping.
    """

    values: dict[str, Any] = attrs.field(converter=_mapping, validator=_is_mapping)


@attrs.frozen(slots=True)
class Series:
    """Send *values* (a mapping of numbers or media) to history as one point, also from an eval.

    From an eval the point lands on the eval's own step axis ``<prefix>/step`` (0, 1, 2, ...);
    a ``step`` key of a ``Series`` returned as it is gives that point's step.

    Raises:
        TypeError: *values* is not a mapping.
    """

    values: dict[str, Any] = attrs.field(converter=_mapping, validator=_is_mapping)


@attrs.frozen(slots=True)
class Config:
    """Send *values* (a mapping or a settings object, nesting kept) to ``run.config``; never
    history or summary.

    *values* may be any settings object ``run_config`` accepts (a dataclass, attrs or pydantic
    instance, an ``argparse.Namespace``, an OmegaConf config, ...): its fields are the keys.

    Returned from a decorated function it is deep-merged under the decorator's prefix
    (``config["eval_small"]["eval_samples"]``), so two evals never collide; the mapping key it
    is returned under (``{"nrmse": 0.1, "config": Config(...)}``) is not a config level.
    ``instrument.run_config`` and ``WandBContext.update_config`` write at the top level instead.
    Paths become strings, tuples lists.

    Raises:
        TypeError: *values* is not a mapping.
    """

    values: dict[str, Any] = attrs.field(converter=_settings_mapping, validator=_is_mapping)


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
        default="WARN", validator=one_of("INFO", "WARN", "ERROR")
    )


def _path(value: str | os.PathLike[str]) -> str:
    return os.fspath(value) if isinstance(value, str | os.PathLike) else value


def _is_path(instance: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
    if not isinstance(value, str) and not (value is None and attribute.default is None):
        raise TypeError(f"instrument.{type(instance).__name__}: {attribute.name} must be a path (a string or "
                        f"a pathlib.Path), got {shown(value)}")


@attrs.frozen(slots=True)
class File:
    """Save the file (or every file of the folder) at *path* with the run (Files tab).

    The file keeps its path relative to *base_path*; without *base_path*, relative to the
    working directory when it lies under it, else only its name. A plain ``pathlib.Path``
    returned from a decorated function is ``File(path)``.

    *policy* is wandb's: ``"now"`` uploads at once, ``"end"`` at finish, ``"live"`` whenever it
    changes. wandb's ``run.save`` only symlinks the file (docs/wandb-behaviour.md), so instrument copies
    ``"now"`` files into the run's files folder at once and ``"end"`` files again at finish: the
    run keeps the contents of that moment even if the original changes or is deleted before a
    later ``wandb sync``. ``"live"`` stays a symlink (it is meant to follow the file), except
    from a subprocess writing through the pipeline's journal, which hands over a copy (so it
    becomes ``"now"``, as wandb itself does when it must copy).

    Raises:
        ValueError: *policy* is not ``"now"``, ``"end"`` or ``"live"``.
        TypeError: *path* or *base_path* is not a string or a path.
    """

    path: str = attrs.field(converter=_path, validator=_is_path)
    policy: FilePolicy = attrs.field(default="now", validator=one_of("now", "end", "live"))
    base_path: str | None = attrs.field(default=None, converter=attrs.converters.optional(_path), validator=_is_path)


def _metadata(value: Any) -> dict[str, Any] | None:
    if value is None:
        return None
    try:
        found = fields(value)
    except Exception as error:
        raise TypeError(f"instrument.Artifact: metadata could not be read ({type(error).__name__}: {error})") from None
    if found is None:
        raise TypeError(f"instrument.Artifact: metadata must be a mapping or a settings object, got {shown(value)}")
    notes: list[Note] = []
    converted: dict[str, Any] = plain(value, notes)
    return converted


def _aliases(value: Iterable[str] | str) -> tuple[str, ...]:
    if isinstance(value, str):
        return (value,)
    return tuple(str(alias) for alias in value)


@attrs.frozen(slots=True)
class Artifact:
    """Log the file or folder at *path* as a W&B artifact of *type* (``"model"`` for checkpoints).

    *name* defaults to the file's or folder's stem (characters W&B does not allow in names
    become ``-``); *aliases* (``("best",)``, or one string) are added to wandb's ``latest``.
    *metadata* (a mapping or a settings object, made plain JSON-safe data as a config is) and
    *description* (text) go on the artifact version. wandb copies the content into its staging
    folder (``$WANDB_DATA_DIR``) when it is logged; offline, the artifact is uploaded by
    ``wandb sync``. A ``wandb.Artifact`` returned as it is is logged as it is.

    Raises:
        TypeError: *path* is not a path, or *metadata* is not a mapping or settings object.
    """

    path: str = attrs.field(converter=_path, validator=_is_path)
    type: str = "model"
    name: str | None = None
    aliases: tuple[str, ...] = attrs.field(default=(), converter=_aliases)
    metadata: dict[str, Any] | None = attrs.field(default=None, converter=_metadata)
    description: str | None = attrs.field(default=None, converter=attrs.converters.optional(str))


def _columns(value: Iterable[Any]) -> tuple[str, ...]:
    if isinstance(value, str | bytes) or not isinstance(value, Iterable):
        raise TypeError(f"instrument.Table: columns must be a list of column names, got {shown(value)}")
    return tuple(str(column) for column in value)


def _rows(value: Iterable[Iterable[Any]]) -> tuple[tuple[Any, ...], ...]:
    if isinstance(value, str | bytes) or not isinstance(value, Iterable):
        raise TypeError(f"instrument.Table: rows must be a list of rows (each a list of cells), got {shown(value)}")
    rows = []
    for index, row in enumerate(value):
        if isinstance(row, str | bytes) or not isinstance(row, Iterable):
            raise TypeError(f"instrument.Table: row {index} must be a list of cells, got {shown(row)}")
        rows.append(tuple(row))
    return tuple(rows)


@attrs.frozen(slots=True)
class Table:
    """A W&B table: *columns* (names) and *rows* (each a sequence as long as *columns*).

    Cells may be numbers (numpy and 0-d tensor scalars too), strings, booleans, None, and
    images (``Image``, a PIL image); any other cell is stored as its ``str()`` with a warning.
    From a stage the table is logged on the stage's step axis; from an eval it lands in the
    summary (W&B shows it in the run's Tables section either way).

    Raises:
        ValueError: a row's length differs from the number of columns.
        TypeError: *columns* or *rows* (or a row) is not a list.
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

    *data* is a numpy array or a tensor (bfloat16 and float16 too), a PIL image, a matplotlib
    figure (rendered as PNG at its size and dpi, as ``wandb.Image(figure)`` renders it), or the
    path of an image file. Arrays may be HxW, HxWx1/3/4 or CxHxW (C of 1, 3 or 4); uint8 is
    taken as it is; floats in 0..1 are scaled to 0..255, floats in -1..1 (a generative model's
    range) mapped to 0..255, and floats that are whole numbers in 0..255 are the 8-bit values
    they equal (the last two said once per key). Any other range (a 0..1 picture overshooting
    to 1.2, normalised pixels, integers past 0..255) is stretched from its range to 0..255, a
    single value out of range clipped, with a warning naming the range. A batch NxHxWxC
    (or NxCxHxW) becomes a list of images under one key (wandb keeps 108 of them). The array is
    copied and converted to uint8 HxW/HxWxC when the value is routed, so later changes to the
    caller's array do not show; other shapes are reported (key, shape, dtype) and dropped.
    """

    data: Any = attrs.field(eq=False)
    caption: str | None = attrs.field(default=None, converter=attrs.converters.optional(str))


#: The bins wandb makes of a histogram's values unless told otherwise.
DEFAULT_BINS = 64


def _numbers(value: Any, what: str, *, floats: bool = False) -> tuple[Any, ...]:
    """Return *value*'s numbers (ints kept, bools as floats; all floats with *floats*)."""
    if is_tensor(value):
        value = tensor_to_numpy(value)
    if is_array(value) and value.dtype.kind in "biuf":  # at C speed: an array may hold millions
        as_floats = floats or value.dtype.kind == "b"
        return tuple((value.astype(float) if as_floats else value).ravel().tolist())
    if isinstance(value, str | bytes) or not isinstance(value, Iterable):
        raise TypeError(f"instrument.Histogram: {what} must be a list or array of numbers, got {shown(value)}")
    out: list[Any] = []
    for v in value:
        item = v.item() if hasattr(v, "item") and not isinstance(v, int | float) else v
        if isinstance(item, bool) or not isinstance(item, int | float):
            try:
                item = float(item)
            except (TypeError, ValueError):
                raise TypeError(f"instrument.Histogram: {what} must be numbers, got {shown(v)} among them") from None
        out.append(float(item) if floats else item)
    return tuple(out)


def histogram_pair(value: Any) -> tuple[Any, Any] | None:
    """Return *value* as ``(counts, bin_edges)`` if it is such a pair (``numpy.histogram``'s result)."""
    if not isinstance(value, tuple | list) or len(value) != 2:
        return None
    counts, edges = value
    if isinstance(counts, str | bytes) or not hasattr(counts, "__len__") or not hasattr(edges, "__len__"):
        return None
    return (counts, edges) if len(edges) == len(counts) + 1 else None


@attrs.frozen(slots=True, init=False)
class Histogram:
    """A W&B histogram: of *values* (numbers) binned by wandb into *num_bins* bins (64), or of a
    ``(counts, bin_edges)`` pair (what ``numpy.histogram`` returns) with exactly those bins.

    An unmarked 1-D array or tensor of more than one element becomes one. Non-finite values
    are left out, with a warning (numpy cannot bin them). wandb stores at most 512 bins: more
    bins requested become 512, and a pair of more bins has neighbouring bins merged (every count
    kept), with a warning naming the key.

    Attributes:
        values: the values to bin (empty for a pair).
        num_bins: the number of bins for *values*.
        counts, bins: a pair's counts and its bin edges (one more edge than counts), else None.

    Raises:
        TypeError: *values* is not a list or array of numbers, nor such a pair.
        ValueError: *counts* and *bins* do not fit (one more edge than counts, edges increasing).
    """

    values: tuple[float, ...]
    num_bins: int
    counts: tuple[float, ...] | None
    bins: tuple[float, ...] | None

    def __init__(self, values: Any = (), num_bins: int = DEFAULT_BINS, *, counts: Iterable[Any] | None = None,
                 bins: Iterable[Any] | None = None) -> None:
        pair = histogram_pair(values) if counts is None and bins is None else None
        if pair is not None:
            counts, bins = pair
            values = ()
        if (counts is None) != (bins is None):
            raise ValueError("instrument.Histogram: counts and bins go together")
        if counts is not None and bins is not None:
            counted, edges = _numbers(counts, "counts"), _numbers(bins, "bin edges")
            if len(edges) != len(counted) + 1 or any(b <= a for a, b in itertools.pairwise(edges)):
                raise ValueError(f"instrument.Histogram: {len(counted)} counts need {len(counted) + 1} increasing "
                                 f"bin edges, got {len(edges)}")
            self.__attrs_init__((), num_bins, counted, edges)
        else:
            self.__attrs_init__(_numbers(values, "values", floats=True), num_bins, None, None)
