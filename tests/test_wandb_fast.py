"""Tests of the fast route for plain-number rows into wandb-core (instrument._backends.wandb_fast)."""

from __future__ import annotations

import collections
import json
from pathlib import Path
from typing import Any

import pytest
from helpers import run_script

from instrument._backends.wandb_fast import HistoryWriter, is_plain_row, value_json
from instrument._transaction_log import split_records
from instrument.runfile import find_run_files

#: Rows with every kind of plain value the fast route takes, including the JSON special cases.
ROWS_CODE = """
rows = [
    {"op/a": i * 0.5, "op/b": i, "op/flag": bool(i % 2), "op/nan": float("nan"), "op/inf": float("inf"),
     "op/ninf": float("-inf"), "op/neg0": -0.0, "op/tiny": 1e-300 * i, "op/big": 2**70 if i % 2 else -3,
     "op/long/key/" + "x" * 300: 1.0 / (i + 1), "op/step": i}
    for i in range(150)
]
"""


@pytest.mark.parametrize(
    "value",
    [0.0, -0.0, 1.5, 1e-300, 1e300, 1 / 3, float("nan"), float("inf"), float("-inf"), 0, -7, 2**70, True, False],
)
def test_value_json_is_the_text_of_pythons_json_encoder(value: Any) -> None:
    """Every plain value is written as the JSON text run.log writes for it."""
    assert json.JSONEncoder(allow_nan=True).encode(value) == value_json(value)


@pytest.mark.parametrize(
    ("row", "plain"),
    [
        ({"loss": 0.5, "op/step": 3, "ok": True}, True),
        ({}, True),
        ({"loss": "0.5"}, False),
        ({"loss": None}, False),
        ({"loss": {"a": 1.0}}, False),
        ({"loss": [1.0]}, False),
        ({"_step": 1}, False),
        ({"_timestamp": 1.0}, False),
        ({"": 1.0}, False),
        ({1: 1.0}, False),
    ],
)
def test_only_rows_of_plain_numbers_under_string_keys_take_the_fast_route(row: dict[Any, Any], plain: bool) -> None:
    """Strings, None, containers, wandb's own underscore keys and odd keys go through run.log."""
    assert plain == is_plain_row(row)


def test_a_numpy_scalar_takes_the_slow_route() -> None:
    """A numpy float is not exactly a float: run.log converts it, the fast route does not."""
    numpy = pytest.importorskip("numpy")
    assert not is_plain_row({"loss": numpy.float64(0.5)})


def test_an_object_that_is_not_a_wandb_run_gets_no_fast_route() -> None:
    """Any doubt about the run means run.log: a stand-in object is refused."""
    assert HistoryWriter.attach(object()) is None


def _records(path: Path) -> list[tuple[str, Any]]:
    """Return the records of a .wandb file, normalized: history and summary items sorted by key
    (wandb-core keeps them in maps of random order), their timestamps and runtimes left out."""
    from instrument import runfile

    pb = runfile._proto()
    raw, _ = split_records(path.read_bytes(), path)
    out: list[tuple[str, Any]] = []
    for data in raw:
        record = pb.Record()
        record.ParseFromString(data)
        kind = record.WhichOneof("record_type")
        items: Any = None
        if kind in ("history", "summary"):
            found = record.history.item if kind == "history" else record.summary.update
            items = sorted(
                (item.key, tuple(item.nested_key),
                 None if item.key in ("_timestamp", "_runtime") or tuple(item.nested_key) in (("_timestamp",), ("_runtime",))
                 else item.value_json)
                for item in found
            )
            if kind == "history":
                items.append(("step", record.history.step.num))
        elif kind == "metric":
            items = str(record.metric)
        out.append((kind, items))
    return out


@pytest.mark.integration
def test_the_fast_route_writes_the_run_file_that_run_log_writes(wandb_root: Path) -> None:
    """The same rows through run.log and through the fast route give the same .wandb records."""
    run_script(wandb_root, "import wandb\nfrom instrument._backends.wandb_fast import HistoryWriter\n" + ROWS_CODE + """
for name in ("slow", "fast"):
    run = wandb.init(project="p", id=name, reinit="create_new")
    run.define_metric("op/a", step_metric="op/step")
    run.log({"first": 1.0})
    writer = HistoryWriter.attach(run)
    assert writer is not None
    for row in rows:
        if name == "slow":
            run.log(row)
        else:
            assert writer.add(row)
            if writer.full:
                writer.send()
    writer.send()
    run.summary.update({"done": 1})
    assert run._local_step == len(rows) + 1
    run.finish()
""")
    slow, fast = (_records(find_run_files(wandb_root / "wandb", name)[0]) for name in ("slow", "fast"))
    assert collections.Counter(kind for kind, _ in slow) == collections.Counter(kind for kind, _ in fast)
    assert 151 == sum(kind == "history" for kind, _ in fast)
    assert [r for r in slow if r[0] in ("history", "summary", "metric")] == \
           [r for r in fast if r[0] in ("history", "summary", "metric")]
