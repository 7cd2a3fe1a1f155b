"""Settings objects as plain config: the forms users keep hyperparameters in, nested and JSON-safe.

Recognised (none is imported; each is recognised by its type or its module): mappings,
dataclass and attrs instances, ``argparse.Namespace`` and ``types.SimpleNamespace``, named
tuples, pydantic models (pydantic-settings too), OmegaConf configs (what Hydra hands a task),
and objects of configuration libraries that offer ``to_dict()``/``as_dict()`` (transformers'
``PretrainedConfig``, ml_collections, jsonargparse). Nested objects stay nested.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import decimal
import enum
import pathlib
import types
import uuid
from collections.abc import Mapping
from typing import Any

import attrs

from instrument._kinds import is_tensor, module_of, tensor_to_numpy, type_name

#: Modules whose objects are data, never settings, even where they offer ``to_dict()``.
_DATA_MODULES = frozenset({"numpy", "pandas", "torch", "jax", "tensorflow", "wandb", "polars"})
_MAX_DEPTH = 64


def _from_pydantic(value: object) -> bool:
    return any(cls.__module__.split(".", 1)[0] == "pydantic" for cls in type(value).__mro__[1:])


def fields(value: Any) -> Mapping[Any, Any] | None:
    """Return the fields of a settings object (one level, values untouched), or None if it is none.

    Raises:
        Exception: whatever the object's own conversion raises (an OmegaConf interpolation that
            cannot be resolved is retried unresolved).
    """
    if isinstance(value, Mapping) and module_of(value) != "omegaconf":
        return value
    if isinstance(value, type):
        return None
    if dataclasses.is_dataclass(value):
        return {field.name: getattr(value, field.name) for field in dataclasses.fields(value)}
    if attrs.has(type(value)):
        return attrs.asdict(value, recurse=False)
    if isinstance(value, argparse.Namespace | types.SimpleNamespace):
        return vars(value)
    if isinstance(value, tuple) and hasattr(value, "_asdict") and hasattr(value, "_fields"):
        return value._asdict()  # type: ignore[no-any-return]
    module = module_of(value)
    if module == "omegaconf":
        from omegaconf import OmegaConf  # one was handed in, so it is installed

        try:
            return OmegaConf.to_container(value, resolve=True)  # type: ignore[return-value]
        except Exception:
            return OmegaConf.to_container(value, resolve=False)  # type: ignore[return-value]
    if _from_pydantic(value):
        dump = getattr(value, "model_dump", None) or getattr(value, "dict", None)
        if callable(dump):
            return dump()  # type: ignore[no-any-return]
    if module not in _DATA_MODULES:
        for name in ("to_dict", "as_dict"):
            method = getattr(value, name, None)
            if callable(method):
                result = method()
                if isinstance(result, Mapping):
                    return result
    return None


def is_settings(value: object) -> bool:
    """Return whether *value* is a settings object (a mapping or one of the kinds above)."""
    try:
        return fields(value) is not None
    except Exception:
        return True


@attrs.frozen(slots=True)
class Note:
    """Something said about a config value: its ``a/b`` *key* and what was done (*message*)."""

    key: str
    message: str


def plain(value: Any, notes: list[Note], key: str = "", depth: int = 0) -> Any:
    """Return *value* as plain, JSON-safe config data; append a :class:`Note` for each leaf stored
    as its ``str()``.

    Settings objects and mappings become dicts (keys as strings, nested objects nested); lists,
    tuples and sets become lists; enums their value; paths, dates, UUIDs and decimals strings;
    numpy and tensor scalars numbers, arrays and tensors nested lists; classes and functions
    their qualified name. Any other object is stored as its ``str()``, with a note.
    """
    if value is None or (isinstance(value, bool | int | float | str) and not isinstance(value, enum.Enum)):
        return value
    if depth > _MAX_DEPTH:
        notes.append(Note(key, f"nested deeper than {_MAX_DEPTH} levels; stored as its str()"))
        return str(value)
    if isinstance(value, enum.Enum):
        return plain(value.value, notes, key, depth + 1)
    try:
        found = fields(value)
    except Exception as error:
        notes.append(Note(key, f"a {type_name(value)} could not be read ({type(error).__name__}: {error}); "
                               "stored as its str()"))
        return str(value)
    if found is not None:
        return {_key(k): plain(v, notes, f"{key}/{_key(k)}" if key else _key(k), depth + 1) for k, v in found.items()}
    if isinstance(value, list | tuple):
        return [plain(item, notes, key, depth + 1) for item in value]
    if isinstance(value, set | frozenset):
        items = [plain(item, notes, key, depth + 1) for item in value]
        try:
            return sorted(items)
        except TypeError:
            return items
    return _leaf(value, notes, key)


def _leaf(value: Any, notes: list[Note], key: str) -> Any:
    if isinstance(value, pathlib.PurePath | uuid.UUID | decimal.Decimal):
        return str(value)
    if isinstance(value, dt.datetime | dt.date | dt.time):
        return value.isoformat()
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    if isinstance(value, type | types.FunctionType | types.BuiltinFunctionType | types.MethodType):
        return f"{value.__module__}.{value.__qualname__}"
    module = module_of(value)
    if is_tensor(value) or (module == "numpy" and hasattr(value, "tolist")):
        return (tensor_to_numpy(value) if is_tensor(value) else value).tolist()
    if module == "torch" and type(value).__name__ in ("device", "dtype"):
        return str(value)
    notes.append(Note(key, f"a {type_name(value)} is not a config value; stored as its str()"))
    return str(value)


def _key(key: Any) -> str:
    if isinstance(key, enum.Enum):
        key = key.value
    return key if isinstance(key, str) else str(key)

