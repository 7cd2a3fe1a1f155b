"""Write the runs the command-line tests read: three finished pipeline runs and one killed run.

The pipelines' evals are gated, so each run has a gates sidecar in ``.instrument/`` beside ``wandb/``.

Run by the ``cli_runs`` fixture in a wandb offline environment; prints ``{name: run id}`` as its
last line, then dies with ``os._exit(9)`` while the fourth run is still open (no exit record).
"""

import json
import math
import os
import time

import wandb

import instrument
from instrument import runfile


@instrument.training_stage("operator")
def train_operator(step: int, scale: float) -> dict[str, float]:
    loss = scale * math.exp(-step / 10)
    return {"loss": loss, "grad_norm": 2 * loss, "lr": 1e-3 * (1 - step / 40)}


@instrument.training_stage("diffusion")
def train_diffusion(step: int, scale: float) -> dict[str, float]:
    return {"loss": scale * 0.5 * math.exp(-step / 5)}


def evaluate(nrmse: float) -> dict[str, object]:
    return {
        "nrmse": nrmse,
        "nrmse_stderr": nrmse / 20,
        "mse": nrmse**2,
        "per_sample": instrument.Table(["i", "err"], [[0, nrmse], [1, nrmse * 1.1]]),
        "check": instrument.Alert("nrmse checked", f"nrmse = {nrmse}", "INFO"),
    }


ids = {}
for name, nrmse, lr, optimizer in [("cli-a", 0.12, 1e-3, "adam"), ("cli-b", 0.08, 3e-4, "adam"),
                                   ("cli-c", 0.10, 1e-3, "sgd")]:
    config = {"lr": lr, "optimizer": {"name": optimizer}}
    with instrument.pipeline(project="cli-test", name=name, config=config) as run:
        for step in range(40):
            train_operator(step, nrmse * 10)
        for step in range(20):
            train_diffusion(step, nrmse * 10)
        # nrmse below 0.11 (cli-a fails it), and no worse than the stored baseline by 5 % (no store
        # yet: no_baseline, which is not a failure).
        gated = instrument.eval_summary(prefix="eval", gates={"nrmse": "< 0.11"},
                                        regression=[instrument.Regression("nrmse", "min", rel=0.05)])
        gated(evaluate)(nrmse)
    ids[name] = run.id

# After the pipelines, a raw wandb run that this process never finishes.
killed = wandb.init(project="cli-test", id="killed01", name="cli-killed", config={"lr": 1e-2},
                    settings=wandb.Settings(x_transaction_log_flush_interval=0.2))
killed.summary["eval/nrmse"] = 0.01  # the best value of all, but the run never finished
killed.log({"loss": 1.0})
deadline = time.monotonic() + 60
while time.monotonic() < deadline:  # until the transaction log holds both, then die
    time.sleep(0.2)
    written = runfile.read_run_file(killed.settings.sync_file)
    if written.history and "eval/nrmse" in written.summary:
        break
ids["cli-killed"] = killed.id
print(json.dumps(ids), flush=True)
os._exit(9)
