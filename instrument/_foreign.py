"""wandb's own objects as plain state, so that one made in a subprocess lands as it would in-process.

A ``wandb.Image``, ``wandb.Html``, ``wandb.Table``, ``wandb.plot`` chart and the like is carried
across processes as its class name and its attributes (``vars(obj)``), recursively, in JSON: the
files it made (its ``_path``: a PNG, an HTML page, a point cloud) and numpy arrays are copied next
to the journal. The owner rebuilds an object of the same class with the same attributes
(:func:`materialize`), so ``run.log`` stores exactly what it stores for the original: the same file
bytes, the same sha256, the same fields. Only classes of the ``wandb`` package are rebuilt.

Nothing here imports wandb except :func:`materialize`, which the wandb backend calls when it writes
a rebuilt object (wandb is imported there already).
"""

from __future__ import annotations

import importlib
import itertools
import os
import shutil
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import attrs

from instrument._kinds import module_of

#: The key marking an encoded non-JSON value inside a journal line.
TAG = "__wandb_state__"


class ForeignError(ValueError):
    """A wandb object holds something that cannot cross to another process (the message says what)."""


def is_wandb_object(value: object) -> bool:
    """Return whether *value* is an object of a class from the ``wandb`` package (media, charts, types)."""
    module = type(value).__module__
    return (module == "wandb" or module.startswith("wandb.")) and hasattr(value, "__dict__")


def class_path(value: object) -> str:
    """Return ``module:qualname`` of *value*'s class."""
    kind = type(value)
    return f"{kind.__module__}:{kind.__qualname__}"


@attrs.frozen(slots=True, eq=False)
class ForeignValue:
    """A wandb object read back from a journal: its class and its attributes, not yet rebuilt.

    Attributes:
        cls: the class as ``module:qualname`` (``wandb.sdk.data_types.html:Html``).
        state: the object's attributes, decoded: plain data, absolute paths of the copied files,
            numpy arrays, and nested :class:`ForeignValue` for the wandb objects it holds.
    """

    cls: str
    state: dict[str, Any]
    log_type: str | None = None  # the class's ``_log_type`` (``"html-file"``), what W&B calls the media

    @property
    def name(self) -> str:
        """The class name alone (``Html``)."""
        return self.cls.rsplit(":", 1)[-1].rsplit(".", 1)[-1]


class Encoder:
    """Encode wandb objects into JSON-safe data, copying their files and arrays into *folder*.

    Args:
        folder: where copies go (a journal's files folder); names are unique per encoder.
        counter: numbers for the copies' names (share one between encoders of one folder).
    """

    def __init__(self, folder: Path, counter: Iterator[int] | None = None) -> None:
        self.folder = folder
        self.counter = counter if counter is not None else itertools.count()

    def encode(self, value: Any) -> Any:
        """Return *value* as JSON-safe data.

        Raises:
            ForeignError: *value* holds an object that is neither plain data, a numpy array nor a
                wandb object (the message names its type).
            OSError: a file the object made cannot be copied.
        """
        if value is None or isinstance(value, bool | int | float | str):
            return value
        if isinstance(value, list):
            return [self.encode(item) for item in value]
        if isinstance(value, tuple):
            return {TAG: "tuple", "items": [self.encode(item) for item in value]}
        if isinstance(value, set | frozenset):
            return {TAG: "set", "items": [self.encode(item) for item in value]}
        if isinstance(value, dict):
            if all(isinstance(key, str) and key != TAG for key in value):
                return {key: self.encode(item) for key, item in value.items()}
            return {TAG: "dict", "items": [[self.encode(key), self.encode(item)] for key, item in value.items()]}
        if module_of(value) == "numpy":
            return self._numpy(value)
        if is_wandb_object(value):
            return self._object(value)
        raise ForeignError(f"a {type(value).__module__}.{type(value).__qualname__} inside it cannot be carried")

    def _numpy(self, value: Any) -> Any:
        import numpy as np  # only for a numpy value handed in, so numpy is installed

        if isinstance(value, np.ndarray):
            if value.dtype.hasobject:
                return {TAG: "list", "items": self.encode(value.tolist())}
            name = f"state-{next(self.counter)}.npy"
            np.save(self.folder / name, value, allow_pickle=False)
            return {TAG: "ndarray", "file": name}
        if isinstance(value, np.generic):
            return {TAG: "scalar", "dtype": str(value.dtype), "value": value.item()}
        raise ForeignError(f"a numpy {type(value).__qualname__} inside it cannot be carried")

    def _object(self, value: Any) -> dict[str, Any]:
        state: dict[str, Any] = {}
        for key, item in vars(value).items():
            if key == "_path" and isinstance(item, str) and os.path.isfile(item):
                name = f"state-{next(self.counter)}{''.join(Path(item).suffixes[-2:])}"
                shutil.copy2(item, self.folder / name)
                state[key] = {TAG: "file", "name": name}
            else:
                state[key] = self.encode(item)
        return {TAG: "object", "class": class_path(value), "type": getattr(type(value), "_log_type", None),
                "state": state}


def decode(value: Any, folder: Path, inside: Callable[[Path, str], Path]) -> Any:
    """Return encoded *value* decoded: files as absolute paths under *folder*, wandb objects as
    :class:`ForeignValue`.

    Args:
        value: what :meth:`Encoder.encode` returned, read back from JSON.
        folder: where the copies are.
        inside: returns ``folder/name`` resolved, refusing a name that leads outside *folder*
            (raises).

    Raises:
        ValueError: an encoded value is malformed (an unknown tag, a class outside wandb).
    """
    if isinstance(value, list):
        return [decode(item, folder, inside) for item in value]
    if not isinstance(value, dict):
        return value
    tag = value.get(TAG)
    if tag is None:
        return {key: decode(item, folder, inside) for key, item in value.items()}
    if tag == "tuple":
        return tuple(decode(item, folder, inside) for item in value["items"])
    if tag == "set":
        return {decode(item, folder, inside) for item in value["items"]}
    if tag == "dict":
        return {decode(key, folder, inside): decode(item, folder, inside) for key, item in value["items"]}
    if tag == "list":
        import numpy as np

        return np.array(decode(value["items"], folder, inside), dtype=object)
    if tag == "ndarray":
        import numpy as np

        return np.load(inside(folder, value["file"]), allow_pickle=False)
    if tag == "scalar":
        import numpy as np

        return np.dtype(value["dtype"]).type(value["value"])
    if tag == "file":
        return str(inside(folder, value["name"]))
    if tag == "object":
        cls = str(value["class"])
        if not cls.startswith(("wandb:", "wandb.")):
            raise ValueError(f"a journal names the class {cls!r}, which is not wandb's")
        state = {key: decode(item, folder, inside) for key, item in value["state"].items()}
        log_type = value.get("type")
        return ForeignValue(cls, state, log_type if isinstance(log_type, str) else None)
    raise ValueError(f"unknown encoded value {tag!r}")


def materialize(value: Any) -> Any:
    """Return *value* with every :class:`ForeignValue` rebuilt as an object of its wandb class.

    Imports the wandb module that defines each class (only the wandb backend calls this).

    Raises:
        TypeError: a class no longer exists in the installed wandb.
    """
    if isinstance(value, ForeignValue):
        module, _, qualname = value.cls.partition(":")
        found: Any = importlib.import_module(module)
        for part in qualname.split("."):
            found = getattr(found, part, None)
        if not isinstance(found, type):
            raise TypeError(f"wandb has no class {value.cls!r}")
        rebuilt: Any = object.__new__(found)
        rebuilt.__dict__.update({key: materialize(item) for key, item in value.state.items()})
        return rebuilt
    if isinstance(value, list):
        return [materialize(item) for item in value]
    if isinstance(value, tuple):
        return tuple(materialize(item) for item in value)
    if isinstance(value, dict):
        return {key: materialize(item) for key, item in value.items()}
    return value


def state_of(value: Any) -> tuple[str, str | None, Mapping[str, Any]]:
    """Return ``(class name, W&B media type, attributes)`` of a live wandb object or a
    :class:`ForeignValue`."""
    if isinstance(value, ForeignValue):
        return value.name, value.log_type, value.state
    return type(value).__name__, getattr(type(value), "_log_type", None), vars(value)


@attrs.frozen(slots=True)
class PlotlyFigure:
    """A plotly figure read back from a journal: its JSON (``figure.to_json()``).

    The wandb backend rebuilds the figure and logs it as wandb logs a plotly figure (an
    interactive chart); the recorder describes it as one.
    """

    json: str = attrs.field(repr=False)
