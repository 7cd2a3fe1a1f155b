"""Pure routing: (returned value, decorator role, prefix) -> records and problems.

The one place the rules of docs/values.md live. Each value is converted and checked on its own:
one that cannot be written is a problem naming the function, the key and the type, and the rest
lands. No wandb, no global state, no I/O but reading the working directory (a saved file's path
is kept relative to it); numpy only converts an array the caller handed in.
"""

from __future__ import annotations

import math
import os
import pathlib
from collections.abc import Iterator, Mapping
from typing import Any, Literal

import attrs

from instrument._config import plain_config
from instrument._keys import key_text, media_key
from instrument._kinds import (
    as_number,
    as_step,
    is_array,
    is_custom_chart,
    is_dataframe,
    is_matplotlib_figure,
    is_pil_image,
    is_plotly_figure,
    is_tensor,
    is_wandb_artifact,
    is_wandb_value,
    module_of,
    shown,
    tensor_to_numpy,
    type_name,
)
from instrument._media import (
    IMAGE_CHANNELS,
    IMAGES_PER_KEY,
    LINE_MAX_BYTES,
    TABLE_MAX_ROWS,
    artifact_name,
    dataframe_table,
    histogram_of,
    image_data,
    is_image_batch,
    within_bins,
)
from instrument._problems import Kind, Problem, describe
from instrument._records import (
    ConfigUpdate,
    DeclareChart,
    LogArtifact,
    Point,
    Record,
    SaveFile,
    SendAlert,
    SummaryUpdate,
)
from instrument._values import (
    Alert,
    Artifact,
    Config,
    File,
    Histogram,
    Image,
    Series,
    Summary,
    Table,
    histogram_pair,
)

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
    mapping: Mapping[Any, Any], prefix: str | None, function: str, problems: list[Problem],
    path: tuple[Any, ...] = (),
) -> Iterator[tuple[str, Any, tuple[Any, ...]]]:
    """Yield ``(key, leaf, path)`` for a nested mapping, keys joined with ``/`` under *prefix*;
    *path* is the original keys leading to the leaf (for messages).

    A key that is not a string becomes its text (:func:`instrument._keys.key_text`: ``0`` is
    ``"0"``); a key that is None or empty is reported in *problems* and its value skipped.
    Markers and media are leaves; plain nested mappings (and OmegaConf ones) recurse.
    """
    for key, value in mapping.items():
        text = key_text(key)
        if text is None:
            problems.append(
                _problem("bad_key", function, join(prefix, repr(key)),
                         f"keys must be non-empty, got {type(key).__name__} {key!r}", "its value was dropped")
            )
            continue
        full = join(prefix, text)
        if _is_plain_mapping(value):
            yield from flatten(value, full, function, problems, (*path, key))
        else:
            yield full, value, (*path, key)


def _shown_path(path: tuple[Any, ...]) -> str:
    return " / ".join(repr(key) for key in path) if path else "the value"


def _is_plain_mapping(value: object) -> bool:
    return isinstance(value, Mapping) and module_of(value) != "wandb"


# -- the builder ------------------------------------------------------------------------------


class _Builder:
    """Accumulates the records of one routed value (one point, one summary update, ...)."""

    def __init__(self, role: Role, prefix: str | None, function: str, step: int | None = None) -> None:
        self.role = role
        self.prefix = prefix
        self.function = function
        self.axis_key = join(prefix, "step") if prefix is not None else None  # the key of the prefix's axis
        self.step = step  # the point's step: step= of instrument.log, else a step key, else None
        self.eval_step: int | None = None  # the step of an eval's Series point, from its step key
        self.point: dict[str, Any] = {}
        self.eval_point: dict[str, Any] = {}
        self.summary: dict[str, Any] = {}
        self.other: list[Record] = []
        self.problems: list[Problem] = []
        self.keys: dict[str, tuple[Any, ...]] = {}  # claimed key -> the original keys it came from
        self.path: tuple[Any, ...] = ()  # the original keys of the leaf being added

    def problem(self, kind: Kind, key: str, detail: str, outcome: str = "") -> None:
        self.problems.append(_problem(kind, self.function, key, detail, outcome))

    def claim(self, key: str) -> bool:
        if key in self.keys:
            first, second = _shown_path(self.keys[key]), _shown_path(self.path)
            detail = ("two values flatten to the same key" if first == second else
                      f"the keys {first} and {second} both become this key")
            self.problem("collision", key, detail, "the later one was dropped")
            return False
        self.keys[key] = self.path
        return True

    def place(self, key: str, value: Any, role: Role) -> None:
        if not self.claim(key):
            return
        if role == "series":
            (self.point if self.role == "series" else self.eval_point)[key] = value
        else:
            self.summary[key] = value

    def place_media(self, key: str, value: Any, role: Role, *, table: bool = False) -> None:
        """Place a value wandb stores as a file named after its key (or, a table, an artifact)."""
        short = media_key(key, table=table)
        if short != key:
            self.problem("converted", key, f"the key is too long for wandb's {'artifact' if table else 'file'} name; "
                         f"the value was stored under key {short!r}")
        self.place(short, value, role)

    def add(self, key: str, value: Any, role: Role | None = None) -> None:
        """Route one leaf *value* under the final *key*; a conversion that fails drops it alone."""
        role = role or self.role
        if key == self.axis_key and (role == "series" or self.role == "series"):
            self.add_step(key, value, role)
            return
        try:
            self._add(key, value, role)
        except Exception as error:  # one value that cannot be converted costs only itself
            self.problem("unroutable", key, f"converting a {type_name(value)} failed ({describe(error)})",
                         "it was dropped")

    def _add(self, key: str, value: Any, role: Role) -> None:
        number = as_number(value)
        if number is not None:
            self.place(key, number, role)
        elif isinstance(value, str):
            self.add_text(key, value)
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
        elif is_wandb_artifact(value):
            self.other.append(LogArtifact(path="", type=value.type, name=value.name, metadata=dict(value.metadata),
                                          description=value.description, native=value))
        elif isinstance(value, Table):
            self.add_table(key, value, role)
        elif is_dataframe(value):
            self.add_table(key, dataframe_table(value), role)
        elif isinstance(value, Image):
            self.add_image(key, value, role)
        elif is_pil_image(value) or is_matplotlib_figure(value):
            self.add_image(key, Image(value), role)
        elif isinstance(value, Histogram):
            self.add_histogram(key, value, role)
        elif is_custom_chart(value):
            self.add_chart(key, value, role)
        elif is_wandb_value(value):
            self.place_media(key, value, role, table=type(value).__name__ == "Table")
        elif is_plotly_figure(value):
            self.place_media(key, value, role)  # wandb stores it as an interactive plotly chart
        elif is_array(value) or is_tensor(value):
            self.add_array(key, tensor_to_numpy(value) if is_tensor(value) else value, role)
        elif module_of(value) == "pandas" and hasattr(value, "to_numpy"):
            self.add_array(key, value.to_numpy(), role)  # a pandas Series: like a 1-D array
        elif isinstance(value, list | tuple | set | frozenset):
            hint = ("it looks like a (counts, bin_edges) pair: wrap it in instrument.Histogram(pair) for a "
                    "histogram with exactly those bins" if histogram_pair(value) is not None else
                    "wrap it in instrument.Histogram(values) for a distribution, or instrument.Table(columns, "
                    "rows) for rows")
            self.problem("unroutable", key, f"a {type(value).__name__} of {len(value)} values is not guessed: {hint}",
                         "it was dropped")
        else:
            self.problem("unroutable", key,
                         f"a value of type {type_name(value)} fits no rule (numbers, strings, mappings, "
                         "arrays, media, markers)", "it was dropped")

    def add_step(self, key: str, value: Any, role: Role) -> None:
        """Take a value under the axis key ``<prefix>/step`` as its point's step: a history point's
        step is its axis value, so a value there would replace the step (a stage's summary holds
        the axis' last step there). None is no step."""
        if value is None or not self.claim(key):
            return
        if role == "summary":
            self.problem("collision", key, f"the key is the step axis of stage {self.prefix!r}, whose last step "
                         "wandb's summary holds; return the value under another key", "it was dropped")
            return
        exact = as_step(value)
        given = self.step if self.role == "series" else None
        if exact is None:
            self.problem("bad_step", key, f"the step key is the point's step on {key} and must be a whole number "
                         f"within 64 bits, got {shown(value)}; name a fractional progress otherwise (epoch)",
                         "the next automatic step was used")
        elif given is not None and given != exact:
            self.problem("bad_step", key, f"step={given} and the step key {exact} differ", f"step={given} was used")
        elif self.role == "series":
            self.step = exact
        else:
            self.eval_step = exact

    def add_text(self, key: str, value: str) -> None:
        size = len(value) if len(value) * 4 <= LINE_MAX_BYTES else len(value.encode("utf-8", "replace"))
        if size > LINE_MAX_BYTES:
            self.problem("limit", key, f"a string of {size} bytes is more than the {LINE_MAX_BYTES} bytes wandb "
                         "uploads in one summary or history line (it would skip the whole line)", "it was dropped")
            return
        self.place(key, value, "summary")

    def add_mapping(self, mapping: Mapping[Any, Any], prefix: str | None, role: Role) -> None:
        outer = self.path
        for key, leaf, path in flatten(mapping, prefix, self.function, self.problems):
            self.path = (*outer, *path)
            self.add(key, leaf, role)
        self.path = outer

    def add_config(self, value: Config) -> None:
        # Under the prefix only: the mapping key holding the marker is not a config level, so
        # {"nrmse": 0.1, "config": Config({"samples": 8})} from eval_small is
        # config["eval_small"]["samples"].
        self.other.append(ConfigUpdate(values=plain_config(value.values, self.problems), prefix=self.prefix))

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
        self.other.append(LogArtifact(path=path, type=value.type, name=name, aliases=value.aliases,
                                      metadata=value.metadata, description=value.description))

    def add_image(self, key: str, value: Image, role: Role) -> None:
        data, note, notice = image_data(value.data)
        if data is None:
            self.problem("unroutable", key, note, "it was dropped")
            return
        if notice:
            self.problem("non_finite", key, f"image: {notice}")
        if note:
            self.problem("converted", key, f"image: {note}")
        if is_image_batch(data) and len(data) > IMAGES_PER_KEY:
            self.problem("limit", key, f"a batch of {len(data)} images is more than the {IMAGES_PER_KEY} wandb keeps "
                         "under one key", f"the {len(data) - IMAGES_PER_KEY} after the first {IMAGES_PER_KEY} "
                         "were dropped")
            data = data[:IMAGES_PER_KEY]
        self.place_media(key, Image(data, caption=value.caption), role)

    def add_histogram(self, key: str, value: Histogram, role: Role) -> None:
        if value.counts is None and not all(map(math.isfinite, value.values)):
            finite = tuple(v for v in value.values if math.isfinite(v))
            self.problem("non_finite", key, f"histogram: {_non_finite_count(len(value.values) - len(finite))} left out")
            value = Histogram(finite, num_bins=value.num_bins)
        fitted, note = within_bins(value)
        if note:
            self.problem("converted", key, f"histogram: {note}")
        self.place(key, fitted, role)

    def add_chart(self, key: str, chart: Any, role: Role) -> None:
        """A ``wandb.plot`` chart: its table under ``<key>_table``, its panel in the config (as ``run.log``)."""
        chart.set_key(key)
        self.place_media(chart.spec.table_key, chart.table, role, table=True)
        self.other.append(DeclareChart(key=key, spec=chart.spec.config_value))

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
            self.problem("converted", key, f"table column {column!r} holds values of type {kind}",
                         "they were stored as str()")
        if len(rows) > TABLE_MAX_ROWS:
            self.problem("limit", key, f"a table of {len(rows)} rows is more than the {TABLE_MAX_ROWS} rows wandb "
                         "keeps of a table (10000 in the run's media file)",
                         f"the {len(rows) - TABLE_MAX_ROWS} rows after the first {TABLE_MAX_ROWS} were dropped")
        self.place_media(key, Table(table.columns, rows), role, table=True)

    def cell(self, key: str, cell: Any) -> Any:
        number = as_number(cell)
        if number is not None:
            return number
        if cell is None or isinstance(cell, str) or is_wandb_value(cell):
            return cell
        if isinstance(cell, Image) or is_pil_image(cell) or is_matplotlib_figure(cell):
            image = cell if isinstance(cell, Image) else Image(cell)
            data, note, _ = image_data(image.data)
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
            histogram, left_out = histogram_of(array)
            if left_out:
                self.problem("non_finite", key, f"histogram: {_non_finite_count(left_out)} left out")
            self.place(key, histogram, role)
        elif dtype == "uint8" and (len(shape) == 2 or (len(shape) == 3 and shape[2] in IMAGE_CHANNELS)):
            self.add_image(key, Image(array), role)
        elif array.size == 1 and kind in "biuf":
            self.add(key, array.reshape(()), role)
        else:
            self.problem("unroutable", key,
                         f"an array of shape {shape} and dtype {dtype} is not guessed; wrap it in "
                         "instrument.Image(...) or instrument.Table(...)", "it was dropped")

    def records(self, axis: str | None, summary: dict[str, str]) -> tuple[Record, ...]:
        out: list[Record] = []
        if self.point:
            out.append(Point(values=self.point, axis=axis, step=self.step, summary=summary, function=self.function))
        if self.eval_point:
            out.append(Point(values=self.eval_point, axis=self.prefix, step=self.eval_step, function=self.function))
        if self.summary:
            out.append(SummaryUpdate(values=self.summary, owned=self.role == "summary", function=self.function))
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
        step: an explicit step (``instrument.log(..., step=k)``) of a stage's point; it wins over
            the mapping's ``step`` key, with a problem when the two differ. With no axis to go on
            (an eval, no prefix) it is a problem and not used.
        summary: a stage's summary aggregations, ``{key: "min"}`` (keys without the prefix).

    Returns:
        The records in order (point, eval series point, summary update, then config, files,
        artifacts, alerts) and the problems found. Never raises for bad values.
    """
    if value is None:
        return Routed((), ())
    builder = _Builder(role, prefix, function, step)
    if step is not None and (role == "summary" or prefix is None):
        where = "an eval's values are summary keys" if role == "summary" else "outside a stage a row has no step axis"
        builder.problem("bad_step", join(prefix, "step"), f"step={step} has no axis to go on: {where}",
                        "the step was not used")
        builder.step = None
    if _is_plain_mapping(value):
        builder.add_mapping(value, prefix, role)
    elif isinstance(value, Summary | Series):
        builder.add_mapping(value.values, prefix, "summary" if isinstance(value, Summary) else "series")
    elif isinstance(value, Config):
        builder.add_config(value)
    else:
        builder.add(join(prefix, "value"), value)
    ops = {join(prefix, key): op for key, op in (summary or {}).items()}
    records = builder.records(prefix if role == "series" else None, ops)
    if not records and not builder.problems and builder.keys:
        builder.problem("bad_step", next(iter(builder.keys)), "the point holds only its step", "nothing was written")
    return Routed(records, tuple(builder.problems))


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
    if type(values) is not dict or not values or (step is not None and prefix is None):
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
