"""Every kind of W&B value from plain returned values: series, tables, images, files, an artifact.

    python examples/media/train_and_evaluate.py

A toy model (a linear fit of a 2-D field, numpy only) is trained by a ``training_stage`` that
yields one point per epoch, then an ``eval_summary`` returns, in one mapping:

* scalars (``eval/nrmse``)                        -> the run's summary
* a metrics table and a baseline-vs-candidate     -> W&B tables (``eval/metrics``, ``eval/comparison``)
  comparison table
* an image of the predictions                     -> a W&B image (``eval/predictions``)
* a report file (``pathlib.Path``)                -> the run's Files tab (``reports/report.md``)
* a checkpoint (``instrument.Artifact``)          -> a ``model`` artifact with alias ``best``
* evaluation settings (``instrument.Config``)     -> ``run.config["eval"]``

With no W&B account the run is written offline (to ./wandb, or $WANDB_DIR/wandb; upload it later
with ``wandb sync``). At the end the script reads the ``.wandb`` file back with
``instrument.runfile`` and prints where each value landed.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

import instrument
from instrument import runfile

GRID = 16  # the field is GRID x GRID points


def make_data(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Return features (GRID*GRID x 3: x, y, 1) and the target field (a tilted plane plus noise)."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:1:GRID * 1j, 0:1:GRID * 1j]
    features = np.stack([x.ravel(), y.ravel(), np.ones(GRID * GRID)], axis=1)
    target = 0.7 * x.ravel() + 0.2 * y.ravel() + 0.05 * rng.standard_normal(GRID * GRID)
    return features, target


@instrument.training_stage("operator", summary={"loss": "min"})
def train(features: np.ndarray, target: np.ndarray, epochs: int = 30, lr: float = 0.5) -> Iterator[dict[str, Any]]:
    """Fit the weights by gradient descent; each yielded mapping is one point on operator/step.

    The caller gets each mapping unchanged, so it takes the weights from the last one.
    """
    weights = np.zeros(features.shape[1])
    for _ in range(epochs):
        error = features @ weights - target
        gradient = features.T @ error / len(target)
        weights = weights - lr * gradient
        yield {"loss": float(np.mean(error**2)), "grad_norm": float(np.linalg.norm(gradient)),
               "weights": weights.copy()}  # a 1-D array: a W&B histogram on the same axis


def nrmse(prediction: np.ndarray, target: np.ndarray) -> float:
    """Root mean squared error divided by the target's spread."""
    return float(np.sqrt(np.mean((prediction - target) ** 2)) / np.std(target))


@instrument.eval_summary(prefix="eval")
def evaluate(weights: np.ndarray, features: np.ndarray, target: np.ndarray, out: Path) -> dict[str, Any]:
    """Score the candidate against a baseline; every value's type decides where it lands."""
    candidate = features @ weights
    baseline = np.full_like(target, target.mean())  # predicts the mean everywhere
    scores = {name: {"nrmse": nrmse(p, target), "mse": float(np.mean((p - target) ** 2))}
              for name, p in (("baseline", baseline), ("candidate", candidate))}

    # Predictions next to the target, as one grey image (float in 0..1 is scaled to 0..255).
    low, high = target.min(), target.max()
    panels = [(a.reshape(GRID, GRID) - low) / (high - low) for a in (target, candidate)]
    picture = np.concatenate([panels[0], np.ones((GRID, 1)), panels[1]], axis=1)

    report = out / "reports" / "report.md"
    report.parent.mkdir(parents=True, exist_ok=True)
    report.write_text("# Evaluation\n\n" + "\n".join(
        f"- {name}: nrmse {s['nrmse']:.3f}, mse {s['mse']:.4f}" for name, s in scores.items()) + "\n")
    checkpoint = out / "checkpoints" / "operator.npy"
    checkpoint.parent.mkdir(parents=True, exist_ok=True)
    np.save(checkpoint, weights)

    candidate_scores = scores["candidate"]
    return {
        "nrmse": candidate_scores["nrmse"],  # a number: summary eval/nrmse
        "metrics": instrument.Table(["metric", "value"], [[k, v] for k, v in candidate_scores.items()]),
        "comparison": instrument.Table(
            ["metric", "baseline", "candidate"],
            [[k, scores["baseline"][k], candidate_scores[k]] for k in candidate_scores],
        ),
        "predictions": instrument.Image(picture, caption="target (left) vs candidate (right)"),
        "report": instrument.File(report, base_path=out),  # Files tab: reports/report.md
        "checkpoint": instrument.Artifact(checkpoint, type="model", name="operator", aliases=("best",)),
        "settings": instrument.Config({"grid": GRID, "baseline": "mean"}),  # run.config["eval"]
    }


def where_values_landed(run: runfile.RunFile) -> str:
    """Describe, from the .wandb file and the run's files folder, where each kind of value landed."""
    lines = [f"Where values landed in run {run.run_id}:"]
    loss = run.series("operator/loss")
    lines.append(f"  history   operator/loss: {len(loss)} points on operator/step {loss[0][0]}..{loss[-1][0]}, "
                 f"summary {run.summary['operator/loss']}")
    lines.append(f"  history   operator/weights: {len(run.series('operator/weights'))} histograms")
    lines.append(f"  summary   eval/nrmse = {run.summary['eval/nrmse']:.4f} "
                 f"(in history: {any('eval/nrmse' in row for row in run.history)})")
    files = run.path.parent / "files"
    for key in ("eval/metrics", "eval/comparison"):
        table = run.summary[key]
        lines.append(f"  table     {key}: {table['nrows']} rows x {table['ncols']} columns ({table['path']})")
        stored = json.loads((files / table["path"]).read_text())
        lines.append(f"              {stored['columns']}")
        lines += [f"              {[round(c, 4) if isinstance(c, float) else c for c in row]}"
                  for row in stored["data"]]
    image = run.summary["eval/predictions"]
    lines.append(f"  image     eval/predictions: {image['width']}x{image['height']} {image['format']} "
                 f"({image['path']})")
    for saved in run.files:
        if not saved["path"].startswith("media/") and saved["path"] not in ("requirements.txt", "output.log"):
            lines.append(f"  file      {saved['path']} (policy {saved['policy']})")
    for artifact in run.artifacts:
        if artifact["type"] != "run_table":  # wandb's own staging artifacts of the tables
            lines.append(f"  artifact  {artifact['name']} (type {artifact['type']}, aliases "
                         f"{', '.join(sorted(artifact['aliases']))}): {', '.join(artifact['manifest_entries'])}")
    lines.append(f"  config    eval = {run.config.get('eval')}")
    return "\n".join(lines) + "\n"


def main() -> int:
    """Train, evaluate, then print what the run holds; return the exit status."""
    features, target = make_data()
    with tempfile.TemporaryDirectory(prefix="instrument-media-") as folder, \
            instrument.pipeline(project="instrument-media", config={"epochs": 30, "lr": 0.5}) as owner:
        weights = np.zeros(features.shape[1])
        for point in train(features, target):
            weights = point["weights"]
        evaluate(weights, features, target, Path(folder))
    found = runfile.find_run_files(Path(os.environ.get("WANDB_DIR") or ".") / "wandb", owner.id)
    if not found:
        print(f"No run file for {owner.id} (WANDB_MODE=disabled writes none).")
        return 0
    run = runfile.read_run_file(found[-1])
    print(f"\nRun {run.run_id} (project {run.project}) was read back from {run.path}\n")
    print(where_values_landed(run))
    return 0


if __name__ == "__main__":
    sys.exit(main())
