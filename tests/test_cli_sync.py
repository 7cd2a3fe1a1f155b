"""Tests of ``instrument sync``: real ``wandb sync`` against a closed port, live runs, the retry loop."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import filelock
import pytest
from helpers import CliRuns, wandb_env

from instrument.cli import _runs, _sync, main

DUMMY_KEY = "x" * 40


def copy_runs(cli_runs: CliRuns, target: Path, *names: str) -> Path:
    """Copy the named run folders (all by default) into ``target/wandb``; return that folder."""
    wandb_dir = target / "wandb"
    wandb_dir.mkdir(parents=True)
    for name in names or tuple(cli_runs.ids):
        folder = cli_runs.folder(name)
        shutil.copytree(folder, wandb_dir / folder.name, symlinks=True)
    return wandb_dir


def closed_port() -> int:
    """A port on 127.0.0.1 that nothing listens on (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def unreachable_env(root: Path, **extra: str) -> dict[str, str]:
    """An environment that points wandb at a closed port on 127.0.0.1 with a dummy API key."""
    env = wandb_env(root, WANDB_BASE_URL=f"http://127.0.0.1:{closed_port()}", WANDB_API_KEY=DUMMY_KEY, **extra)
    env.pop("WANDB_MODE")
    return env


@pytest.mark.integration
def test_sync_against_a_closed_port_exits_4_and_leaves_no_marker(cli_runs: CliRuns, tmp_path: Path) -> None:
    """wandb sync exits 0 against a closed port; instrument sync sees its errors, retries once, exits 4,
    logs one JSON line per attempt and leaves no synced marker (the user's retry knob is kept)."""
    wandb_dir = copy_runs(cli_runs, tmp_path, "cli-a")
    env = unreachable_env(tmp_path, WANDB__GRAPHQL_RETRY_MAX="1")
    result = subprocess.run(
        [sys.executable, "-m", "instrument", "sync", str(wandb_dir), "--retries", "1", "--backoff", "0.2"],
        capture_output=True, text=True, env=env, cwd=tmp_path, timeout=120, check=False,
    )
    lines = [json.loads(line) for line in (tmp_path / ".instrument" / "sync.jsonl").read_text().splitlines()]
    assert 4 == result.returncode, result.stdout + result.stderr
    assert [(1, 2, "error", 0, False, False), (2, 2, "error", 0, False, False)] == [
        (x["attempt"], x["of"], x["status"], x["returncode"], x["synced"], x["marker"]) for x in lines
    ]
    assert all("connection refused" in " ".join(x["errors"]) for x in lines)
    assert [] == list(wandb_dir.glob("*/*.wandb.synced"))
    assert f"not synced: {cli_runs.ids['cli-a']}" in result.stdout


@pytest.mark.integration
def test_an_attempt_past_its_timeout_is_killed(cli_runs: CliRuns, tmp_path: Path) -> None:
    """With wandb's default retries (minutes against a closed port) an attempt ends at its hard timeout."""
    wandb_dir = copy_runs(cli_runs, tmp_path, "cli-b")
    env = unreachable_env(tmp_path, WANDB__GRAPHQL_RETRY_MAX="100")
    (folder,) = _runs.find_folders([wandb_dir])
    attempt = _sync.sync_once(folder, environ=env, timeout=3)
    assert ("timeout", None, False) == (attempt.status, attempt.returncode, folder.synced)


@pytest.mark.integration
def test_dry_run_lists_the_unsynced_runs(cli_runs: CliRuns, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """--dry-run lists every run without a marker (the killed one as incomplete), counts the synced
    ones, uploads nothing and exits 4 while some are left."""
    wandb_dir = copy_runs(cli_runs, tmp_path)
    marker = next(wandb_dir.glob(f"*-{cli_runs.ids['cli-c']}/run-*.wandb"))
    marker.with_name(marker.name + ".synced").touch()
    status = main(["sync", str(wandb_dir), "--dry-run"], {})
    lines = capsys.readouterr().out.splitlines()
    listed = sorted(line.split()[1] for line in lines if line.startswith("  run "))
    assert 4 == status
    assert "would sync 3 runs:" == lines[0]
    assert sorted(cli_runs.ids[n] for n in ("cli-a", "cli-b", "cli-killed")) == listed
    assert any(line.endswith("(incomplete: no exit record)") for line in lines if cli_runs.ids["cli-killed"] in line)
    assert "already synced: 1" == lines[-1]
    assert not (tmp_path / ".instrument").exists()


def test_a_journal_left_in_the_wandb_folder_is_named_and_not_counted_as_synced(
    cli_runs: CliRuns, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Records instrument kept in a journal (a run that could not be started) are in no run: sync
    and --dry-run name the journal with the replay command and exit 4, even when every run is synced."""
    wandb_dir = copy_runs(cli_runs, tmp_path, "cli-a")
    marker = next(wandb_dir.glob("*/run-*.wandb"))
    marker.with_name(marker.name + ".synced").touch()
    journal = wandb_dir / "instrument-journal-ab12cd34-xyz"
    journal.mkdir()
    (journal / "spill.jsonl").write_text("{}\n")
    for dry_run in (["--dry-run"], []):
        status = main(["sync", str(wandb_dir), *dry_run], {})
        out = capsys.readouterr().out
        assert 4 == status, out
        assert any("instrument replay" in line and journal.name in line for line in out.splitlines()), out


@pytest.mark.integration
def test_a_run_still_being_written_is_skipped_and_shown_running(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A run whose process is alive is skipped by sync (exit 4) and shown as running."""
    code = textwrap.dedent("""
        import sys, wandb
        run = wandb.init(project="p", id="liverun1")
        run.log({"a": 1})
        print("up", flush=True)
        sys.stdin.readline()  # until the test is done
        run.finish()
    """)
    writer = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                              env=wandb_env(tmp_path), cwd=tmp_path)
    try:
        assert writer.stdout is not None
        assert "up\n" == writer.stdout.readline()
        environ = {"WANDB_DIR": str(tmp_path)}
        sync_status = main(["sync", "--dry-run"], environ)
        sync_out = capsys.readouterr().out
        show_status = main(["show", "liverun1", "--json"], environ)
        shown = json.loads(capsys.readouterr().out)
    finally:
        writer.communicate("\n", timeout=60)
    assert (4, 0) == (sync_status, show_status)
    assert "skipped run liverun1" in sync_out and ": live: still being written" in sync_out
    assert "would sync 0 runs" in sync_out
    assert "running" == shown["state"]


def test_retries_back_off_exponentially_with_jitter_and_stop_at_success(tmp_path: Path) -> None:
    """Failed attempts are retried after growing waits, each logged as one JSON line; a success ends it."""
    folder = make_folder(tmp_path)
    results = iter([_sync.Attempt("error", 0, 0.1, ("wandb: ERROR x",)), _sync.Attempt("timeout", None, 5.0),
                    _sync.Attempt("synced", 0, 0.2, (), True)])
    waits: list[float] = []
    attempts = _sync.sync_folder(folder, None, retries=5, backoff=2.0, timeout=9, environ={},
                                 attempt=lambda *a, **k: next(results), sleep=waits.append, jitter=high)
    logged = [json.loads(line) for line in (tmp_path / ".instrument" / "sync.jsonl").read_text().splitlines()]
    assert ["error", "timeout", "synced"] == [a.status for a in attempts]
    assert [2.0, 4.0] == waits
    assert [(1, 6, "error"), (2, 6, "timeout"), (3, 6, "synced")] == [(x["attempt"], x["of"], x["status"]) for x in logged]


def low(low: float, high: float) -> float:
    """A jitter that always picks the shortest wait."""
    return low


def high(low: float, high: float) -> float:
    """A jitter that always picks the longest wait."""
    return high


def test_backoff_doubles_and_jitters_between_half_and_all() -> None:
    """The wait after failure n is backoff * 2**(n-1), jittered to between half of it and all of it."""
    assert [1.0, 2.0, 4.0] == [_sync.backoff_delay(n, 2.0, low) for n in (1, 2, 3)]
    assert [2.0, 4.0, 8.0] == [_sync.backoff_delay(n, 2.0, high) for n in (1, 2, 3)]


def test_a_folder_locked_by_another_sync_is_left_alone(tmp_path: Path) -> None:
    """While another process holds a run folder's lock, sync makes no attempt on it."""
    folder = make_folder(tmp_path)
    calls: list[object] = []
    with filelock.FileLock(str(folder.path / _sync.LOCK_NAME)):
        attempts = _sync.sync_folder(folder, None, retries=2, backoff=0, timeout=1, environ={},
                                     attempt=lambda *a, **k: calls.append(a) or _sync.Attempt("synced", 0, 0.0))
    assert ([], []) == (attempts, calls)


def test_judge_trusts_neither_the_exit_status_nor_the_marker_alone() -> None:
    """Exit 0 with an ERROR line is an error, a marker is needed for synced, and a kill is a timeout."""
    refused = "wandb: ERROR Error initializing run: dial tcp 127.0.0.1:1: connect: connection refused\n"
    assert ("error", (refused.strip(),)) == _sync.judge(0, refused, marker=False)
    assert ("error", (refused.strip(),)) == _sync.judge(0, refused, marker=True)
    assert ("no_marker", ()) == _sync.judge(0, "wandb: Syncing 1 run(s):\n", marker=False)
    assert ("synced", ()) == _sync.judge(0, "wandb: Syncing 1 run(s):\n", marker=True)
    assert ("timeout", ()) == _sync.judge(None, "", marker=False)
    assert ("error", ("Not authenticated.",)) == _sync.judge(0, "Not authenticated.\n", marker=False)


def test_verify_failure_unmarks_the_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """With --verify, an upload the server does not confirm is not synced and its marker is removed."""
    folder = make_folder(tmp_path)
    folder.synced_marker.touch()
    monkeypatch.setattr(_sync, "verify_upload", lambda *a: (False, "the server holds history up to step 3"))
    attempts = _sync.sync_folder(folder, None, retries=0, backoff=0, timeout=1, verify=True, environ={},
                                 attempt=lambda *a, **k: _sync.Attempt("synced", 0, 0.0, (), True))
    assert [("unverified", False, ("the server holds history up to step 3",))] == [
        (a.status, a.verified, a.errors) for a in attempts
    ]
    assert not folder.synced


def test_sync_environment_bounds_wandb_retries_unless_set() -> None:
    """wandb's retry knobs get instrument's bounds when unset and keep the user's values; WANDB_MODE and
    WANDB_SILENT are not passed on (an inherited offline mode or silence would hide the upload's fate)."""
    env = _sync.sync_environment({"WANDB__GRAPHQL_RETRY_MAX": "7", "WANDB_MODE": "offline", "WANDB_SILENT": "true"})
    assert {"WANDB__GRAPHQL_RETRY_MAX": "7", "WANDB__FILE_STREAM_RETRY_MAX": "3",
            "WANDB__FILE_TRANSFER_RETRY_MAX": "3", "WANDB_HTTP_TIMEOUT": "30"} == env


def test_sync_with_bad_arguments_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A folder that does not exist or a negative retry count is a usage error."""
    assert 2 == main(["sync", str(tmp_path / "missing")], {})
    assert 2 == main(["sync", "--retries", "-1"], {})
    assert "no such file or folder" in capsys.readouterr().err


def make_folder(root: Path) -> _runs.RunFolder:
    """A run folder with an empty .wandb file (enough for the retry loop, which never reads it)."""
    path = root / "wandb" / "offline-run-20260101_000000-fake0001"
    path.mkdir(parents=True)
    (path / "run-fake0001.wandb").touch()
    return _runs.RunFolder(path, path / "run-fake0001.wandb")





@pytest.mark.integration
def test_verify_asks_the_server_and_reports_why_it_cannot_confirm(cli_runs: CliRuns, tmp_path: Path) -> None:
    """--verify's query runs wandb's public API in a subprocess: against a closed port it says the
    server does not list the run, naming the refused connection."""
    wandb_dir = copy_runs(cli_runs, tmp_path, "cli-c")
    (folder,) = _runs.find_folders([wandb_dir])
    holds, why = _sync.verify_upload(folder, None, unreachable_env(tmp_path, WANDB__GRAPHQL_RETRY_MAX="1"), 60)
    assert (False, True) == (holds, why.startswith("the server does not list the run:") and "refused" in why)


def as_online(folder: Path, *, init_returned: bool) -> Path:
    """Rename an offline run folder as wandb names an online run's (``run-*``); without *init_returned*,
    cut its ``logs/debug.log`` where ``wandb.init`` waits for the server, as a process that never got
    an answer leaves it. Return the new folder."""
    online = folder.rename(folder.with_name(folder.name.removeprefix("offline-")))
    log = online / "logs" / "debug.log"
    lines = log.read_text().splitlines(keepends=True)
    waits = next(i for i, line in enumerate(lines) if "communicating run to backend" in line)
    assert any(_runs.INIT_RETURNED in line for line in lines[waits:])
    if not init_returned:
        log.write_text("".join(lines[: waits + 1]))
    return online


@pytest.mark.integration
def test_online_runs_are_never_called_uploaded_without_wandbs_marker(
    cli_runs: CliRuns, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """An online run folder without the marker is "not confirmed uploaded" in show, and one whose
    wandb.init never got the server's answer is "NO" and makes sync exit 4; --include-online lists
    both for upload."""
    wandb_dir = copy_runs(cli_runs, tmp_path, "cli-a", "cli-b", "cli-c")
    started = as_online(cli_runs_folder(wandb_dir, cli_runs.ids["cli-a"]), init_returned=True)
    unreached = as_online(cli_runs_folder(wandb_dir, cli_runs.ids["cli-b"]), init_returned=False)
    synced = as_online(cli_runs_folder(wandb_dir, cli_runs.ids["cli-c"]), init_returned=True)
    (synced / f"run-{cli_runs.ids['cli-c']}.wandb.synced").touch()
    shown = {}
    for folder in (started, unreached, synced):
        main(["show", str(folder), "--json"], {})
        description = json.loads(capsys.readouterr().out)
        main(["show", str(folder)], {})
        line = next(line for line in capsys.readouterr().out.splitlines() if line.startswith("  synced: "))
        shown[folder.name] = (description["upload"], line.split(": ", 1)[1].split(" (")[0].split(";")[0])
    status = main(["sync", str(wandb_dir), "--dry-run"], {})
    skipped = sorted(line.split(": ")[1] for line in capsys.readouterr().out.splitlines() if line.startswith("skipped"))
    included = main(["sync", str(wandb_dir), "--dry-run", "--include-online"], {})
    listed = sorted(line.split()[1] for line in capsys.readouterr().out.splitlines() if line.startswith("  run "))
    assert {
        started.name: ("unconfirmed", "not confirmed uploaded: an online run"),
        unreached.name: ("never_reached", "NO: an online run that never reached the server"),
        synced.name: ("synced", "yes"),
    } == shown
    assert (4, ["online", "unreached"]) == (status, skipped)
    assert (4, sorted([cli_runs.ids["cli-a"], cli_runs.ids["cli-b"]])) == (included, listed)


@pytest.mark.integration
def test_an_offline_run_reached_through_latest_run_is_offline(
    cli_runs: CliRuns, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """wandb's ``latest-run`` link to an offline folder is shown as an offline run waiting for a
    sync, by path and by name, as the folder itself is, never as an online run."""
    wandb_dir = copy_runs(cli_runs, tmp_path, "cli-a")
    folder = cli_runs_folder(wandb_dir, cli_runs.ids["cli-a"])
    (wandb_dir / "latest-run").symlink_to(folder.name)
    shown = []
    for argument in (str(folder), str(wandb_dir / "latest-run"), "latest-run"):
        main(["show", argument, "--json"], {"WANDB_DIR": str(tmp_path)})
        upload = json.loads(capsys.readouterr().out)["upload"]
        main(["show", argument], {"WANDB_DIR": str(tmp_path)})
        line = next(line for line in capsys.readouterr().out.splitlines() if line.startswith("  synced: "))
        shown.append((upload, line))
    assert [shown[0]] * 3 == shown
    assert "offline" == shown[0][0]


def cli_runs_folder(wandb_dir: Path, run_id: str) -> Path:
    """The run folder of *run_id* in *wandb_dir*."""
    (folder,) = wandb_dir.glob(f"*-{run_id}")
    return folder


@pytest.mark.integration
def test_an_online_run_is_uploaded_by_wandb_sync_with_include_online(cli_runs: CliRuns, tmp_path: Path) -> None:
    """wandb sync takes an online folder with --include-online: against a closed port it tries (and
    fails with connection refused) instead of skipping the folder without a word."""
    wandb_dir = copy_runs(cli_runs, tmp_path, "cli-a")
    online = as_online(cli_runs_folder(wandb_dir, cli_runs.ids["cli-a"]), init_returned=False)
    env = unreachable_env(tmp_path, WANDB__GRAPHQL_RETRY_MAX="1")
    attempt = _sync.sync_once(_runs.RunFolder(online, online / f"run-{cli_runs.ids['cli-a']}.wandb"),
                              environ=env, timeout=120)
    assert ("error", False) == (attempt.status, attempt.marker)
    assert "connection refused" in " ".join(attempt.errors)
