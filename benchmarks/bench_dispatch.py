"""Benchmark: what instrument costs a training loop, side by side with calling wandb directly.

Run it on its own (about seven minutes on two cores):

    python benchmarks/bench_dispatch.py                 # 5 fresh processes per measurement
    python benchmarks/bench_dispatch.py --repeats 3 --big 50000   # quicker, rougher

Every measurement runs in a fresh Python process (so imports and the first ``wandb.init`` are
paid the way a script pays them), real wandb offline unless said otherwise, and the table shows
the median over the processes. It measures:

1. ``import instrument`` vs ``import wandb`` (wall time).
2. A decorated stage call with mode ``disabled`` vs the bare function (us added per call).
3. A decorated stage returning 10 metrics, 1,000 points, vs raw ``run.log`` of the same dict:
   training-thread time per point (the loop's wall time, and the thread's own CPU time), and
   total wall time from the import to the end of ``finish``.
4. Ten ``WandBContext.log_training_metric`` calls per step (1,000 steps) vs one raw ``run.log``
   of the ten-key dict per step, and vs ten raw ``run.log`` calls per step (one call per metric).
5. Peak RSS after 200,000 points with wandb stubbed slow (0.05 ms per ``run.log``) vs after
   1,000 points (the queue's bound keeps memory flat).
6. A step of 2 ms of pure Python (the GIL held throughout) and one 10-metric point, 500 steps:
   where ``run.log`` competes with the training thread for the GIL (docs/wandb-behaviour.md, "Costs").
7. The same with a step that releases the GIL (a 2 ms sleep, as a GPU step or a C kernel), 2,000
   steps.

Timings belong here, never in the test suite. ``benchmarks/test_benchmarks.py`` runs the
in-process parts under pytest-benchmark when it is installed.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
METRICS = [f"m{i}" for i in range(10)]


# Children: each prints one JSON line of figures --------------------------------------------------
def child_import(which: str) -> dict[str, float]:
    start = time.perf_counter()
    module = __import__(which)
    imported = time.perf_counter() - start
    if which == "instrument":  # what a script pays before its loop: the import and a decoration
        module.training_stage("op")(lambda: None)
    return {"seconds": imported, "with_decoration": time.perf_counter() - start,
            "wandb_imported": float("wandb" in sys.modules) if which == "instrument" else 1.0}


def child_disabled(calls: int) -> dict[str, float]:
    import timeit

    import instrument

    def step() -> dict[str, float]:
        return {"loss": 0.5, "acc": 0.25}

    decorated = instrument.training_stage("op")(step)
    decorated()  # resolve the disabled mode once
    bare = min(timeit.repeat(step, number=calls, repeat=5)) / calls
    wrapped = min(timeit.repeat(decorated, number=calls, repeat=5)) / calls
    ctx = instrument.current()
    metric = min(timeit.repeat(lambda: ctx.log_training_metric("op", "loss", 0.5, step=1), number=calls, repeat=5))
    return {"bare_us": bare * 1e6, "decorated_us": wrapped * 1e6, "metric_us": metric / calls * 1e6,
            "wandb_imported": float("wandb" in sys.modules)}


def _row(i: int) -> dict[str, float]:
    return {name: i * 0.001 + j for j, name in enumerate(METRICS)}


def child_stage(kind: str, points: int) -> dict[str, float]:
    """A stage returning 10 metrics per call: instrument's decorator vs raw run.log."""
    start = time.perf_counter()
    if kind == "instrument":
        import instrument

        @instrument.training_stage("op")
        def train_step(i: int) -> dict[str, float]:
            return _row(i)

        loop_start, cpu_start = time.perf_counter(), time.thread_time()
        train_step(0)  # the first record creates the run's session and queue and starts its thread
        first = time.perf_counter() - loop_start
        for i in range(1, points):
            train_step(i)
        loop, cpu = time.perf_counter() - loop_start, time.thread_time() - cpu_start
        instrument.finish()
    else:
        import wandb

        run = wandb.init(project="bench", settings=wandb.Settings(silent=True))
        loop_start, cpu_start = time.perf_counter(), time.thread_time()
        for i in range(points):
            run.log({f"op/{k}": v for k, v in _row(i).items()} | {"op/step": i})
            if i == 0:
                first = time.perf_counter() - loop_start
        loop, cpu = time.perf_counter() - loop_start, time.thread_time() - cpu_start
        run.finish()
    return {"loop_us": loop / points * 1e6, "cpu_us": cpu / points * 1e6, "total_s": time.perf_counter() - start,
            "first_ms": first * 1e3, "rest_us": (loop - first) / (points - 1) * 1e6}


def child_metrics(kind: str, steps: int) -> dict[str, float]:
    """Ten metrics per step: ten log_training_metric calls vs raw run.log (one dict, or ten calls)."""
    start = time.perf_counter()
    if kind == "instrument":
        import instrument

        ctx = instrument.current()
        loop_start, cpu_start = time.perf_counter(), time.thread_time()
        for k in range(steps):
            for j, name in enumerate(METRICS):
                ctx.log_training_metric("op", name, k * 0.001 + j, step=k)
            if k == 0:
                first = time.perf_counter() - loop_start
        loop, cpu = time.perf_counter() - loop_start, time.thread_time() - cpu_start
        instrument.finish()
    else:
        import wandb

        run = wandb.init(project="bench", settings=wandb.Settings(silent=True))
        loop_start, cpu_start = time.perf_counter(), time.thread_time()
        for k in range(steps):
            if k == 1:
                first = time.perf_counter() - loop_start
            if kind == "raw_dict":
                run.log({f"op/{name}": k * 0.001 + j for j, name in enumerate(METRICS)} | {"op/step": k})
            else:  # raw_calls: one run.log per metric, as a hand-written log_training_metric does
                for j, name in enumerate(METRICS):
                    run.log({f"op/{name}": k * 0.001 + j, "op/step": k})
        loop, cpu = time.perf_counter() - loop_start, time.thread_time() - cpu_start
        run.finish()
    return {"loop_us": loop / steps * 1e6, "cpu_us": cpu / steps * 1e6, "total_s": time.perf_counter() - start,
            "first_ms": first * 1e3, "rest_us": (loop - first) / (steps - 1) * 1e6}


def _spin(seconds: float) -> None:
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        pass


def child_python_bound(kind: str, steps: int, spin_ms: float, gil_free: bool = False) -> dict[str, float]:
    """A training step of *spin_ms*, then one 10-metric point.

    The step is pure Python holding the GIL, or (*gil_free*) a sleep that releases it, as a GPU
    step or a C kernel does.
    """
    work = (lambda: time.sleep(spin_ms / 1000)) if gil_free else (lambda: _spin(spin_ms / 1000))
    start = time.perf_counter()
    if kind == "instrument":
        import instrument

        @instrument.training_stage("op")
        def train_step(i: int) -> dict[str, float]:
            work()
            return _row(i)

        loop_start = time.perf_counter()
        for i in range(steps):
            train_step(i)
        loop = time.perf_counter() - loop_start
        instrument.finish()
    else:
        import wandb

        run = wandb.init(project="bench", settings=wandb.Settings(silent=True))
        loop_start = time.perf_counter()
        for i in range(steps):
            work()
            run.log({f"op/{k}": v for k, v in _row(i).items()} | {"op/step": i})
        loop = time.perf_counter() - loop_start
        run.finish()
    return {"step_ms": loop / steps * 1e3, "total_s": time.perf_counter() - start}


class _SlowRun:
    """A stand-in for ``wandb.Run`` whose ``log`` takes about 0.05 ms and keeps nothing."""

    def __init__(self, **kwargs: Any) -> None:
        self.id = kwargs.get("id") or "stub"
        self.summary: dict[str, Any] = {}
        self.config: Any = type("Config", (), {"update": lambda self, *a, **k: None})()
        self.settings = type("Settings", (), {"sync_dir": ""})()
        self.dir = ""
        self.rows = 0

    def log(self, row: dict[str, Any]) -> None:
        deadline = time.perf_counter() + 5e-5
        while time.perf_counter() < deadline:
            pass
        self.rows += 1

    def define_metric(self, *args: Any, **kwargs: Any) -> None:
        pass

    def finish(self, exit_code: int = 0) -> None:
        pass


def child_memory(points: int) -> dict[str, float]:
    """Log *points* 10-metric points into a stubbed slow wandb; return the peak RSS."""
    import resource
    import types

    stub = types.ModuleType("wandb")
    stub.run = None  # type: ignore[attr-defined]
    runs: list[_SlowRun] = []

    def init(**kwargs: Any) -> _SlowRun:
        runs.append(_SlowRun(**kwargs))
        return runs[-1]

    stub.init = init  # type: ignore[attr-defined]
    stub.Settings = lambda **kwargs: kwargs  # type: ignore[attr-defined]
    sys.modules["wandb"] = stub

    import instrument

    @instrument.training_stage("op")
    def train_step(i: int) -> dict[str, float]:
        return _row(i)

    start = time.perf_counter()
    for i in range(points):
        train_step(i)
    instrument.finish()
    peak_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {"peak_mb": peak_kb / 1024, "rows": float(runs[0].rows), "seconds": time.perf_counter() - start}


CHILDREN = {
    "import_instrument": lambda a: child_import("instrument"),
    "import_wandb": lambda a: child_import("wandb"),
    "disabled": lambda a: child_disabled(200_000),
    "stage_instrument": lambda a: child_stage("instrument", a.points),
    "stage_raw": lambda a: child_stage("raw", a.points),
    "metrics_instrument": lambda a: child_metrics("instrument", a.points),
    "metrics_raw_dict": lambda a: child_metrics("raw_dict", a.points),
    "metrics_raw_calls": lambda a: child_metrics("raw_calls", a.points),
    "python_bound_instrument": lambda a: child_python_bound("instrument", a.points // 2, 2.0),
    "python_bound_raw": lambda a: child_python_bound("raw", a.points // 2, 2.0),
    "gil_free_instrument": lambda a: child_python_bound("instrument", a.points * 2, 2.0, gil_free=True),
    "gil_free_raw": lambda a: child_python_bound("raw", a.points * 2, 2.0, gil_free=True),
    "memory_small": lambda a: child_memory(1_000),
    "memory_big": lambda a: child_memory(a.big),
}


# Parent: fresh processes, medians, the table ----------------------------------------------------
def child_env(root: Path, mode: str = "offline") -> dict[str, str]:
    """Return the environment of a child that writes wandb runs under *root* in *mode*, with
    this checkout's instrument first on the path and no W&B or instrument setting inherited."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("WANDB_", "INSTRUMENT_"))}
    env.update(
        WANDB_MODE=mode,
        WANDB_SILENT="true",
        WANDB_DIR=str(root),
        WANDB_CACHE_DIR=str(root / ".cache"),
        WANDB_DATA_DIR=str(root / ".data"),
        WANDB_CONFIG_DIR=str(root / ".config"),
        WANDB_DISABLE_GIT="true",
        PYTHONPATH=os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH", "")) if p),
    )
    return env


def run_child(name: str, args: argparse.Namespace, root: Path) -> dict[str, float]:
    env = child_env(root, "disabled" if name == "disabled" else "offline")
    root.mkdir(parents=True, exist_ok=True)
    command = [sys.executable, __file__, "--child", name, "--points", str(args.points), "--big", str(args.big)]
    result = subprocess.run(command, env=env, cwd=root, capture_output=True, text=True, timeout=900)
    if result.returncode != 0:
        raise RuntimeError(f"{name} failed ({result.returncode}):\n{result.stdout}\n{result.stderr}")
    return json.loads(result.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


def medians(name: str, args: argparse.Namespace, root: Path) -> dict[str, float]:
    samples = []
    for i in range(args.repeats):
        samples.append(run_child(name, args, root / f"{name}-{i}"))
        print(f"  {name} #{i + 1}: {samples[-1]}", file=sys.stderr, flush=True)
    return {key: statistics.median(s[key] for s in samples) for key in samples[0]}


def machine() -> str:
    model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        from importlib import metadata

        wandb_version = metadata.version("wandb")
    except Exception:
        wandb_version = "?"
    return (f"{platform.system()} {platform.machine()}, {os.cpu_count()} cores ({model or 'unknown CPU'}), "
            f"Python {platform.python_version()}, wandb {wandb_version}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=5, help="fresh processes per measurement (median)")
    parser.add_argument("--points", type=int, default=1000, help="points (steps) for measurements 3 and 4")
    parser.add_argument("--big", type=int, default=200_000, help="points for the memory measurement")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(CHILDREN[args.child](args)))
        return

    with tempfile.TemporaryDirectory(prefix="instrument-bench-") as tmp:
        root = Path(tmp)
        m = {name: medians(name, args, root) for name in CHILDREN}

    rows: list[tuple[str, str, str, str, str]] = []

    def add(what: str, ours: str, theirs: str, ratio: float | None, target: str, ok: bool | None) -> None:
        verdict = "" if ok is None else ("ok" if ok else "MISSED")
        rows.append((what, ours, theirs, "" if ratio is None else f"{ratio:.3f}", f"{target} {verdict}".strip()))

    ii, iw = m["import_instrument"]["seconds"], m["import_wandb"]["seconds"]
    add("1. import instrument / import wandb", f"{ii * 1e3:.1f} ms", f"{iw * 1e3:.1f} ms", ii / iw, "<= 0.1",
        ii / iw <= 0.1)
    idec = m["import_instrument"]["with_decoration"]
    add("   import instrument + decorate a stage", f"{idec * 1e3:.1f} ms", f"{iw * 1e3:.1f} ms", idec / iw, "", None)
    d = m["disabled"]
    added = d["decorated_us"] - d["bare_us"]
    add("2. disabled stage call, us added per call", f"{d['decorated_us']:.2f} us", f"{d['bare_us']:.2f} us bare",
        None, f"{added:.2f} us <= 2", added <= 2.0)
    add("   disabled log_training_metric per call", f"{d['metric_us']:.2f} us", "", None, "", None)
    si, sr = m["stage_instrument"], m["stage_raw"]
    add("3. stage, 10 metrics: loop time per point", f"{si['loop_us']:.1f} us", f"{sr['loop_us']:.1f} us",
        si["loop_us"] / sr["loop_us"], "<= 0.1", si["loop_us"] / sr["loop_us"] <= 0.1)
    add("   same, first point (session, queue, thread)", f"{si['first_ms']:.1f} ms", f"{sr['first_ms']:.1f} ms",
        None, "", None)
    add("   same, points 2..N per point", f"{si['rest_us']:.1f} us", f"{sr['rest_us']:.1f} us",
        si["rest_us"] / sr["rest_us"], "", None)
    add("   stage: training-thread CPU per point", f"{si['cpu_us']:.1f} us", f"{sr['cpu_us']:.1f} us",
        si["cpu_us"] / sr["cpu_us"], "", None)
    add("   stage: total wall incl. import, init, finish", f"{si['total_s']:.2f} s", f"{sr['total_s']:.2f} s",
        si["total_s"] / sr["total_s"], "<= 1.2", si["total_s"] / sr["total_s"] <= 1.2)
    mi, md, mc = m["metrics_instrument"], m["metrics_raw_dict"], m["metrics_raw_calls"]
    add("4. 10 x log_training_metric vs 1 run.log(dict): total", f"{mi['total_s']:.2f} s", f"{md['total_s']:.2f} s",
        mi["total_s"] / md["total_s"], "<= 1.3", mi["total_s"] / md["total_s"] <= 1.3)
    add("   loop time per step", f"{mi['loop_us']:.1f} us", f"{md['loop_us']:.1f} us",
        mi["loop_us"] / md["loop_us"], "", None)
    add("   same, steps 2..N per step", f"{mi['rest_us']:.1f} us", f"{md['rest_us']:.1f} us",
        mi["rest_us"] / md["rest_us"], "", None)
    add("   vs 10 x run.log per step: total", f"{mi['total_s']:.2f} s", f"{mc['total_s']:.2f} s",
        mi["total_s"] / mc["total_s"], "", None)
    add("   vs 10 x run.log per step: loop per step", f"{mi['loop_us']:.1f} us", f"{mc['loop_us']:.1f} us",
        mi["loop_us"] / mc["loop_us"], "", None)
    small, big = m["memory_small"], m["memory_big"]
    grown = big["peak_mb"] - small["peak_mb"]
    add(f"5. peak RSS, {args.big:,} vs 1,000 points (slow stub)", f"{big['peak_mb']:.1f} MB",
        f"{small['peak_mb']:.1f} MB", None, f"+{grown:.1f} MB <= 100", grown <= 100)

    pi, pr = m["python_bound_instrument"], m["python_bound_raw"]
    add("6. 2 ms pure-Python step + 1 point: time per step", f"{pi['step_ms']:.2f} ms", f"{pr['step_ms']:.2f} ms",
        pi["step_ms"] / pr["step_ms"], "", None)
    add("   same, total wall incl. import, init, finish", f"{pi['total_s']:.2f} s", f"{pr['total_s']:.2f} s",
        pi["total_s"] / pr["total_s"], "", None)
    gi, gr = m["gil_free_instrument"], m["gil_free_raw"]
    add("7. 2 ms GIL-free step (sleep) + 1 point: time per step", f"{gi['step_ms']:.2f} ms", f"{gr['step_ms']:.2f} ms",
        gi["step_ms"] / gr["step_ms"], "", None)
    add("   same, total wall incl. import, init, finish", f"{gi['total_s']:.2f} s", f"{gr['total_s']:.2f} s",
        gi["total_s"] / gr["total_s"], "", None)
    print(f"\nMachine: {machine()}; medians of {args.repeats} fresh processes; {args.points} points of 10 metrics.\n")
    header = ("measurement", "instrument", "baseline", "ratio", "target")
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(5)]
    print("| " + " | ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)) + " |")
    print("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    for row in rows:
        print("| " + " | ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) + " |")


if __name__ == "__main__":
    main()
