"""The gates' files: where they live, their formats, and baseline resolution. No wandb.

Under ``.instrument/`` (in ``WANDB_DIR`` if set, else the working directory): the sidecar
``runs/<run id>/gates.json`` (every suite evaluated for a run: declaration, numbers, baseline,
verdicts), the history ``history/<project>/<prefix>.jsonl`` (one line per evaluation) and the
baseline store ``baselines/<project>/<prefix>.json``. Writes are atomic (a temporary file
renamed over the old one, or one appended line) and serialised by a lock file under
``locks/``. docs/gates.md documents the formats.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import math
import os
import shutil
import subprocess
import tempfile
import urllib.parse
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import attrs
import filelock

from instrument import _env
from instrument._gates import STDERR_SUFFIX, Suite, decode_number, direction_of, encode_number
from instrument._verdicts import BaselineValue, SuiteVerdict, evaluate

SIDECAR_FORMAT = "instrument.gates/1"
HISTORY_FORMAT = "instrument.history/1"
STORE_FORMAT = "instrument.baseline/1"
DEFAULT_PROJECT = "uncategorized"  # the project wandb files a run under when none is given

#: Seconds a writer waits for another process's lock on the same file before giving up.
LOCK_TIMEOUT = 30.0


class GateFileError(ValueError):
    """A gates file is missing, unreadable or not of its format; the message names the file."""


def instrument_root(environ: Mapping[str, str] = os.environ) -> Path:
    """Return the folder of instrument's own files: ``<WANDB_DIR>/.instrument`` if ``WANDB_DIR``
    is set and not empty, else ``<working directory>/.instrument``; absolute."""
    base = environ.get(_env.WANDB_DIR) or os.getcwd()
    return Path(os.path.abspath(base)) / ".instrument"


def component(text: str) -> str:
    """Return *text* as one safe path component (percent-encoded: ``eval/small`` -> ``eval%2Fsmall``)."""
    encoded = urllib.parse.quote(text, safe="")
    return encoded.replace(".", "%2E") if encoded in (".", "..") else encoded


def project_of(project: str | None, environ: Mapping[str, str] = os.environ) -> str:
    """Return the project a run is filed under: *project*, else ``WANDB_PROJECT``, else wandb's
    default ``uncategorized``."""
    return project or environ.get("WANDB_PROJECT") or DEFAULT_PROJECT


def sidecar_path(run_id: str, root: Path | None = None) -> Path:
    """Return ``<root>/runs/<run id>/gates.json``."""
    return (root or instrument_root()) / "runs" / component(run_id) / "gates.json"


def history_path(project: str, prefix: str, root: Path | None = None) -> Path:
    """Return ``<root>/history/<project>/<prefix>.jsonl``."""
    return (root or instrument_root()) / "history" / component(project) / f"{component(prefix)}.jsonl"


def store_path(project: str, prefix: str, root: Path | None = None) -> Path:
    """Return ``<root>/baselines/<project>/<prefix>.json``."""
    return (root or instrument_root()) / "baselines" / component(project) / f"{component(prefix)}.json"


_FOLDERS = ("runs", "history", "baselines")


def _root_of(path: Path) -> Path | None:
    """Return the ``.instrument`` folder that holds *path* (``<root>/<runs|history|baselines>/<x>/<file>``),
    or None for a file elsewhere."""
    parents = path.parents
    return parents[2] if len(parents) > 2 and parents[1].name in _FOLDERS else None


def now() -> str:
    """Return the time now in UTC as ISO 8601 to the second (``2026-12-01T10:00:00Z``)."""
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


_commits: dict[str, str | None] = {}


def git_commit(cwd: str | None = None) -> str | None:
    """Return ``git rev-parse HEAD`` in *cwd* (default: the working directory), or None outside a
    repository or without git; asked once per folder and process."""
    folder = os.path.abspath(cwd or os.getcwd())
    if folder not in _commits:
        git = shutil.which("git")
        if git is None:
            _commits[folder] = None
            return None
        try:
            done = subprocess.run([git, "rev-parse", "HEAD"], cwd=folder, capture_output=True, text=True,
                                  timeout=5, check=False)
            commit = done.stdout.strip()
            _commits[folder] = commit if done.returncode == 0 and len(commit) >= 7 else None
        except (OSError, subprocess.SubprocessError):
            _commits[folder] = None
    return _commits[folder]


def config_hash(config: Mapping[str, Any] | None) -> str | None:
    """Return the first 16 hex digits of the sha256 of *config* as canonical JSON, or None for none."""
    if not config:
        return None
    text = json.dumps(config, sort_keys=True, separators=(",", ":"), default=str, allow_nan=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _encode_all(values: Mapping[str, float]) -> dict[str, Any]:
    return {key: encode_number(value) for key, value in values.items()}


def _decode_all(values: Any) -> dict[str, float]:
    if not isinstance(values, Mapping):
        return {}
    decoded = {key: decode_number(value) for key, value in values.items() if isinstance(key, str)}
    return {key: value for key, value in decoded.items() if value is not None}


@contextmanager
def _locked(path: Path) -> Iterator[None]:
    """Hold the lock for *path*: ``<root>/locks/<name>.lock`` (kept out of the committed store), or
    ``.<name>.lock`` beside a file that is not under a root."""
    root = _root_of(path)
    if root is None:
        lock = path.with_name(f".{path.name}.lock")
    else:
        lock = root / "locks" / f"{component(os.path.relpath(path, root))}.lock"
    lock.parent.mkdir(parents=True, exist_ok=True)
    with filelock.FileLock(str(lock), timeout=LOCK_TIMEOUT):
        yield


def _write_atomic(path: Path, text: str) -> None:
    """Write *text* to *path* through a temporary file renamed over it (readers see old or new)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}-", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _dumps(data: Any) -> str:
    return json.dumps(data, sort_keys=True, indent=2, allow_nan=False) + "\n"


def _load_json(path: Path, what: str) -> Any:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise GateFileError(f"instrument: {what} {os.fspath(path)!r} does not exist") from None
    except (OSError, UnicodeDecodeError) as error:
        raise GateFileError(f"instrument: cannot read {what} {os.fspath(path)!r} ({error})") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as error:
        raise GateFileError(f"instrument: {what} {os.fspath(path)!r} is not JSON ({error})") from None


# -- one evaluation -------------------------------------------------------------------------------


@attrs.frozen(slots=True)
class ResolvedBaseline:
    """The baseline an evaluation used.

    Attributes:
        source: ``values``, ``pinned``, ``best``, ``median``, ``from_run`` or ``given``.
        path: the file it was read from (store, history, another run's sidecar), else None.
        values: per metric; None when nothing was found (regression gates get ``no_baseline``).
        problem: why a baseline that should exist could not be read (a missing run, a malformed
            store), for a warning; None otherwise.
    """

    source: str
    path: str | None = None
    values: dict[str, BaselineValue] | None = None
    problem: str | None = None

    def to_json(self) -> dict[str, Any]:
        """Return the sidecar's ``baseline`` field."""
        return {"source": self.source, "path": self.path,
                "values": {m: v.to_json() for m, v in (self.values or {}).items()}}


@attrs.frozen(slots=True)
class Evaluation:
    """One evaluated suite and everything the files record about it.

    Attributes:
        run_id, project: the run the verdicts land in and its project.
        suite: the declaration.
        metrics: the numbers the eval returned, keys without the prefix.
        baseline: what the regression gates compared with (None without regression gates).
        verdict: the outcome.
        function: the decorated function's qualified name.
        time, git_commit, config_hash: when, at which commit, with which config.
    """

    run_id: str
    project: str
    suite: Suite
    metrics: dict[str, float]
    baseline: ResolvedBaseline | None
    verdict: SuiteVerdict
    function: str
    time: str
    git_commit: str | None = None
    config_hash: str | None = None

    def suite_entry(self) -> dict[str, Any]:
        """Return this suite's entry of the sidecar's ``suites``."""
        entry: dict[str, Any] = {
            "prefix": self.suite.prefix, "function": self.function, "time": self.time,
            "git_commit": self.git_commit, "config_hash": self.config_hash,
            "declaration": self.suite.to_json(), "metrics": _encode_all(self.metrics),
            "baseline": self.baseline.to_json() if self.baseline is not None else None,
        }
        entry.update(self.verdict.to_json())
        return entry

    def history_line(self) -> dict[str, Any]:
        """Return this evaluation's history line."""
        line: dict[str, Any] = {
            "format": HISTORY_FORMAT, "run_id": self.run_id, "project": self.project, "prefix": self.suite.prefix,
            "time": self.time, "git_commit": self.git_commit, "config_hash": self.config_hash,
            "metrics": _encode_all(self.metrics),
        }
        line.update(self.verdict.to_json())
        return line


def write_sidecar(evaluation: Evaluation, root: Path | None = None) -> Path:
    """Add *evaluation* to its run's sidecar (replacing an earlier entry of the same prefix).

    Under the sidecar's lock, so processes writing suites into one run (a pipeline's eval
    subprocesses) keep each other's entries; atomic, so a reader or a kill never sees half a file.
    An existing sidecar that is not of the format is replaced (the old file is not a gates file).

    Returns:
        The sidecar's path.

    Raises:
        OSError, filelock.Timeout: the file or its lock cannot be written.
    """
    path = sidecar_path(evaluation.run_id, root)
    with _locked(path):
        try:
            data = read_sidecar(path)
        except GateFileError:
            data = {"format": SIDECAR_FORMAT, "run_id": evaluation.run_id, "project": evaluation.project,
                    "suites": {}}
        data["project"] = evaluation.project
        data["updated"] = evaluation.time
        data["suites"][evaluation.suite.prefix] = evaluation.suite_entry()
        _write_atomic(path, _dumps(data))
    return path


def append_history(evaluation: Evaluation, root: Path | None = None) -> Path:
    """Append *evaluation*'s line to ``history/<project>/<prefix>.jsonl`` in one write; return the path."""
    path = history_path(evaluation.project, evaluation.suite.prefix, root)
    path.parent.mkdir(parents=True, exist_ok=True)
    data = (json.dumps(evaluation.history_line(), sort_keys=True, allow_nan=False) + "\n").encode()
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, data)
    finally:
        os.close(fd)
    return path


# -- reading --------------------------------------------------------------------------------------


def find_sidecar(run: str | os.PathLike[str], root: Path | None = None) -> Path:
    """Return the sidecar of *run*.

    *run* is a run id (looked up under *root*, default :func:`instrument_root`), a
    ``gates.json``, a ``.instrument/runs/<id>`` folder, a wandb run folder or its
    ``run-<id>.wandb`` file (the sidecar is then ``<X>/.instrument/runs/<id>/gates.json``, where
    ``<X>`` holds wandb's ``wandb`` folder).

    Raises:
        GateFileError: no sidecar exists for *run*; the message names where it looked.
    """
    given = Path(run)
    candidates: list[Path] = []
    if given.is_file() and given.name == "gates.json":
        return given
    if given.is_dir() and (given / "gates.json").is_file():
        return given / "gates.json"
    wandb_file = given if given.is_file() and given.suffix == ".wandb" else None
    if wandb_file is None and given.is_dir():
        wandb_file = next(iter(sorted(given.glob("run-*.wandb"))), None)
    if wandb_file is not None:
        run_id = wandb_file.stem.removeprefix("run-")
        folder = wandb_file.resolve().parent
        candidates.append(folder.parent.parent / ".instrument" / "runs" / component(run_id) / "gates.json")
    elif not given.exists():
        candidates.append(sidecar_path(os.fspath(run), root))
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    looked = f" (looked for {os.fspath(candidates[0])!r})" if candidates else ""
    raise GateFileError(f"instrument: no gate verdicts recorded for {os.fspath(run)!r}{looked}; a run has them "
                        "once an eval with gates= or regression= wrote into it")


def read_sidecar(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Return the sidecar at *path*, checked: a ``format`` of ``instrument.gates/1``, a ``run_id``,
    a ``project`` and a ``suites`` object whose entries hold a ``declaration`` and ``metrics``.

    Raises:
        GateFileError: the file is missing, not JSON, or not a sidecar; the message names it.
    """
    path = Path(path)
    data = _load_json(path, "the gates sidecar")
    wrong = _sidecar_faults(data)
    if wrong:
        raise GateFileError(f"instrument: {os.fspath(path)!r} is not a gates sidecar ({wrong})")
    return data  # type: ignore[no-any-return]


def _sidecar_faults(data: Any) -> str:
    if not isinstance(data, dict):
        return f"expected a JSON object, got {type(data).__name__}"
    if data.get("format") != SIDECAR_FORMAT:
        return f"format {data.get('format')!r} is not {SIDECAR_FORMAT!r}"
    for name in ("run_id", "project"):
        if not isinstance(data.get(name), str):
            return f"{name} must be a string"
    suites = data.get("suites")
    if not isinstance(suites, dict):
        return "suites must be an object"
    for prefix, entry in suites.items():
        if not isinstance(entry, dict) or not isinstance(entry.get("declaration"), dict) or not isinstance(
            entry.get("metrics"), dict
        ):
            return f"suite {prefix!r} lacks its declaration or metrics"
    return ""


def read_history(project: str, prefix: str, root: Path | None = None) -> list[dict[str, Any]]:
    """Return the history lines of a suite, oldest first; lines that are not history lines are skipped."""
    path = history_path(project, prefix, root)
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return []
    lines = []
    for raw in text.splitlines():
        try:
            line = json.loads(raw)
        except json.JSONDecodeError:
            continue
        if isinstance(line, dict) and isinstance(line.get("run_id"), str) and isinstance(line.get("metrics"), dict):
            lines.append(line)
    return lines


def read_store(path: str | os.PathLike[str]) -> dict[str, Any] | None:
    """Return the baseline store at *path*, or None if there is none.

    Raises:
        GateFileError: the file exists but is not a baseline store (``instrument.baseline/1``
            with a ``metrics`` object of entries with a numeric ``value``).
    """
    path = Path(path)
    if not path.exists():
        return None
    data = _load_json(path, "the baseline store")
    if not isinstance(data, dict) or data.get("format") != STORE_FORMAT or not isinstance(data.get("metrics"), dict):
        raise GateFileError(f"instrument: {os.fspath(path)!r} is not a baseline store (expected an object with "
                            f"format {STORE_FORMAT!r} and metrics)")
    try:
        for entry in data["metrics"].values():
            BaselineValue.from_json(entry)
    except ValueError as error:
        raise GateFileError(f"instrument: the baseline store {os.fspath(path)!r}: {error}") from None
    return data


def store_values(data: Mapping[str, Any] | None) -> dict[str, BaselineValue]:
    """Return the per-metric baselines of a store read by :func:`read_store` (empty for None)."""
    if not data:
        return {}
    return {metric: BaselineValue.from_json(entry) for metric, entry in data["metrics"].items()}


def write_store(path: str | os.PathLike[str], data: Mapping[str, Any]) -> None:
    """Write a baseline store: sorted keys, indented, a final newline (diffable); atomic, locked."""
    path = Path(path)
    with _locked(path):
        _write_atomic(path, _dumps(dict(data)))


def merge_store(project: str, prefix: str, entries: Mapping[str, BaselineValue], root: Path | None = None) -> Path:
    """Set *entries* (by metric) in the store of *project*/*prefix*, keeping its other metrics.

    Raises:
        GateFileError: the existing store is malformed (it is left as it is).
    """
    path = store_path(project, prefix, root)
    with _locked(path):
        data = read_store(path) or {"format": STORE_FORMAT, "project": project, "prefix": prefix, "metrics": {}}
        data["metrics"].update({metric: value.to_json() for metric, value in entries.items()})
        _write_atomic(path, _dumps(data))
    return path


def promotion_entries(entry: Mapping[str, Any], run_id: str) -> dict[str, BaselineValue]:
    """Return the store entries a sidecar suite *entry* promotes: each gated metric with a finite
    value, its ``<metric>_stderr``, its direction, the run id, commit and time of the evaluation."""
    suite = Suite.from_json(str(entry.get("prefix", "")), entry["declaration"])
    metrics = _decode_all(entry["metrics"])
    out: dict[str, BaselineValue] = {}
    for metric in suite.metrics:
        value = metrics.get(metric)
        if value is None or not math.isfinite(value):
            continue
        stderr = metrics.get(metric + STDERR_SUFFIX)
        out[metric] = BaselineValue(value, stderr, direction_of(suite, metric), run_id,
                                    entry.get("git_commit"), entry.get("time"))
    return out


# -- baselines ------------------------------------------------------------------------------------


def _from_sidecar(path: Path, prefix: str) -> dict[str, BaselineValue]:
    data = read_sidecar(path)
    entry = data["suites"].get(prefix)
    if entry is None:
        raise GateFileError(f"instrument: run {data['run_id']} recorded no suite {prefix!r} in {os.fspath(path)!r} "
                            f"(it has {sorted(data['suites']) or 'none'})")
    metrics = _decode_all(entry["metrics"])
    suite = Suite.from_json(prefix, entry["declaration"])
    return {metric: BaselineValue(value, metrics.get(metric + STDERR_SUFFIX), direction_of(suite, metric),
                                  data["run_id"], entry.get("git_commit"), entry.get("time"))
            for metric, value in metrics.items() if not metric.endswith(STDERR_SUFFIX)}


def load_baseline_file(path: str | os.PathLike[str], prefix: str) -> dict[str, BaselineValue]:
    """Return the baselines a file gives for suite *prefix*: a baseline store, or a run's sidecar
    (then the numbers that run recorded for *prefix*).

    Raises:
        GateFileError: the file is neither, or the sidecar has no suite *prefix*.
    """
    path = Path(path)
    data = _load_json(path, "the baseline file")
    if isinstance(data, dict) and data.get("format") == SIDECAR_FORMAT:
        return _from_sidecar(path, prefix)
    if isinstance(data, dict) and data.get("format") == STORE_FORMAT:
        return store_values(read_store(path))
    raise GateFileError(f"instrument: {os.fspath(path)!r} is neither a baseline store ({STORE_FORMAT}) nor a "
                        f"gates sidecar ({SIDECAR_FORMAT})")


def _from_history(suite: Suite, project: str, run_id: str | None, root: Path | None) -> ResolvedBaseline:
    kind, n = suite.baseline.kind, suite.baseline.n or 1
    path = history_path(project, suite.prefix, root)
    last: dict[str, dict[str, Any]] = {}
    for line in read_history(project, suite.prefix, root):
        if line["run_id"] != run_id:
            last.pop(line["run_id"], None)  # a run counts once, at its last line
            last[line["run_id"]] = line
    recent = list(last.values())[-n:]
    if not recent:
        return ResolvedBaseline(kind, os.fspath(path), None)
    values: dict[str, BaselineValue] = {}
    for regression in suite.regressions:
        found = [(v, line) for line in recent
                 if (v := _decode_all(line["metrics"]).get(regression.metric)) is not None and not math.isnan(v)]
        if not found:
            continue
        if kind == "best":
            pick = min if regression.direction == "min" else max
            value, line = pick(found, key=lambda pair: pair[0])
            values[regression.metric] = BaselineValue(value, _decode_all(line["metrics"]).get(
                regression.metric + STDERR_SUFFIX), regression.direction, line["run_id"], line.get("git_commit"),
                line.get("time"))
        else:
            ordered = sorted(v for v, _ in found)
            middle = len(ordered) // 2
            median = ordered[middle] if len(ordered) % 2 else (ordered[middle - 1] + ordered[middle]) / 2
            values[regression.metric] = BaselineValue(median, None, regression.direction)
    return ResolvedBaseline(kind, os.fspath(path), values or None)


def resolve_baseline(
    suite: Suite, *, project: str, run_id: str | None, root: Path | None = None
) -> ResolvedBaseline | None:
    """Return the baseline *suite*'s regression gates compare with, for run *run_id* of *project*.

    ``values``: the declared numbers. ``pinned``: the store. ``best``/``median``: the last *n*
    runs of the history (each run once, at its last line; *run_id* left out). ``from_run``: the
    numbers that run's sidecar recorded for this prefix. None when the suite has no regression
    gate. Never raises: what cannot be read gives ``values=None`` and a ``problem``.
    """
    if not suite.regressions:
        return None
    baseline = suite.baseline
    if baseline.kind == "values":
        return ResolvedBaseline("values", None, {m: BaselineValue(v) for m, v in (baseline.given or {}).items()})
    if baseline.kind in ("best", "median"):
        return _from_history(suite, project, run_id, root)
    if baseline.kind == "from_run":
        try:
            path = find_sidecar(baseline.run or "", root)
            return ResolvedBaseline("from_run", os.fspath(path), _from_sidecar(path, suite.prefix) or None)
        except (GateFileError, ValueError) as error:
            return ResolvedBaseline("from_run", None, None, problem=str(error))
    path = store_path(project, suite.prefix, root)
    try:
        values = store_values(read_store(path))
    except GateFileError as error:
        return ResolvedBaseline("pinned", os.fspath(path), None, problem=str(error))
    return ResolvedBaseline("pinned", os.fspath(path), values or None)


def recheck(
    run: str | os.PathLike[str], *, baseline: str | os.PathLike[str] | None = None, root: Path | None = None
) -> list[SuiteVerdict]:
    """Re-evaluate every suite a run recorded, offline, against the baseline as it is now.

    Each suite's stored declaration and numbers are evaluated again; the baseline is resolved
    from the files beside the sidecar (the store, the history, another run), or read from
    *baseline* (a store or a sidecar file) for every suite.

    Raises:
        GateFileError: the run has no sidecar, a file is malformed, or *baseline* is not a
            baseline file.
    """
    path = find_sidecar(run, root)
    data = read_sidecar(path)
    here = _root_of(path) or root
    results = []
    for prefix, entry in data["suites"].items():
        try:
            suite = Suite.from_json(prefix, entry["declaration"])
        except ValueError as error:
            raise GateFileError(f"instrument: {os.fspath(path)!r}: {error}") from None
        if baseline is not None:
            values: dict[str, BaselineValue] | None = load_baseline_file(baseline, prefix) or None
        else:
            resolved = resolve_baseline(suite, project=data["project"], run_id=data["run_id"], root=here)
            if resolved is not None and resolved.problem:
                raise GateFileError(resolved.problem)
            values = resolved.values if resolved is not None else None
        results.append(evaluate(suite, _decode_all(entry["metrics"]), values))
    return results
