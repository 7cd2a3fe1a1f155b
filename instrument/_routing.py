"""Pure routing: (returned value, decorator role, prefix) -> records and problems.

The one place the rules of docs/values.md live. No wandb, no global state, no I/O
(only the working directory is read, to keep a saved file's path relative to it). numpy,
torch, pandas, PIL and OmegaConf objects are recognised by duck typing and their module name;
numpy is used only to convert an array the caller already handed in, and none of the others is
ever imported here.

Rules:

* role ``series`` (``training_stage``): numbers become one history point on the stage's axis;
  role ``summary`` (``eval_summary``): numbers become summary keys.
* strings go to the summary (W&B does not chart strings), from either role.
* nested mappings flatten with ``/``; every key gets the decorator's prefix, markers included.
* markers override the role: ``Summary``, ``Series``, ``Config`` (deep-merged under the prefix,
  whatever mapping key holds it),
  ``Alert``, ``File``/``pathlib.Path`` (a saved file), ``Artifact``.
* media (``Table``, a pandas DataFrame, ``Image``, a PIL image, ``Histogram``, any W&B data type
  such as ``wandb.Table``/``wandb.Image``) follow the role: history on a stage's axis, summary
  from an eval.
* an unmarked uint8 array HxW or HxWx1/3/4 is an image, a 1-D array or tensor of more than one
  element a histogram, an array of one element a number; any other array is not guessed.
* anything else is a problem naming the function, the key and the type; the rest still lands.
"""

from __future__ import annotations

import math
import os
import pathlib
from collections.abc import Iterator, Mapping
from typing import Any, Literal

import attrs

from instrument._config import plain_config
from instrument._kinds import (
    as_number,
    as_step,
    is_array,
    is_dataframe,
    is_pil_image,
    is_tensor,
    is_wandb_value,
    module_of,
    tensor_to_numpy,
    type_name,
)
from instrument._media import (
    IMAGE_CHANNELS,
    artifact_name,
    dataframe_table,
    histogram_values,
    image_data,
    is_image_batch,
)
from instrument._problems import Kind, Problem
from instrument._records import (
    ConfigUpdate,
    LogArtifact,
    Point,
    Record,
    SaveFile,
    SendAlert,
    SummaryUpdate,
)
from instrument._values import Alert, Artifact, Config, File, Histogram, Image, Series, Summary, Table

Role = Literal["series", "summary"]



@attrs.frozen(slots=True)
class Routed:
    """What routing made of one value: *records* to write and *problems* to report."""

    records: tuple[Record, ...]
    problems: tuple[Problem, ...]


def _problem(kind: Kind, function: str, key: str, detail: str, outcome: str = "") -> Problem:
    return Problem(kind=kind, key=key, message=f"instrument: {function}: key {key!r}: {detail}", outcome=outcome)


def _non_finite_count(count: int) -> str:
    return f"{count} non-finite value was" if count == 1 else f"{count} non-finite values were"


def join(prefix: str | None, key: str) -> str:
    """Return ``prefix/key`` (or *key* when there is no prefix)."""
    return f"{prefix}/{key}" if prefix else key


def flatten(
    mapping: Mapping[Any, Any], prefix: str | None, function: str, problems: list[Problem]
) -> Iterator[tuple[str, Any]]:
    """Yield ``(key, leaf)`` for a nested mapping, keys joined with ``/`` under *prefix*.

    A key that is not a string or is empty is reported in *problems* and its value skipped.
    Markers and media are leaves; plain nested mappings (and OmegaConf ones) recurse.
    """
    for key, value in mapping.items():
        if not isinstance(key, str) or not key:
            problems.append(
                _problem("bad_key", function, join(prefix, repr(key)),
                         f"keys must be non-empty strings, got {type(key).__name__} {key!r}", "value dropped")
            )
            continue
        full = join(prefix, key)
        if _is_plain_mapping(value):
            yield from flatten(value, full, function, problems)
        else:
            yield full, value


def _is_plain_mapping(value: object) -> bool:
    return isinstance(value, Mapping) and module_of(value) != "wandb"


# -- the builder ------------------------------------------------------------------------------


class _Builder:
    """Accumulates the records of one routed value (one point, one summary update, ...)."""

    def __init__(self, role: Role, prefix: str | None, function: str) -> None:
        self.role = role
        self.prefix = prefix
        self.function = function
        self.point: dict[str, Any] = {}
        self.eval_point: dict[str, Any] = {}
        self.summary: dict[str, Any] = {}
        self.other: list[Record] = []
        self.problems: list[Problem] = []
        self.keys: set[str] = set()

    def problem(self, kind: Kind, key: str, detail: str, outcome: str = "") -> None:
        self.problems.append(_problem(kind, self.function, key, detail, outcome))

    def claim(self, key: str) -> bool:
        if key in self.keys:
            self.problem("collision", key, "two values flatten to the same key", "the later one was dropped")
            return False
        self.keys.add(key)
        return True

    def place(self, key: str, value: Any, role: Role) -> None:
        if not self.claim(key):
            return
        if role == "series":
            (self.point if self.role == "series" else self.eval_point)[key] = value
        else:
            self.summary[key] = value

    def add(self, key: str, value: Any, role: Role | None = None) -> None:
        """Route one leaf *value* under the final *key*."""
        role = role or self.role
        number = as_number(value)
        if number is not None:
            self.place(key, number, role)
        elif isinstance(value, str):
            self.place(key, value, "summary")
        elif value is None:
            return  # no value: like returning None, nothing is written
        elif isinstance(value, Summary):
            self.add_mapping(value.values, key, "summary")
        elif isinstance(value, Series):
            self.add_mapping(value.values, key, "series")
        elif isinstance(value, Config):
            self.add_config(value)
        elif isinstance(value, Alert):
            self.other.append(SendAlert(title=value.title, text=value.text, level=value.level))
        elif isinstance(value, File):
            self.add_file(key, value)
        elif isinstance(value, pathlib.PurePath):
            self.add_file(key, File(value))
        elif isinstance(value, Artifact):
            self.add_artifact(value)
        elif isinstance(value, Table):
            self.add_table(key, value, role)
        elif is_dataframe(value):
            self.add_table(key, dataframe_table(value), role)
        elif isinstance(value, Image):
            self.add_image(key, value, role)
        elif is_pil_image(value):
            self.add_image(key, Image(value), role)
        elif isinstance(value, Histogram):
            self.add_histogram(key, value, role)
        elif is_wandb_value(value):
            self.place(key, value, role)
        elif is_array(value) or is_tensor(value):
            self.add_array(key, tensor_to_numpy(value) if is_tensor(value) else value, role)
        elif module_of(value) == "pandas" and hasattr(value, "to_numpy"):
            self.add_array(key, value.to_numpy(), role)  # a pandas Series: like a 1-D array
        elif isinstance(value, list | tuple | set | frozenset):
            self.problem("unroutable", key,
                         f"a {type(value).__name__} of {len(value)} values is not guessed: wrap it in "
                         "instrument.Histogram(values) for a distribution, or instrument.Table(columns, rows) "
                         "for rows", "it was dropped")
        else:
            self.problem("unroutable", key,
                         f"a value of type {type_name(value)} fits no rule (numbers, strings, mappings, "
                         "arrays, media, markers)", "it was dropped")

    def add_mapping(self, mapping: Mapping[Any, Any], prefix: str | None, role: Role) -> None:
        for key, leaf in flatten(mapping, prefix, self.function, self.problems):
            self.add(key, leaf, role)

    def add_config(self, value: Config) -> None:
        # Under the prefix only: the mapping key holding the marker is not a config level, so
        # {"nrmse": 0.1, "config": Config({"samples": 8})} from eval_small is
        # config["eval_small"]["samples"].
        self.other.append(ConfigUpdate(values=plain_config(value.values), prefix=self.prefix))

    def add_file(self, key: str, value: File) -> None:
        source = os.path.abspath(value.path)
        if value.base_path is not None:
            base = os.path.abspath(value.base_path)
            if not _under(source, base):
                self.problem("unroutable", key, f"file {value.path!r} is not under base_path {value.base_path!r}",
                             "it was saved under its name alone")
                base = os.path.dirname(source)
        else:
            cwd = os.getcwd()
            base = cwd if _under(source, cwd) else os.path.dirname(source)
        self.other.append(SaveFile(path=source, base_path=base, policy=value.policy))

    def add_artifact(self, value: Artifact) -> None:
        path = os.path.abspath(value.path)
        name = value.name or artifact_name(path)
        self.other.append(LogArtifact(path=path, type=value.type, name=name, aliases=value.aliases))

    def add_image(self, key: str, value: Image, role: Role) -> None:
        data, note = image_data(value.data)
        if data is None:
            self.problem("unroutable", key, note, "it was dropped")
            return
        if note:
            self.problem("non_finite", key, f"image: {note}")
        self.place(key, Image(data, caption=value.caption), role)

    def add_histogram(self, key: str, value: Histogram, role: Role) -> None:
        finite = tuple(v for v in value.values if math.isfinite(v))
        if len(finite) != len(value.values):
            self.problem("non_finite", key, f"histogram: {_non_finite_count(len(value.values) - len(finite))} left out")
        self.place(key, Histogram(finite, num_bins=value.num_bins), role)

    def add_table(self, key: str, table: Table, role: Role) -> None:
        converted: dict[str, str] = {}
        rows = []
        for row in table.rows:
            cells = []
            for column, cell in zip(table.columns, row, strict=True):
                value = self.cell(key, cell)
                if value is _NOT_A_CELL:
                    converted.setdefault(column, type_name(cell))
                    value = str(cell)
                cells.append(value)
            rows.append(cells)
        for column, kind in converted.items():
            self.problem("unroutable", key, f"table column {column!r} holds values of type {kind}",
                         "they were stored as str()")
        self.place(key, Table(table.columns, rows), role)

    def cell(self, key: str, cell: Any) -> Any:
        number = as_number(cell)
        if number is not None:
            return number
        if cell is None or isinstance(cell, str) or is_wandb_value(cell):
            return cell
        if isinstance(cell, Image) or is_pil_image(cell):
            image = cell if isinstance(cell, Image) else Image(cell)
            data, note = image_data(image.data)
            if data is None or is_image_batch(data):
                self.problem("unroutable", key, f"table cell image: {note or 'a batch is not one cell'}",
                             "the cell was left empty")
                return None
            return Image(data, caption=image.caption)
        return _NOT_A_CELL

    def add_array(self, key: str, array: Any, role: Role) -> None:
        shape = tuple(array.shape)
        dtype = str(array.dtype)
        kind = getattr(array.dtype, "kind", "O")
        if len(shape) == 1 and shape[0] > 1 and kind in "biuf":
            values, left_out = histogram_values(array)
            if left_out:
                self.problem("non_finite", key, f"histogram: {_non_finite_count(left_out)} left out")
            self.place(key, Histogram(values), role)
        elif dtype == "uint8" and (len(shape) == 2 or (len(shape) == 3 and shape[2] in IMAGE_CHANNELS)):
            self.add_image(key, Image(array), role)
        elif array.size == 1 and kind in "biuf":
            self.add(key, array.reshape(()), role)
        else:
            self.problem("unroutable", key,
                         f"an array of shape {shape} and dtype {dtype} is not guessed; wrap it in "
                         "instrument.Image(...) or instrument.Table(...)", "it was dropped")

    def records(self, axis: str | None, step: int | None, summary: dict[str, str]) -> tuple[Record, ...]:
        out: list[Record] = []
        if self.point:
            out.append(Point(values=self.point, axis=axis, step=step, summary=summary))
        if self.eval_point:
            out.append(Point(values=self.eval_point, axis=self.prefix, step=None))
        if self.summary:
            out.append(SummaryUpdate(values=self.summary, owned=self.role == "summary"))
        out.extend(self.other)
        return tuple(out)


_NOT_A_CELL: Any = object()


def _under(path: str, folder: str) -> bool:
    try:
        return os.path.commonpath([path, folder]) == folder and path != folder
    except ValueError:  # different drives
        return False


def route(
    value: Any,
    *,
    role: Role,
    prefix: str | None,
    function: str,
    step: int | None = None,
    summary: Mapping[str, str] | None = None,
) -> Routed:
    """Route what a decorated function returned (or what ``instrument.log`` was given).

    Args:
        value: the returned value: a mapping (one point / one summary update), a bare value
            (``<prefix>/value``), a marker (``Summary``/``Series`` at the prefix itself), or
            ``None`` (nothing).
        role: ``"series"`` for a training stage (numbers -> history on the axis ``<prefix>/step``),
            ``"summary"`` for an eval (numbers -> ``run.summary``).
        prefix: the stage name or eval prefix put before every key; ``None`` for no prefix.
        function: the decorated function's qualified name, for messages.
        step: an explicit step (``instrument.log(..., step=k)``); it wins over a ``step`` key of the
            mapping, with a problem reported when the two differ.
        summary: a stage's summary aggregations, ``{key: "min"}`` (keys without the prefix).

    Returns:
        The records in order (point, eval series point, summary update, then config, files,
        artifacts, alerts) and the problems found. Never raises for bad values.
    """
    builder = _Builder(role, prefix, function)
    if value is None:
        return Routed((), ())
    if _is_plain_mapping(value):
        mapping = dict(value)
        if role == "series" and "step" in mapping:
            raw = mapping.pop("step")
            from_key = as_step(raw)
            if from_key is None:
                builder.problem("bad_step", join(prefix, "step"),
                                f"step must be a whole number, got {type(raw).__name__} {raw!r}",
                                "the next automatic step was used")
            elif step is not None and step != from_key:
                builder.problem("bad_step", join(prefix, "step"),
                                f"step={step} and the mapping's step key {from_key} differ", f"step={step} was used")
            elif step is None:
                step = from_key
        builder.add_mapping(mapping, prefix, role)
    elif isinstance(value, Summary | Series):
        builder.add_mapping(value.values, prefix, "summary" if isinstance(value, Summary) else "series")
    elif isinstance(value, Config):
        builder.add_config(value)
    else:
        builder.add(join(prefix, "value"), value)
    ops = {join(prefix, key): op for key, op in (summary or {}).items()}
    axis = prefix if role == "series" else None
    return Routed(builder.records(axis, step, ops), tuple(builder.problems))


_PLAIN_NUMBERS = (int, float, bool)


def route_numbers(
    values: Any, prefix: str | None, step: int | None, summary: dict[str, str]
) -> Routed | None:
    """Return what :func:`route` returns for a stage's flat dict of plain numbers, fast; else None.

    The common case of a training loop (``{"loss": 0.1, "acc": 0.9}`` from a stage, one metric
    from ``log_training_metric``) skips the general rules: every key a non-empty string other
    than ``step``, every value exactly an ``int``, ``float`` or ``bool``, no nesting. For anything
    else it returns None and the caller uses :func:`route`. *summary* maps full keys to ops.
    """
    if type(values) is not dict or not values:
        return None
    # Checked and built by C loops (map, set, zip): about 0.1 us a key. A key is in the table only
    # once it passed the key checks below, so a known key needs none.
    if not _PLAIN_TYPES.issuperset(map(type, values.values())):
        return None
    names = _FULL_KEYS.get(prefix)
    if names is None:
        if len(_FULL_KEYS) >= _MAX_PREFIXES:
            _FULL_KEYS.clear()
        names = _FULL_KEYS[prefix] = {}
    try:
        point = dict(zip(map(names.__getitem__, values), values.values(), strict=True))
    except (KeyError, TypeError):  # a key not seen yet (or not hashable as a str key would be)
        if not _STR_TYPE.issuperset(map(type, values)) or "" in values or "step" in values:
            return None
        full = {key: f"{prefix}/{key}" if prefix else key for key in values}
        if len(names) + len(full) <= _MAX_KEYS:
            names.update(full)
        point = dict(zip(full.values(), values.values(), strict=True))
    return Routed((Point(values=point, axis=prefix, step=step, summary=summary),), ())


#: ``prefix -> {key: "prefix/key"}``: a stage's full keys, built once instead of on every call
#: (a 1,000-key row spent about 140 us building them). Bounded: keys that keep changing are built
#: each time past :data:`_MAX_KEYS` per prefix, and the table is emptied past
#: :data:`_MAX_PREFIXES` prefixes.
_FULL_KEYS: dict[str | None, dict[str, str]] = {}
_PLAIN_TYPES = frozenset(_PLAIN_NUMBERS)
_STR_TYPE = frozenset({str})
_MAX_KEYS = 100_000
_MAX_PREFIXES = 1_000
