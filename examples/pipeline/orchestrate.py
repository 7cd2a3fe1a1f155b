"""The main example: a pipeline that trains and evaluates in subprocesses, then reports its runs.

    python examples/pipeline/orchestrate.py

With no W&B account the runs are written offline (to ./wandb, or $WANDB_DIR/wandb; upload them
later with ``instrument sync``). The pipeline makes exactly two runs:

* the *pipeline run* (``job_type="pipeline"``), owned by this process: its config, the two
  evaluations' scores and their gate verdicts in its summary (the small split fails its
  ``nrmse < 0.1`` gate: the run gets an ERROR alert; ``gate_exit=True`` on the pipeline would
  make this script exit 1), and ``pipeline/children`` listing the runs it spawned;
* the *training run* of ``train.py``: same group, ``job_type="train"``, tag
  ``parent:<pipeline id>``, with the ``operator/*`` and ``diffusion/*`` series.

At the end it reads back the ``.wandb`` files wandb wrote, prints what each run holds, and the
``instrument`` commands that look closer and upload them.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import instrument
from instrument import runfile

HERE = Path(__file__).resolve().parent


def step(script: str, *args: str) -> None:
    """Run one script of the pipeline as a plain subprocess; it inherits WANDB_CONTEXT_FILE."""
    print(f"--> {script} {' '.join(args)}".rstrip(), flush=True)
    subprocess.run([sys.executable, str(HERE / script), *args], check=True)


def main() -> str:
    """Run the pipeline; return the pipeline run's id."""
    # Entering the block starts the pipeline run and exports WANDB_CONTEXT_FILE, so every
    # subprocess below finds it. Leaving the block drains what the children wrote, records them
    # in the summary (pipeline/children) and finishes the run: exit code 0, or the error's code
    # (the error itself propagates unchanged). `@instrument.pipeline(...)` on a function does
    # the same around each call.
    with instrument.pipeline(project="instrument-example", config={"dataset": "toy", "seed": 0}) as run:
        step("train.py")  # its own run: same group, job_type "train", tag parent:<id>
        step("evaluate.py", "small")  # eval_small/* into this run's summary and config
        step("evaluate.py", "full")  # eval_full/*
    return run.id


def report(pipeline_id: str) -> str:
    """Read the pipeline run and its children back from the .wandb files and describe them."""
    wandb_dir = Path(os.environ.get("WANDB_DIR") or ".") / "wandb"
    # Only this invocation's runs, not every run ever written to ./wandb: the pipeline run by
    # its id, then the children it recorded in its summary.
    found = runfile.find_run_files(wandb_dir, pipeline_id)
    if not found:
        return (f"No run files for {pipeline_id} in {wandb_dir}: WANDB_MODE=disabled writes none, and where "
                f"{wandb_dir.parent} is not writable wandb puts them elsewhere (its warning above names where).\n")
    pipeline_run = runfile.read_run_file(found[-1])
    children = pipeline_run.summary.get("pipeline/children", [])
    runs = [pipeline_run, *(runfile.read_run_file(runfile.find_run_files(wandb_dir, c)[-1]) for c in children)]
    return (
        f"\nThe pipeline wrote {len(runs)} runs to {wandb_dir.resolve()}:\n\n{runfile.format_report(runs)}\n"
        f"More on a run: instrument show {pipeline_id}   (also: plot, compare, leaderboard; instrument --help)\n"
        "Upload them:   instrument sync   (every offline run in ./wandb; it says which ones made it)\n"
    )


if __name__ == "__main__":
    pipeline_id = main()
    # The pipeline run is finished, so its .wandb file is complete: read it back.
    print(report(pipeline_id), end="")
