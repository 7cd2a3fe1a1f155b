"""instrument: declarative Weights & Biases instrumentation.

Decorate plain functions (``training_stage``, ``eval_summary``, ``pipeline``, ``run_config``) and
every returned value lands in the right W&B data type of the right run. ``import instrument``
does not import wandb: that happens when a run is really started.
"""

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
from instrument._stages import eval_summary, log, pipeline, run_config, training_stage
from instrument._linkage import ContextFileError, RunContext
from instrument._problems import InstrumentationError, InstrumentWarning
from instrument._values import Alert, Artifact, Config, File, Histogram, Image, Series, Summary, Table

__all__ = [
    "Alert",
    "Artifact",
    "Config",
    "ContextFileError",
    "File",
    "Histogram",
    "Image",
    "InstrumentWarning",
    "InstrumentationError",
    "RunContext",
    "Series",
    "Summary",
    "Table",
    "WandBContext",
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
