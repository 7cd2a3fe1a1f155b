"""``instrument sync``: upload offline runs with ``wandb sync``, and say truthfully which ones made it.

``wandb sync`` exits 0 even when it could not reach the server (it prints ``ERROR ...
connection refused`` and goes on), and without limits it retries an unreachable file stream
for days. So each run is synced on its own, in a subprocess with a hard timeout and wandb's
retry knobs set; it counts as synced only when wandb wrote its marker (``run-<id>.wandb.synced``,
which wandb creates after a real upload) *and* printed no error. Every attempt appends one JSON
line to ``<root>/.instrument/sync.jsonl``; a lock per run folder keeps two syncs apart; runs
still being written are skipped.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import random
import re
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import attrs
import filelock

from instrument import _env, runfile
from instrument.cli import _runs
from instrument.cli._common import NOT_SYNCED, OK, CommandError, at_least, relative

#: wandb's retry and timeout knobs, with the values a sync attempt gets unless the environment
#: sets them: GraphQL calls and file-stream and file-upload requests are retried at most 3 times,
#: and one GraphQL request waits at most 30 s.
WANDB_KNOBS = {
    _env.WANDB_GRAPHQL_RETRY_MAX: "3",
    _env.WANDB_FILE_STREAM_RETRY_MAX: "3",
    _env.WANDB_FILE_TRANSFER_RETRY_MAX: "3",
    _env.WANDB_HTTP_TIMEOUT: "30",
}
#: The lock file ``instrument sync`` holds in a run folder while it syncs it.
LOCK_NAME = "instrument-sync.lock"
#: The attempt log, in instrument's folder beside wandb's.
LOG_NAME = "sync.jsonl"
_ERROR = re.compile(r"\bERROR\b|^Traceback \(most recent call last\)|^Not authenticated", re.MULTILINE)


def add_parser(commands: Any) -> None:
    """Add the ``sync`` command to the top-level parser's *commands*."""
    parser = commands.add_parser(
        "sync",
        help="upload offline runs with wandb sync, with retries and timeouts; say which made it",
        description="Upload the offline runs in the given folders (default ./wandb, or $WANDB_DIR/wandb) with "
        "'wandb sync', one run at a time, retrying with exponential backoff and jitter, each attempt killed "
        "after --attempt-timeout. A run counts as synced only when wandb wrote its marker and printed no error. "
        "Runs already synced are left alone, runs still being written are skipped, and online runs too unless "
        "--include-online (an online run that never reached the server counts as not synced). One JSON line per "
        "attempt goes to .instrument/sync.jsonl beside wandb's folder. wandb's own retries are bounded unless the "
        "environment sets them: " + ", ".join(f"{k}={v}" for k, v in WANDB_KNOBS.items()) + ". "
        "A journal instrument left in the folder (records it could not write into a run) is named with its "
        "'instrument replay' command. Exit status 0 when every run is synced, 4 when some are not (or, with "
        "--dry-run, would be synced) or a journal is left, 2 for bad arguments or no run to sync (in a DIR, or in "
        "./wandb when none is given).",
    )
    parser.add_argument("dirs", nargs="*", metavar="DIR", help="wandb folders, their parent folders, or run folders")
    parser.add_argument("--retries", type=at_least(0), default=3, metavar="N",
                        help="attempts after the first one for a run (default 3)")
    parser.add_argument("--backoff", type=_seconds, default=5.0, metavar="S",
                        help="seconds before the first retry, doubling for each next one, with jitter (default 5)")
    parser.add_argument("--attempt-timeout", type=_seconds, default=900.0, metavar="S",
                        help="seconds after which an attempt is killed (default 900)")
    parser.add_argument("--include-online", action="store_true",
                        help="also upload online runs (run-* folders) without wandb's marker: nothing in such a "
                        "folder confirms that what it holds reached the server")
    parser.add_argument("--dry-run", action="store_true", help="list what would be synced; upload nothing")
    parser.add_argument("--verify", action="store_true",
                        help="after an upload, ask the server (wandb's public API) whether it holds the run's "
                        "history; count the run as synced only if it does")
    parser.set_defaults(handler=run_sync)



def _seconds(text: str) -> float:
    value = float(text)
    if not value >= 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"must be a finite number of seconds, 0 or more, got {text}")
    return value


@attrs.frozen
class Attempt:
    """One ``wandb sync`` of one run folder.

    Attributes:
        status: ``synced``; ``error`` (wandb printed an error); ``no_marker`` (wandb ended
            without writing its marker); ``timeout`` (killed after the attempt timeout);
            ``not_started`` (the subprocess could not start); ``unverified`` (``--verify``: the
            server does not hold the run's history).
        returncode: ``wandb sync``'s exit status (None when killed or not started).
        seconds: How long the attempt took.
        errors: The error lines wandb printed (at most 5, each cut to 300 characters).
        marker: Whether wandb's synced marker was there after the attempt (it is removed again
            when the attempt is not ``synced``).
        verified: ``--verify``'s answer (None when not asked, or not reached).
    """

    status: str
    returncode: int | None
    seconds: float
    errors: tuple[str, ...] = ()
    marker: bool = False
    verified: bool | None = None

    @property
    def synced(self) -> bool:
        """Whether this attempt uploaded the run (and, if asked, the server confirmed it)."""
        return self.status == "synced"


@attrs.frozen
class Pending:
    """A run folder and what ``sync`` decided about it before uploading: *reason* is None for a
    run to sync, else why it is left alone (``synced``, ``live``, ``unreadable``; ``online``: an
    online run whose upload is not confirmed, ``unreached``: an online run that never reached the
    server; both only without ``--include-online``)."""

    folder: _runs.RunFolder
    run: runfile.RunFile | None
    reason: str | None
    detail: str = ""


def plan(folders: Sequence[_runs.RunFolder], opened: frozenset[str] | None, *,
         include_online: bool = False) -> list[Pending]:
    """Decide for each run folder whether to sync it: not if already synced, live or unreadable,
    nor, unless *include_online*, an online run (:attr:`_runs.RunFolder.upload` says how far it got)."""
    decided = []
    for folder in folders:
        if folder.synced:
            decided.append(Pending(folder, None, "synced"))
            continue
        if not folder.offline and not include_online:
            if folder.upload == _runs.NEVER_REACHED:
                decided.append(Pending(folder, None, "unreached", "an online run that never reached the server "
                                       "(wandb.init got no answer); pass --include-online to upload it"))
            else:
                decided.append(Pending(folder, None, "online", "an online run, not confirmed uploaded (nothing in "
                                       "its folder records it); pass --include-online to upload it from here"))
            continue
        try:
            run = runfile.read_run_file(folder.wandb_file)
        except runfile.RunFileError as error:
            decided.append(Pending(folder, None, "unreadable", str(error)))
            continue
        if _runs.is_live(run, opened):
            decided.append(Pending(folder, run, "live", "still being written; sync it once it finished"))
        else:
            decided.append(Pending(folder, run, None, "incomplete: no exit record" if run.exit_code is None else ""))
    return decided


def run_sync(arguments: argparse.Namespace, environ: Mapping[str, str] = os.environ) -> int:
    """Sync (or with ``--dry-run`` list) the runs; return 0 when all are synced, else 4."""
    folders = _runs.find_folders(arguments.dirs, environ)
    journals = _runs.find_journals(arguments.dirs, environ)
    if not folders and not journals:  # nothing to upload is an error, as a DIR given with no run in it
        if arguments.dirs:
            raise CommandError(f"{', '.join(arguments.dirs)}: no runs in it (no run-<id>.wandb file below it)")
        where = _runs.default_wandb_dir(environ)
        missing = "no such folder" if not where.exists() else "no runs in it (no run-<id>.wandb file below it)"
        raise CommandError(f"{relative(str(where))}: {missing}; name the folder holding the runs (sync DIR) or set "
                           "WANDB_DIR")
    decided = plan(folders, _runs.open_files(), include_online=arguments.include_online)
    to_sync = [p for p in decided if p.reason is None]
    unsynced = [p for p in decided if p.reason in ("live", "unreadable", "unreached")]
    already = [p for p in decided if p.reason == "synced"]
    for pending in decided:
        if pending.reason not in (None, "synced"):
            print(f"skipped {_name(pending.folder)}: {pending.reason}: {pending.detail}")
    for journal in journals:
        print(f"not in any run: {relative(journal)} (records instrument could not write); write them into an "
              f"offline run with `instrument replay {relative(journal)}`, then sync again")
    if arguments.dry_run:
        print(f"would sync {len(to_sync)} run{'s' * (len(to_sync) != 1)}" + (":" if to_sync else ""))
        for pending in to_sync:
            print(f"  {_name(pending.folder)}" + (f" ({pending.detail})" if pending.detail else ""))
        print(f"already synced: {len(already)}")
        return NOT_SYNCED if to_sync or unsynced or journals else OK
    failed = [p.folder for p in unsynced]
    synced = 0
    for pending in to_sync:
        attempts = sync_folder(
            pending.folder, pending.run, retries=arguments.retries, backoff=arguments.backoff,
            timeout=arguments.attempt_timeout, verify=arguments.verify, environ=environ,
        )
        if attempts and attempts[-1].synced:
            synced += 1
        else:
            failed.append(pending.folder)
    print(f"synced {synced} of {len(to_sync)} run{'s' * (len(to_sync) != 1)}; already synced: {len(already)}")
    if failed:
        print("not synced: " + ", ".join(f.run_id for f in failed) + " (each attempt is in .instrument/sync.jsonl)")
    return NOT_SYNCED if failed or journals else OK


def _name(folder: _runs.RunFolder) -> str:
    return f"run {folder.run_id} ({relative(folder.path)})"


def sync_folder(
    folder: _runs.RunFolder,
    run: runfile.RunFile | None,
    *,
    retries: int,
    backoff: float,
    timeout: float,
    verify: bool = False,
    environ: Mapping[str, str] = os.environ,
    attempt: Callable[..., Attempt] | None = None,
    sleep: Callable[[float], None] = time.sleep,
    jitter: Callable[[float, float], float] = random.uniform,
) -> list[Attempt]:
    """Sync one run folder: up to ``1 + retries`` attempts, under the folder's lock.

    Args:
        folder: The run folder.
        run: Its run as read (for ``--verify``: the history it must hold), or None.
        retries: Attempts after the first.
        backoff: Seconds before the first retry; each next wait doubles, jittered to between
            half and all of it.
        timeout: Seconds after which an attempt is killed.
        verify: Ask the server after an upload whether it holds the run.
        environ: The environment ``wandb sync`` runs with (wandb's knobs added when unset).
        attempt: Runs one attempt (default :func:`sync_once`); tests pass their own.
        sleep: Waits between attempts.
        jitter: Picks a wait between its two bounds (default: uniformly at random).

    Returns:
        The attempts in order, each also appended to ``<root>/.instrument/sync.jsonl``; empty
        when another process holds the folder's lock (nothing was tried).
    """
    attempt = attempt or sync_once
    lock = filelock.FileLock(str(folder.path / LOCK_NAME), timeout=0)
    try:
        lock.acquire()
    except filelock.Timeout:
        print(f"{_name(folder)}: another sync holds {LOCK_NAME}; left alone")
        return []
    attempts: list[Attempt] = []
    try:
        total = 1 + retries
        for number in range(1, total + 1):
            result = attempt(folder, environ=environ, timeout=timeout)
            if result.synced and verify:
                result = _verified(result, folder, run, environ, timeout)
            attempts.append(result)
            log_attempt(folder, number, total, result, environ)
            if result.synced:
                print(f"{_name(folder)}: synced (attempt {number} of {total}, {result.seconds:.1f} s)")
                break
            reason = result.errors[0] if result.errors else result.status
            if number < total:
                delay = backoff_delay(number, backoff, jitter)
                print(f"{_name(folder)}: attempt {number} of {total} failed ({result.status}: {reason}); "
                      f"retrying in {delay:.1f} s")
                sleep(delay)
            else:
                print(f"{_name(folder)}: NOT synced after {total} attempt{'s' * (total != 1)} "
                      f"({result.status}: {reason})")
    finally:
        lock.release()
    return attempts


def backoff_delay(attempt: int, backoff: float, jitter: Callable[[float, float], float] = random.uniform) -> float:
    """Return the wait after failed attempt number *attempt* (1-based): ``backoff * 2**(attempt-1)``,
    jittered uniformly to between half of it and all of it, so that many syncs do not retry in step."""
    delay = backoff * 2 ** (attempt - 1)
    return jitter(delay / 2, delay)


def sync_environment(environ: Mapping[str, str]) -> dict[str, str]:
    """Return the environment for ``wandb sync``: *environ* with :data:`WANDB_KNOBS` where unset."""
    env = dict(environ)
    for name, value in WANDB_KNOBS.items():
        env.setdefault(name, value)
    env.pop(_env.WANDB_SILENT, None)  # its errors are how we learn that it failed
    env.pop(_env.WANDB_MODE, None)  # an inherited "offline" must not stop the upload
    return env


def sync_once(folder: _runs.RunFolder, *, environ: Mapping[str, str], timeout: float) -> Attempt:
    """Run ``wandb sync`` on *folder* once, killed after *timeout* seconds; judge what it did.

    ``--include-online`` is always passed: :func:`plan` decides which online folders to upload,
    and without it ``wandb sync`` skips them, printing no error and writing no marker.

    The attempt is ``synced`` only if wandb's marker is there afterwards *and* wandb printed no
    error (its exit status is 0 even when the server was unreachable). A marker written by an
    attempt that printed errors is removed, so that neither ``wandb sync`` nor this command
    takes the run for uploaded.
    """
    command = [sys.executable, "-m", "wandb", "sync", "--include-synced", "--include-online", str(folder.path)]
    started = time.monotonic()
    with tempfile.TemporaryFile("w+", encoding="utf-8", errors="replace") as output:
        try:
            # Its own session, so that the kill reaches what it started; output to a file, as
            # wandb's service may outlive it briefly while holding a pipe open.
            process = subprocess.Popen(command, stdout=output, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                       env=sync_environment(environ), start_new_session=True)
        except OSError as error:
            return Attempt("not_started", None, time.monotonic() - started, (str(error),))
        try:
            returncode: int | None = process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            _kill(process)
            returncode = None
        seconds = time.monotonic() - started
        output.seek(0)
        text = output.read()
    marker = folder.synced
    status, errors = judge(returncode, text, marker)
    if marker and status != "synced":
        folder.synced_marker.unlink(missing_ok=True)
    return Attempt(status, returncode, round(seconds, 3), errors, marker)


def judge(returncode: int | None, output: str, marker: bool) -> tuple[str, tuple[str, ...]]:
    """Judge one ``wandb sync``: return its status and the error lines it printed (at most 5).

    Args:
        returncode: Its exit status; None when it was killed after the attempt timeout.
        output: What it printed (stdout and stderr).
        marker: Whether its synced marker is there afterwards.

    Returns:
        ``("timeout", ...)`` when killed; ``("error", lines)`` when it printed an error line
        (``ERROR``, a traceback, ``Not authenticated``), whatever its exit status;
        ``("no_marker", ())`` when it wrote no marker; else ``("synced", ())``.
    """
    errors = tuple(line.strip()[:300] for line in output.splitlines() if _ERROR.search(line))[:5]
    if returncode is None:
        return "timeout", errors
    if errors:
        return "error", errors
    if not marker:
        return "no_marker", errors
    return "synced", errors


def _kill(process: subprocess.Popen[Any]) -> None:
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        process.kill()
    process.wait()


def log_attempt(folder: _runs.RunFolder, number: int, total: int, attempt: Attempt,
                environ: Mapping[str, str]) -> Path:
    """Append one JSON line for *attempt* to ``<root>/.instrument/sync.jsonl``; return the log's path.

    The line holds: ``time`` (UTC, ISO 8601), ``run_id``, ``folder``, ``attempt`` and ``of``,
    ``status``, ``synced``, ``returncode``, ``seconds``, ``marker``, ``verified``, ``errors``,
    and ``base_url`` (``WANDB_BASE_URL``, None when unset).
    """
    path = folder.root.resolve() / ".instrument" / LOG_NAME
    path.parent.mkdir(parents=True, exist_ok=True)
    line = json.dumps({
        "time": dt.datetime.now(dt.UTC).isoformat(timespec="seconds").replace("+00:00", "Z"),
        "run_id": folder.run_id, "folder": str(folder.path.resolve()), "attempt": number, "of": total,
        "status": attempt.status, "synced": attempt.synced, "returncode": attempt.returncode,
        "seconds": attempt.seconds, "marker": attempt.marker, "verified": attempt.verified,
        "errors": list(attempt.errors), "base_url": environ.get(_env.WANDB_BASE_URL),
    }, allow_nan=False)
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, (line + "\n").encode())  # one write per line: lines of two syncs never mix
    finally:
        os.close(fd)
    return path


# -- --verify: ask the server ------------------------------------------------------------------

#: Run in a wandb subprocess (this package never imports wandb itself): prints the server's last
#: history step of the run, -1 for a run without history, or raises.
_VERIFY = """
import json, sys
import wandb
entity, project, run_id = sys.argv[1:4]
api = wandb.Api(timeout=30)
run = api.run(f"{entity or api.default_entity}/{project}/{run_id}")
print(json.dumps({"last_step": run.lastHistoryStep, "state": run.state}))
"""


def verify_upload(folder: _runs.RunFolder, run: runfile.RunFile | None, environ: Mapping[str, str],
                  timeout: float) -> tuple[bool, str]:
    """Ask the server whether it holds *run* with all its history; return (holds it, why not).

    Runs wandb's public API in a subprocess (same environment and knobs as ``wandb sync``,
    killed after *timeout*). The run holds its history when the server's last history step is
    at least the file's last ``_step``.
    """
    if run is None:
        run = runfile.read_run_file(folder.wandb_file)
    last_step = max((row["_step"] for row in run.history if "_step" in row), default=-1)
    command = [sys.executable, "-c", _VERIFY, run.entity, run.project or "uncategorized", run.run_id]
    try:
        done = subprocess.run(command, check=False, capture_output=True, text=True, timeout=timeout,
                              stdin=subprocess.DEVNULL, env=sync_environment(environ))
    except subprocess.TimeoutExpired:
        return False, f"the server did not answer within {timeout:g} s"
    if done.returncode != 0:
        lines = (done.stderr or done.stdout).strip().splitlines()
        return False, f"the server does not list the run: {lines[-1] if lines else done.returncode}"
    try:
        answer = json.loads(done.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        return False, f"unexpected answer: {done.stdout[-200:]!r}"
    if answer["last_step"] < last_step:
        return False, f"the server holds history up to step {answer['last_step']}, the file up to {last_step}"
    return True, ""


def _verified(result: Attempt, folder: _runs.RunFolder, run: runfile.RunFile | None,
              environ: Mapping[str, str], timeout: float) -> Attempt:
    holds, why = verify_upload(folder, run, environ, timeout)
    if holds:
        return attrs.evolve(result, verified=True)
    folder.synced_marker.unlink(missing_ok=True)  # the server says otherwise: upload it again next time
    return attrs.evolve(result, status="unverified", verified=False, errors=(why,))

