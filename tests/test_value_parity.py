"""The recorder agrees with wandb: the same corpus, the same summary, history, config and artifacts.

Every case of ``tests/value_corpus.py`` runs four times: under the recording backend in this
process, on real wandb offline in one subprocess (one run for the whole corpus), and through a
pipeline's journal, both recorded (``Recording.subprocess``) and on real wandb (a pipeline whose
subprocess runs the corpus). Each case's keys sit under its own name, so one run per side holds
every case. A third recorded pass in strict mode checks that strict mode raises exactly for the
cases whose values production drops, with the message production warns with.

What is compared (:func:`facts`): each history key's ``(step, value)`` points on the case's axis,
the summary, the config, custom charts and artifacts, with media reduced to what both sides
describe alike (:func:`canon`: a table's shape, an image's size and caption, a histogram's bins
and counts, the W&B type of any other media).
"""

from __future__ import annotations

import json
import math
import pathlib
import warnings
from collections.abc import Iterable, Iterator
from typing import Any

import pytest
import value_corpus
from helpers import run_script, wandb_env
from value_corpus import CASES, Case, owns

import instrument
from instrument.runfile import RunFile, read_runs
from instrument.testing import recording

pytestmark = pytest.mark.integration

TESTS = pathlib.Path(__file__).resolve().parent

#: Runs every case in this process (``inprocess``) or as a pipeline's subprocess (``child``, run
#: by ``pipeline``), and writes the InstrumentationWarnings each case caused to ``warnings-<mode>.json``.
#: INSTRUMENT_SYNC=1 makes every backend call on the calling thread, so a warning belongs to the
#: case whose call caused it.
SCRIPT = f"""
import json, os, subprocess, sys, warnings
sys.path.insert(0, {str(TESTS)!r})
import instrument
import value_corpus

mode = sys.argv[1]
if mode == "pipeline":
    with instrument.pipeline(project="parity"):
        subprocess.run([sys.executable, __file__, "child"], check=True)
    raise SystemExit(0)
seen = {{}}
for case in value_corpus.CASES:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        value_corpus.run_case(case)
        instrument.flush()
    seen[case.name] = [str(w.message) for w in caught if issubclass(w.category, instrument.InstrumentationWarning)]
with open(f"warnings-{{mode}}.json", "w") as handle:
    json.dump(seen, handle)
"""


# -- what is compared --------------------------------------------------------------------------


def canon(value: Any) -> Any:
    """Return *value* reduced to what the recorder and wandb's run file both say about it."""
    if isinstance(value, float):
        return "NaN" if math.isnan(value) else value
    if isinstance(value, list):
        if value and all(_media_type(v) in ("image", "image-file") for v in value):
            return ("images", len(value))
        return [canon(v) for v in value]
    if not isinstance(value, dict):
        return value
    kind = _media_type(value)
    if kind is None:
        return {key: canon(v) for key, v in value.items()}
    if kind in ("table", "table-file"):
        columns = value.get("ncols", len(value.get("columns", ())))
        return ("table", columns, value.get("nrows", len(value.get("rows", ()))))
    if kind in ("image", "image-file"):
        return ("image", value.get("width"), value.get("height"), value.get("caption"))
    if kind == "images/separated":
        return ("images", value.get("count"))
    if kind == "histogram":
        return ("histogram", canon(value.get("values")), canon(value.get("bins")))
    return (kind,)


def _media_type(value: Any) -> str | None:
    kind = value.get("_type") if isinstance(value, dict) else None
    return kind if isinstance(kind, str) else None


def facts(runs: Iterable[Any], case: Case) -> dict[str, Any]:
    """Return what *runs* (recorded runs or run files) hold of *case*, in comparable form."""
    axis = f"{case.name}/step"
    history: dict[str, list[tuple[Any, Any]]] = {}
    summary: dict[str, Any] = {}
    config: dict[str, Any] = {}
    charts: dict[str, Any] = {}
    artifacts: list[tuple[Any, ...]] = []
    for run in runs:
        for row in run.history:
            for key, value in row.items():
                if key != axis and owns(case, key):
                    history.setdefault(key, []).append((row.get(axis), canon(value)))
        summary.update({key: canon(v) for key, v in run.summary.items() if owns(case, key)})
        config.update({key: v for key, v in run.config.items() if owns(case, key)})
        charts.update({key: v for key, v in run.charts.items() if owns(case, key)})
        artifacts += [(a["name"], a["type"], a["metadata"], a["description"]) for a in run.artifacts
                      if a["name"].startswith(case.name)]
    return {"history": history, "summary": summary, "config": config, "charts": charts,
            "artifacts": sorted(artifacts, key=repr)}


def _dropped_warnings(messages: Iterable[str]) -> list[str]:
    return sorted(m for m in messages if "dropped" in m)


# -- the four sides, each computed once --------------------------------------------------------


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[pathlib.Path]:
    """A working directory for the in-process sides (cases write small files there)."""
    path = tmp_path_factory.mktemp("parity-recorded")
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(path)
        yield path


def _recorded(journal: bool) -> tuple[list[Any], dict[str, list[str]]]:
    seen: dict[str, list[str]] = {}
    # The pipeline's ingestion warns after the cases ran (outside each case's block); keep those too.
    with warnings.catch_warnings(record=True), recording(strict=False) as recorded:
        warnings.simplefilter("always")
        if journal:
            with instrument.pipeline(project="parity"), recorded.subprocess():
                _run_cases(seen)
        else:
            _run_cases(seen)
    return recorded.runs, seen


def _run_cases(seen: dict[str, list[str]]) -> None:
    for case in CASES:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            value_corpus.run_case(case)
        seen[case.name] = [str(w.message) for w in caught if issubclass(w.category, instrument.InstrumentationWarning)]


@pytest.fixture(scope="module")
def recorded(workdir: pathlib.Path) -> tuple[list[Any], dict[str, list[str]]]:
    """The corpus under the recording backend, in this process, lenient (as in production)."""
    return _recorded(journal=False)


@pytest.fixture(scope="module")
def recorded_journal(workdir: pathlib.Path) -> tuple[list[Any], dict[str, list[str]]]:
    """The corpus recorded as a pipeline's subprocess: evals and config cross the journal."""
    return _recorded(journal=True)


@pytest.fixture(scope="module")
def strict_errors(workdir: pathlib.Path) -> dict[str, str]:
    """The message of the InstrumentationError each case raised in strict mode (cases that raised)."""
    errors: dict[str, str] = {}
    for case in CASES:
        with recording(), warnings.catch_warnings(record=True):  # advisory warnings are not the point here
            warnings.simplefilter("always")
            try:
                value_corpus.run_case(case)
            except instrument.InstrumentationError as error:
                errors[case.name] = str(error)
    return errors


@pytest.fixture(scope="module")
def written(tmp_path_factory: pytest.TempPathFactory) -> tuple[list[RunFile], dict[str, list[str]]]:
    """The corpus on real wandb offline, in one process: one standalone run."""
    return _written_with(tmp_path_factory.mktemp("parity-wandb"), "inprocess")


@pytest.fixture(scope="module")
def written_journal(tmp_path_factory: pytest.TempPathFactory) -> tuple[list[RunFile], dict[str, list[str]]]:
    """The corpus on real wandb, run by a pipeline's subprocess: evals cross the journal."""
    return _written_with(tmp_path_factory.mktemp("parity-journal"), "pipeline")


def _written_with(root: pathlib.Path, mode: str) -> tuple[list[RunFile], dict[str, list[str]]]:
    script = SCRIPT.replace("mode = sys.argv[1]", f"mode = sys.argv[1] if len(sys.argv) > 1 else {mode!r}")
    run_script(root, script, name="parity.py", env=wandb_env(root, INSTRUMENT_SYNC="1"), timeout=600)
    warned = json.loads((root / f"warnings-{'child' if mode == 'pipeline' else mode}.json").read_text())
    return read_runs(root / "wandb"), warned


# -- the suite ---------------------------------------------------------------------------------

ids = [case.name for case in CASES]


@pytest.mark.parametrize("case", CASES, ids=ids)
def test_recorder_stores_what_wandb_stores(case: Case, recorded: Any, written: Any) -> None:
    """In one process, the recording holds exactly what wandb wrote for the case."""
    assert facts(written[0], case) == facts(recorded[0], case)


@pytest.mark.parametrize("case", CASES, ids=ids)
def test_journal_lands_what_in_process_lands(case: Case, written: Any, written_journal: Any) -> None:
    """On wandb, the case lands identically from a pipeline's subprocess (through the journal)."""
    assert facts(written[0], case) == facts(written_journal[0], case)


@pytest.mark.parametrize("case", CASES, ids=ids)
def test_recorded_journal_agrees_with_wandb_journal(case: Case, recorded_journal: Any, written_journal: Any) -> None:
    """Through the journal too, the recording holds what wandb wrote."""
    assert facts(written_journal[0], case) == facts(recorded_journal[0], case)


@pytest.mark.parametrize("case", CASES, ids=ids)
def test_every_value_lands_but_the_dropped_ones(case: Case, written: Any) -> None:
    """Each key the case drops is absent from the run (a collision keeps the first value); at least
    one key of the case landed."""
    found = facts(written[0], case)
    landed = set(found["history"]) | set(found["summary"]) | set(found["config"])
    assert (set(), True) == (landed & set(case.absent), bool(landed))


@pytest.mark.parametrize("case", CASES, ids=ids)
def test_production_warns_for_each_dropped_key(case: Case, recorded: Any, written: Any) -> None:
    """Production names every dropped key in a warning, and the recorder warns exactly as wandb does."""
    warned = _dropped_warnings(written[1][case.name])
    named = {key for key in case.dropped if any(f"key {key!r}" in message for message in warned)}
    assert (set(case.dropped), warned) == (named, _dropped_warnings(recorded[1][case.name]))


@pytest.mark.parametrize("case", CASES, ids=ids)
def test_strict_mode_raises_exactly_where_production_drops(case: Case, strict_errors: dict[str, str],
                                                           written: Any) -> None:
    """Strict mode raises for a case iff production drops one of its values, with production's message."""
    error = strict_errors.get(case.name)
    warned = _dropped_warnings(written[1][case.name])
    assert bool(case.dropped) == (error is not None)
    if error is not None:
        assert any(message.startswith(error) for message in warned), (error, warned)


def test_the_corpus_covers_every_role_and_drops() -> None:
    """The corpus has stages, evals and configs, and cases that drop values (so the suite can fail)."""
    roles = {case.role for case in CASES}
    assert ({"stage", "eval", "config"}, True) == (roles, any(case.dropped for case in CASES))
