"""Train a tiny Lightning model with Lightning's own WandbLogger; a decorated stage reports health.

Lightning starts and owns the W&B run (``WandbLogger``, offline here); ``training_step`` calls
``report_health``, a ``training_stage``, and its points land in Lightning's run beside
Lightning's own metrics (``train_loss``, ``trainer/global_step``, ``epoch``): one run, with the
stage on its own step axis ``health/step``. instrument is a guest there: it never moves
wandb's step and never finishes the run. CPU only, a few batches, about ten seconds:
``python examples/lightning/train.py`` (needs the ``frameworks`` extra).
"""

from __future__ import annotations

import os
from pathlib import Path

import lightning
import torch
from lightning.pytorch.loggers import WandbLogger

import instrument
from instrument import runfile

EPOCHS = 2
BATCHES = 8  # per epoch


@instrument.training_stage("health")
def report_health(model: torch.nn.Module, loss: torch.Tensor) -> dict[str, torch.Tensor]:
    """One point of the health series: the loss and the norm of the weights (0-d tensors)."""
    weights = torch.sqrt(sum(p.detach().pow(2).sum() for p in model.parameters()))
    return {"loss": loss.detach(), "weight_norm": weights}


class TinyRegression(lightning.LightningModule):
    """A linear layer learning y = sum(x)."""

    def __init__(self, lr: float = 0.05) -> None:
        super().__init__()
        self.save_hyperparameters()  # Lightning writes lr into the run's config
        self.layer = torch.nn.Linear(4, 1)

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_index: int) -> torch.Tensor:
        x, y = batch
        loss = torch.nn.functional.mse_loss(self.layer(x), y)
        self.log("train_loss", loss)  # Lightning's own metric
        report_health(self, loss)  # instrument's stage point, into Lightning's run
        return loss

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=self.hparams.lr)


def main() -> str:
    """Train for EPOCHS epochs of BATCHES batches; return the run's id."""
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(4 * BATCHES, 4, generator=generator)
    data = torch.utils.data.TensorDataset(x, x.sum(dim=1, keepdim=True))
    root = os.environ.get("WANDB_DIR") or "."
    logger = WandbLogger(project="instrument-lightning", save_dir=root, offline=True)
    trainer = lightning.Trainer(
        max_epochs=EPOCHS, logger=logger, log_every_n_steps=1, accelerator="cpu",
        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
    )
    trainer.fit(TinyRegression(), torch.utils.data.DataLoader(data, batch_size=4))
    run_id: str = logger.experiment.id
    logger.experiment.finish()  # Lightning leaves the run open; finish it to read it back below
    return run_id


if __name__ == "__main__":
    run_id = main()
    wandb_dir = Path(os.environ.get("WANDB_DIR") or ".") / "wandb"
    runs = [runfile.read_run_file(path) for path in runfile.find_run_files(wandb_dir, run_id)]
    print(f"\nLightning's run holds its own metrics and instrument's stage:\n\n{runfile.format_report(runs)}", end="")
