"""Processes (promise 5): pool workers, forks, killed children, signals to the orchestrator,
journals left behind. Real wandb offline in subprocesses, real signals."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from helpers import run_script, wandb_env

from instrument.runfile import read_runs

pytestmark = pytest.mark.integration


def instrument_warnings(stderr: str) -> list[str]:
    """Return the InstrumentationWarning messages a script printed."""
    return re.findall(r"InstrumentationWarning: (.*)", stderr)


@pytest.mark.slow
def test_c06_pool_workers_and_forks_write_into_the_parents_run(wandb_root: Path) -> None:
    """Pools of forked, spawned and forkserver workers and a bare ``os.fork`` child call a
    decorated stage and collect garbage: the parent's stage goes on, and there is one run, finished
    once with exit code 0, holding the parent's points and every worker's point on the workers'
    stage axis; nothing is warned and the inbox is gone."""
    result = run_script(wandb_root, """
import gc, multiprocessing, os, sys
import instrument

@instrument.training_stage("worker")
def work(i):
    gc.collect()
    return {"i": float(i)}

def in_worker(i):
    work(i)
    gc.collect()
    return i * 2

@instrument.training_stage("operator")
def train_step(total):
    return {"total": float(total)}

if __name__ == "__main__":
    train_step(0)
    for method in ("fork", "spawn", "forkserver"):
        with multiprocessing.get_context(method).Pool(2) as pool:
            train_step(sum(pool.map(in_worker, range(8))))
    pid = os.fork()
    if pid == 0:
        work(99)
        gc.collect()
        sys.exit(0)  # a normal interpreter exit in the child: its exit hooks run
    os.waitpid(pid, 0)
    train_step(1)
""", env=wandb_env(wandb_root, TMPDIR=str(wandb_root)))
    (run,) = read_runs(wandb_root / "wandb")
    assert [(0, 0.0), (1, 56.0), (2, 56.0), (3, 56.0), (4, 1.0)] == run.series("operator/total")
    points = run.series("worker/i")
    assert list(range(25)) == [step for step, _ in points]
    assert sorted([float(i) for i in range(8)] * 3 + [99.0]) == sorted(value for _, value in points)
    assert (0, [], "") == (run.exit_code, instrument_warnings(result.stderr), result.stderr)
    assert [] == list(wandb_root.glob("instrument-workers-*"))


#: A script whose first point starts its run in the background, and that goes on once wandb-core's
#: port-file folder exists; the start then lasts *seconds* more.
STARTING = """
import os, signal, sys, threading, time
import wandb
from wandb.sdk.lib.service import service_port_file
import instrument

polling = threading.Event()
original = service_port_file.poll_for_token

def slow_poll(*args, **kwargs):
    polling.set()
    time.sleep({seconds})  # wandb-core's port-file folder exists in the parent now
    return original(*args, **kwargs)

service_port_file.poll_for_token = slow_poll

@instrument.training_stage("operator")
def train_step(k):
    return {{"loss": float(k)}}

train_step(0)
assert polling.wait(60)
"""


@pytest.mark.slow
def test_a_fork_waits_for_a_run_start_in_flight(wandb_root: Path) -> None:
    """A child forked while wandb starts the parent's run (in the background), that then exits
    normally, leaves the start alone: the run keeps both points (the child's exit used to remove
    the folder wandb-core announced itself in, and the run never started)."""
    result = run_script(wandb_root, STARTING.format(seconds=1.0) + """
pid = os.fork()
if pid == 0:
    sys.exit(0)  # the parent's exit handlers run here
os.waitpid(pid, 0)
train_step(1)
""", env=wandb_env(wandb_root, WANDB_X_SERVICE_WAIT="10"))
    (run,) = read_runs(wandb_root / "wandb")
    assert ([(0, 0.0), (1, 1.0)], 0) == (run.series("operator/loss"), run.exit_code)
    assert "" == result.stderr  # and no traceback of wandb's teardown from the child


@pytest.mark.slow
def test_ctrl_c_while_a_fork_waits_for_a_run_start_reaches_the_program(wandb_root: Path) -> None:
    """Ctrl-C while ``os.fork()`` waits for a run start in flight is a ``KeyboardInterrupt`` in the
    program, as the fork returns (Python drops an exception raised in a fork hook); the run keeps
    its point."""
    result = run_script(wandb_root, STARTING.format(seconds=3.0) + """
signal.signal(signal.SIGINT, signal.default_int_handler)  # as in a terminal (a background suite ignores it)
threading.Timer(0.5, os.kill, (os.getpid(), signal.SIGINT)).start()
try:
    pid = os.fork()
    if pid == 0:
        time.sleep(5)
        os._exit(0)
    os.waitpid(pid, 0)  # Ctrl-C reaches the program even here
    print("not interrupted")
except KeyboardInterrupt:
    print("interrupted")
""", env=wandb_env(wandb_root, WANDB_X_SERVICE_WAIT="10"))
    (run,) = read_runs(wandb_root / "wandb")
    assert ("interrupted", [(0, 0.0)], 0) == (result.stdout.strip(), run.series("operator/loss"), run.exit_code)


@pytest.mark.slow
def test_decorated_functions_go_to_process_pools(wandb_root: Path) -> None:
    """Decorated module-level functions of every kind pickle by reference: ``pool.map`` of a stage,
    an eval, a run_config and a pipeline function in fork and spawn pools returns their values, and
    what the workers write lands in the parent's one run (a pipeline in a worker is a plain block)."""
    tests = Path(__file__).resolve().parent
    env = wandb_env(wandb_root, PYTHONPATH=os.pathsep.join([str(tests.parent), str(tests)]), TMPDIR=str(wandb_root))
    result = run_script(wandb_root, """
import multiprocessing, pickle
import instrument
import pool_work

if __name__ == "__main__":
    pool_work.work(-1)
    for function in (pool_work.work, pool_work.check, pool_work.settings, pool_work.experiment):
        assert pickle.loads(pickle.dumps(function)) is function
    for method in ("fork", "spawn"):
        with multiprocessing.get_context(method).Pool(2) as pool:
            for function in (pool_work.work, pool_work.check, pool_work.settings, pool_work.experiment):
                print(method, function.__name__, pool.map(function, range(3)), flush=True)
    instrument.flush()  # the workers' points first, then the parent's next one
    pool_work.work(100)
""", env=env)
    assert [
        f"{method} {line}" for method in ("fork", "spawn") for line in (
            "work [{'i': 0.0}, {'i': 1.0}, {'i': 2.0}]",
            "check [{'i': 0.0}, {'i': 1.0}, {'i': 2.0}]",
            "settings [{'worker_setting': 0}, {'worker_setting': 1}, {'worker_setting': 2}]",
            "experiment [0, 10, 20]",
        )
    ] == result.stdout.splitlines()
    (run,) = read_runs(wandb_root / "wandb")
    points = run.series("work/i")
    assert list(range(14)) == [step for step, _ in points]
    assert ((0, -1.0), (13, 100.0)) == (points[0], points[-1])
    assert sorted([0.0, 1.0, 2.0] * 4) == sorted(value for _, value in points[1:-1])  # work and experiment, twice
    assert (True, True, 0) == (run.summary["check/i"] in (0.0, 1.0, 2.0), run.config["worker_setting"] in (0, 1, 2),
                               run.exit_code)
    assert all("config key worker_setting" in message for message in instrument_warnings(result.stderr))


ORCHESTRATOR = """
import os, signal, subprocess, sys, time
import instrument
from instrument.runfile import find_run_files, read_run_file

TRAIN = '''
import instrument, sys, time
@instrument.training_stage("operator")
def train_step(i):
    return {"loss": float(i)}
for i in range(50):
    train_step(i)
from instrument import _linkage
print("logged", _linkage.own_sessions()[0].id, flush=True)
time.sleep(120)
'''

EVAL = '''
import glob, os, signal
import instrument

@instrument.eval_summary(prefix="eval")
def evaluate():
    return {"nrmse": 0.09, "mse": 0.001}

evaluate()
folder = instrument.ContextFile.load(os.environ["WANDB_CONTEXT_FILE"]).journal_dir
(journal,) = glob.glob(os.path.join(folder, f"journal-{os.getpid()}-*.jsonl"))
with open(journal, "ab") as handle:  # die in the middle of writing a record
    handle.write(b'{"record": "SummaryUpdate", "values": {"eval/lost"')
os.kill(os.getpid(), signal.SIGKILL)
'''

with instrument.pipeline(project="p") as owner:
    print("folder", owner.folder, flush=True)
    child = subprocess.Popen([sys.executable, "-c", TRAIN], stdout=subprocess.PIPE, text=True)
    _, run_id = child.stdout.readline().split()
    seen, deadline = 0, time.monotonic() + 10  # wandb's default flush interval is 15 s
    while seen < 50 and time.monotonic() < deadline:
        files = find_run_files(os.path.join(os.environ["WANDB_DIR"], "wandb"), run_id)
        seen = len(read_run_file(files[0]).series("operator/loss")) if files else 0
        time.sleep(0.2)
    print("seen before the kill", seen, flush=True)
    child.send_signal(signal.SIGKILL)
    child.wait()
    killed = subprocess.run([sys.executable, "-c", EVAL])
    print("eval child", killed.returncode, flush=True)
"""


@pytest.mark.slow
def test_sigkilled_children_lose_nothing_they_had_flushed(wandb_root: Path) -> None:
    """A training child SIGKILLed once its points reached the disk (within a few seconds, not
    wandb's default 15) keeps all 50; an eval child SIGKILLed while writing a record: the owner
    ingests what it had written, warns about the torn record, and removes its journal folder."""
    result = run_script(wandb_root, ORCHESTRATOR, timeout=180)
    assert "seen before the kill 50" in result.stdout
    assert f"eval child {-signal.SIGKILL}" in result.stdout
    folder = Path(re.search(r"folder (\S+)", result.stdout).group(1))  # type: ignore[union-attr]
    assert not folder.exists()
    runs = {run.job_type: run for run in read_runs(wandb_root / "wandb")}
    assert [(i, float(i)) for i in range(50)] == runs["train"].series("operator/loss")
    pipeline = runs["pipeline"]
    assert ({"eval/nrmse": 0.09, "eval/mse": 0.001}, 0) == (
        {k: v for k, v in pipeline.summary.items() if k.startswith("eval/")}, pipeline.exit_code)
    assert [runs["train"].run_id] == pipeline.summary["pipeline/children"]
    torn = [m for m in instrument_warnings(result.stderr) if "incomplete record" in m]
    assert 1 == len(torn), result.stderr


SIGNALLED = """
import signal, subprocess, sys
import instrument

# Ctrl-C as in a terminal: a suite started in the background (`&`, nohup, some CI runners) hands
# its children SIGINT ignored, which Python keeps, and the script would never see the signal.
signal.signal(signal.SIGINT, signal.default_int_handler)

@instrument.training_stage("operator")
def train_step(loss):
    return {"loss": loss}

@instrument.pipeline(project="p")
def main():
    train_step(0.5)
    import os
    print("ready", instrument.ContextFile.load(os.environ["WANDB_CONTEXT_FILE"]).run_id, flush=True)
    subprocess.run([sys.executable, "-c", "import time; time.sleep(60)"],
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

main()
"""


@pytest.mark.slow
@pytest.mark.parametrize(("signum", "code"), [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_sigterm_and_ctrl_c_finish_the_orchestrators_run(wandb_root: Path, signum: int, code: int) -> None:
    """SIGTERM (or Ctrl-C) to an orchestrator waiting on a subprocess: the pipeline run is
    finished with exit code 143 (130), keeps its point, and the process still dies of the signal."""
    script = wandb_root / "orchestrator.py"
    script.write_text(textwrap.dedent(SIGNALLED))
    env = wandb_env(wandb_root, TMPDIR=str(wandb_root))
    process = subprocess.Popen([sys.executable, str(script)], cwd=wandb_root, env=env, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
    assert process.stdout is not None
    line = process.stdout.readline()
    assert line.startswith("ready"), process.stderr.read() if process.stderr else line
    process.send_signal(signum)
    _, stderr = process.communicate(timeout=120)
    assert -signum == process.returncode, stderr
    (run,) = read_runs(wandb_root / "wandb")
    assert (line.split()[1], code, [(0, 0.5)]) == (run.run_id, run.exit_code, run.series("operator/loss"))
    assert [] == list(wandb_root.glob("instrument-*")), "the context folder was left behind"


INTERRUPTED_STANDALONE = """
import atexit, ctypes, signal, sys, time
import instrument

signal.signal(signal.SIGINT, signal.default_int_handler)  # as in a terminal (a background suite ignores it)

@instrument.training_stage("operator")
def train_step(loss):
    return {"loss": loss}

if sys.argv[1] == "instrument":
    train_step(0.5)
    instrument.flush()  # the run started: instrument's exit hook is registered before the one below
    # Code run from a string at exit, as a C extension imported late does (protobuf's, when wandb
    # is imported on the thread that starts a run): CPython then forgets the uncaught Ctrl-C.
    atexit.register(ctypes.pythonapi.PyRun_SimpleString, b"pass")
print("ready", flush=True)
time.sleep(60)
"""


@pytest.mark.slow
def test_ctrl_c_ends_a_standalone_script_with_the_status_plain_python_gives(wandb_root: Path) -> None:
    """Ctrl-C on a standalone script with a decorated stage: the run is finished with exit code
    130 and the process dies of SIGINT, as the same script without a run does."""
    script = wandb_root / "standalone.py"
    script.write_text(textwrap.dedent(INTERRUPTED_STANDALONE))
    codes = {}
    for kind in ("plain", "instrument"):
        process = subprocess.Popen([sys.executable, str(script), kind], cwd=wandb_root, env=wandb_env(wandb_root),
                                   stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        assert process.stdout is not None
        assert "ready" == process.stdout.readline().strip(), process.stderr.read() if process.stderr else kind
        process.send_signal(signal.SIGINT)
        _, stderr = process.communicate(timeout=120)
        codes[kind] = process.returncode
    assert {"plain": -signal.SIGINT, "instrument": -signal.SIGINT} == codes, stderr
    (run,) = read_runs(wandb_root / "wandb")
    assert (130, [(0, 0.5)]) == (run.exit_code, run.series("operator/loss"))


PREEMPTED = """
import os, signal, subprocess, sys
import instrument

WORKER = '''
import sys, time
import instrument

@instrument.training_stage("operator")
def train_step(k):
    return {"loss": float(k)}

train_step(0)
train_step(1)
print("ready", flush=True)
time.sleep(60)
sys.exit(7)  # never reached: SIGTERM ends it
'''

with instrument.pipeline(project="p"):
    # A script of its own: no pipeline, and not attached to this process's wandb-core either.
    standalone_env = {k: v for k, v in os.environ.items() if k not in ("WANDB_CONTEXT_FILE", "WANDB_SERVICE")}
    workers = {
        "standalone": subprocess.Popen([sys.executable, "-c", WORKER], env=standalone_env, stdout=subprocess.PIPE,
                                       text=True),
        "training": subprocess.Popen([sys.executable, "-c", WORKER], stdout=subprocess.PIPE, text=True),
    }
    for name, worker in workers.items():
        assert "ready" == worker.stdout.readline().strip(), name
        worker.send_signal(signal.SIGTERM)  # what SLURM and Kubernetes send on preemption
    for name, worker in workers.items():
        print(name, worker.wait(timeout=100), flush=True)
"""


@pytest.mark.slow
def test_sigterm_finishes_the_run_of_a_standalone_script_and_of_a_training_child(wandb_root: Path) -> None:
    """SIGTERM to a standalone training script and to a pipeline's training child: each finishes
    its run with exit code 143, keeping its points, and still dies of SIGTERM."""
    result = run_script(wandb_root, PREEMPTED, timeout=180)
    assert [f"standalone {-signal.SIGTERM}", f"training {-signal.SIGTERM}"] == result.stdout.splitlines()
    runs = {run.job_type: run for run in read_runs(wandb_root / "wandb")}
    assert {"", "train", "pipeline"} == set(runs)
    for job_type in ("", "train"):
        assert (143, [(0, 0.0), (1, 1.0)]) == (runs[job_type].exit_code, runs[job_type].series("operator/loss"))
    assert (0, [runs["train"].run_id]) == (runs["pipeline"].exit_code, runs["pipeline"].summary["pipeline/children"])


PREEMPTED_PIPELINE = """
import os, subprocess, sys
import instrument

CHILD = '''
import os, sys, time
import instrument

@instrument.training_stage("operator")
def train_step(k):
    return {"loss": float(k)}

train_step(0)
instrument.flush()  # its run exists now
print("ready", flush=True)
while os.getppid() == int(sys.argv[1]):  # until its parent is gone
    time.sleep(0.05)
train_step(1)
train_step(2)
'''

with instrument.pipeline(project="p"):
    subprocess.Popen([sys.executable, "-c", CHILD, str(os.getpid())]).wait()
"""


@pytest.mark.slow
@pytest.mark.parametrize("group", [True, False], ids=["process-group", "pipeline-only"])
def test_sigterm_to_a_pipeline_waiting_on_its_training_child_finishes_both_runs(wandb_root: Path, group: bool) -> None:
    """SIGTERM to the whole process group (what SLURM sends) while a pipeline waits on its training
    child finishes both runs with exit code 143, the pipeline's ``pipeline/children`` naming the
    child; SIGTERM to the pipeline alone finishes its run the same way while the child goes on
    and finishes its own run with every point. The pipeline dies of SIGTERM either way."""
    script = wandb_root / "preempted.py"
    script.write_text(PREEMPTED_PIPELINE)
    pipeline = subprocess.Popen([sys.executable, str(script)], cwd=wandb_root, env=wandb_env(wandb_root),
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        assert pipeline.stdout is not None
        assert "ready" == pipeline.stdout.readline().strip()
        if group:
            os.killpg(pipeline.pid, signal.SIGTERM)  # the pipeline and its child, not wandb-core (a session of its own)
        else:
            pipeline.send_signal(signal.SIGTERM)
        _, stderr = pipeline.communicate(timeout=180)  # its output closes once the child ended too
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pipeline.pid, signal.SIGKILL)
    assert -signal.SIGTERM == pipeline.returncode, stderr
    runs = {run.job_type: run for run in read_runs(wandb_root / "wandb")}
    assert {"train", "pipeline"} == set(runs)
    child = runs["train"]
    assert (143, [child.run_id]) == (runs["pipeline"].exit_code, runs["pipeline"].summary.get("pipeline/children"))
    if group:
        assert 143 == child.exit_code
    else:
        assert (0, [(0, 0.0), (1, 1.0), (2, 2.0)]) == (child.exit_code, child.series("operator/loss"))


@pytest.mark.slow
def test_the_sigterm_handler_leaves_a_users_handler_and_other_threads_alone(wandb_root: Path) -> None:
    """A SIGTERM handler the program installed stays in place when a run starts; a run first started
    from another thread installs nothing (signal handlers belong to the main thread)."""
    result = run_script(wandb_root, """
import signal, threading
import instrument

@instrument.training_stage("operator")
def train_step(k):
    return {"loss": float(k)}

def mine(signum, frame):
    pass

signal.signal(signal.SIGTERM, mine)
train_step(0)
print(signal.getsignal(signal.SIGTERM) is mine)
""")
    threaded = run_script(wandb_root, """
import signal, threading
import instrument

@instrument.training_stage("operator")
def train_step(k):
    return {"loss": float(k)}

worker = threading.Thread(target=train_step, args=(0,))
worker.start()
worker.join()
train_step(1)
print(signal.getsignal(signal.SIGTERM) is signal.SIG_DFL)
""", name="threaded.py")
    assert ["True", "True"] == [result.stdout.strip(), threaded.stdout.strip()]


@pytest.mark.slow
def test_a_dead_owners_journal_is_replayable(wandb_root: Path) -> None:
    """An orchestrator SIGKILLed after its eval child wrote into the journal leaves the context
    folder; ``python -m instrument replay`` writes the journal into the pipeline run's id and
    removes the folder."""
    result = run_script(wandb_root, """
import os, signal, subprocess, sys
import instrument

EVAL = '''
import instrument
@instrument.eval_summary(prefix="eval")
def evaluate():
    return {"nrmse": 0.09}
evaluate()
'''
owner = instrument.pipeline(project="p").__enter__()
print("folder", owner.folder, "run", owner.id, flush=True)
subprocess.run([sys.executable, "-c", EVAL], check=True)
os.kill(os.getpid(), signal.SIGKILL)
""", env=wandb_env(wandb_root, TMPDIR=str(wandb_root)), check=False)
    assert -signal.SIGKILL == result.returncode
    folder, run_id = re.search(r"folder (\S+) run (\S+)", result.stdout).groups()  # type: ignore[union-attr]
    assert 0o600 == os.stat(Path(folder) / "context.json").st_mode & 0o777
    replayed = subprocess.run([sys.executable, "-m", "instrument", "replay", folder], cwd=wandb_root,
                              env=wandb_env(wandb_root), capture_output=True, text=True, timeout=120)
    assert 0 == replayed.returncode, replayed.stderr
    assert not Path(folder).exists()
    runs = [run for run in read_runs(wandb_root / "wandb") if "eval/nrmse" in run.summary]
    assert run_id in [run.run_id for run in runs]
    assert all(0.09 == run.summary["eval/nrmse"] for run in runs)
