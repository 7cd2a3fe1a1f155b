"""The parity corpus: one case per kind of value a decorated function can return.

Each :class:`Case` names a decorated function (a stage, an eval or a ``run_config``) and the
values its calls return. The parity suite (``tests/test_value_parity.py``) runs every case once
under the recording backend and once on real wandb offline (in-process and through a pipeline
subprocess's journal), all cases in one run each: a case's keys all sit under its own name (the
stage name or the eval prefix; a config case's values under its own config key), so the cases
never touch each other's keys.

The builders import numpy, torch, pandas, matplotlib, plotly, omegaconf and pydantic only when
called, and make the same values every time (no randomness), so both sides see equal values.
"""

from __future__ import annotations

import argparse
import dataclasses
import decimal
import enum
import fractions
import math
import pathlib
import types
from collections.abc import Callable
from typing import Any, Literal, NamedTuple

import attrs

import instrument

Role = Literal["stage", "eval", "config"]


@attrs.frozen
class Case:
    """One decorated function and what its calls return.

    Attributes:
        name: the stage name or eval prefix (every key of the case starts with ``<name>/``);
            for a config case, the config key its values sit under.
        role: ``"stage"`` (``training_stage``), ``"eval"`` (``eval_summary``) or ``"config"``
            (``run_config``, whose returned object is written at the top level of the config).
        build: ``build(i)`` returns the value of the *i*-th call.
        calls: how many times the function is called.
        dropped: the full keys production drops a value of (with a warning naming them); strict
            mode raises on the first call that drops one. Empty: every value lands.
        summary: a stage's summary aggregations (``training_stage(summary=...)``).
        collides: the dropped keys are collisions: the first value lands under the key, the
            later one is dropped.
    """

    name: str
    role: Role
    build: Callable[[int], Any]
    calls: int = 1
    dropped: tuple[str, ...] = ()
    summary: dict[str, str] = attrs.field(factory=dict)
    collides: bool = False

    @property
    def absent(self) -> tuple[str, ...]:
        """The keys that must not be in the run at all."""
        return () if self.collides else self.dropped


# -- builders ----------------------------------------------------------------------------------


def _np() -> Any:
    import numpy as np

    return np


def _torch() -> Any:
    import torch

    return torch


class Meter:
    """An object that is no value (a metric tracker someone returned by mistake)."""


class Color(enum.Enum):
    """An enum in a settings object: stored by its value."""

    RED = "red"


@dataclasses.dataclass
class Optimizer:
    """A nested dataclass settings object."""

    name: str = "adam"
    betas: tuple[float, float] = (0.9, 0.999)


@dataclasses.dataclass
class TrainSettings:
    """A dataclass settings object with a nested one, a path, a tuple and an enum."""

    lr: float = 0.001
    data: pathlib.Path = pathlib.Path("/data/train")
    sizes: tuple[int, ...] = (1, 2)
    color: Color = Color.RED
    optimizer: Optimizer = dataclasses.field(default_factory=Optimizer)


@attrs.define
class ModelSettings:
    """An attrs settings object."""

    width: int = 64
    layers: list[int] = attrs.field(factory=lambda: [1, 2])


class Point(NamedTuple):
    """A named tuple in a config: a mapping of its fields."""

    x: int
    y: int


def pydantic_settings() -> Any:
    """Return a pydantic model holding a nested model, and a pydantic-settings object."""
    import pydantic
    import pydantic_settings as ps

    class Head(pydantic.BaseModel):
        classes: int = 10
        dropout: float = 0.1

    class Model(pydantic.BaseModel):
        name: str = "resnet"
        head: Head = Head()
        root: pathlib.Path = pathlib.Path("/ckpt")

    class Env(ps.BaseSettings):
        seed: int = 7
        tags: tuple[str, ...] = ("a", "b")

    return {"model": Model(), "env": Env()}


def omegaconf_settings() -> Any:
    """Return an OmegaConf config (what Hydra hands a task) with an interpolation."""
    from omegaconf import OmegaConf

    return OmegaConf.create({"trainer": {"epochs": 3, "lr": 0.1}, "name": "run-${trainer.epochs}"})


def _figure() -> Any:
    import matplotlib as mpl

    mpl.use("Agg")
    from matplotlib.figure import Figure

    figure = Figure(figsize=(2, 1.5), dpi=50)
    figure.add_subplot().plot([1, 2, 3])
    return figure


def _plotly() -> Any:
    import plotly.graph_objects as go

    return go.Figure(go.Scatter(x=[1, 2, 3], y=[1, 4, 9]))


def _media_files() -> tuple[str, str, str]:
    """Write a GIF, a WAV and a PDB file in the working directory; return their paths."""
    import struct
    import wave

    from PIL import Image as PILImage

    np = _np()
    frames = [PILImage.fromarray(np.full((8, 8, 3), 40 * i, np.uint8)) for i in range(3)]
    frames[0].save("corpus.gif", save_all=True, append_images=frames[1:])
    with wave.open("corpus.wav", "wb") as sound:
        sound.setnchannels(1)
        sound.setsampwidth(2)
        sound.setframerate(8000)
        sound.writeframes(b"".join(struct.pack("<h", i % 100) for i in range(800)))
    pathlib.Path("corpus.pdb").write_text(
        "ATOM      1  N   ALA A   1      11.104   6.134  -6.504  1.00  0.00           N\nEND\n")
    return "corpus.gif", "corpus.wav", "corpus.pdb"


def _wandb_objects() -> dict[str, Any]:
    import wandb

    np = _np()
    table = wandb.Table(columns=["x", "y"], data=[[1, 1], [2, 4], [3, 9]])
    video, audio, molecule = _media_files()
    boxes = {"pred": {"box_data": [{"position": {"minX": 0.1, "maxX": 0.5, "minY": 0.1, "maxY": 0.5}, "class_id": 1}],
                      "class_labels": {1: "cat"}}}
    return {
        "video": wandb.Video(video),
        "audio": wandb.Audio(audio),
        "molecule": wandb.Molecule(molecule),
        "annotated": wandb.Image(np.zeros((8, 8, 3), np.uint8), boxes=boxes,
                                 masks={"m": {"mask_data": np.eye(8, dtype=np.uint8), "class_labels": {0: "bg"}}}),
        "histogram": wandb.Histogram([1.0, 2.0, 2.0, 3.0], num_bins=4),
        "html": wandb.Html("<b>hello</b>"),
        "image": wandb.Image(np.arange(48, dtype=np.uint8).reshape(4, 4, 3), caption="native"),
        "table": wandb.Table(columns=["a", "b"], data=[[1, "x"], [2, "y"]]),
        "plotly": wandb.Plotly(_plotly()),
        "points": wandb.Object3D(np.arange(15.0).reshape(5, 3)),
        "line": wandb.plot.line(table, "x", "y", title="y over x"),
        "bar": wandb.plot.bar(wandb.Table(columns=["label", "v"], data=[["a", 1], ["b", 2]]), "label", "v"),
    }


def _numbers(i: int) -> Any:
    return {"loss": 0.5 - 0.1 * i, "count": i, "ok": i % 2 == 0, "note": f"call {i}"}


def _non_finite(i: int) -> Any:
    return {"nan": math.nan, "inf": math.inf, "ninf": -math.inf, "ok": 1.0}


def _odd_numbers(i: int) -> Any:
    np = _np()
    return {
        "decimal": decimal.Decimal("1.5"),
        "fraction": fractions.Fraction(1, 3),
        "int64_max": 2**63 - 1,
        "past_int64": 2**70 + 1,
        "below_int64": -(2**70) - 1,
        "uint64": np.uint64(2**63 + 5),
    }


def _stepped(i: int) -> Any:
    return {"loss": 1.0 / (i + 1), "step": 100 * i}


def _series_step(i: int) -> Any:
    return instrument.Series({"step": 10 * (i + 1), "point": float(i)})


def _summary_step(i: int) -> Any:
    return {"loss": 1.0} if i == 0 else instrument.Summary({"step": 3, "best": 0.5})


def _nested(i: int) -> Any:
    return {"a": {"b": {"c": float(i)}, "d": i}, "e": None}


def _numpy_scalars(i: int) -> Any:
    np = _np()
    return {"f32": np.float32(0.5), "i64": np.int64(3), "b": np.bool_(True), "zero_d": np.array(2.5)}


def _tensors(i: int) -> Any:
    torch = _torch()
    ramp = torch.linspace(-1.0, 1.0, 100)
    return {
        "scalar": torch.tensor(0.25),
        "fp16_scalar": torch.tensor(0.5, dtype=torch.float16),
        "bf16_scalar": torch.tensor(0.75, dtype=torch.bfloat16),
        "grad": ramp,
        "grad_bf16": ramp.to(torch.bfloat16),
        "grad_fp16": ramp.to(torch.float16),
        "requires_grad": torch.ones(3, requires_grad=True) * 2,
    }


def _arrays(i: int) -> Any:
    np = _np()
    return {
        "hist": np.linspace(0.0, 1.0, 50),
        "one": np.array([4.0]),
        "gray": np.full((4, 6), 128, dtype=np.uint8),
        "small_ints": np.arange(5),
        "loss": 0.1,
    }


def _unguessed_array(i: int) -> Any:
    return {"matrix": _np().ones((3, 3)), "loss": 0.2}


def _tables(i: int) -> Any:
    pd = __import__("pandas")
    np = _np()
    return {
        "mixed": instrument.Table(["id", "pred"], [[0, 3], [1, "cat"]]),
        "frame": pd.DataFrame({"id": [0, 1], "pred": [3, "cat"]}),
        "cells": instrument.Table(["n", "img", "none"],
                                  [[np.float32(1.5), instrument.Image(np.zeros((2, 2), np.uint8)), None]]),
        "loss": 0.5,
    }


def _images(i: int) -> Any:
    np = _np()
    torch = _torch()
    from PIL import Image as PILImage

    return {
        "signed": instrument.Image(np.linspace(-1.0, 1.0, 12).reshape(3, 4)),
        "unit": instrument.Image(np.linspace(0.0, 1.0, 12).reshape(3, 4), caption="unit"),
        "bytes_as_float": instrument.Image(np.linspace(0.0, 255.0, 12).reshape(3, 4)),
        "bf16": instrument.Image(torch.linspace(0.0, 1.0, 48).reshape(3, 4, 4).to(torch.bfloat16)),
        "pil": PILImage.new("RGB", (5, 3), (10, 20, 30)),
        "batch": instrument.Image(np.zeros((2, 4, 4, 3), np.uint8)),
    }


def _histograms(i: int) -> Any:
    np = _np()
    data = np.array([1.0, 2.0, 2.0, 3.0, 9.0])
    return {
        "values": instrument.Histogram([1.0, 2.0, 3.0], num_bins=4),
        "pair": instrument.Histogram(np.histogram(data, bins=[0.0, 2.0, 4.0, 10.0])),
        "with_nan": instrument.Histogram([1.0, math.nan, 2.0]),
    }


def _markers(i: int) -> Any:
    return {
        "loss": 0.3,
        "best": instrument.Summary({"loss": 0.1}),
        "hyper": instrument.Config({"warmup": 10, "schedule": (1, 2)}),
    }


def _eval_series(i: int) -> Any:
    return {"acc": 0.9, "curve": instrument.Series({"point": float(i)})}


def _keys(i: int) -> Any:
    return {
        "recall": {0: 1.0, 1: 0.5},
        "with space": 2.0,
        "ünïcode": 3.0,
        "k" * 300: 4.0,
        "top1.acc": 5.0,
        "img_" + "x" * 240: instrument.Image(_np().zeros((2, 2), _np().uint8)),
    }


def _colliding(i: int) -> Any:
    return {"recall": {0: 1.0, "0": 2.0}, "ok": 1.0}


def _unwritable(i: int) -> Any:
    return {"meter": Meter(), "loss": 0.25, "items": [1, 2, 3]}


def _all_dropped_then_one(i: int) -> Any:
    return {"meter": Meter()} if i == 0 else {"loss": 0.5}


def _figures(i: int) -> Any:
    return {"figure": _figure(), "marked": instrument.Image(_figure(), caption="fig"), "interactive": _plotly()}


def _foreign(i: int) -> Any:
    return _wandb_objects()


def _artifact(i: int) -> Any:
    import wandb

    path = pathlib.Path("corpus-artifact.txt")
    path.write_text("weights")
    native = wandb.Artifact("artifact_eval-native", type="dataset", description="as built",
                            metadata={"rows": 2})
    native.add_file(str(path))
    return {
        "model": instrument.Artifact(path, type="model", name="artifact_eval-model", metadata={"epoch": 3},
                                     description="best"),
        "native": native,
        "score": 1.0,
    }


def _config_namespace(i: int) -> Any:
    return argparse.Namespace(bs=16, lr=0.01, paths=(pathlib.Path("/a"), pathlib.Path("/b")), color=Color.RED)


def _config_objects(i: int) -> Any:
    return {
        "config_objects": {
            "dataclass": TrainSettings(),
            "attrs": ModelSettings(),
            "namespace": types.SimpleNamespace(depth=2),
            "point": Point(1, 2),
            "mapping": types.MappingProxyType({"frozen": True}),
            "omegaconf": omegaconf_settings(),
            **pydantic_settings(),
        }
    }


def both(name: str, build: Callable[[int], Any], *, calls: int = 1, dropped: tuple[str, ...] = ()) -> tuple[Case, Case]:
    """Return a stage case *name* (called *calls* times) and an eval case ``<name>_eval`` (called once)
    of one builder; *dropped* are the dropped keys, without the case's name."""
    return (Case(name, "stage", build, calls=calls, dropped=tuple(f"{name}/{key}" for key in dropped)),
            Case(f"{name}_eval", "eval", build, dropped=tuple(f"{name}_eval/{key}" for key in dropped)))


CASES: tuple[Case, ...] = (
    *both("numbers", _numbers, calls=3),
    *both("non_finite", _non_finite, calls=2),
    *both("nested", _nested, calls=2),
    *both("odd_numbers", _odd_numbers, calls=2),
    *both("bare", lambda i: 0.5 + i, calls=2),
    Case("stepped", "stage", _stepped, calls=3),
    Case("series_step_eval", "eval", _series_step, calls=2),
    Case("summary_step", "stage", _summary_step, calls=2, dropped=("summary_step/step",), collides=True),
    Case("numpy_scalars", "stage", _numpy_scalars),
    *both("tensors", _tensors, calls=2),
    *both("arrays", _arrays),
    Case("unguessed", "stage", _unguessed_array, dropped=("unguessed/matrix",)),
    *both("tables", _tables),
    *both("images", _images),
    *both("histograms", _histograms),
    *both("markers", _markers, calls=2),
    Case("series_eval", "eval", _eval_series, calls=2),
    *both("keys", _keys),
    Case("colliding", "eval", _colliding, dropped=("colliding/recall/0",), collides=True),
    Case("top", "stage", lambda i: {"top1.acc": (0.5, 0.9, 0.7)[i]}, calls=3, summary={"top1.acc": "max"}),
    Case("phase1.warmup", "stage", lambda i: {"loss": 1.0 / (i + 1)}, calls=2),
    *both("unwritable", _unwritable, dropped=("meter", "items")),
    Case("all_dropped", "stage", _all_dropped_then_one, calls=2, dropped=("all_dropped/meter",)),
    *both("figures", _figures),
    *both("foreign", _foreign),
    Case("artifact_eval", "eval", _artifact),
    Case("namespace", "config", _config_namespace),
    Case("config_objects", "config", _config_objects),
)


def decorate(case: Case) -> Callable[[int], Any]:
    """Return the case's function, decorated for its role."""

    def function(i: int) -> Any:
        return case.build(i)

    function.__name__ = function.__qualname__ = f"case_{case.name.replace('.', '_')}"
    if case.role == "stage":
        return instrument.training_stage(case.name, summary=case.summary)(function)
    if case.role == "eval":
        return instrument.eval_summary(prefix=case.name)(function)
    return instrument.run_config(function)


def run_case(case: Case) -> None:
    """Call the case's decorated function ``case.calls`` times."""
    function = decorate(case)
    for i in range(case.calls):
        function(i)


def owns(case: Case, key: str) -> bool:
    """Return whether the history, summary or config *key* belongs to *case*."""
    if case.role == "config":
        return key in _config_keys(case)
    return key == case.name or key.startswith(case.name + "/")


def _config_keys(case: Case) -> set[str]:
    value = case.build(0)
    return set(vars(value)) if isinstance(value, argparse.Namespace) else set(value)
