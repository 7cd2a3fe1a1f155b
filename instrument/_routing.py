"""Pure routing: (returned value, decorator role, prefix) -> records and problems.

No wandb, no I/O, no global state. numpy, torch and pandas objects are recognised by duck typing
and their module name, so none of them is imported here unless the caller already handed one in.

Rules (README "Where values land"):

* role ``series`` (``training_stage``): numbers become one history point; role ``summary``
  (``eval_summary``): numbers become summary keys.
* strings go to the summary (W&B does not chart strings), from either role.
* nested mappings flatten with ``/``; every key gets the decorator's prefix.
* markers (``Summary``, ``Series``, ``Config``, ``Alert``, ``File``/``Path``, ``Artifact``) override
  the role; ``Table``/``Image``/``Histogram`` are media: history on a stage's axis, summary from
  an eval.
* an unmarked uint8 array HxW or HxWx1/3/4 is an image, a 1-D array of more than one element a
  histogram; any other array is not guessed.
* anything else is a problem naming the function, the key and the type; the rest still lands.
"""

from __future__ import annotations

import math
import pathlib
from collections.abc import Iterator, Mapping
from typing import Any, Literal

import attrs

from instrument._problems import Problem
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

_MEDIA = (Table, Image, Histogram)


@attrs.frozen(slots=True)
class Routed:
    """What routing made of one value: *records* to write and *problems* to report."""

    records: tuple[Record, ...]
    problems: tuple[Problem, ...]


def _module(value: object) -> str:
    return type(value).__module__.split(".", 1)[0]


def is_tensor(value: object) -> bool:
    """Return whether *value* looks like a torch/jax tensor (duck typing, nothing imported)."""
    return _module(value) in {"torch", "jax", "jaxlib", "tensorflow"} and hasattr(value, "shape")


def is_array(value: object) -> bool:
    """Return whether *value* is a numpy array."""
    return _module(value) == "numpy" and hasattr(value, "ndim") and hasattr(value, "dtype")


def _tensor_to_numpy(value: Any) -> Any:
    for step in ("detach", "cpu"):
        method = getattr(value, step, None)
        if callable(method):
            value = method()
    return value.numpy() if hasattr(value, "numpy") else value


def as_number(value: object) -> int | float | bool | None:
    """Return *value* as a plain Python number, or None if it is not a scalar number.

    Accepts int, float, bool, numpy scalars, 0-d numpy arrays and 0-d tensors (``.item()``).
    """
    if type(value) in (bool, int, float):
        return value  # type: ignore[return-value]
    if isinstance(value, bool | int | float):  # subclasses such as IntEnum
        return int(value) if isinstance(value, int) else float(value)
    scalar = _module(value) == "numpy" or is_tensor(value)
    if scalar and tuple(getattr(value, "shape", (1,))) == () and hasattr(value, "item"):
        item = value.item()
        return item if isinstance(item, bool | int | float) else None
    return None


def as_step(value: object) -> int | None:
    """Return *value* as an exact int step, or None if it is not a whole number.

    ``10``, ``10.0``, ``np.int64(10)`` and a 0-d tensor holding 10 give 10; ``10.5``, ``"10"``,
    NaN and bools give None.
    """
    if isinstance(value, bool):
        return None
    number = as_number(value)
    if isinstance(number, bool) or number is None:
        return None
    if isinstance(number, int):
        return number
    if math.isfinite(number) and number == int(number):
        return int(number)
    return None


def _problem(kind: Any, function: str, key: str, detail: str) -> Problem:
    return Problem(kind=kind, key=key, message=f"instrument: {function}: key {key!r}: {detail}")


def join(prefix: str | None, key: str) -> str:
    """Return ``prefix/key`` (or *key* when there is no prefix)."""
    return f"{prefix}/{key}" if prefix else key


def flatten(
    mapping: Mapping[Any, Any], prefix: str | None, function: str, problems: list[Problem]
) -> Iterator[tuple[str, Any]]:
    """Yield ``(key, leaf)`` for a nested mapping, keys joined with ``/`` under *prefix*.

    A key that is not a string or is empty is reported in *problems* and its value skipped.
    Markers and media are leaves; plain nested mappings recurse.
    """
    for key, value in mapping.items():
        if not isinstance(key, str) or not key:
            problems.append(
                _problem("bad_key", function, join(prefix, repr(key)),
                         f"keys must be non-empty strings, got {type(key).__name__} {key!r}; value dropped")
            )
            continue
        full = join(prefix, key)
        if isinstance(value, Mapping) and not _is_foreign_mapping(value):
            yield from flatten(value, full, function, problems)
        else:
            yield full, value


def _is_foreign_mapping(value: object) -> bool:
    return _module(value) in {"wandb", "omegaconf"}


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

    def claim(self, key: str) -> bool:
        if key in self.keys:
            self.problems.append(
                _problem("collision", self.function, key,
                         "two values flatten to the same key; the later one was dropped")
            )
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
            return
        elif isinstance(value, Summary):
            self.add_mapping(value.values, key, "summary")
        elif isinstance(value, Series):
            self.add_mapping(value.values, key, "series")
        elif isinstance(value, Config):
            self.other.append(ConfigUpdate(values=plain_config(value.values), prefix=self.prefix))
        elif isinstance(value, Alert):
            self.other.append(SendAlert(title=value.title, text=value.text, level=value.level))
        elif isinstance(value, File):
            self.other.append(SaveFile(path=value.path, base_path=value.base_path, policy=value.policy))
        elif isinstance(value, pathlib.PurePath):
            self.other.append(SaveFile(path=str(value)))
        elif isinstance(value, Artifact):
            self.other.append(
                LogArtifact(path=value.path, type=value.type, name=value.name, aliases=value.aliases)
            )
        elif isinstance(value, _MEDIA):
            self.place(key, value, role)
        elif _module(value) == "wandb":
            self.place(key, value, role)
        elif _module(value) == "PIL" and hasattr(value, "size"):
            self.place(key, Image(value), role)
        elif _module(value) == "pandas" and hasattr(value, "columns") and hasattr(value, "itertuples"):
            columns = [str(c) for c in value.columns]
            rows = [list(r) for r in value.itertuples(index=False, name=None)]
            self.place(key, Table(columns, rows), role)
        elif is_array(value) or is_tensor(value):
            self.add_array(key, _tensor_to_numpy(value) if is_tensor(value) else value, role)
        else:
            self.problems.append(
                _problem("unroutable", self.function, key,
                         f"a value of type {type(value).__module__}.{type(value).__qualname__} fits no "
                         "rule (numbers, strings, mappings, arrays, markers); it was dropped")
            )

    def add_mapping(self, mapping: Mapping[Any, Any], prefix: str | None, role: Role) -> None:
        for key, leaf in flatten(mapping, prefix, self.function, self.problems):
            self.add(key, leaf, role)

    def add_array(self, key: str, array: Any, role: Role) -> None:
        shape = tuple(array.shape)
        dtype = str(array.dtype)
        if len(shape) == 1 and shape[0] > 1 and array.dtype.kind in "biuf":
            self.place(key, Histogram([float(x) for x in array.tolist()]), role)
        elif dtype == "uint8" and (len(shape) == 2 or (len(shape) == 3 and shape[2] in (1, 3, 4))):
            self.place(key, Image(array.copy()), role)
        elif len(shape) == 1 and shape[0] == 1:
            self.add(key, array.reshape(()), role)
        else:
            self.problems.append(
                _problem("unroutable", self.function, key,
                         f"an array of shape {shape} and dtype {dtype} is not guessed; wrap it in "
                         "instrument.Image(...) or instrument.Table(...); it was dropped")
            )

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
        value: the returned value: a mapping (one point / one summary update), a bare number
            (``<prefix>/value``), a marker, or ``None`` (nothing).
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
    if isinstance(value, Mapping) and not _is_foreign_mapping(value):
        mapping = dict(value)
        if role == "series" and "step" in mapping:
            raw = mapping.pop("step")
            from_key = as_step(raw)
            if from_key is None:
                builder.problems.append(
                    _problem("bad_step", function, join(prefix, "step"),
                             f"step must be a whole number, got {type(raw).__name__} {raw!r}; "
                             "the next automatic step was used")
                )
            elif step is not None and step != from_key:
                builder.problems.append(
                    _problem("bad_step", function, join(prefix, "step"),
                             f"step={step} and the mapping's step key {from_key} differ; step={step} was used")
                )
            elif step is None:
                step = from_key
        builder.add_mapping(mapping, prefix, role)
    elif isinstance(value, Summary | Series):
        builder.add_mapping(value.values, prefix, "summary" if isinstance(value, Summary) else "series")
    else:
        builder.add(join(prefix, "value"), value)
    ops = {join(prefix, key): op for key, op in (summary or {}).items()}
    axis = prefix if role == "series" else None
    return Routed(builder.records(axis, step, ops), tuple(builder.problems))


def plain_config(value: Any) -> Any:
    """Return *value* as plain config data: nesting kept, paths as strings, tuples as lists.

    Accepts mappings, attrs and dataclass instances, OmegaConf configs (recognised, not imported),
    sequences and scalars; numpy scalars become plain numbers.
    """
    if _module(value) == "omegaconf":
        from omegaconf import OmegaConf  # type: ignore[import-not-found]  # only when one was passed

        value = OmegaConf.to_container(value, resolve=True)
    if attrs.has(type(value)):
        value = attrs.asdict(value, recurse=False)
    elif hasattr(value, "__dataclass_fields__") and not isinstance(value, type):
        import dataclasses

        value = {f.name: getattr(value, f.name) for f in dataclasses.fields(value)}
    if isinstance(value, Mapping):
        return {str(k): plain_config(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [plain_config(v) for v in value]
    if isinstance(value, pathlib.PurePath):
        return str(value)
    number = as_number(value)
    if number is not None:
        return number
    return value


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
    point: dict[str, Any] = {}
    for key, value in values.items():
        if type(key) is not str or not key or key == "step" or type(value) not in _PLAIN_NUMBERS:
            return None
        point[f"{prefix}/{key}" if prefix else key] = value
    return Routed((Point(values=point, axis=prefix, step=step, summary=summary),), ())
