"""Tests of the pytest plugin, run on users' test files with pytest's own pytester."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

pytest_plugins = ["pytester"]

ROOT = Path(__file__).resolve().parent.parent

#: Leave out plugins the user's runs do not need (hypothesis's takes seconds to start).
QUIET = ("-p", "no:hypothesispytest", "-p", "no:cacheprovider", "-p", "no:benchmark")

# A user's instrumented code, as a module the user's tests import.
USER_CODE = textwrap.dedent(
    """
    import instrument

    @instrument.run_config
    def make_config():
        return {"lr": 0.01, "epochs": 3}

    @instrument.training_stage("operator")
    def train_step(loss):
        return {"loss": loss}

    @instrument.eval_summary(prefix="eval")
    def evaluate():
        return {"nrmse": 0.09}

    @instrument.training_stage("operator")
    def train_step_with_meter():
        return {"loss": 1.0, "meter": object()}
    """
)

# Blocks the network and writes, at the end of the session, what the session touched.
GUARD_CONFTEST = textwrap.dedent(
    """
    import json, socket, sys

    attempts = []

    def refuse(self, address, *args, **kwargs):
        attempts.append(repr(address))
        raise OSError("network is off in this test")

    socket.socket.connect = refuse
    socket.socket.connect_ex = refuse

    def pytest_sessionfinish(session):
        with open("touched.json", "w") as handle:
            json.dump({"wandb_imported": "wandb" in sys.modules, "connections": attempts}, handle)
    """
)


@pytest.fixture
def user_project(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> pytest.Pytester:
    """A pytester folder holding the user's code; subprocess runs import this checkout's instrument."""
    monkeypatch.setenv("PYTHONPATH", str(ROOT))
    pytester.makepyfile(user_code=USER_CODE)
    return pytester


def test_c12_unit_test_without_wandb_network_or_files(user_project: pytest.Pytester) -> None:
    """C12: config, a three-point stage and an eval record one run; no wandb, no files, no network."""
    user_project.makeconftest(GUARD_CONFTEST)
    user_project.makepyfile(
        test_user="""
        from user_code import evaluate, make_config, train_step

        def test_training_and_eval(instrument_recorder):
            make_config()
            for loss in (0.3, 0.2, 0.1):
                train_step(loss)
            evaluate()
            run = instrument_recorder.run()
            assert 3 == len(run.history)
            assert 0.09 == run.summary["eval/nrmse"]
            assert {"lr": 0.01, "epochs": 3} == run.config
        """
    )
    result = user_project.runpytest_subprocess(*QUIET)
    result.assert_outcomes(passed=1)
    touched = json.loads((user_project.path / "touched.json").read_text())
    assert {"wandb_imported": False, "connections": []} == touched
    assert [] == sorted(p.name for p in user_project.path.rglob("wandb"))


def test_wrong_summary_value_fails_readably(user_project: pytest.Pytester) -> None:
    """A user test asserting a wrong summary value fails with both values in the message."""
    user_project.makepyfile(
        test_user="""
        from user_code import evaluate

        def test_eval(instrument_recorder):
            evaluate()
            assert 0.1 == instrument_recorder.run().summary["eval/nrmse"]
        """
    )
    result = user_project.runpytest(*QUIET)
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*assert 0.1 == 0.09*"])


def test_strict_by_default_names_function_and_key(user_project: pytest.Pytester) -> None:
    """An unroutable value fails the test with an InstrumentationError naming function and key."""
    user_project.makepyfile(
        test_user="""
        from user_code import train_step_with_meter

        def test_meter(instrument_recorder):
            train_step_with_meter()
        """
    )
    result = user_project.runpytest(*QUIET)
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*InstrumentationError: instrument: train_step_with_meter: key 'operator/meter'*"])


def test_strict_problem_in_a_thread_fails_the_test(user_project: pytest.Pytester) -> None:
    """A problem raised in a thread the test started is reported on the test at teardown."""
    user_project.makepyfile(
        test_user="""
        import threading
        from user_code import train_step_with_meter

        def test_meter_in_a_thread(instrument_recorder):
            thread = threading.Thread(target=train_step_with_meter, name="loader")
            thread.start()
            thread.join()
        """
    )
    result = user_project.runpytest(*QUIET)
    result.assert_outcomes(passed=1, errors=1)
    result.stdout.fnmatch_lines(["*train_step_with_meter: key 'operator/meter'*raised in thread 'loader'*"])


@pytest.mark.parametrize(
    ("marker", "args", "ini"),
    [
        ("@pytest.mark.instrument_lenient", (), ""),
        ("", ("--instrument-lenient",), ""),
        ("", (), "[pytest]\ninstrument_strict = false\n"),
    ],
    ids=["marker", "option", "ini"],
)
def test_lenient_warns_and_keeps_the_rest(
    user_project: pytest.Pytester, marker: str, args: tuple[str, ...], ini: str
) -> None:
    """The marker, the option or the ini setting turn the failure into a warning; the loss lands."""
    if ini:
        user_project.makeini(ini)
    user_project.makepyfile(
        test_user=f"""
        import pytest
        from instrument import InstrumentationWarning
        from user_code import train_step_with_meter

        {marker}
        def test_meter(instrument_recorder):
            with pytest.warns(InstrumentationWarning, match="operator/meter"):
                train_step_with_meter()
            assert [(0, 1.0)] == instrument_recorder.run().series("operator/loss")
        """
    )
    result = user_project.runpytest(*QUIET, "--strict-markers", *args)
    result.assert_outcomes(passed=1)


def test_each_test_gets_a_fresh_run(user_project: pytest.Pytester) -> None:
    """A second test sees only its own run and points, not the first test's."""
    user_project.makepyfile(
        test_user="""
        from user_code import train_step

        def test_first(instrument_recorder):
            train_step(1.0)
            assert [(0, 1.0)] == instrument_recorder.run().series("operator/loss")

        def test_second(instrument_recorder):
            train_step(2.0)
            assert [(0, 2.0)] == instrument_recorder.run().series("operator/loss")
        """
    )
    user_project.runpytest(*QUIET).assert_outcomes(passed=2)


def test_works_with_pytest_mock(user_project: pytest.Pytester) -> None:
    """mocker.spy on the recording's classes sees every call made through the fixture."""
    user_project.makepyfile(
        test_user="""
        from instrument.testing import RecordedRun
        from user_code import evaluate, train_step

        def test_spy(instrument_recorder, mocker):
            log = mocker.spy(RecordedRun, "log")
            summary = mocker.spy(RecordedRun, "update_summary")
            train_step(0.5)
            evaluate()
            assert 1 == log.call_count and 1 == summary.call_count
        """
    )
    user_project.runpytest(*QUIET).assert_outcomes(passed=1)


def test_importing_the_plugin_imports_nothing_heavy() -> None:
    """Importing the plugin imports neither wandb nor numpy nor the recording machinery."""
    code = (
        "import sys, instrument.pytest_plugin\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in {'wandb', 'numpy', 'torch'}"
        " or m in {'instrument.testing', 'instrument._backends.recording'}))"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert "[]" == result.stdout.strip()


def test_fixture_is_registered_through_the_entry_point() -> None:
    """The package declares the plugin under pytest11, so installing it is enough."""
    import tomllib

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert {"instrument": "instrument.pytest_plugin"} == project["entry-points"]["pytest11"]


@pytest.mark.parametrize(("document", "heading", "tests"), [
    ("README.md", "## Testing in ten lines", 1),
    ("docs/testing.md", "# Testing your instrumented code", 4),
])
def test_documented_test_files_pass(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, document: str, heading: str, tests: int
) -> None:
    """The first test file under *heading* in *document* passes as written, touching no wandb folder."""
    section = (ROOT / document).read_text().split(heading + "\n", 1)[1]
    code = section.split("```python\n", 1)[1].split("```", 1)[0]
    monkeypatch.setenv("PYTHONPATH", str(ROOT))
    pytester.makepyfile(test_training=code)
    result = pytester.runpytest_subprocess(*QUIET, "-W", "error::pytest.PytestUnraisableExceptionWarning")
    result.assert_outcomes(passed=tests)
    assert not (pytester.path / "wandb").exists()
