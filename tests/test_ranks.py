"""Ranks: the environment matrix of the rank resolver (no torch), the policy and the job group."""

from __future__ import annotations

import subprocess
import sys
from types import SimpleNamespace
from typing import Any

import pytest
from helpers import ROOT

import instrument
from instrument import InstrumentationWarning, _problems, _ranks
from instrument._ranks import Rank
from instrument.testing import recording


@pytest.fixture(autouse=True)
def _fresh_warnings() -> None:
    """Each case sees its own once-per-key warnings."""
    _problems.reset_once()


def dist(rank: int, size: int, *, initialized: bool = True) -> SimpleNamespace:
    """Return a stand-in for an imported ``torch.distributed`` module."""
    return SimpleNamespace(is_available=lambda: True, is_initialized=lambda: initialized,
                           get_rank=lambda: rank, get_world_size=lambda: size)


TORCHRUN = {"RANK": "3", "WORLD_SIZE": "4", "LOCAL_RANK": "1", "GROUP_RANK": "1", "LOCAL_WORLD_SIZE": "2"}
SLURM = {"SLURM_PROCID": "5", "SLURM_NTASKS": "8", "SLURM_LOCALID": "1", "SLURM_NODEID": "2"}

MATRIX: list[tuple[str, dict[str, str], dict[str, Any], Rank]] = [
    ("nothing", {}, {}, Rank(0, 1, "default")),
    ("INSTRUMENT_RANK beats everything", {"INSTRUMENT_RANK": "2", **TORCHRUN}, {"torch.distributed": dist(1, 4)},
     Rank(2, 4, "INSTRUMENT_RANK")),
    ("torch.distributed beats the environment", TORCHRUN, {"torch.distributed": dist(1, 4)},
     Rank(1, 4, "torch.distributed")),
    ("torch.distributed imported but not initialized", TORCHRUN, {"torch.distributed": dist(1, 4, initialized=False)},
     Rank(3, 4, "RANK")),
    ("torch.distributed alone (torch.multiprocessing.spawn)", {}, {"torch.distributed": dist(1, 2)},
     Rank(1, 2, "torch.distributed")),
    ("torchrun", TORCHRUN, {}, Rank(3, 4, "RANK")),
    ("RANK beats Open MPI", {"RANK": "0", "OMPI_COMM_WORLD_RANK": "1"}, {}, Rank(0, None, "RANK")),
    ("Open MPI", {"OMPI_COMM_WORLD_RANK": "1", "OMPI_COMM_WORLD_SIZE": "2", "PMI_RANK": "0"}, {},
     Rank(1, 2, "OMPI_COMM_WORLD_RANK")),
    ("MPICH", {"PMI_RANK": "1", "PMI_SIZE": "3", **SLURM}, {}, Rank(1, 3, "PMI_RANK")),
    ("srun of several tasks", SLURM, {}, Rank(5, 8, "SLURM_PROCID")),
    ("an sbatch script: one task is not a rank", {"SLURM_PROCID": "0", "SLURM_NTASKS": "1"}, {}, Rank(0, 1, "default")),
    ("srun of one task that runs torchrun", {"SLURM_PROCID": "0", "SLURM_NTASKS": "1", "RANK": "1"}, {},
     Rank(1, None, "RANK")),
    ("SLURM_PROCID without SLURM_NTASKS", {"SLURM_PROCID": "3"}, {}, Rank(0, 1, "default")),
    ("Lightning's launcher on node 1",
     {"LOCAL_RANK": "1", "NODE_RANK": "1", "LOCAL_WORLD_SIZE": "4", "WORLD_SIZE": "8"}, {}, Rank(5, 8, "LOCAL_RANK")),
    ("GROUP_RANK arithmetic", {"LOCAL_RANK": "1", "GROUP_RANK": "2", "LOCAL_WORLD_SIZE": "2"}, {},
     Rank(5, None, "LOCAL_RANK")),
    ("node 0 needs no LOCAL_WORLD_SIZE", {"LOCAL_RANK": "1", "NODE_RANK": "0", "WORLD_SIZE": "4"}, {},
     Rank(1, 4, "LOCAL_RANK")),
    ("LOCAL_RANK alone is ignored", {"LOCAL_RANK": "1"}, {}, Rank(0, 1, "default")),
]


@pytest.mark.parametrize(("environ", "modules", "expected"), [case[1:] for case in MATRIX],
                         ids=[case[0] for case in MATRIX])
def test_the_rank_comes_from_the_most_specific_source(environ: dict[str, str], modules: dict[str, Any],
                                                      expected: Rank) -> None:
    """Each launcher's variables give the rank and world size, in the documented order."""
    assert expected == _ranks.resolve_rank(environ, modules)


def test_a_node_other_than_0_without_local_world_size_is_not_rank_0() -> None:
    """``LOCAL_RANK`` on node 1 with no ``LOCAL_WORLD_SIZE`` is a rank other than 0, of unknown
    index, with a warning that names the variables and ``INSTRUMENT_RANK``."""
    with pytest.warns(InstrumentationWarning, match=r"LOCAL_RANK=0 on NODE_RANK=1 without LOCAL_WORLD_SIZE.*INSTRUMENT_RANK"):
        rank = _ranks.resolve_rank({"LOCAL_RANK": "0", "NODE_RANK": "1"}, {})
    assert (Rank(None, None, "LOCAL_RANK"), False, False) == (
        rank, _ranks.writes(rank, "rank0"), rank.index == 0)


@pytest.mark.parametrize("value", ["abc", "-1", "1.5", ""])
def test_a_variable_that_is_not_a_whole_number_is_skipped(value: str) -> None:
    """``RANK`` set to something else is named in a warning (when not empty) and the next
    source decides."""
    environ = {"RANK": value, "OMPI_COMM_WORLD_RANK": "1"}
    if value:
        with pytest.warns(InstrumentationWarning, match=f"RANK={value!r} is not a whole number"):
            rank = _ranks.resolve_rank(environ, {})
    else:
        rank = _ranks.resolve_rank(environ, {})
    assert Rank(1, None, "OMPI_COMM_WORLD_RANK") == rank


def test_a_broken_torch_distributed_is_skipped() -> None:
    """A ``torch.distributed`` whose calls raise does not stop the resolution."""
    broken = SimpleNamespace(is_available=lambda: True, is_initialized=lambda: 1 / 0)
    assert Rank(1, 2, "RANK") == _ranks.resolve_rank({"RANK": "1", "WORLD_SIZE": "2"}, {"torch.distributed": broken})


def test_the_rank_is_resolved_once_per_process(monkeypatch: pytest.MonkeyPatch) -> None:
    """The first resolution is cached for this process id: later changes to the environment do not
    move a process from one rank to another."""
    monkeypatch.setattr(_ranks, "_cache", {})
    assert 1 == _ranks.current_rank({"RANK": "1"}).index
    assert (1, 1) == (_ranks.current_rank({"RANK": "0"}).index, _ranks.cached_rank(__import__("os").getpid()).index)


def test_resolving_never_imports_torch() -> None:
    """In a fresh interpreter, resolving the rank and the job group (with torch installed) leaves
    torch unimported; ``import instrument`` reads no rank at all."""
    code = (
        "import sys, os; os.environ.update(RANK='1', WORLD_SIZE='2')\n"
        "import instrument\n"
        "from instrument import _ranks\n"
        "assert not _ranks._cache, 'resolved at import'\n"
        "print(_ranks.current_rank(), _ranks.job_group() is not None, 'torch' in sys.modules)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], check=False, cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert "Rank(index=1, size=2, source='RANK') False False" == result.stdout.strip(), result.stderr


@pytest.mark.parametrize(("rank", "policy", "expected"), [
    (Rank(0, 2, "RANK"), "rank0", True),
    (Rank(1, 2, "RANK"), "rank0", False),
    (Rank(0, 2, "RANK"), "per_rank", True),
    (Rank(1, 2, "RANK"), "per_rank", True),
])
def test_which_ranks_write(rank: Rank, policy: str, expected: bool) -> None:
    """``rank0`` lets only global rank 0 write; ``per_rank`` lets every rank write."""
    assert expected == _ranks.writes(rank, policy)


def test_the_policy_comes_from_configure_then_the_environment() -> None:
    """``configure(rank_policy=)`` beats ``INSTRUMENT_RANK_POLICY``, which beats the default
    ``rank0``; an unknown variable value warns once and keeps ``rank0``."""
    assert ("per_rank", "per_rank", "rank0") == (
        _ranks.resolve_policy("per_rank", {"INSTRUMENT_RANK_POLICY": "rank0"}),
        _ranks.resolve_policy(None, {"INSTRUMENT_RANK_POLICY": "per_rank"}),
        _ranks.resolve_policy(None, {}),
    )
    with pytest.warns(InstrumentationWarning, match="INSTRUMENT_RANK_POLICY='every'"):
        assert "rank0" == _ranks.resolve_policy(None, {"INSTRUMENT_RANK_POLICY": "every"})
    with pytest.raises(ValueError, match=r"instrument\.configure: rank_policy 'all' is not a rank policy"):
        instrument.configure(rank_policy="all")


def test_the_job_group_is_the_same_on_every_rank_and_differs_between_jobs() -> None:
    """Two ranks of one job (different ranks, same launcher ids) get one group; another job, or
    another launcher, another; ``WANDB_RUN_GROUP`` is used as is; torchrun's ``none`` id is skipped."""
    first, second = ({**TORCHRUN, "RANK": str(k), "TORCHELASTIC_RUN_ID": "4f1c"} for k in (0, 1))
    group = _ranks.job_group(first, {})
    assert group is not None and 8 == len(group) and group.isalnum() and group.islower()
    assert group == _ranks.job_group(second, {})
    assert group != _ranks.job_group({**first, "TORCHELASTIC_RUN_ID": "9e2d"}, {})
    assert _ranks.job_group({"SLURM_JOB_ID": "17"}, {}) != _ranks.job_group({"SLURM_JOB_ID": "18"}, {})
    static = {"TORCHELASTIC_RUN_ID": "none", "MASTER_ADDR": "10.0.0.1", "MASTER_PORT": "29500"}
    assert _ranks.job_group(static, {}) == _ranks.job_group({**static, "RANK": "1"}, {})
    assert "sweep-7" == _ranks.job_group({"WANDB_RUN_GROUP": "sweep-7", **first}, {})
    assert _ranks.job_group({}, {}) is None


@instrument.training_stage("operator")
def train_step(k: int) -> dict[str, float]:
    """One operator point."""
    return {"loss": float(k)}


@instrument.eval_summary(prefix="eval")
def evaluate() -> dict[str, float]:
    """A summary key."""
    return {"acc": 0.5}


def test_a_rank_other_than_0_records_nothing_and_every_function_returns(monkeypatch: pytest.MonkeyPatch) -> None:
    """Under the default policy a process of rank 1 starts no run, even a pipeline's, and the
    decorated functions return their values; the recorder sees no run. Each recording resolves
    the rank afresh: an earlier one of this process, as a plain process, wrote its run."""
    with recording() as earlier:
        train_step(0)
    assert 1 == len(earlier.runs)
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "2")
    with recording() as recorded:
        with instrument.pipeline(project="p") as run:
            returned = [train_step(0), evaluate()]
        assert (None, None) == (run.id, run.folder)
        returned.append(train_step(1))
    assert ([{"loss": 0.0}, {"acc": 0.5}, {"loss": 1.0}], []) == (returned, recorded.runs)


def test_a_rank_that_writes_nothing_takes_the_decorators_fast_path(monkeypatch: pytest.MonkeyPatch) -> None:
    """In production, rank 1 of 2 is placed at its first record; from then on linkage tells the
    decorators that nothing would be written, so they only call their function."""
    from instrument import _linkage

    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "2")
    token = _linkage.push_backend(None)
    try:
        before = _linkage.disabled()  # not placed yet: torch.distributed may still be initialized
        returned = train_step(0)
        assert (False, {"loss": 0.0}, True) == (before, returned, _linkage.disabled())
    finally:
        _linkage.pop_backend(token)


def test_per_rank_tags_the_run_and_puts_the_rank_in_the_config(monkeypatch: pytest.MonkeyPatch) -> None:
    """``configure(rank_policy="per_rank")`` on rank 1 of 2 writes a run in the job's group (from
    the rendezvous id), tagged ``rank:1``, config ``instrument/rank``; a given run id gets the
    rank as a suffix, so the ranks' runs never share one."""
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("TORCHELASTIC_RUN_ID", "4f1c")
    with recording() as recorded:
        instrument.configure(rank_policy="per_rank", tags=["baseline"], run_id="job17")
        train_step(0)
    run = recorded.run()
    assert ("job17-rank1", ("baseline", "rank:1"), {"instrument": {"rank": 1, "world_size": 2}}) == (
        run.id, run.tags, run.config)
    assert _ranks.job_group({"TORCHELASTIC_RUN_ID": "4f1c"}, {}) == run.group


def test_a_plain_process_is_rank_0_of_1_and_writes_as_before() -> None:
    """With no launcher's variable the process writes its run, untagged, under either policy."""
    with recording() as recorded:
        instrument.configure(rank_policy="per_rank")
        train_step(0)
    run = recorded.run()
    assert ((), {}) == (run.tags, run.config)


@pytest.mark.parametrize(("decorate", "message"), [
    (lambda: instrument.training_stage("s", reduce="avg"),
     "instrument.training_stage('s'): reduce must be one of 'mean', 'sum', 'max', 'min' or None, got str 'avg'"),
    (lambda: instrument.eval_summary(prefix="e", reduce=1),
     "instrument.eval_summary(prefix='e'): reduce must be one of 'mean', 'sum', 'max', 'min' or None, got int 1"),
])
def test_an_unknown_reduction_raises_when_decorating(decorate: Any, message: str) -> None:
    """``reduce=`` is checked when the decorator is applied, naming it and the value."""
    with pytest.raises(ValueError) as raised:
        decorate()
    assert message == str(raised.value)


def test_reduce_without_a_process_group_writes_the_value_as_returned() -> None:
    """Without an initialized ``torch.distributed`` process group, ``reduce=`` changes nothing."""

    @instrument.training_stage("synced", reduce="mean")
    def synced() -> dict[str, float]:
        return {"loss": 0.25}

    with recording() as recorded:
        assert {"loss": 0.25} == synced()
    assert [(0, 0.25)] == recorded.run().series("synced/loss")
