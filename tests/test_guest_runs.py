"""instrument as a guest in a run someone else started (C13): it never moves the owner's step,
never drops its own points, and keeps the owner's config. Real wandb offline, read back from
the ``.wandb`` files."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path
from typing import Any

import pytest
from helpers import run_script

from instrument.runfile import RunFile, read_runs

pytestmark = pytest.mark.integration

#: What wandb-core writes to its debug log when it drops a row below the current step.
DROPPED_STEP_LOG = "ignoring partial history record"

# Two runs of the user's own, one after the other. In "owner", C13: one stage point, then the
# owner's run.log(step=s), 40 times; then three points of another stage per owner row, 10 times;
# the owner's config has lr=0.1 and a run_config returns lr=0.2. In "lagging", 150 stage points
# wait for the owner's one row.
GUEST = """
    import json
    import warnings

    import wandb

    import instrument

    @instrument.training_stage("stage")
    def stage(s):
        return {"x": float(s)}

    @instrument.training_stage("other")
    def other(k):
        return {"y": float(k)}

    @instrument.run_config
    def make_config():
        return {"lr": 0.2, "batch": 8}

    @instrument.eval_summary(prefix="eval")
    def evaluate():
        return {"acc": 0.9}

    out = {}
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        run = wandb.init(mode="offline", project="guest", name="owner", config={"lr": 0.1})
        make_config()
        for s in range(40):
            stage(s)
            run.log({"train_loss": 1.0 / (s + 1)}, step=s)
        for s in range(40, 50):
            for k in range(3):
                other(3 * (s - 40) + k)
            run.log({"train_loss": 1.0 / (s + 1)}, step=s)
        out["owner_step"] = run.step
        run.summary["eval/acc"] = 0.3  # the owner's own summary key, which an eval then writes too
        evaluate()
        run.finish()
        out["owner"] = [str(w.message) for w in seen if issubclass(w.category, instrument.InstrumentationWarning)]

    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        run = wandb.init(mode="offline", project="guest", name="lagging")
        for s in range(150):
            stage(s)
        run.log({"train_loss": 0.5}, step=0)
        run.finish()
        out["lagging"] = [str(w.message) for w in seen if issubclass(w.category, instrument.InstrumentationWarning)]
    print(json.dumps(out))
"""


@pytest.fixture(scope="module")
def guest(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, RunFile], dict[str, Any], str, Path]:
    """Run the guest script once; return its runs by name, its printed result, stderr and folder."""
    root = tmp_path_factory.mktemp("guest") / "runs"
    done = run_script(root, GUEST)
    runs = {run.name: run for run in read_runs(root / "wandb")}
    return runs, json.loads(done.stdout.strip().splitlines()[-1]), done.stderr, root


def test_c13_owner_rows_with_explicit_steps_all_kept(guest: tuple[dict[str, RunFile], dict[str, Any], str, Path]) -> None:
    """C13: all 50 of the owner's ``run.log(..., step=s)`` rows land at steps 0..49 and none was dropped."""
    runs, _, stderr, root = guest
    assert [(s, 1.0 / (s + 1)) for s in range(50)] == runs["owner"].series("train_loss")
    assert "Steps must be monotonically increasing" not in stderr
    logs = "".join(p.read_text() for p in (root / "wandb").glob("*/logs/debug-internal.log"))
    assert DROPPED_STEP_LOG not in logs


def test_c13_every_stage_point_lands_on_its_own_axis(guest: tuple[dict[str, RunFile], dict[str, Any], str, Path]) -> None:
    """C13: the 40 stage points land on ``stage/step`` 0..39, and the 30 points that came three per
    owner row all land too (the ones that could not share a row written into later rows or at the end)."""
    runs, _, _, _ = guest
    run = runs["owner"]
    assert [(s, float(s)) for s in range(40)] == run.series("stage/x")
    assert [(k, float(k)) for k in range(30)] == run.series("other/y")


def test_guest_points_never_move_the_owners_step(guest: tuple[dict[str, RunFile], dict[str, Any], str, Path]) -> None:
    """While the owner logs, its step is its own: after its row 49 wandb's step is still 49."""
    _, out, _, _ = guest
    assert 49 == out["owner_step"]


def test_owner_config_value_is_kept_with_one_warning(guest: tuple[dict[str, RunFile], dict[str, Any], str, Path]) -> None:
    """A run_config value that differs from the owner's keeps the owner's (lr 0.1); new keys land;
    one warning names the key and both values."""
    runs, out, _, _ = guest
    assert {"lr": 0.1, "batch": 8} == runs["owner"].config
    conflicts = [w for w in out["owner"] if "'lr'" in w]
    assert 1 == len(conflicts), out["owner"]
    assert "0.1" in conflicts[0] and "0.2" in conflicts[0]


def test_an_eval_key_the_owner_set_in_its_summary_warns_once_when_the_run_ends(
    guest: tuple[dict[str, RunFile], dict[str, Any], str, Path],
) -> None:
    """The owner set ``eval/acc`` = 0.3 in its summary, then an eval wrote 0.9: the summary keeps
    the value written last, and one warning names the key and both values."""
    runs, out, _, _ = guest
    assert 0.9 == runs["owner"].summary["eval/acc"]
    collisions = [w for w in out["owner"] if "'eval/acc'" in w]
    assert 1 == len(collisions), out["owner"]
    assert "0.9" in collisions[0] and "0.3" in collisions[0]


def test_points_waiting_for_owner_rows_are_kept_and_warned_about_once(
    guest: tuple[dict[str, RunFile], dict[str, Any], str, Path],
) -> None:
    """150 stage points before the owner's only row: all 150 land (written when the run ends), the
    owner's row is kept, and one warning says that points lag."""
    runs, out, _, _ = guest
    run = runs["lagging"]
    assert [(s, float(s)) for s in range(150)] == run.series("stage/x")
    assert [(0, 0.5)] == run.series("train_loss")
    lag = [w for w in out["lagging"] if "wait" in w]
    assert 1 == len(lag), out["lagging"]
    assert [] == [w for w in out["owner"] if "wait" in w]


# instrument's own standalone runs, shared with other code: in "late", other code logs with
# step= below the rows instrument already wrote, then above them; in "handed", a library gets the
# run from wandb.init() and logs without step=, so the run is instrument's own again.
OWN_SHARED = """
    import json
    import warnings

    import wandb

    import instrument

    @instrument.training_stage("stage")
    def stage(s):
        return {"x": float(s)}

    out = {}
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        instrument.configure(project="own", name="late")
        for s in range(3):
            stage(s)
        instrument.flush()
        wandb.log({"framework/loss": 1.0}, step=0)  # LATE_LINE: below instrument's three rows
        for s in range(3, 6):
            stage(s)
            wandb.log({"framework/loss": 0.5}, step=10 + s)
        instrument.finish()

        instrument.configure(project="own", name="handed")
        stage(0)
        instrument.flush()
        run = wandb.init()  # a library gets instrument's run
        for s in range(1, 4):
            stage(s)
        run.log({"library/loss": 0.1})  # without step=: the step stays instrument's
        for s in range(4, 200):
            stage(s)
        instrument.finish()
    out["warnings"] = [str(w.message) for w in seen if issubclass(w.category, instrument.InstrumentationWarning)]
    print(json.dumps(out))
"""


def test_own_run_shared_with_code_that_logs_steps(wandb_root: Path) -> None:
    """In instrument's run, a ``log(step=0)`` below the rows instrument wrote is dropped by wandb
    with one warning naming the call; from then on instrument shares rows and loses nothing. A
    library handed the run that logs without ``step=`` leaves it instrument's: 200 points, no lag."""
    done = run_script(wandb_root, OWN_SHARED)
    warned = json.loads(done.stdout.strip().splitlines()[-1])["warnings"]
    runs = {run.name: run for run in read_runs(wandb_root / "wandb")}
    late = runs["late"]
    assert [(s, float(s)) for s in range(6)] == late.series("stage/x")
    assert [(13, 0.5), (14, 0.5), (15, 0.5)] == late.series("framework/loss")
    line = next(n for n, text in enumerate(textwrap.dedent(OWN_SHARED).splitlines(), 1) if "LATE_LINE" in text)
    (late_warning,) = [w for w in warned if "step=0" in w]
    assert f"script.py:{line}" in late_warning
    handed = runs["handed"]
    assert [(s, float(s)) for s in range(200)] == handed.series("stage/x")
    assert [0.1] == [value for _, value in handed.series("library/loss", step_key="_step")]
    assert [] == [w for w in warned if "wait" in w]
