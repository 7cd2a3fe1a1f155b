"""The wandb backend: the only module besides the run-file reader that imports wandb, lazily.

``import wandb`` costs about a second, so it happens in :meth:`WandbBackend.start`, when a run is
really started, never at ``import instrument``. What this module relies on wandb to do is listed
in docs/wandb-behaviour.md.
"""

from __future__ import annotations

import contextlib
import functools
import glob
import os
import shutil
import socket
import sys
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from instrument import _env, runfile
from instrument._backends import wandb_core, wandb_sharing
from instrument._backends.base import BackendRun, Call, RunSpec, ValuesDropped
from instrument._backends.wandb_core import Retained, file_rows, silence_telemetry
from instrument._backends.wandb_fast import HistoryWriter
from instrument._foreign import ForeignValue, PlotlyFigure, materialize
from instrument._keys import metric_name
from instrument._kinds import is_plotly_figure, type_name
from instrument._media import is_image_batch, pictures
from instrument._problems import describe
from instrument._records import approx_bytes
from instrument._values import Histogram, Image, Table

#: Seconds between flushes of wandb's transaction log. wandb's default is 15 s, so a SIGKILLed
#: process lost up to 15 s of points; at 1 s it loses about a second.
FLUSH_INTERVAL_SECONDS = 1.0

#: Run ids started by this library in this process, so an active ``wandb.run`` of ours is never
#: mistaken for a framework's run.
_OURS: set[str] = set()

#: The runs other code started that instrument writes into, by id: one per run, so the points
#: waiting for that run's owner to write rows are kept across sessions.
_GUESTS: dict[str, WandbRun] = {}


def to_wandb(value: Any) -> Any:
    """Return *value* with instrument's media values turned into wandb objects (recursively).

    ``Table`` -> ``wandb.Table`` (image cells -> ``wandb.Image``; a column mixing types, say ints
    and strings, is allowed as wandb allows it with ``allow_mixed_types``); ``Image`` ->
    ``wandb.Image``, a batch -> a list of them (W&B shows ``images/separated``); ``Histogram`` ->
    ``wandb.Histogram`` (wandb bins the values; a pair keeps its bins); a plotly figure ->
    ``wandb.Plotly`` (as ``run.log`` stores one); a wandb object read back from a journal -> the
    object rebuilt; dicts and lists are walked.

    Raises:
        Exception: whatever wandb raises for a value it cannot convert.
    """
    import wandb

    if isinstance(value, Table):
        data = [[to_wandb(c) for c in row] for row in value.rows]
        try:
            return wandb.Table(columns=list(value.columns), data=data)
        except TypeError:  # a column mixing types, which wandb refuses unless told to allow it
            return wandb.Table(columns=list(value.columns), data=data, allow_mixed_types=True)
    if isinstance(value, Histogram):
        if value.counts is not None and value.bins is not None:
            return wandb.Histogram(np_histogram=(list(value.counts), list(value.bins)))  # type: ignore[arg-type]
        return wandb.Histogram(list(value.values), num_bins=value.num_bins)
    if isinstance(value, Image):
        images = [wandb.Image(frame, caption=value.caption) for frame in pictures(value)]
        return images if is_image_batch(value.data) else images[0]
    if isinstance(value, ForeignValue):
        return materialize(value)
    if isinstance(value, PlotlyFigure):
        import plotly.io  # type: ignore[import-untyped]  # a figure a subprocess made, so plotly is installed

        return wandb.Plotly(plotly.io.from_json(value.json))
    if is_plotly_figure(value):
        return wandb.Plotly(value)
    if isinstance(value, dict):
        return {k: to_wandb(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [to_wandb(v) for v in value]
    return value


_PLAIN = frozenset({int, float, bool, str, type(None)})


def _is_plain(value: Any) -> bool:
    """Return whether *value* is plain data wandb writes inline (no file, no conversion)."""
    kind = value.__class__
    if kind in _PLAIN:
        return True
    if kind is list or kind is tuple:
        return all(_is_plain(v) for v in value)
    if kind is dict:
        return all(_is_plain(v) for v in value.values())
    return False


def _all_plain(values: dict[str, Any]) -> bool:
    """Return whether every value is a number, a string or None (checked fast, by class)."""
    plain = _PLAIN
    return all(value.__class__ in plain for value in values.values())


def _split(values: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """Return ``(plain values, media values)`` of a row or summary update."""
    plain: dict[str, Any] = {}
    media: dict[str, Any] = {}
    for key, value in values.items():
        (plain if _is_plain(value) else media)[key] = value
    return plain, media


def _files_of(source: Path, shown: str) -> list[Path]:
    """Return the files to save for *source*: itself, every file of a folder, or a glob's matches.

    Raises:
        FileNotFoundError: nothing matches (wandb would save nothing, silently).
    """
    if source.is_dir():
        return sorted(p for p in source.rglob("*") if p.is_file())
    if source.is_file():
        return [source]
    matches = sorted(Path(p) for p in glob.glob(str(source)) if os.path.isfile(p))
    if not matches:
        raise FileNotFoundError(f"no file matches {shown!r}; nothing was saved")
    return matches


#: Seconds a call to a run is kept after the newest one, for a wandb-core that stops answering:
#: several flush intervals of its transaction log (what it took since its last flush is lost).
RETAIN_SECONDS = 5 * FLUSH_INTERVAL_SECONDS


class WandbRun:
    """A live ``wandb.Run`` behind the :class:`~instrument._backends.base.BackendRun` protocol.

    *owned*: instrument started it (else it is a guest in a run other code started: it never
    finishes it, never moves its step and keeps its owner's config values; see
    :mod:`instrument._backends.wandb_sharing`).

    A run instrument started is also a :class:`~instrument._backends.base.BufferedRun`: while its
    rows are its own (no other code logged into it with ``step=``), rows of plain numbers take
    the fast route into wandb-core (:mod:`instrument._backends.wandb_fast`), handed over together
    by :meth:`send_pending` (and before any other call, ours or other code's), and the calls of the
    last :data:`RETAIN_SECONDS` are kept (at most a quarter of ``INSTRUMENT_QUEUE_BYTES``) to find
    what a wandb-core that had to be stopped never wrote (:meth:`unwritten`).
    """

    def __init__(self, run: Any, *, owned: bool) -> None:
        self.run = run
        self.id: str = run.id
        self.owned = owned
        self._dropped: list[tuple[str, str, str]] = []  # values of the row being written that wandb refused
        self.shared = wandb_sharing.SharedRun(run, owned=owned, write=self._write_row)
        self._at_end: dict[Path, Path] = {}  # copy in the files folder -> its source ("end" policy)
        self._fast = HistoryWriter.attach(run) if owned and _env.fast_route() else None
        self._retained = Retained(RETAIN_SECONDS, _env.queue_bytes() // 4) if owned else None
        self._unsent: list[Call] = []
        if self._fast is not None:
            self.shared.before_others = self._send_before_others

    @property
    def native(self) -> Any:
        """The ``wandb.Run``."""
        return self.run

    def watch(self, settle: Callable[[float], object], finished: Callable[[str | None], None]) -> None:
        self.shared.settle = settle
        self.shared.finished_elsewhere = finished

    def log(self, row: dict[str, Any]) -> None:
        """Append one history row: committed in instrument's run, shared with the owner's rows in a
        run whose step belongs to other code (:class:`~instrument._backends.wandb_sharing.Rows`).

        A value wandb cannot write costs only itself: each media value goes into the row in a
        ``run.log`` of its own (``commit=False``, the same row) before the plain values, so one
        that fails there (a file gone, a value wandb refuses) is left out alone.

        Raises:
            ValuesDropped: after the row was written, naming the values that were not.
            Exception: whatever wandb raises for the plain values (the run's fault).
        """
        fast, rows = self._fast, self.shared.rows
        if fast is not None:
            with rows.lock:
                if rows.own_rows and fast.add(row):  # plain numbers in instrument's own rows
                    rows.committed += 1
                    self._keep("log", {"row": row}, 64 + 100 * len(row))
                    if fast.full:
                        self.send_pending()
                    return
        self._keep("log", {"row": row}, None)
        self.send_pending()
        self._dropped = []
        if _all_plain(row):  # numbers and strings (the common case): nothing to convert
            rows.write(row)
            return
        converted: dict[str, Any] = {}
        for key, value in row.items():
            try:
                converted[key] = value if value.__class__ in _PLAIN else to_wandb(value)
            except Exception as error:  # one value wandb cannot take costs only itself
                self._dropped.append((key, type_name(value), describe(error)))
        rows.write(converted)
        if self._dropped:
            raise ValuesDropped(self._dropped)

    def _write_row(self, row: dict[str, Any], commit: bool | None = None) -> None:
        """Write one of instrument's rows with wandb's ``run.log``, each media value on its own first."""
        plain, media = (row, {}) if _all_plain(row) else _split(row)
        for key, value in media.items():
            try:
                self.shared.log({key: value}, commit=False)
            except Exception as error:  # one value wandb cannot write costs only itself
                self._dropped.append((key, type_name(value), describe(error)))
        if commit is None:
            self.shared.log(plain)
        else:
            self.shared.log(plain, commit=commit)

    def define_metric(self, name: str, step_metric: str | None, summary: str | None) -> None:
        """Declare the exact key *name* on *step_metric*, dots escaped (wandb reads a dot as nesting);
        a key holding ``*`` is not declared (wandb reads it as a glob)."""
        declared = metric_name(name)
        if declared is None:
            return
        self._keep("define_metric", {"name": name, "step_metric": step_metric, "summary": summary}, 200)
        self.send_pending()
        kwargs: dict[str, Any] = {}
        if step_metric:
            kwargs["step_metric"] = metric_name(step_metric) or step_metric
        if summary:
            kwargs["summary"] = summary
        self.run.define_metric(declared, **kwargs)

    def update_summary(self, values: dict[str, Any]) -> None:
        """Set summary keys; a media value wandb cannot write costs only itself.

        Raises:
            ValuesDropped: after the rest was written, naming the values that were not.
        """
        self._keep("update_summary", {"values": values}, None)
        self.send_pending()
        self.shared.before_summary(values)
        plain, media = _split(values)
        dropped: list[tuple[str, str, str]] = []
        for key, value in media.items():
            try:
                self.run.summary.update({key: to_wandb(value)})
            except Exception as error:  # one value wandb cannot write costs only itself
                dropped.append((key, type_name(value), describe(error)))
        if plain:
            self.run.summary.update(plain)
        self.shared.wrote_summary(values)
        if dropped:
            raise ValuesDropped(dropped)

    def declare_chart(self, key: str, spec: dict[str, Any]) -> None:
        """Keep a custom chart's panel in the config under ``_wandb.visualize.<key>``, as ``run.log``
        of a ``wandb.plot`` chart does (through the same callback: wandb has no public call for it).

        The panel also goes into wandb's own copy of that section: wandb sends the whole section
        again when an image with boxes or masks is logged, which would otherwise erase the chart.
        """
        self.send_pending()
        internal = self.run.config["_wandb"]
        internal.setdefault("visualize", {})[key] = spec
        self.run._config_callback(key=("_wandb", "visualize", key), val=spec)  # noqa: SLF001

    def update_config(self, values: dict[str, Any]) -> None:
        """Write *values* into ``run.config``; in a run other code started, a key whose value that
        code set keeps its value (one warning per key, naming both values)."""
        self._keep("update_config", {"values": values}, None)
        self.send_pending()
        if not self.owned:
            values = self.shared.config_to_write(values)
        if values:
            self.run.config.update(values, allow_val_change=True)

    def _keep(self, method: str, args: dict[str, Any], size: int | None) -> None:
        """Keep the call for :meth:`unwritten` (owned runs only)."""
        if self._retained is not None:
            self._retained.add(time.monotonic(), method, args, approx_bytes(args) if size is None else size)

    def send_pending(self) -> None:
        """Hand the rows the fast route holds to wandb-core (see :class:`BufferedRun`).

        Raises:
            Exception: what wandb's connection raises; the rows are then in :meth:`unsent`.
        """
        fast = self._fast
        if fast is None or not fast.pending:
            return
        with self.shared.rows.lock:  # serialised with other code's log calls
            try:
                fast.send()
            except Exception:
                self._unsent += [("log", {"row": row}) for row in fast.pending]
                fast.pending = []
                self._fast = None  # a broken connection: run.log raises for what comes next
                raise

    def _send_before_others(self) -> None:
        """Other code is about to log into this run: our rows go first (their failure waits for
        the next call of ours, which the fault policy sees)."""
        with contextlib.suppress(Exception):  # never raise into other code's log call: see unsent()
            self.send_pending()

    def unsent(self) -> list[Call]:
        """Return, once, the rows a failed :meth:`send_pending` never handed to wandb-core."""
        calls, self._unsent = self._unsent, []
        return calls

    def unwritten(self) -> list[Call]:
        """Return, once, what a stopped wandb-core never wrote to the run's ``.wandb`` file.

        Compares the calls kept (the last :data:`RETAIN_SECONDS`) with the end of the file
        (:meth:`Retained.unwritten`), then adds the rows never handed over. Call it only once
        wandb-core is gone: a live one may still write.
        """
        calls: list[Call] = []
        if self._retained is not None:
            retained, self._retained = self._retained, None
            sync_file = getattr(self.run.settings, "sync_file", None)
            rows = file_rows(sync_file, max(4 * 1024 * 1024, 4 * retained.bytes)) if sync_file else []
            calls = retained.unwritten(rows)
        fast = self._fast
        pending = [("log", {"row": row}) for row in fast.pending] if fast is not None else []
        if fast is not None:
            fast.pending = []
        known = {id(args["row"]) for method, args in calls if method == "log"}
        return calls + [call for call in self.unsent() + pending if id(call[1]["row"]) not in known]

    @property
    def rows_dropped_from_memory(self) -> int:
        """Rows let go from the kept calls to stay within their bytes while still recent."""
        return self._retained.dropped_rows if self._retained is not None else 0

    def save(self, path: str, base_path: str | None, policy: str) -> None:
        """Save the file (every file of a folder, every match of a glob) at *path* under
        ``files/<relative path>``.

        The relative path is taken against *base_path* (routing made it absolute). wandb's
        ``run.save`` only symlinks: a later ``wandb sync`` would upload
        whatever the file holds then, or fail if it is gone. So for ``"now"`` and ``"end"`` the
        file is copied into the run's files folder and that copy is saved (wandb then keeps it
        in place); an ``"end"`` file is copied again when the run finishes. ``"live"`` stays
        wandb's symlink, which follows the file.

        Raises:
            FileNotFoundError: nothing matches *path*.
        """
        self.send_pending()
        source = Path(path)
        base = Path(base_path) if base_path else source.parent
        files_root = Path(self.run.settings.files_dir)
        shown = os.path.relpath(source) if source.is_relative_to(Path.cwd()) else str(source)
        for file in _files_of(source, shown):
            if policy == "live":
                self.run.save(str(file), base_path=str(base), policy="live", glob=False)
                continue
            target = files_root / file.relative_to(base)
            _copy(file, target)
            self.run.save(str(target), base_path=str(files_root), policy=policy, glob=False)
            if policy == "end":
                self._at_end[target] = file

    def log_artifact(self, path: str, type: str, name: str, aliases: tuple[str, ...], *,
                     metadata: dict[str, Any] | None = None, description: str | None = None) -> None:
        """Log the file or folder at *path* as an artifact with its version's *metadata* and
        *description* (wandb copies it into its staging folder at once; offline,
        ``log_artifact`` works and ``wait()`` would raise)."""
        import wandb

        self.send_pending()
        artifact = wandb.Artifact(name=name, type=type, description=description, metadata=metadata)
        if Path(path).is_dir():
            artifact.add_dir(path)
        else:
            artifact.add_file(path)
        self.run.log_artifact(artifact, aliases=list(aliases) or None)

    def log_wandb_artifact(self, artifact: Any, aliases: tuple[str, ...]) -> None:
        """Log a ``wandb.Artifact`` the user built, as it is."""
        self.send_pending()
        self.run.log_artifact(artifact, aliases=list(aliases) or None)

    def alert(self, title: str, text: str, level: str) -> None:
        self.send_pending()
        self.run.alert(title=title, text=text, level=level)

    def finish(self, exit_code: int) -> None:
        """Finish instrument's run with *exit_code*; in a guest run only write the points still
        waiting for the owner's rows (the owner finishes its run)."""
        self.send_pending()
        for target, source in self._at_end.items():
            if source.is_file():  # the final contents; a source deleted meanwhile keeps the first copy
                _copy(source, target)
        self.shared.close()
        if self.owned:
            with self.shared.finishing():
                self.run.finish(exit_code=exit_code)

    def location(self) -> str:
        return str(getattr(self.run.settings, "sync_dir", "") or self.run.dir)

    def _earlier_files(self) -> list[Path]:
        sync_dir = getattr(self.run.settings, "sync_dir", "") or ""
        if not sync_dir:
            return []
        own = os.path.realpath(sync_dir)
        files = runfile.find_run_files(os.path.dirname(sync_dir), self.id)
        return [file for file in files if os.path.realpath(file.parent) != own]

    def earlier_folders(self) -> list[str]:
        """Return the other folders of this run's id in its wandb folder (an offline run written
        before, by a process that was preempted), oldest first."""
        return [str(file.parent) for file in self._earlier_files()]

    def resumed_steps(self) -> dict[str, int]:
        """Return each stage axis's last step recorded before this run was resumed ({} for a
        fresh run).

        Online, wandb restores a resumed run's summary, which holds each ``<stage>/step``'s last
        value. Offline, wandb restores nothing (a resumed run is a new folder with the same id,
        its ``_step`` back at 0), so the earlier folders of the same id are read with
        :func:`instrument.runfile.last_steps`.
        """
        if getattr(self.run, "resumed", False):
            return steps_in_summary(self.run.summary)
        steps: dict[str, int] = {}
        for file in self._earlier_files():
            for axis, step in runfile.last_steps(file).items():
                steps[axis] = max(step, steps.get(axis, step))
        return steps


def _copy(source: Path, target: Path) -> None:
    if target.exists() and source.resolve() == target.resolve():
        return
    target.parent.mkdir(parents=True, exist_ok=True)
    if target.is_symlink() or target.exists():
        target.unlink()
    shutil.copy2(source, target)


class WandbBackend:
    """Start real wandb runs (online or offline), one ``wandb.init`` per run spec."""


    def start(self, spec: RunSpec) -> BackendRun:
        """Start a run with ``wandb.init`` (``reinit="create_new"``, so a second pipeline in one
        process is a second run; wandb's default returns the previous run and drops the new id),
        and make it ``wandb.run`` unless a run other code started is (native wandb calls then
        land in it; :func:`~instrument._backends.wandb_sharing.make_global`).

        The transaction log is flushed every second (a SIGKILLed process loses about a second of
        points, not wandb's default 15 s) and wandb's ``finish_timeout`` is
        ``INSTRUMENT_EXIT_TIMEOUT``, so its upload at the end cannot block the exit for longer.

        An online run first checks that the W&B server accepts a connection (:func:`check_server`)
        and gives ``wandb.init`` half of ``INSTRUMENT_EXIT_TIMEOUT`` to create the run unless
        ``WANDB_INIT_TIMEOUT`` is set (wandb's own default is 90 s, longer than the exit may take).
        A start that fails leaves no run folder behind (it holds none of the run's data).

        Raises:
            ServerUnreachableError: an online run's server cannot be reached (the session starts the
                run offline under the same id).
            Exception: whatever ``wandb.init`` raises (the session falls back and warns).
        """
        import wandb

        offline = spec.mode not in _ONLINE_MODES
        bound = None if offline else _env.init_timeout()
        settings = wandb.Settings(
            x_transaction_log_flush_interval=FLUSH_INTERVAL_SECONDS,
            finish_timeout=_env.exit_timeout(),  # wandb gives up uploading at the end after this
            silent=True,
        )
        if bound is not None:
            settings.init_timeout = bound  # wandb's 90 s would outlive the exit timeout
        init = wandb_sharing.original_init()  # wandb's own, not the guard that waits for this very run
        if offline:
            silence_telemetry()
        with _wandb_mode_env(spec.mode), _without_resume_env(spec.resume), _no_error_reporting(offline), \
                _failed_start_leaves_no_folder(spec.id, online=not offline):
            if not offline:
                check_server(wandb.setup().settings, min(CONNECT_TIMEOUT_SECONDS, bound or CONNECT_TIMEOUT_SECONDS))
            if wandb_core.torn_down:  # the program ended while this start was in flight: its records were kept
                raise RuntimeError("wandb was torn down at interpreter exit")
            run = init(
                id=spec.id,
                project=spec.project,
                entity=spec.entity,
                name=spec.name,
                group=spec.group,
                job_type=spec.job_type,
                tags=list(spec.tags) or None,
                config=dict(spec.config) or None,
                mode=spec.mode,
                reinit="create_new",
                resume=spec.resume,
                settings=settings,
            )
        wandb_core.keep_to_this_process()  # a subprocess's run goes through a wandb-core of its own
        _OURS.add(run.id)
        started = WandbRun(run, owned=True)
        wandb_sharing.make_global(started.shared)
        if spec.announce:
            where = run.settings.sync_dir
            earlier = started.earlier_folders() if spec.resume not in (None, "never") else []
            folders = " ".join([*earlier, where])
            resumed = f" (resuming the run written to {', '.join(earlier)})" if earlier else ""
            print(
                f"instrument: no W&B credentials found, so run {run.id} was written offline to "
                f"{where}{resumed}; upload it with `instrument sync {folders}`",
                file=sys.stderr,
            )
        return started

    def expect(self, spec: RunSpec) -> Callable[[], None]:
        """Note that *spec* is being started on a dispatcher thread: a ``wandb.init`` that other
        code calls meanwhile waits for it and gets it, instead of starting a second run. Return
        what ends the wait (the session calls it once the start is over)."""
        wandb_sharing.expect(spec.id)
        return functools.partial(wandb_sharing.started, spec.id)

    def adopt(self) -> BackendRun | None:
        """Return the active ``wandb.run`` that someone else started (a framework), or None.

        Looks only if wandb is already imported: adopting never imports it.
        """
        wandb = sys.modules.get("wandb")
        run = getattr(wandb, "run", None) if wandb is not None else None
        if run is None or run.id in _OURS or getattr(run, "disabled", False):
            return None
        if getattr(run.settings, "mode", "online") not in _ONLINE_MODES:
            silence_telemetry()
        guest = _GUESTS.get(run.id)
        if guest is None or guest.run is not run:
            guest = _GUESTS[run.id] = WandbRun(run, owned=False)
        return guest


#: wandb's modes that talk to a server; in every other mode instrument keeps wandb off the network.
_ONLINE_MODES = frozenset({"online", "run", "shared"})

#: Seconds a connection to the W&B server may take before an online run counts as unable to reach it.
CONNECT_TIMEOUT_SECONDS = 5.0


class ServerUnreachableError(ConnectionError):
    """The W&B server of an online run does not accept a connection (see :func:`check_server`)."""


def check_server(settings: Any, timeout: float) -> None:
    """Open and close a TCP connection to the W&B server that *settings* name (``base_url``).

    wandb-core keeps the id of an online run whose start failed for as long as it runs, so the
    offline run that replaces it could only get a fresh id, and its ``wandb.init`` waits for the
    server up to its ``init_timeout``. A run whose server cannot be reached at all (no network, a
    closed port, a name that does not resolve) is found here at once and started offline under its
    own id instead. Nothing is checked through a proxy (:data:`~instrument._env.PROXY_VARIABLES`,
    wandb's proxy settings): the proxy answers, not the server.

    Args:
        settings: wandb's settings (``base_url``, ``http_proxy``, ``https_proxy``, ``x_proxies``).
        timeout: seconds the name lookup and the connection may take together.

    Raises:
        ServerUnreachableError: the name did not resolve, or the connection was refused or timed out.
    """
    if _env.uses_proxy() or any(getattr(settings, name, None) for name in ("http_proxy", "https_proxy", "x_proxies")):
        return
    base_url = str(getattr(settings, "base_url", "") or "")
    try:
        parsed = urllib.parse.urlsplit(base_url)
        host, port = parsed.hostname, parsed.port or (443 if parsed.scheme == "https" else 80)
    except ValueError:  # a malformed address: wandb reports it itself
        return
    if not host:
        return
    outcome: list[OSError | None] = []

    def connect() -> None:
        try:
            socket.create_connection((host, port), timeout=timeout).close()
            outcome.append(None)
        except OSError as error:
            outcome.append(error)

    thread = threading.Thread(target=connect, name="instrument-check-server", daemon=True)
    try:
        thread.start()
    except RuntimeError:  # no new threads (interpreter shutdown): the lookup is then unbounded
        connect()
    else:
        thread.join(timeout)  # the name lookup has no timeout of its own
    if not outcome:
        raise ServerUnreachableError(f"the W&B server {base_url} did not accept a connection within {timeout:g} s")
    if outcome[0] is not None:
        raise ServerUnreachableError(f"the W&B server {base_url} cannot be reached ({describe(outcome[0])})")


@contextlib.contextmanager
def _failed_start_leaves_no_folder(run_id: str, *, online: bool) -> Iterator[None]:
    """Remove the run folders a ``wandb.init`` of *run_id* made if it raises, then re-raise.

    An *online* start that failed also silences wandb's usage telemetry (:func:`silence_telemetry`):
    its probe of the server that did not answer would hold the exit for its own 10 s timeout.

    Such a folder holds none of the run's data (the run never started; its fallback writes it),
    only wandb's logs of the attempt; left behind, it reads as an empty run of that id (an online
    one as if it had been streamed). Folders of the id made before (an earlier run resumed) stay.
    """
    wandb_dir = _wandb_dir()
    before = _run_folders(wandb_dir, run_id)
    try:
        yield
    except BaseException:
        if online:  # the server did not answer: wandb's usage telemetry would wait for it at exit
            silence_telemetry()
        made = _run_folders(wandb_dir, run_id) - before
        for folder in made:
            shutil.rmtree(folder, ignore_errors=True)
        latest = os.path.join(wandb_dir, "latest-run")
        if made and os.path.islink(latest) and not os.path.exists(latest):
            with contextlib.suppress(OSError):
                os.unlink(latest)
        raise


def _wandb_dir() -> str:
    """Return the folder wandb makes run folders in (``<WANDB_DIR>/wandb``, or wandb's fallback)."""
    try:
        import wandb

        return str(wandb.setup().settings.wandb_dir)
    except Exception:  # wandb cannot say: the folder instrument expects
        return str(_env.journal_root())


def _run_folders(wandb_dir: str, run_id: str) -> set[str]:
    """Return the run folders of *run_id* in *wandb_dir* (``run-*-<id>``, ``offline-run-*-<id>``)."""
    pattern = os.path.join(glob.escape(wandb_dir), f"*run-*-{glob.escape(run_id)}")
    return {os.path.realpath(path) for path in glob.glob(pattern) if not os.path.islink(path)}


@contextlib.contextmanager
def _no_error_reporting(offline: bool) -> Iterator[None]:
    """While an offline run starts, tell wandb ``WANDB_ERROR_REPORTING=false`` unless the user
    set it: the wandb-core process that the first run starts then reports no errors over the
    network either (it reads the variable once, when it is started)."""
    if not offline or _env.WANDB_ERROR_REPORTING in os.environ:
        yield
        return
    os.environ[_env.WANDB_ERROR_REPORTING] = "false"
    try:
        yield
    finally:
        os.environ.pop(_env.WANDB_ERROR_REPORTING, None)
def steps_in_summary(summary: Any) -> dict[str, int]:
    """Return each stage's last step from a run's summary: ``{stage: n}`` for every whole-number
    summary key ``<stage>/step`` (a step axis's summary is its last value)."""
    return {key.removesuffix("/step"): summary[key] for key in list(summary.keys())
            if isinstance(key, str) and key.endswith("/step") and type(summary[key]) is int}


@contextlib.contextmanager
def _without_resume_env(resume: str | None) -> Iterator[None]:
    """Hide ``WANDB_RESUME`` from wandb while it starts a run that resumes nothing.

    wandb applies ``WANDB_RESUME`` to every ``wandb.init`` that passes no ``resume=``, and a
    pipeline's children inherit it: with ``must``, their fresh runs would be refused online.
    The runs that take it (standalone and pipeline runs) pass it as ``resume=``.
    """
    value = os.environ.get(_env.WANDB_RESUME)
    if resume is not None or value is None:
        yield
        return
    del os.environ[_env.WANDB_RESUME]
    try:
        yield
    finally:
        os.environ[_env.WANDB_RESUME] = value


@contextlib.contextmanager
def _wandb_mode_env(mode: str) -> Iterator[None]:
    """Show wandb a ``WANDB_MODE`` it accepts while it starts a run, then restore the user's.

    wandb validates ``WANDB_MODE`` even when ``mode=`` is passed, and rejects ``Offline`` or a
    typo with a pydantic error; instrument already resolved the mode (any case,
    an unknown value warned about and replaced by offline), so wandb sees that one.
    """
    value = os.environ.get(_env.WANDB_MODE)
    if value is None or value == _env.wandb_mode(os.environ):
        yield
        return
    os.environ[_env.WANDB_MODE] = mode  # what instrument resolved; wandb.init's mode= wins anyway
    try:
        yield
    finally:
        os.environ[_env.WANDB_MODE] = value



def _forget_wandb_teardown_in_child() -> None:
    # A forked child inherits the exit hook with which wandb tears its service down; in the
    # child wandb refuses (its asyncio runner belongs to the parent) and prints a traceback at the
    # child's normal exit. The child writes no run of the parent's, so the hook is dropped there.
    setup = sys.modules.get("wandb.sdk.wandb_setup")
    connection = getattr(getattr(setup, "_singleton", None), "_connection", None)
    cleanup = getattr(connection, "_cleanup", None)
    if callable(cleanup):
        with contextlib.suppress(Exception):  # wandb's private state moved: the traceback stays
            cleanup()


os.register_at_fork(after_in_child=_forget_wandb_teardown_in_child)
