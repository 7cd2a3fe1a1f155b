"""Benchmark: instrument side by side with raw wandb, in alternating fresh processes.

Every measurement runs the same work twice, once through instrument (decorated functions, the
script simply ends) and once through raw wandb (``wandb.init``, ``run.log``, ``run.finish``),
real wandb 0.31 offline, each in a fresh Python process, alternating instrument and raw so that
a change in the machine's load hits both. The table gives the medians and their ratio, and the
load average (``/proc/loadavg``, 1 minute) seen at the start of each measurement.

    python benchmarks/bench_wandb.py --quick            # about two minutes, one process each
    python benchmarks/bench_wandb.py                    # every row, 3 processes each (long)
    python benchmarks/bench_wandb.py --only keys,step   # some rows

Rows (the table of issue 15):

* ``import``: ``import instrument`` plus decorating three functions, against ``import wandb``.
* ``points``: N points of 10 keys (1k, 10k, 100k, 1M; quick: 1k, 10k): process wall time, and
  the training loop's own time per point.
* ``route``: what the fast route into wandb-core gains: 100,000 points (quick: 10,000) with it
  and with ``INSTRUMENT_FAST_ROUTE=0`` (every row through ``run.log`` on the writer thread).
* ``keys``: 3,000 rows of K keys (1, 10, 100, 1,000; quick: 300 rows of 1 and 1,000 keys) with
  ``INSTRUMENT_EXIT_TIMEOUT=5``: process wall, the Python process's peak RSS, and the rows found
  in the ``.wandb`` file.
* ``stages``: 10,000 points spread over S stages (1, 10, 100), each stage with its own step axis
  (raw wandb: ``define_metric`` per key and a ``<stage>/step`` value, as instrument writes it).
* ``step``: a 460x460 float64 matmul step plus one 10-key point, against the same loop without
  logging; idle, and loaded by two spinning processes; one BLAS thread unless ``--blas-threads``
  says otherwise. The steady state: instrument's loop starts once its run started (five points
  and a flush before it), as raw wandb's starts after ``wandb.init``. Besides the slowdown it
  reports the convoy effect directly: the training thread's wall time minus its own CPU time,
  the time it waited for the GIL or a core.
* ``exit``: 10,000 points; the time from the loop's end to the process's end, and total wall.

Timings belong here, never in the test suite.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Self

from bench_dispatch import child_env, machine

ROOT = Path(__file__).resolve().parent.parent


def _keys(count: int) -> list[str]:
    return [f"m{j}" for j in range(count)]


def _row(i: int, names: list[str]) -> dict[str, float]:
    return {name: i * 0.001 + j for j, name in enumerate(names)}


# Children: each writes one JSON object of figures to the file named by --out ---------------------
def child_import(kind: str, args: argparse.Namespace) -> dict[str, float]:
    start = time.perf_counter()
    if kind == "instrument":
        import instrument

        instrument.training_stage("train")(lambda: None)
        instrument.eval_summary(prefix="eval")(lambda: None)
        instrument.run_config(lambda: None)
    else:
        import wandb  # noqa: F401
    return {"seconds": time.perf_counter() - start, "wandb_imported": float("wandb" in sys.modules)}


def _instrument_loop(points: int, names: list[str], stages: int = 1,
                     step: Callable[[], None] | None = None, warm: int = 0) -> tuple[float, list[float], float]:
    """Call *points* decorated stage functions; with *warm*, first that many calls and a flush
    (the run started, the queue written) so that the loop measures the steady state."""
    import instrument

    functions = []
    for s in range(stages):
        def train(i: int) -> dict[str, float]:
            if step is not None:
                step()
            return _row(i, names)

        functions.append(instrument.training_stage(f"s{s}")(train))
    if warm:
        for i in range(warm):
            functions[i % stages](i)
        instrument.flush()
    times: list[float] = []
    cpu, start = time.thread_time(), time.perf_counter()
    for i in range(points):
        before = time.perf_counter()
        functions[i % stages](i)
        times.append(time.perf_counter() - before)
    return time.perf_counter() - start, times, time.thread_time() - cpu


def _raw_loop(points: int, names: list[str], stages: int = 1,
              step: Callable[[], None] | None = None) -> tuple[float, list[float], float, Any]:
    import wandb

    run = wandb.init(project="bench", settings=wandb.Settings(silent=True))
    keys = [[f"s{s}/{name}" for name in names] for s in range(stages)]
    for s in range(stages):
        for key in keys[s]:
            run.define_metric(key, step_metric=f"s{s}/step")
    times: list[float] = []
    cpu, start = time.thread_time(), time.perf_counter()
    for i in range(points):
        before = time.perf_counter()
        if step is not None:
            step()
        s = i % stages
        row = dict(zip(keys[s], _row(i, names).values(), strict=True))
        row[f"s{s}/step"] = i // stages
        run.log(row)
        times.append(time.perf_counter() - before)
    return time.perf_counter() - start, times, time.thread_time() - cpu, run


def child_points(kind: str, args: argparse.Namespace) -> dict[str, float]:
    names = _keys(args.keys)
    if kind == "run_log":  # instrument with every row through run.log: what the fast route gains
        os.environ["INSTRUMENT_FAST_ROUTE"] = "0"
        kind = "instrument"
    if kind == "instrument":
        loop, _, _ = _instrument_loop(args.points, names, args.stages)
    else:
        loop, _, _, run = _raw_loop(args.points, names, args.stages)
        run.finish()
    return {"loop_us": loop / args.points * 1e6, "loop_end": time.time()}


def _matmul_step() -> Callable[[], None]:
    import numpy as np

    rng = np.random.default_rng(0)
    a = rng.standard_normal((460, 460))
    b = rng.standard_normal((460, 460))
    def step() -> None:
        a @ b  # the work of the step

    return step


def child_step(kind: str, args: argparse.Namespace) -> dict[str, float]:
    step = _matmul_step()
    names = _keys(10)
    for _ in range(20):  # warm the BLAS up
        step()
    if kind == "none":
        times = []
        cpu, start = time.thread_time(), time.perf_counter()
        for _ in range(args.points):
            before = time.perf_counter()
            step()
            times.append(time.perf_counter() - before)
        loop, cpu = time.perf_counter() - start, time.thread_time() - cpu
    elif kind == "instrument":  # the steady state: the run started (as raw's wandb.init before its loop)
        loop, times, cpu = _instrument_loop(args.points, names, 1, step, warm=5)
    else:
        loop, times, cpu, run = _raw_loop(args.points, names, 1, step)
        run.finish()
    times.sort()
    median = times[len(times) // 2]
    # The convoy effect, directly: the training thread's wall time minus its own CPU time is the
    # time it waited (for the GIL, or for a core) instead of computing.
    return {"step_ms": loop / args.points * 1e3, "median_ms": median * 1e3,
            "p90_ms": times[int(len(times) * 0.9)] * 1e3, "wait_ms": (loop - cpu) / args.points * 1e3,
            "loop_end": time.time()}


CHILDREN: dict[str, Callable[[str, argparse.Namespace], dict[str, float]]] = {
    "import": child_import,
    "points": child_points,
    "step": child_step,
}


def child_main(args: argparse.Namespace) -> None:
    name, kind = args.child.split(":")
    figures = CHILDREN[name](kind, args)
    figures["peak_mb_before_exit"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    Path(args.out).write_text(json.dumps(figures))


# Parent: fresh processes, alternating, medians ------------------------------------------------------
def loadavg() -> float:
    try:
        return float(Path("/proc/loadavg").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return float("nan")


def run_child(child: str, root: Path, extra: list[str], env_extra: dict[str, str] | None = None) -> dict[str, float]:
    """Run one child in a fresh process; return its figures plus wall, peak RSS and the load."""
    root.mkdir(parents=True, exist_ok=True)
    env = child_env(root) | (env_extra or {})
    out = root / "figures.json"
    command = [sys.executable, __file__, "--child", child, "--out", str(out), *extra]
    load = loadavg()
    start = time.time()
    with open(root / "output.txt", "wb") as output:  # wandb-core inherits it: never a pipe
        process = subprocess.Popen(command, env=env, cwd=root, stdout=output, stderr=subprocess.STDOUT)
        _, status, usage = os.wait4(process.pid, 0)
    end = time.time()
    process.returncode = os.waitstatus_to_exitcode(status)
    if process.returncode != 0:
        raise RuntimeError(f"{child} failed ({process.returncode}):\n{(root / 'output.txt').read_text()[-3000:]}")
    figures: dict[str, float] = json.loads(out.read_text())
    figures.update(wall_s=end - start, peak_mb=usage.ru_maxrss / 1024, load=load)
    if "loop_end" in figures:
        figures["exit_s"] = end - figures.pop("loop_end")
    return figures


def history_rows(root: Path) -> float:
    """Return the history rows in the ``.wandb`` files under *root* (NaN if none).

    Read in a subprocess: a child's peak RSS (``ru_maxrss``) starts from its parent's at the fork,
    so the parent must stay small.
    """
    code = ("import sys; from instrument import runfile; files = runfile.find_run_files(sys.argv[1]); "
            "print(sum(len(runfile.read_run_file(p).history) for p in files) if files else 'nan')")
    result = subprocess.run([sys.executable, "-c", code, str(root / "wandb")], env=child_env(root),
                            capture_output=True, text=True, timeout=900, check=True)
    return float(result.stdout.strip())


def compare(name: str, kinds: tuple[str, ...], repeats: int, root: Path, extra: list[str],
            env_extra: dict[str, str] | None = None, rows: bool = False) -> dict[str, dict[str, float]]:
    """Run each kind *repeats* times, alternating; return the median figures per kind."""
    samples: dict[str, list[dict[str, float]]] = {kind: [] for kind in kinds}
    for i in range(repeats):
        for kind in kinds if i % 2 == 0 else tuple(reversed(kinds)):
            where = root / "-".join((name, *(a.lstrip("-") for a in extra), kind, str(i)))
            figures = run_child(f"{name}:{kind}", where, extra, env_extra)
            if rows:
                figures["rows"] = history_rows(where)
            samples[kind].append(figures)
            print(f"  {name} {' '.join(extra)} {kind} #{i + 1}: "
                  + ", ".join(f"{k}={v:.4g}" for k, v in figures.items()), file=sys.stderr, flush=True)
    return {kind: {key: statistics.median(s[key] for s in found) for key in found[0]}
            for kind, found in samples.items()}


class Table:
    """The markdown table the benchmark prints."""

    def __init__(self) -> None:
        self.rows: list[tuple[str, ...]] = []

    def add(self, what: str, ours: str, theirs: str, ratio: float | None, target: str, load: str) -> None:
        self.rows.append((what, ours, theirs, "" if ratio is None else f"{ratio:.2f}", target, load))

    def render(self) -> str:
        header = ("measurement", "instrument", "raw wandb", "ratio", "target", "load")
        widths = [max(len(r[i]) for r in [header, *self.rows]) for i in range(len(header))]
        lines = ["| " + " | ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)) + " |",
                 "|" + "|".join("-" * (w + 2) for w in widths) + "|"]
        lines += ["| " + " | ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) + " |" for row in self.rows]
        return "\n".join(lines)


def _load(*figures: dict[str, float]) -> str:
    return "/".join(f"{f['load']:.1f}" for f in figures)


class Spinners:
    """Processes that keep the CPU busy (a loaded machine) while a measurement runs."""

    def __init__(self, count: int) -> None:
        self.count = count
        self.processes: list[subprocess.Popen[bytes]] = []

    def __enter__(self) -> Self:
        code = "import time\nend = time.time() + 3600\nwhile time.time() < end: pass"
        self.processes = [subprocess.Popen([sys.executable, "-c", code]) for _ in range(self.count)]
        if self.processes:
            time.sleep(2)  # let the scheduler settle on them before measuring
        return self

    def __exit__(self, *exc: object) -> None:
        for process in self.processes:
            process.kill()
            process.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="a subset, one process each: about two minutes")
    parser.add_argument("--repeats", type=int, help="fresh processes per kind (default 3; quick: 1)")
    parser.add_argument("--only", help="comma-separated rows: import,points,route,keys,stages,step,exit")
    parser.add_argument("--blas-threads", default="1", help="BLAS threads of the step row ('' for the default; "
                        "default 1: a 2-thread BLAS on 2 cores turns any other work into long waits)")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    parser.add_argument("--points", type=int, default=1000, help=argparse.SUPPRESS)
    parser.add_argument("--keys", type=int, default=10, help=argparse.SUPPRESS)
    parser.add_argument("--stages", type=int, default=1, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child_main(args)
        return
    repeats = args.repeats or (1 if args.quick else 3)
    only = set(args.only.split(",")) if args.only else {"import", "points", "route", "keys", "stages", "step", "exit"}
    table = Table()
    started = time.time()
    loads = [loadavg()]
    with tempfile.TemporaryDirectory(prefix="instrument-bench-") as tmp:
        root = Path(tmp)
        if "import" in only:
            m = compare("import", ("instrument", "raw"), max(3, repeats), root, [])
            ii, iw = m["instrument"], m["raw"]
            table.add("`import instrument` + decorating 3 functions / `import wandb`", f"{ii['seconds'] * 1e3:.0f} ms",
                      f"{iw['seconds'] * 1e3:.0f} ms", ii["seconds"] / iw["seconds"], "<= 0.1", _load(ii, iw))
        if "points" in only:
            for points in (1_000, 10_000) if args.quick else (1_000, 10_000, 100_000, 1_000_000):
                m = compare("points", ("instrument", "raw"), repeats, root, ["--points", str(points)])
                ii, ir = m["instrument"], m["raw"]
                table.add(f"{points:,} points of 10 keys: process wall", f"{ii['wall_s']:.2f} s",
                          f"{ir['wall_s']:.2f} s", ii["wall_s"] / ir["wall_s"], "<= 1.0", _load(ii, ir))
                table.add("  same: training-loop time per point", f"{ii['loop_us']:.1f} us", f"{ir['loop_us']:.1f} us",
                          ii["loop_us"] / ir["loop_us"], "", "")
        if "route" in only:
            points = 10_000 if args.quick else 100_000
            m = compare("points", ("instrument", "run_log"), repeats, root, ["--points", str(points)])
            ii, il = m["instrument"], m["run_log"]
            table.add(f"{points:,} points of 10 keys, fast route vs `INSTRUMENT_FAST_ROUTE=0`: process wall",
                      f"{ii['wall_s']:.2f} s", f"{il['wall_s']:.2f} s (run.log)", ii["wall_s"] / il["wall_s"], "",
                      _load(ii, il))
        if "keys" in only:
            rows = 300 if args.quick else 3_000
            for keys in (1, 1_000) if args.quick else (1, 10, 100, 1_000):
                m = compare("points", ("instrument", "raw"), repeats, root,
                            ["--points", str(rows), "--keys", str(keys)], {"INSTRUMENT_EXIT_TIMEOUT": "5"}, rows=True)
                ii, ir = m["instrument"], m["raw"]
                table.add(f"{rows:,} rows of {keys:,} keys, exit timeout 5 s: process wall", f"{ii['wall_s']:.2f} s",
                          f"{ir['wall_s']:.2f} s", ii["wall_s"] / ir["wall_s"], "<= 1.0", _load(ii, ir))
                table.add("  same: rows in the `.wandb` file", f"{ii['rows']:.0f}", f"{ir['rows']:.0f}", None,
                          f"all {rows:,}", "")
                table.add("  same: Python peak RSS", f"{ii['peak_mb']:.0f} MB", f"{ir['peak_mb']:.0f} MB",
                          None, "<= raw + 100 MB", "")
        if "stages" in only:
            points = 2_000 if args.quick else 10_000
            for stages in (1, 10) if args.quick else (1, 10, 100):
                m = compare("points", ("instrument", "raw"), repeats, root,
                            ["--points", str(points), "--stages", str(stages)])
                ii, ir = m["instrument"], m["raw"]
                table.add(f"{points:,} points over {stages} stage(s): process wall", f"{ii['wall_s']:.2f} s",
                          f"{ir['wall_s']:.2f} s", ii["wall_s"] / ir["wall_s"], "<= 1.0", _load(ii, ir))
        if "step" in only:
            steps = 150 if args.quick else 1_000
            blas = {"OPENBLAS_NUM_THREADS": args.blas_threads, "OMP_NUM_THREADS": args.blas_threads}
            for label, spinners in (("idle", 0), ("loaded", 2)):
                with Spinners(spinners):
                    m = compare("step", ("none", "instrument", "raw"), repeats, root, ["--points", str(steps)],
                                blas if args.blas_threads else None)
                base, ii, ir = m["none"], m["instrument"], m["raw"]
                slow_i = ii["step_ms"] / base["step_ms"] - 1
                slow_r = ir["step_ms"] / base["step_ms"] - 1
                table.add(f"matmul 460x460 step + 1 point, {label}: slowdown vs no logging",
                          f"{slow_i * 100:+.0f} %", f"{slow_r * 100:+.0f} %", None, "<= +15 %", _load(base, ii, ir))
                table.add(f"  same: step time, median / p90 (no logging {base['median_ms']:.2f} / "
                          f"{base['p90_ms']:.2f} ms)", f"{ii['median_ms']:.2f} / {ii['p90_ms']:.2f} ms",
                          f"{ir['median_ms']:.2f} / {ir['p90_ms']:.2f} ms", None, "", "")
                table.add(f"  same: training thread's wait (wall - its CPU) per step (no logging "
                          f"{base['wait_ms']:.2f} ms)", f"{ii['wait_ms']:.2f} ms", f"{ir['wait_ms']:.2f} ms",
                          None, "", "")
        if "exit" in only:
            m = compare("points", ("instrument", "raw"), repeats, root, ["--points", "10000"])
            ii, ir = m["instrument"], m["raw"]
            table.add("10,000 points: loop end to process end", f"{ii['exit_s']:.2f} s", f"{ir['exit_s']:.2f} s",
                      None, "", _load(ii, ir))
            table.add("  same: total process wall", f"{ii['wall_s']:.2f} s", f"{ir['wall_s']:.2f} s",
                      ii["wall_s"] / ir["wall_s"], "<= 1.0", "")
    loads.append(loadavg())
    print(f"\nMachine: {machine()}; {'quick mode, ' if args.quick else ''}medians of {repeats} fresh process(es) per "
          f"kind, alternating; load average {loads[0]:.1f} at the start, {loads[1]:.1f} at the end; "
          f"{time.time() - started:.0f} s in all.\n")
    print(table.render())


if __name__ == "__main__":
    main()
