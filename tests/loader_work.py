"""A data set whose items come from a decorated stage, for DataLoader worker tests: a spawned
worker imports this module to find it (``test_workers.test_dataloader_workers_write_into_the_parents_run``)."""

from __future__ import annotations

import torch
from torch.utils.data import Dataset

import instrument


@instrument.training_stage("data")
def fetch(index: int) -> dict[str, float]:
    """One ``data/index`` point per item fetched (in a DataLoader worker)."""
    return {"index": float(index)}


class Numbers(Dataset[torch.Tensor]):
    """*size* items; fetching item *i* records it through :func:`fetch`."""

    def __init__(self, size: int) -> None:
        self.size = size

    def __len__(self) -> int:
        return self.size

    def __getitem__(self, index: int) -> torch.Tensor:
        fetch(index)
        return torch.tensor(float(index))
