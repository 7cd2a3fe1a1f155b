"""Find runs on disk for the command line: run folders, the RUN argument, and each run's state.

A *run folder* is wandb's ``<root>/wandb/offline-run-<stamp>-<id>/`` (``run-...`` for an online
run) holding ``run-<id>.wandb``. instrument's own files for it live beside wandb's folder, in
``<root>/.instrument/``. Nothing here imports wandb; reading a file goes through
:mod:`instrument.runfile`.
"""

from __future__ import annotations

import os
import re
import socket
import time
from collections.abc import Iterable, Mapping
from pathlib import Path

import attrs

from instrument import _env, runfile
from instrument.cli._common import CommandError

#: Seconds since its last write within which a run with no exit record counts as still being
#: written, when no process on this machine can be seen holding its file (another host, no /proc).
LIVE_WINDOW = 120.0
#: The line wandb 0.31's client writes to a run folder's ``logs/debug.log`` once ``wandb.init``
#: returned the run. Online, ``wandb.init`` returns only after the server answered the run's
#: creation, so an online folder whose log lacks it never reached the server.
INIT_RETURNED = "run started, returning control to user process"
#: What :attr:`RunFolder.upload` says of a run folder.
SYNCED, OFFLINE, UNCONFIRMED, NEVER_REACHED = "synced", "offline", "unconfirmed", "never_reached"
_STAMP = re.compile(r"(?:offline-)?run-(\d{8}_\d{6})-")


def _real(path: str | os.PathLike[str]) -> Path:
    """*path* with symbolic links resolved: wandb's ``latest-run`` names no run's kind or time."""
    return Path(os.path.realpath(path))


@attrs.frozen
class RunFolder:
    """One run folder of wandb's: *path* (the folder) and *wandb_file* (its ``run-<id>.wandb``),
    both with symbolic links such as ``latest-run`` resolved (the folder's real name says whether
    wandb wrote the run offline, and when)."""

    path: Path = attrs.field(converter=_real)
    wandb_file: Path = attrs.field(converter=_real)

    @property
    def run_id(self) -> str:
        """The run id, from the file name (``run-<id>.wandb``), the only reliable place for it."""
        return self.wandb_file.name.removeprefix("run-").removesuffix(".wandb")

    @property
    def root(self) -> Path:
        """The folder holding wandb's folder; instrument's own files go in ``<root>/.instrument``."""
        return self.path.parent.parent

    @property
    def offline(self) -> bool:
        """Whether wandb wrote the run offline (``offline-run-*``), so that it waits for a sync."""
        return self.path.name.startswith("offline-")

    @property
    def synced_marker(self) -> Path:
        """The file ``wandb sync`` creates once it uploaded the run: ``run-<id>.wandb.synced``."""
        return self.wandb_file.with_name(self.wandb_file.name + ".synced")

    @property
    def synced(self) -> bool:
        """Whether wandb's synced marker is there."""
        return self.synced_marker.exists()

    @property
    def debug_log(self) -> Path:
        """wandb's client log of the process that wrote the run: ``logs/debug.log``."""
        return self.path / "logs" / "debug.log"

    @property
    def upload(self) -> str:
        """What the folder tells about the run's upload.

        ``synced``: ``wandb sync`` wrote its marker. ``offline``: an offline run, not synced.
        For an online run (``run-*``) without the marker, nothing in the folder confirms the
        upload: wandb writes each record to ``run-<id>.wandb`` *before* sending it and keeps no
        acknowledgement of the server's there (the server's answer to the run's creation goes
        back to the process only), and ``wandb sync`` alone writes the marker. So it is
        ``never_reached`` when ``logs/debug.log`` shows that ``wandb.init`` never returned
        (online it returns only once the server answered; see :data:`INIT_RETURNED`), else
        ``unconfirmed`` (the server took the run's start; what reached it later is not recorded).
        """
        if self.synced:
            return SYNCED
        if self.offline:
            return OFFLINE
        try:
            with self.debug_log.open(encoding="utf-8", errors="replace") as log:
                returned = any(INIT_RETURNED in line for line in log)
        except OSError:  # no log: nothing says either way
            return UNCONFIRMED
        return UNCONFIRMED if returned else NEVER_REACHED


def instrument_dir(run_path: Path) -> Path:
    """Return instrument's folder for the run whose ``.wandb`` file is *run_path*.

    Args:
        run_path: ``<root>/wandb/<run folder>/run-<id>.wandb``.

    Returns:
        ``<root>/.instrument``: beside wandb's folder, where the gates sidecar and the sync log live.
    """
    return run_path.resolve().parent.parent.parent / ".instrument"


def default_wandb_dir(environ: Mapping[str, str] = os.environ) -> Path:
    """Return the folder where wandb puts runs: ``<WANDB_DIR or .>/wandb`` (``.wandb`` if that exists)."""
    root = Path(environ.get(_env.WANDB_DIR) or ".")
    hidden = root / ".wandb"
    return hidden if hidden.is_dir() else root / "wandb"


def find_folders(paths: Iterable[str | os.PathLike[str]], environ: Mapping[str, str] = os.environ) -> list[RunFolder]:
    """Return the run folders under *paths*, in start order, each once.

    Args:
        paths: Run folders, wandb folders (holding run folders), folders holding a ``wandb``
            folder, or ``.wandb`` files; none means :func:`default_wandb_dir`.
        environ: Where ``WANDB_DIR`` is read.

    Returns:
        The folders (symbolic links such as ``latest-run`` resolved) sorted by the timestamp in
        their names, then by path.

    Raises:
        CommandError: A path does not exist (exit status 2).
    """
    explicit = [Path(p) for p in paths]
    files: list[Path] = []
    for path in explicit or [default_wandb_dir(environ)]:
        if not path.exists():
            if not explicit:
                return []  # no wandb folder here yet: no runs
            raise CommandError(f"{path}: no such file or folder")
        files += _wandb_files(path)
    unique: dict[str, RunFolder] = {}
    for file in files:
        real = Path(os.path.realpath(file))
        unique.setdefault(str(real), RunFolder(real.parent, real))
    return sorted(unique.values(), key=lambda f: (_stamp(f.path), str(f.path)))


def find_journals(paths: Iterable[str | os.PathLike[str]], environ: Mapping[str, str] = os.environ) -> list[Path]:
    """Return the journals instrument left in the wandb folders *paths* select (as for
    :func:`find_folders`): ``instrument-journal-*`` folders, records that are in no run until
    ``instrument replay`` writes them into one."""
    found: dict[str, Path] = {}
    for path in [Path(p) for p in paths] or [default_wandb_dir(environ)]:
        for wandb_dir in (path, path / "wandb"):
            for journal in sorted(wandb_dir.glob("instrument-journal-*")) if wandb_dir.is_dir() else ():
                if journal.is_dir():
                    found.setdefault(os.path.realpath(journal), journal)
    return list(found.values())


def _wandb_files(path: Path) -> list[Path]:
    """Return the ``.wandb`` files that *path* selects (a file, a run folder, a wandb folder or its root)."""
    if path.is_file():
        return [path]
    own = sorted(path.glob("run-*.wandb"))
    if own:
        return own
    for wandb_dir in (path, path / "wandb", path / ".wandb"):
        found = runfile.find_run_files(wandb_dir)
        if found:
            return found
    return []


def _stamp(folder: Path) -> str:
    """The ``YYYYMMDD_HHMMSS`` in a run folder's name (``offline-run-<stamp>-<id>``), or ``""``."""
    match = _STAMP.match(folder.name)
    return match.group(1) if match else ""


def resolve_run(argument: str, environ: Mapping[str, str] = os.environ) -> runfile.RunFile:
    """Read the run that a command's RUN argument names.

    Args:
        argument: A ``.wandb`` file, a run folder (also by its name alone, in
            :func:`default_wandb_dir`), or a run id looked up there (the latest folder of that id
            when a run was resumed).
        environ: Where ``WANDB_DIR`` is read.

    Returns:
        The run, read with :func:`instrument.runfile.read_run_file`.

    Raises:
        CommandError: *argument* names no run, or its file is not a readable ``.wandb`` file
            (exit status 2).
    """
    path = Path(argument)
    if not path.exists() and (default_wandb_dir(environ) / argument).exists():
        path = default_wandb_dir(environ) / argument  # a folder's name as ``ls wandb`` prints it
    if path.is_file():
        found = [path]
    elif path.is_dir():
        found = sorted(path.glob("run-*.wandb"))
        if not found:
            raise CommandError(f"{argument}: not a run folder (no run-<id>.wandb in it)")
    else:
        wandb_dir = default_wandb_dir(environ)
        found = runfile.find_run_files(wandb_dir, argument)
        if not found:
            raise CommandError(f"{argument}: not a run: no such file or folder, and no run with this id in {wandb_dir}")
    try:
        return runfile.read_run_file(found[-1])
    except runfile.RunFileError as error:
        raise CommandError(f"{argument}: not a run: {error}") from error


def children(run: runfile.RunFile) -> list[runfile.RunFile]:
    """Return the runs a pipeline run lists in its summary (``pipeline/children``), read from the
    same wandb folder (the latest folder of each id); ids without a readable file are left out."""
    listed = run.summary.get("pipeline/children")
    found = []
    for child in listed if isinstance(listed, list) else []:
        files = runfile.find_run_files(run.path.parent.parent, str(child))
        try:
            found.append(runfile.read_run_file(files[-1]))
        except (IndexError, runfile.RunFileError):
            continue
    return found


def missing_children(run: runfile.RunFile, found: Iterable[runfile.RunFile]) -> list[str]:
    """Return the run ids a pipeline run lists in ``pipeline/children`` that are not among *found*
    (:func:`children`'s answer): runs written elsewhere, or deleted."""
    listed = run.summary.get("pipeline/children")
    have = {child.run_id for child in found}
    return [str(child) for child in listed if str(child) not in have] if isinstance(listed, list) else []


def read_folders(folders: Iterable[RunFolder]) -> tuple[list[runfile.RunFile], list[str]]:
    """Read the runs of *folders*; return them and one line per file that could not be read."""
    runs, unreadable = [], []
    for folder in folders:
        try:
            runs.append(runfile.read_run_file(folder.wandb_file))
        except runfile.RunFileError as error:
            unreadable.append(str(error))
    return runs, unreadable


def open_files() -> frozenset[str] | None:
    """Return the real paths of every file a process of this machine holds open (that we may see).

    Returns:
        The paths, or None where ``/proc`` does not list them (not Linux).
    """
    proc = Path("/proc")
    if not (proc / "self" / "fd").is_dir():
        return None
    found: set[str] = set()
    for pid in os.listdir(proc):
        if not pid.isdigit():
            continue
        try:
            fds = os.listdir(proc / pid / "fd")
        except OSError:  # gone, or another user's
            continue
        for fd in fds:
            try:
                found.add(os.readlink(proc / pid / "fd" / fd))
            except OSError:
                continue
    return frozenset(found)


def is_live(run: runfile.RunFile, opened: frozenset[str] | None, now: float | None = None) -> bool:
    """Return whether *run* is still being written, so that syncing it now would cut it short.

    wandb's service keeps a run's ``.wandb`` file open until the run finished. On the machine
    that wrote the run (its run record's host) and where ``/proc`` lists open files, that is
    the answer. Elsewhere, a run with no exit record whose file changed in the last
    :data:`LIVE_WINDOW` seconds counts as live.

    Args:
        run: The run, as read.
        opened: :func:`open_files` (taken once for many runs), or None.
        now: The time to compare the file's modification time with (default: now).
    """
    if opened is not None and run.host in ("", socket.gethostname()):
        return os.path.realpath(run.path) in opened
    if run.exit_code is not None:
        return False
    try:
        changed = run.path.stat().st_mtime
    except OSError:
        return False
    return (time.time() if now is None else now) - changed < LIVE_WINDOW
