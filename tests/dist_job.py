"""A two-rank gloo job on 127.0.0.1 for ``test_distributed.py`` (case C15).

``python dist_job.py torchrun <root>`` is what ``torchrun --nproc-per-node 2`` starts (the rank
comes from the launcher's variables, then from ``torch.distributed``); ``python dist_job.py spawn
<root>`` starts both ranks itself with ``torch.multiprocessing.spawn`` (no rank variable at all:
the rank comes only from ``torch.distributed``). Each rank writes runs under ``<root>/rank<k>``
(its own ``WANDB_DIR``, so a folder a rank creates is seen) and prints one JSON line saying what
it saw.
"""

from __future__ import annotations

import json
import os
import socket
import sys
from typing import Any

import torch.distributed as dist

import instrument


@instrument.training_stage("train")
def train_step(k: int, rank: int) -> dict[str, float]:
    """One point per call: the rank's own loss."""
    return {"loss": float(rank) + k}


@instrument.eval_summary(prefix="eval")
def evaluate(rank: int) -> dict[str, float]:
    """The rank's own accuracy (summary)."""
    return {"acc": 0.5 + rank}


@instrument.training_stage("synced", reduce="mean")
def synced_step(rank: int) -> dict[str, Any]:
    """Mean over the ranks: loss 0.5, tokens 15.0; the name stays rank 0's."""
    return {"loss": float(rank), "tokens": 10 * (rank + 1), "name": f"rank{rank}"}


@instrument.eval_summary(prefix="synced_eval", reduce="sum")
def synced_evaluate(rank: int) -> dict[str, int]:
    """Sum over the ranks: samples 30."""
    return {"samples": 10 * (rank + 1)}


@instrument.training_stage("uneven", reduce="sum")
def uneven_step(rank: int) -> dict[str, float]:
    """Ranks that return different numbers: a warning, and each rank keeps its own."""
    return {"a": 1.0} if rank == 0 else {"a": 1.0, "b": 2.0}


def work(rank: int, root: str, init_method: str | None) -> None:
    """Run one rank: the stage twice, the eval, the reducing stages and eval; then report."""
    folder = os.path.join(root, f"rank{rank}")
    os.environ["WANDB_DIR"] = folder  # before the first record: where this rank's runs would go
    if init_method is None:
        dist.init_process_group("gloo")  # torchrun's variables say where
    else:
        dist.init_process_group("gloo", init_method=init_method, rank=rank, world_size=2)
    returned = [train_step(0, rank), train_step(1, rank), evaluate(rank), synced_step(rank), synced_evaluate(rank),
                uneven_step(rank)]
    instrument.flush()
    report = json.dumps({
        "rank": dist.get_rank(),
        "returned": returned,
        "wandb imported": "wandb" in sys.modules,
        "folder exists": os.path.exists(folder),
    })
    for turn in range(dist.get_world_size()):  # one rank at a time: the lines never interleave
        dist.barrier()
        if turn == rank:
            sys.stdout.write(report + "\n")
            sys.stdout.flush()
    dist.destroy_process_group()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


if __name__ == "__main__":
    launcher, root = sys.argv[1], sys.argv[2]
    if launcher == "torchrun":
        work(int(os.environ["RANK"]), root, None)
    else:
        import torch.multiprocessing as mp

        mp.spawn(work, args=(root, f"tcp://127.0.0.1:{_free_port()}"), nprocs=2)
