"""instrument: declarative Weights & Biases instrumentation.

Decorate plain functions (``training_stage``, ``eval_summary``, ``pipeline``, ``run_config``) and
every returned value lands in the right W&B data type of the right run. ``import instrument``
loads only what decorating needs (never wandb); the rest loads on first use.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from instrument._gates import Baseline, Gate, GateError, Regression
from instrument._pipeline import pipeline
from instrument._problems import InstrumentationError, InstrumentationWarning
from instrument._stages import eval_summary, log, run_config, training_stage

__version__ = "0.1.0.dev0"

if TYPE_CHECKING:
    from instrument import baselines as baselines
    from instrument import runfile as runfile
    from instrument import testing as testing
    from instrument._context_file import ContextFile, ContextFileError
    from instrument._imperative import (
        WandBContext,
        configure,
        create_wandb_context,
        current,
        finish,
        flush,
        load_wandb_context_from_env,
        save_wandb_context,
    )
    from instrument._values import Alert, Artifact, Config, File, Histogram, Image, Series, Summary, Table

#: Public names loaded on first use, and the module each comes from (import cost: the imperative
#: API pulls in linkage, sessions and backends; see docs/DESIGN.md, "Import cost").
_LAZY = {
    **dict.fromkeys(("Alert", "Artifact", "Config", "File", "Histogram", "Image", "Series", "Summary", "Table"),
                    "instrument._values"),
    **dict.fromkeys(("ContextFileError", "ContextFile"), "instrument._context_file"),
    **dict.fromkeys(("WandBContext", "configure", "create_wandb_context", "current", "finish", "flush",
                     "load_wandb_context_from_env", "save_wandb_context"), "instrument._imperative"),
    "baselines": "instrument.baselines",
    "runfile": "instrument.runfile",
    "testing": "instrument.testing",
}


def __getattr__(name: str) -> object:
    """Load the public name *name* on first use (see ``_LAZY``)."""
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'instrument' has no attribute {name!r}")
    loaded = importlib.import_module(module)
    value = loaded if module == f"instrument.{name}" else getattr(loaded, name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})


__all__ = [
    "Alert",
    "Artifact",
    "Baseline",
    "Config",
    "ContextFile",
    "ContextFileError",
    "File",
    "Gate",
    "GateError",
    "Histogram",
    "Image",
    "InstrumentationError",
    "InstrumentationWarning",
    "Regression",
    "Series",
    "Summary",
    "Table",
    "WandBContext",
    "baselines",
    "configure",
    "create_wandb_context",
    "current",
    "eval_summary",
    "finish",
    "flush",
    "load_wandb_context_from_env",
    "log",
    "pipeline",
    "run_config",
    "save_wandb_context",
    "training_stage",
]
