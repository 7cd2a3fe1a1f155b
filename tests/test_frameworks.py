"""instrument beside the frameworks that start wandb runs themselves: Hugging Face's Trainer and
Accelerate's tracker, each with instrument's run started first and (Accelerate) with the
framework's run first. Real wandb offline, tiny models built from configs (no model hub); the
framework packages come from the ``frameworks`` extra."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from helpers import run_script

from instrument.runfile import read_runs

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def last_json(stdout: str) -> dict[str, Any]:
    """Return the JSON object a script printed on its last stdout line."""
    return json.loads(stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


def no_journal(root: Path) -> list[str]:
    """Return the names of instrument's journal and queue folders left under *root*/wandb."""
    return sorted(p.name for p in (root / "wandb").glob("instrument-*"))


ACCELERATE = """
    import json
    import sys
    import warnings

    import torch
    import wandb
    from accelerate import Accelerator

    import instrument

    @instrument.training_stage("health")
    def health(s):
        return {"grad_norm": float(s)}

    @instrument.run_config
    def make_config():
        return {"lr": 1e-3}

    out = {}
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        if sys.argv[1] == "instrument-first":
            make_config()  # instrument's run starts (in the background) before Accelerate's
        accelerator = Accelerator(log_with="wandb", cpu=True)
        accelerator.init_trackers("acc", config={"batch": 4})
        model = torch.nn.Linear(2, 1)
        wandb.watch(model, log="parameters", log_freq=1)
        for s in range(30):
            health(s)
            accelerator.log({"train_loss": 1.0 / (s + 1)}, step=s)
        out["run"] = wandb.run.id
        accelerator.end_training()
    out["warnings"] = [str(w.message) for w in seen if issubclass(w.category, instrument.InstrumentationWarning)]
    print(json.dumps(out))
"""


@pytest.mark.parametrize("order", ["instrument-first", "accelerate-first"])
def test_accelerate_keeps_every_row_and_every_stage_point(wandb_root: Path, order: str) -> None:
    """Accelerate's ``log(..., step=s)`` after a stage call: one run holding 30 of 30 of its rows
    and 30 stage points, whichever started the run; ``end_training()`` loses nothing queued and
    leaves nothing in a journal."""
    pytest.importorskip("accelerate", reason="the frameworks extra is not installed")
    code = ACCELERATE.replace('sys.argv[1] == "instrument-first"', repr(order == "instrument-first"))
    done = run_script(wandb_root, code, timeout=300)
    out = last_json(done.stdout)
    (run,) = read_runs(wandb_root / "wandb")
    assert out["run"] == run.run_id
    assert [(s, 1.0 / (s + 1)) for s in range(30)] == run.series("train_loss")
    assert [(s, float(s)) for s in range(30)] == run.series("health/grad_norm")
    assert 4 == run.config["batch"]
    assert 0 == run.exit_code
    assert [] == no_journal(wandb_root)
    if order == "instrument-first":
        assert 1e-3 == run.config["lr"]
        finished = [w for w in out["warnings"] if "was finished by" in w]
        assert 1 == len(finished), out["warnings"]
        assert "WandBTracker.finish" in finished[0]


HF_TRAINER = """
    import json
    import warnings

    import torch
    import wandb
    from transformers import BertConfig, BertForSequenceClassification, Trainer, TrainingArguments

    import instrument

    INSTRUMENT_FIRST = None  # set by the test

    @instrument.run_config
    def make_config():
        return {"lr": 1e-3}

    scores = iter((0.25, 0.5))  # a learning model's accuracy: another value at each evaluation

    @instrument.eval_summary(prefix="eval")
    def compute_metrics(prediction):
        return {"accuracy": next(scores)}  # HF logs it too, as eval/accuracy: the same values

    @instrument.eval_summary(prefix="eval")
    def held_out():
        return {"accuracy": 0.75}  # another evaluation under the same key, with another value

    class Pairs(torch.utils.data.Dataset):
        def __len__(self):
            return 16

        def __getitem__(self, i):
            ids = torch.randint(0, 30, (8,), generator=torch.Generator().manual_seed(i))
            return {"input_ids": ids, "labels": torch.tensor(i % 2)}

    out = {}
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        if INSTRUMENT_FIRST:
            make_config()  # instrument's standalone run starts before the Trainer exists
        model = BertForSequenceClassification(BertConfig(
            vocab_size=30, hidden_size=8, num_hidden_layers=1, num_attention_heads=1, intermediate_size=8,
            max_position_embeddings=16, num_labels=2))
        args = TrainingArguments(
            output_dir="out", max_steps=4, logging_steps=1, eval_strategy="steps", eval_steps=2,
            per_device_train_batch_size=4, report_to=["wandb"], use_cpu=True, save_strategy="no", disable_tqdm=True)
        Trainer(model=model, args=args, train_dataset=Pairs(), eval_dataset=Pairs(),
                compute_metrics=compute_metrics).train()
        out["compute_metrics"] = [str(w.message) for w in seen if "eval/accuracy" in str(w.message)]
        if not INSTRUMENT_FIRST:
            make_config()  # into HF's run, as a guest
        held_out()
        out["run"] = wandb.run.id
        wandb.run.finish()  # eval keys are compared with other code's when the run ends
    out["warnings"] = [str(w.message) for w in seen if issubclass(w.category, instrument.InstrumentationWarning)]
    print(json.dumps(out))
"""


@pytest.mark.parametrize("order", ["instrument-first", "hf-first"])
def test_hf_trainer_and_instrument_write_one_run(wandb_root: Path, order: str) -> None:
    """HF's Trainer after ``@run_config`` (it logs into instrument's run) or before it (instrument
    is a guest in HF's run): no exception, one run holding HF's metrics and config and
    instrument's config; compute_metrics as an eval_summary agrees with HF's eval/* series (no
    warning, although its value changes between evaluations), a later eval under the same key
    with another value warns once, naming the key."""
    pytest.importorskip("transformers", reason="the frameworks extra is not installed")
    code = HF_TRAINER.replace("INSTRUMENT_FIRST = None", f"INSTRUMENT_FIRST = {order == 'instrument-first'}")
    done = run_script(wandb_root, code, timeout=300)
    out = last_json(done.stdout)
    (run,) = read_runs(wandb_root / "wandb")
    assert out["run"] == run.run_id
    assert 1e-3 == run.config["lr"]
    assert "learning_rate" in run.config
    assert 4 == len(run.series("train/loss"))
    assert [0.25, 0.5] == [value for _, value in run.series("eval/accuracy")]
    assert [] == out["compute_metrics"]
    collisions = [w for w in out["warnings"] if "eval/accuracy" in w]
    assert 1 == len(collisions), out["warnings"]
    assert "0.75" in collisions[0]
    assert 0.75 == run.summary["eval/accuracy"]  # the eval's summary key; HF's values stay in history
    assert 0.75 not in [value for _, value in run.series("eval/accuracy")]
    assert [] == no_journal(wandb_root)
