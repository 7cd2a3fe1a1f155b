"""Train a model in two stages: each call of a stage function is one point of its series.

Run by the orchestrator, this process finds the pipeline through ``WANDB_CONTEXT_FILE`` and
writes its own *training run*: the pipeline's group, ``job_type="train"``, tag
``parent:<pipeline id>``. Run by hand (``python examples/pipeline/train.py``) there is no
context, so the same code writes one standalone run, started on the first point and finished
when the script ends. The script itself never mentions wandb, runs or modes.
"""

from __future__ import annotations

import math
import random

import instrument

OPERATOR_STEPS = 200
DIFFUSION_STEPS = 100


# Each call returns one point. Its keys get the stage's prefix ("operator/loss") and the point
# sits on the stage's own step axis "operator/step" = 0, 1, 2, ... W&B never sees a `step=`.
@instrument.training_stage("operator")
def train_operator(step: int, rng: random.Random) -> dict[str, float]:
    loss = math.exp(-step / 50) + 0.01 * rng.random()
    return {"loss": loss, "grad_norm": 2.0 * loss}


# A second stage starts again at step 0 on its own axis "diffusion/step": nothing is dropped,
# although W&B's global step only ever grows.
@instrument.training_stage("diffusion")
def train_diffusion(step: int, rng: random.Random) -> dict[str, float]:
    return {"loss": 0.5 * math.exp(-step / 30) + 0.01 * rng.random()}


def main() -> None:
    """Run both stages; the run is finished when the script ends, exit code 0."""
    rng = random.Random(0)
    for step in range(OPERATOR_STEPS):
        train_operator(step, rng)
    for step in range(DIFFUSION_STEPS):
        train_diffusion(step, rng)
    print(f"train.py: {OPERATOR_STEPS} operator steps, {DIFFUSION_STEPS} diffusion steps")


if __name__ == "__main__":
    main()
