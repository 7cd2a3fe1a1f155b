"""Settings objects become plain, nested, JSON-safe config data."""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import enum
import json
import pathlib
import types
from typing import Any, NamedTuple

import attrs
import numpy as np
import pytest

from instrument._settings import Note, is_settings, plain


class Mode(enum.Enum):
    FAST = "fast"


class Level(enum.IntEnum):
    HIGH = 3


@dataclasses.dataclass
class Inner:
    path: pathlib.Path = pathlib.Path("/x")


@dataclasses.dataclass
class Outer:
    inner: Inner = dataclasses.field(default_factory=Inner)
    sizes: tuple[int, int] = (1, 2)
    mode: Mode = Mode.FAST


@attrs.define
class Attrs:
    level: Level = Level.HIGH


class Pair(NamedTuple):
    a: int
    b: int


class Meter:
    def __str__(self) -> str:
        return "meter"


class HasToDict:
    def to_dict(self) -> dict[str, Any]:
        return {"hidden": 32}


def pydantic_model() -> Any:
    import pydantic

    class Head(pydantic.BaseModel):
        secret: pydantic.SecretStr = pydantic.SecretStr("hunter2")
        dims: tuple[int, ...] = (3, 4)

    class Model(pydantic.BaseModel):
        head: Head = Head()

    return Model()


def settings_object() -> Any:
    import pydantic_settings

    class Env(pydantic_settings.BaseSettings):
        seed: int = 5

    return Env()


def omegaconf_config() -> Any:
    from omegaconf import OmegaConf

    return OmegaConf.create({"a": 1, "b": "${a}", "broken": "${missing}"})


CASES = {
    "dict": ({"a": {"b": (1, 2)}}, {"a": {"b": [1, 2]}}),
    "dataclass": (Outer(), {"inner": {"path": "/x"}, "sizes": [1, 2], "mode": "fast"}),
    "attrs": (Attrs(), {"level": 3}),
    "namespace": (argparse.Namespace(bs=16, tags={"b", "a"}), {"bs": 16, "tags": ["a", "b"]}),
    "simple namespace": (types.SimpleNamespace(x=1.5), {"x": 1.5}),
    "named tuple": (Pair(1, 2), {"a": 1, "b": 2}),
    "mapping proxy": (types.MappingProxyType({1: "one", Mode.FAST: "f"}), {"1": "one", "fast": "f"}),
    "to_dict": (HasToDict(), {"hidden": 32}),
    "leaves": ({"when": dt.date(2026, 1, 2), "np": np.float32(0.5), "arr": np.arange(3), "cls": Meter,
                "none": None}, {"when": "2026-01-02", "np": 0.5, "arr": [0, 1, 2], "cls": f"{__name__}.Meter",
                                "none": None}),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_settings_objects_become_plain_nested_data(name: str) -> None:
    """Each kind of settings object gives nested dicts of JSON-safe values, with no note."""
    value, expected = CASES[name]
    notes: list[Note] = []
    got = plain(value, notes)
    assert (expected, [], True) == (got, notes, json.loads(json.dumps(got)) == got)


def test_pydantic_models_nest_and_keep_secrets_hidden() -> None:
    """A pydantic model nests its models; a SecretStr is stored masked, never its secret."""
    got = plain({"model": pydantic_model(), "env": settings_object()}, [])
    assert {"model": {"head": {"secret": "**********", "dims": [3, 4]}}, "env": {"seed": 5}} == got


def test_omegaconf_resolves_interpolations_or_keeps_them_as_written() -> None:
    """An OmegaConf config is resolved; one whose interpolation cannot resolve is kept as written."""
    assert {"a": 1, "b": "${a}", "broken": "${missing}"} == plain(omegaconf_config(), [])


def test_an_unknown_leaf_is_stored_as_its_str_with_a_note_naming_the_key() -> None:
    """An object that is no config value is stored as ``str()`` and noted with its key and type."""
    notes: list[Note] = []
    assert {"a": {"m": "meter"}} == plain({"a": {"m": Meter()}}, notes)
    assert [("a/m", True)] == [(n.key, "Meter" in n.message) for n in notes]


@pytest.mark.parametrize("value", [argparse.Namespace(), Outer(), Attrs(), Pair(1, 2), {}, HasToDict()])
def test_settings_objects_are_recognised(value: Any) -> None:
    """Every settings kind is recognised as a settings object."""
    assert is_settings(value)


@pytest.mark.parametrize("value", [3, "x", [1], (1, 2), Outer, np.arange(3), None])
def test_other_values_are_not_settings(value: Any) -> None:
    """Numbers, strings, sequences, classes and arrays are not settings objects."""
    assert not is_settings(value)
