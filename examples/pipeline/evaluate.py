"""Evaluate on one split; the scores land in the *pipeline* run's summary, never in history.

``python examples/pipeline/evaluate.py small`` scores the small split under the prefix
``eval_small`` (``eval_small/nrmse``, ``eval_small/mse``). Run by the orchestrator, this process
does not open a run at all: it appends its records to a journal that the pipeline (the process
owning that run) writes into its run. Run by hand, it writes a standalone run of its own.

The eval declares gates (docs/gates.md): ``nrmse`` must stay below 0.1 and may not get worse by
more than 5 % than the best of the last five recorded runs; ``mse`` above 0.01 only warns. The
verdicts land beside the scores (summary ``gates/eval_<split>/...``, a table, an alert when a
gate fails) and in ``.instrument/`` (the run's ``gates.json``, the suite's history).
"""

from __future__ import annotations

import sys

import instrument

SAMPLES = {"small": 64, "full": 1024}


def evaluate(split: str) -> dict[str, object]:
    """Score the model on *split*: two final numbers, plus the settings they were measured with."""
    samples = SAMPLES[split]
    nrmse = 0.09 + 1.0 / samples  # a stand-in for a real evaluation
    return {
        "nrmse": nrmse,  # -> summary "eval_<split>/nrmse"
        "mse": nrmse**2,  # -> summary "eval_<split>/mse"
        # Config is not a result: it goes to run.config, deep-merged under the prefix, so
        # config["eval_small"]["eval_samples"] and config["eval_full"]["eval_samples"] coexist.
        "settings": instrument.Config({"eval_samples": samples, "eval_tau": 0.5}),
    }


if __name__ == "__main__":
    split = sys.argv[1] if len(sys.argv) > 1 else "small"
    # The prefix depends on the split, so the decorator is applied here rather than with "@".
    scored = instrument.eval_summary(
        prefix=f"eval_{split}",
        gates={"nrmse": "< 0.1", "mse": "< 0.01 warn"},
        regression=[instrument.Regression("nrmse", "min", rel=0.05)],
        baseline=instrument.Baseline.best(5),  # the first run has none: "no_baseline", not a failure
    )(evaluate)
    result = scored(split)  # the decorated function still returns its value
    print(f"evaluate.py {split}: nrmse={result['nrmse']:.4f}")
