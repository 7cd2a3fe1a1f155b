"""wandb-core at exit: wandb's teardown bounded in time, and what a stopped wandb-core never wrote;
and a wandb-core of its own for each process (:func:`keep_to_this_process`).

wandb 0.31 tears its service down in an ``atexit`` hook that waits, with no timeout, for the
wandb-core process to end: a wandb-core that stops answering (frozen, or stuck on a wedged
filesystem) keeps the interpreter alive forever. :func:`teardown` runs the same teardown in a
daemon thread and waits for it at most *timeout* seconds; only then does it kill wandb-core
(SIGKILL), after which wandb's teardown returns.

wandb-core writes a run's ``.wandb`` file about once a second (the transaction log's flush
interval), so what a killed wandb-core had taken but not written is among the calls made in the
last seconds. :class:`Retained` keeps those calls (bounded in bytes) and, once wandb-core is
gone, :meth:`Retained.unwritten` compares them with the end of the file and returns the ones to
keep, so that a replay adds only rows the file lacks.
"""

from __future__ import annotations

import collections
import math
import os
import signal
import sys
import threading
from typing import Any

from instrument._backends.base import Call
from instrument._transaction_log import read_tail


def service_process() -> Any | None:
    """Return the ``subprocess.Popen`` of the wandb-core that this process started, or None.

    None when wandb is not imported, no service was started, or this process attached to a
    wandb-core that another process owns (``WANDB_SERVICE``): that one is not ours to stop.
    """
    wandb_setup = sys.modules.get("wandb.sdk.wandb_setup")
    setup = getattr(wandb_setup, "_singleton", None)
    connection = getattr(setup, "_connection", None)
    handle = getattr(connection, "_proc", None)
    process = getattr(handle, "_process", None)
    return process if process is not None and hasattr(process, "poll") else None


def keep_to_this_process() -> None:
    """Stop this process's subprocesses from attaching to the wandb-core it started.

    wandb leaves the address of the wandb-core it started in ``WANDB_SERVICE``, so a subprocess
    (a pipeline's training child) would write its run through its parent's wandb-core. That
    wandb-core ends as soon as the process that started it does: a pipeline that finishes its run
    after SIGTERM and dies before its child would cut the child's run short, and a child that goes
    on after its parent was killed would lose every point after that. Without the variable each
    process starts a wandb-core of its own, which lives as long as that process. A wandb-core
    this process attached to (another process started it) is left as it is.
    """
    if service_process() is not None:
        os.environ.pop("WANDB_SERVICE", None)


#: Set once :func:`teardown` ran: a run start still in flight then (wandb imported or started late
#: at exit) must not start a wandb-core whose own teardown would wait for it without a limit.
torn_down = False


def teardown(exit_code: int, timeout: float) -> int | None:
    """Tear wandb down (``wandb.teardown``) within *timeout* seconds; kill wandb-core past it.

    wandb's own teardown hook unregisters itself when this runs it, so it does not run again
    at ``atexit``. Does nothing when wandb was never set up in this process; from then on no run
    is started (:data:`torn_down`).

    Args:
        exit_code: the exit status wandb-core is told (the script's own).
        timeout: seconds wandb-core may take to answer and end.

    Returns:
        The pid of the wandb-core that was killed because it did not end within *timeout*
        seconds, or None (it ended, or there was nothing to tear down).
    """
    global torn_down
    torn_down = True
    wandb = sys.modules.get("wandb")
    wandb_setup = sys.modules.get("wandb.sdk.wandb_setup")
    if wandb is None or getattr(wandb_setup, "_singleton", None) is None:
        return None
    process = service_process()
    done = threading.Event()

    def target() -> None:
        try:
            wandb.teardown(exit_code)
        except BaseException:  # noqa: S110 - a killed wandb-core makes wandb raise (or sys.exit)
            pass
        finally:
            done.set()

    thread = threading.Thread(target=target, name="instrument-wandb-teardown", daemon=True)
    try:
        thread.start()
    except RuntimeError:  # no new threads: the caller is past the point where this can help
        return None
    if done.wait(timeout) or process is None or process.poll() is not None:
        return None
    pid: int = process.pid
    silence_telemetry()  # wandb's usage telemetry would wait for a server that may not answer either
    try:
        os.kill(pid, signal.SIGKILL)
    except OSError:
        return None
    done.wait(min(timeout, 5.0))  # wandb's teardown returns once its wandb-core is gone
    return pid


class Retained:
    """The calls made to one run in the last *seconds*, at most *max_bytes* of them.

    Args:
        seconds: how long a call is kept after the newest one (several flush intervals of
            wandb's transaction log).
        max_bytes: the most bytes kept (:func:`approx_bytes` of the arguments); the oldest calls
            go first.
    """

    def __init__(self, seconds: float, max_bytes: int) -> None:
        self.seconds = seconds
        self.max_bytes = max_bytes
        self._calls: collections.deque[tuple[float, int, str, dict[str, Any]]] = collections.deque()
        self.bytes = 0
        self.dropped_rows = 0  # rows let go because of max_bytes while younger than *seconds*
        self._declared: dict[str, dict[str, Any]] = {}  # key -> define_metric arguments

    def add(self, now: float, method: str, args: dict[str, Any], size: int) -> None:
        """Keep the call *method(**args)* made at *now* (monotonic seconds), of *size* bytes."""
        if method == "define_metric":
            self._declared[args["name"]] = args
        calls = self._calls
        calls.append((now, size, method, args))
        self.bytes += size
        horizon = now - self.seconds
        while calls and (calls[0][0] < horizon or (self.bytes > self.max_bytes and len(calls) > 1)):
            when, dropped, kind, _ = calls.popleft()
            self.bytes -= dropped
            if when >= horizon and kind == "log":
                self.dropped_rows += 1

    def unwritten(self, file_rows: list[dict[str, Any]]) -> list[Call]:
        """Return the kept calls that a stopped wandb-core did not write, in order.

        Args:
            file_rows: the last history rows of the run's ``.wandb`` file, oldest first (what
                the file holds; an empty list when it holds none).

        Returns:
            Every kept call after the last ``log`` whose row is the file's last row (nothing
            before it is missing: wandb-core writes in the order it was called), preceded by the
            ``define_metric`` calls for the keys those rows hold, so a replayed run keeps each
            key on its axis. Every kept call when no kept row is in the file.
        """
        calls = [(method, args) for _, _, method, args in self._calls]
        cut = 0
        if file_rows:
            last = file_rows[-1]
            for index in range(len(calls) - 1, -1, -1):
                method, args = calls[index]
                if method == "log" and same_row(args["row"], last):
                    cut = index + 1
                    break
        rest = calls[cut:]
        keys = {key for method, args in rest if method == "log" for key in args["row"]}
        declared = {method_args["name"] for method, method_args in rest if method == "define_metric"}
        before: list[Call] = [("define_metric", self._declared[key]) for key in self._declared
                              if key in keys and key not in declared]
        return before + rest


def same_row(mine: dict[str, Any], theirs: dict[str, Any]) -> bool:
    """Return whether the history row *theirs* (read from a ``.wandb`` file) is the row *mine*.

    Plain numbers, strings and booleans must be equal (NaN equal to NaN); other values (media,
    nested dicts) need only be present.
    """
    for key, value in mine.items():
        if key not in theirs:
            return False
        kind = value.__class__
        if kind is float or kind is int or kind is bool or kind is str:
            other = theirs[key]
            if other != value and not (kind is float and isinstance(other, float)
                                       and math.isnan(value) and math.isnan(other)):
                return False
    return True


def file_rows(sync_file: str | os.PathLike[str], max_bytes: int) -> list[dict[str, Any]]:
    """Return the history rows in the last *max_bytes* of a ``.wandb`` file, oldest first.

    Keys are wandb's flat keys; values are decoded from their JSON. A file that cannot be read
    gives no rows (then every kept call is kept).
    """
    import importlib
    import json

    record_type: Any = importlib.import_module("wandb.proto.wandb_internal_pb2").Record

    try:
        payloads = read_tail(sync_file, max_bytes)
    except (OSError, ValueError):
        return []
    rows: list[dict[str, Any]] = []
    for payload in payloads:
        record = record_type()
        try:
            record.ParseFromString(payload)
        except Exception:  # noqa: S112 - a record that does not parse is not a row
            continue
        if record.WhichOneof("record_type") == "history":
            row: dict[str, Any] = {}
            for item in record.history.item:
                key = "/".join(item.nested_key) if item.nested_key else item.key
                try:
                    row[key] = json.loads(item.value_json) if item.value_json else None
                except ValueError:
                    row[key] = item.value_json
            rows.append(row)
    return rows


def silence_telemetry() -> None:
    """Keep wandb's own usage telemetry off the network for the rest of the process.

    wandb 0.31 measures its ``run.log`` encoding with OpenTelemetry and, at exit, exports the
    measurements to the W&B server, even for an offline run whose mode was given to
    ``wandb.init`` (only its process-wide settings, such as ``WANDB_MODE``, stop it): a DNS
    query and a connection attempt from a run that promises no network. This turns the
    telemetry off (it is wandb's, not the run's data) and marks a telemetry exporter that already
    exists as having no server to send to, so nothing is sent at exit. Its flush at exit is
    dropped too, and every telemetry proxy (each ``wandb.init`` makes one of its own) finds no
    server without asking it: its probe of a server that does not answer (an online run that
    failed to start, a wandb-core stopped at exit) would hold the exit for up to 10 s. Any doubt
    (another wandb version): nothing is changed.
    """
    try:
        from wandb.analytics.opentelemetry import opentelemetry_proxy

        opentelemetry_proxy.disable()
        proxy = getattr(opentelemetry_proxy, "_singleton_telemetry_proxy", None)
        if proxy is not None and hasattr(proxy, "_server_supports_proxy"):
            proxy._server_supports_proxy = False  # noqa: SLF001 - no public switch: exporters then drop, never probe
            if hasattr(proxy, "_shutdown"):  # its flush at exit is skipped; its export threads are daemons
                proxy._shutdown = True  # noqa: SLF001 - also when another thread is building its exporters now
        if callable(getattr(opentelemetry_proxy, "_check_server_supports_open_telemetry_proxy", None)):
            # every proxy (each wandb.init makes one of its own) finds no server without asking it
            opentelemetry_proxy._check_server_supports_open_telemetry_proxy = lambda session, url: False  # noqa: SLF001
    except Exception:  # noqa: S110 - telemetry is wandb's own business; the run goes on
        pass
