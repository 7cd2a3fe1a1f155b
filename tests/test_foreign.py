"""wandb objects carried as their state: rebuilt with equal attributes and byte-equal files."""

from __future__ import annotations

import json
import pathlib
from typing import Any

import numpy as np
import pytest

from instrument._foreign import (
    Encoder,
    ForeignError,
    ForeignValue,
    decode,
    materialize,
    state_of,
)


def _inside(folder: pathlib.Path, name: str) -> pathlib.Path:
    path = (folder / name).resolve()
    assert folder.resolve() in path.parents
    return path


def _objects() -> dict[str, Any]:
    import matplotlib as mpl

    mpl.use("Agg")
    import matplotlib.pyplot as plt  # wandb.Image(figure) needs pyplot imported
    import plotly.graph_objects as go
    import wandb

    figure = plt.figure(figsize=(1, 1), dpi=20)
    figure.add_subplot().plot([1, 2])
    boxes = {"pred": {"box_data": [{"position": {"minX": 0.1, "maxX": 0.5, "minY": 0.1, "maxY": 0.5},
                                    "class_id": 1}], "class_labels": {1: "cat"}}}
    masks = {"m": {"mask_data": np.eye(4, dtype=np.uint8), "class_labels": {0: "bg", 1: "fg"}}}
    return {
        "image": wandb.Image(np.arange(48, dtype=np.uint8).reshape(4, 4, 3), caption="c"),
        "annotated": wandb.Image(np.zeros((4, 4, 3), np.uint8), boxes=boxes, masks=masks),
        "figure": wandb.Image(figure),
        "histogram": wandb.Histogram([1, 2, 3]),
        "html": wandb.Html("<b>x</b>"),
        "table": wandb.Table(["a", "i"], [[1, wandb.Image(np.full((2, 2), 5, np.uint8))]]),
        "mixed": wandb.Table(["a"], [[1], ["x"]], allow_mixed_types=True),
        "plotly": wandb.Plotly(go.Figure(go.Scatter(x=[1], y=[2]))),
        "points": wandb.Object3D(np.arange(15.0).reshape(5, 3)),
        "chart": wandb.plot.line(wandb.Table(data=[[1, 2]], columns=["x", "y"]), "x", "y", title="t"),
        "list": [wandb.Image(np.full((2, 2), i, np.uint8)) for i in range(2)],
    }


def _round_trip(tmp_path: pathlib.Path, value: Any) -> Any:
    encoded = json.loads(json.dumps(Encoder(tmp_path).encode(value)))
    return materialize(decode(encoded, tmp_path, _inside))


def _comparable(value: Any) -> Any:
    """Attributes, recursively, with each file replaced by its bytes (its path differs by design)."""
    if isinstance(value, list | tuple):
        return [_comparable(v) for v in value]
    if isinstance(value, set):
        return sorted(map(repr, value))
    if isinstance(value, dict):
        return {k: _comparable(v) for k, v in value.items()}
    if isinstance(value, np.ndarray):
        return ("array", value.dtype.str, value.tolist())
    if type(value).__module__.startswith("wandb"):
        state = {k: (pathlib.Path(v).read_bytes() if k == "_path" and v else _comparable(v))
                 for k, v in vars(value).items()}
        return (type(value).__qualname__, state)
    return value


NAMES = ["annotated", "chart", "figure", "histogram", "html", "image", "list", "mixed", "plotly", "points", "table"]


def test_the_names_cover_every_object() -> None:
    """The parametrized names are exactly the objects built."""
    assert NAMES == sorted(_objects())


@pytest.mark.parametrize("name", NAMES)
def test_a_wandb_object_is_rebuilt_with_equal_state_and_file_bytes(name: str, tmp_path: pathlib.Path) -> None:
    """Every kind of wandb media and chart comes back of its class, with equal attributes and files."""
    original = _objects()[name]
    assert _comparable(original) == _comparable(_round_trip(tmp_path, original))


def test_decoded_objects_are_foreign_values_until_materialized(tmp_path: pathlib.Path) -> None:
    """Decoding builds no wandb object: the recorder can read the class name and state without wandb."""
    import wandb

    encoded = json.loads(json.dumps(Encoder(tmp_path).encode(wandb.Histogram([1, 2]))))
    decoded = decode(encoded, tmp_path, _inside)
    name, log_type, state = state_of(decoded)
    assert (True, "Histogram", "histogram", [1, 2.0]) == (isinstance(decoded, ForeignValue), name, log_type,
                                                          [state["bins"][0], state["bins"][-1]])


def test_a_class_outside_wandb_is_refused(tmp_path: pathlib.Path) -> None:
    """A journal line naming a class outside the wandb package is never imported."""
    with pytest.raises(ValueError, match="not wandb's"):
        decode({"__wandb_state__": "object", "class": "os:system", "state": {}}, tmp_path, _inside)


def test_an_object_holding_something_else_is_refused_with_its_type(tmp_path: pathlib.Path) -> None:
    """A wandb object holding a foreign object (a user's class) cannot cross; the error names the type."""
    import wandb

    table = wandb.Table(["a"], [[object()]], allow_mixed_types=True)
    with pytest.raises(ForeignError, match=r"builtins\.object"):
        Encoder(tmp_path).encode(table)
