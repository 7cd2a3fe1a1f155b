"""Sharing wandb runs with other code in the process: the part of the wandb backend that knows
that wandb has one global run, one step per run, and a ``finish`` anyone may call.

What it owns:

* instrument's runs as ``wandb.run`` (:func:`make_global`), so native wandb calls land in them;
* ``wandb.init`` while instrument owns a run (:func:`install_init_guard`): it waits for a run of
  instrument's still starting on its thread, and returns instrument's run as wandb's own rule for
  an active run would, without wandb's check for an API key;
* :class:`SharedRun`: one run and what others do to it: a ``finish`` by other code (instrument's
  queued records are written first, then the session is told), history rows whose step someone
  else owns (:class:`Rows`), the owner's config values and summary keys.

It relies on wandb 0.31 internals, each named where it is used: ``Run._teardown_hooks`` (called
by every ``finish``, before the run refuses new data), ``Run._local_step`` (the step of the row
a step-less ``log`` goes to) and ``wandb.sdk.wandb_init._set_global_run``.
"""

from __future__ import annotations

import collections
import contextlib
import functools
import inspect
import math
import os
import sys
import threading
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import wrapt

from instrument._problems import Problem, report

#: Points waiting for a row of a shared run before instrument warns, once per run, that they lag.
LAG_WARN_POINTS = 100

#: Seconds a ``wandb.init`` call waits for a run of instrument's that is still starting.
START_WAIT_SECONDS = 90.0

#: Postures of a run's history (see :class:`Rows`).
OWN, HANDED, SHARED = "own", "handed", "shared"

_lock = threading.RLock()
_ours: list[SharedRun] = []  # instrument's unfinished runs, oldest first
_starting: dict[str, threading.Event] = {}  # run ids whose start is queued on another thread
_original_init: Callable[..., Any] | None = None
_NOTHING = object()  # a config value instrument never wrote


def _after_fork_in_child() -> None:
    """A forked child owns none of the parent's runs and waits for none of its starts."""
    global _lock
    _lock = threading.RLock()
    _ours.clear()
    _starting.clear()


os.register_at_fork(after_in_child=_after_fork_in_child)


class Rows:
    """Writes instrument's history points into one run, sharing its rows when its step is not ours.

    * ``own`` (instrument's run): one committed row per point (``run.log(row)``); wandb's step moves.
    * ``shared`` (a run someone else started, or instrument's run after someone logged into it with
      ``step=``): the step is never moved. A point is merged into the row that is open
      (``commit=False``, the row the owner writes next); a point whose keys that row already holds
      waits for a later row (points of other keys go ahead, points of the same keys keep their
      order). What still waits when the run ends is written then, one committed row each, after
      the owner's last row. When :data:`LAG_WARN_POINTS` points wait, one warning says so.
    * ``handed`` (instrument's run that ``wandb.init`` just returned to other code): as shared
      until that code's first ``log``: with ``step=`` the run stays shared, without it the run is
      instrument's again (the waiting points are written, one row each).
    """

    def __init__(self, run: Any, log: Callable[..., Any], *, guest: bool) -> None:
        self.run = run
        self.posture = SHARED if guest else OWN
        self.lock = threading.RLock()  # serialises instrument's rows and other code's log calls
        self.committed = 0  # rows instrument committed itself: how far it moved the step
        self._log = log
        self._open_step: int | None = None  # the step of the open row instrument merged points into
        self._open_keys: set[str] = set()
        # Waiting points by their keys (a stage's points share them): in order within a group, and
        # at most one point of a group fits a row, so a new row costs one pass over the groups.
        self._held: dict[frozenset[str], collections.deque[dict[str, Any]]] = {}
        self._waiting = 0
        self._lag_warned = False
        self._late_step_warned = False

    def _step(self) -> int:
        step = getattr(self.run, "_local_step", None)  # wandb 0.31: the step a step-less log goes to
        return step if isinstance(step, int) else int(self.run.step)

    @property
    def own_rows(self) -> bool:
        """Whether instrument's rows are committed one each, with none waiting (the step is ours)."""
        return self.posture == OWN and not self._held

    def write(self, row: dict[str, Any]) -> None:
        """Write one point (a history row of instrument's keys)."""
        with self.lock:
            if self.posture == OWN:
                self._commit_held()
                self._log(row)
                self.committed += 1
            else:
                self._place(row)

    def _place(self, row: dict[str, Any]) -> None:
        step = self._step()
        if step != self._open_step:  # the owner moved on: waiting points go first, one per group
            self._open_step, self._open_keys = step, set()
            blocked: set[str] = set()
            for keys, points in list(self._held.items()):
                if blocked.isdisjoint(keys) and self._open_keys.isdisjoint(keys):
                    self._merge(points.popleft(), keys)
                    self._waiting -= 1
                    if not points:
                        del self._held[keys]
                        continue
                blocked.update(keys)
        keys = frozenset(row)
        if self._open_keys.isdisjoint(keys) and all(keys.isdisjoint(waiting) for waiting in self._held):
            self._merge(row, keys)
            return
        self._held.setdefault(keys, collections.deque()).append(row)
        self._waiting += 1
        if self._waiting >= LAG_WARN_POINTS and not self._lag_warned:
            self._lag_warned = True
            report(Problem("shared", f"instrument: {self._waiting} points wait for rows of run {self.run.id}, "
                           "whose step belongs to other code that writes rows less often than instrument "
                           "reports; instrument never moves that step, so each point goes into a later row of "
                           "the owner and what is left is written when the run finishes", "lag"))

    def _merge(self, point: dict[str, Any], keys: frozenset[str]) -> None:
        self._log(point, commit=False)
        self._open_keys.update(keys)

    def _commit_held(self) -> None:
        """Write every waiting point, one committed row each (the step moves)."""
        if self._held and self._open_keys and self._open_step == self._step():
            self._log({}, commit=True)  # close the row holding instrument's keys first
        self._open_keys = set()
        for points in self._held.values():
            while points:
                self._log(points.popleft())
                self.committed += 1
        self._held.clear()
        self._waiting = 0

    def observe(self, step: Any, where: Callable[[], str]) -> None:
        """Note a ``log`` call into this run by other code (with *step* or None), before it runs."""
        if step is None:
            if self.posture == HANDED:
                self.posture = OWN
            return
        late = self.posture != SHARED and self.committed and isinstance(step, int) and step < self._step()
        if late and not self._late_step_warned:
            self._late_step_warned = True
            report(Problem("shared", f"instrument: {where()} logs step={step} into run {self.run.id}, "
                           f"whose step instrument's {self.committed} earlier points moved to {self._step()}: "
                           "wandb drops rows below its current step; have that code log without step= (or "
                           "with define_metric), or let it start logging before instrument does", "late-step"))
        self.posture = SHARED

    def handed(self) -> None:
        """Note that ``wandb.init`` returned this run of instrument's to other code."""
        with self.lock:
            if self.posture == OWN:
                self.posture = HANDED

    def drain(self) -> None:
        """Write every point still waiting (the run is about to finish)."""
        with self.lock:
            self._commit_held()


class SharedRun:
    """One wandb run and what other code in the process does to it.

    Args:
        run: the ``wandb.Run``.
        owned: instrument started it (False: a guest in a run someone else started).
        write: how instrument's own rows are written (``log(row, commit=...)``); default wandb's
            ``run.log`` (the wandb backend passes one that writes each media value on its own).
    """

    def __init__(self, run: Any, *, owned: bool, write: Callable[..., Any] | None = None) -> None:
        self.run = run
        self.owned = owned
        self.log: Callable[..., Any] = run.log  # wandb's own, never the guard below
        self.rows = Rows(run, write or self.log, guest=not owned)
        self.settle: Callable[[float], object] = lambda timeout: True  # the session writes what it queued
        self.finished_elsewhere: Callable[[str | None], None] = lambda call: None
        self.before_others: Callable[[], None] = lambda: None  # instrument's rows held back go first
        self._finishing = False  # instrument finishes it itself
        self._config_written: dict[str, Any] = {}  # leaf path -> the value instrument wrote last
        self._summary_written: dict[str, Any] = {}  # key -> the plain value instrument wrote last
        self._logged: dict[str, Any] = {}  # key -> the plain value other code logged last
        self._owner_summary: dict[str, Any] = {}  # guest: key -> the owner's value before instrument wrote it
        _watch_finish(run, self._on_finish)
        _guard_log(self)
        if owned:
            with _lock:
                _ours.append(self)

    # Config and summary --------------------------------------------------------------------------
    def config_to_write(self, values: dict[str, Any]) -> dict[str, Any]:
        """Return *values* less every leaf whose key the run holds with another value that
        instrument did not write (the owner's); warn once per such key, naming both values."""
        current = _plain(self.run.config.as_dict() if hasattr(self.run.config, "as_dict") else dict(self.run.config))
        kept = self._keep_owners(current, values, "")
        _flatten(kept, "", self._config_written)
        return kept

    def _keep_owners(self, current: Mapping[str, Any], values: Mapping[str, Any], path: str) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for key, value in values.items():
            full = f"{path}{key}"
            if key not in current:
                out[key] = value
            elif isinstance(value, dict) and isinstance(current[key], dict):
                nested = self._keep_owners(current[key], value, f"{full}.")
                if nested:
                    out[key] = nested
            elif _same(current[key], value) or _same(current[key], self._config_written.get(full, _NOTHING)):
                out[key] = value  # unchanged, or a value instrument itself wrote before
            else:
                report(Problem("shared", f"instrument: config key {full!r} of run {self.run.id} holds "
                               f"{current[key]!r}, set by the code that owns the run; instrument's value "
                               f"{value!r} was not written", full), once=True)
        return out

    def before_summary(self, values: Mapping[str, Any]) -> None:
        """In a guest run, remember the owner's summary value under each plain key instrument is
        about to write for the first time (compared when the run ends, :meth:`check_summary`)."""
        if self.owned:
            return
        plain = int | float | str | bool
        fresh = [k for k, v in values.items() if isinstance(v, plain) and k not in self._summary_written]
        if not fresh:
            return
        try:
            current = dict(self.run.summary)
        except Exception:  # only a check
            return
        for key in fresh:
            if isinstance(current.get(key), plain):
                self._owner_summary.setdefault(key, current[key])

    def wrote_summary(self, values: Mapping[str, Any]) -> None:
        """Remember the plain summary values instrument wrote (compared with other code's when
        the run ends, :meth:`check_summary`)."""
        for key, value in values.items():
            if isinstance(value, int | float | str | bool):
                self._summary_written[key] = value

    def logged(self, values: Mapping[str, Any]) -> None:
        """Note the plain values other code logs into the run (through ``run.log``/``wandb.log``)."""
        for key, value in values.items():
            if isinstance(value, int | float | str | bool) and isinstance(key, str):
                self._logged[key] = value

    def check_summary(self) -> None:
        """At the end, for each summary key where instrument's eval wrote one plain value last and
        other code another (the value it logged last; in a guest run, else the owner's summary):
        warn once, naming both; in instrument's run, write the eval's value back.

        Only at the end: while the run goes on, the two writers take turns (HF's Trainer logs
        ``eval/*`` right after a ``compute_metrics`` eval returned, while instrument writes the
        eval's values on its own thread), so their last values can be compared only once both
        are done.
        """
        if not self._summary_written:
            return
        current: dict[str, Any] = {}
        if not self.owned:
            try:
                current = dict(self.run.summary)
            except Exception:  # only a check
                current = {}
        back = {}
        for key, ours in self._summary_written.items():
            theirs = self._logged.get(key, _NOTHING)
            if theirs is _NOTHING and not self.owned:  # set in the summary by the owner, after ours or before
                now = current.get(key, _NOTHING)
                theirs = now if not _same(now, ours) else self._owner_summary.get(key, _NOTHING)
            if isinstance(theirs, int | float | str | bool) and not _same(ours, theirs):
                self._collision(key, ours, theirs)
                back[key] = ours
        if back and self.owned:
            self.run.summary.update(back)

    def _collision(self, key: str, ours: Any, theirs: Any) -> None:
        kept = "instrument's value was written back (an eval's summary key)" if self.owned else \
            "the summary keeps the value written last (the run is the owner's)"
        report(Problem("shared", f"instrument: key {key!r} of run {self.run.id}: instrument's evaluation wrote "
                       f"{ours!r} to the summary last and other code {theirs!r} under the same key; {kept}", key),
               once=True)

    # Finishing -------------------------------------------------------------------------------------
    @contextlib.contextmanager
    def finishing(self) -> Iterator[None]:
        """Mark a ``finish`` made by instrument itself (no warning, no hand-over)."""
        self._finishing = True
        try:
            yield
        finally:
            with _lock:
                if self in _ours:
                    _ours.remove(self)
            _restore_global()

    def close(self) -> None:
        """Before the run ends (by instrument, or by its owner): write the waiting points, check the summary."""
        self.rows.drain()
        self.check_summary()

    def _on_finish(self) -> None:
        if self._finishing:
            return
        call = _caller() if self.owned else None
        if self.owned:
            from instrument import _env

            self.settle(_env.exit_timeout())  # the records queued before the finish go in first
        self.close()
        with _lock:
            if self in _ours:
                _ours.remove(self)
        self.finished_elsewhere(call)

    def handed(self, config: Any) -> None:
        """``wandb.init`` returned this run to other code: write what instrument queued, then share
        its rows; apply the init's *config* as wandb would to a new run."""
        from instrument import _env

        self.settle(_env.exit_timeout())
        self.rows.handed()
        if config:
            try:
                self.run.config.update(config, allow_val_change=True)
            except Exception as error:  # the caller's config: report, go on
                report(Problem("shared", f"instrument: wandb.init(config=...) into run {self.run.id}: the config "
                               f"could not be written ({type(error).__name__}: {error})"), once=True)


def _watch_finish(run: Any, call: Callable[[], None]) -> None:
    """Call *call* at the start of every ``finish`` of *run*, by anyone (wandb 0.31's teardown hooks
    run before the run refuses new data)."""
    try:
        from wandb.sdk.wandb_run import TeardownHook, TeardownStage

        run._teardown_hooks.append(TeardownHook(call, TeardownStage.EARLY))
    except (ImportError, AttributeError):  # another wandb: a finish by others is not seen
        pass


def _guard_log(shared: SharedRun) -> None:
    """Make ``run.log`` and ``wandb.log`` (when it is this run's) tell *shared* about each call by
    other code before wandb takes it, serialised with instrument's own rows. The call itself
    reaches wandb unchanged."""
    original = shared.log
    rows = shared.rows

    @functools.wraps(original)
    def log(data: Any, step: Any = None, commit: Any = None, *args: Any, **kwargs: Any) -> Any:
        with rows.lock:
            shared.before_others()
            rows.observe(step, _caller)
            if isinstance(data, Mapping):
                shared.logged(data)
            return original(data, step, commit, *args, **kwargs)

    shared.run.log = log
    wandb = sys.modules.get("wandb")
    if wandb is not None and getattr(getattr(wandb, "log", None), "__self__", None) is shared.run:  # a guest's log
        wandb.log = log  # type: ignore[attr-defined]


# The global run ------------------------------------------------------------------------------------
def make_global(shared: SharedRun) -> None:
    """Make *shared* ``wandb.run`` (and ``wandb.log``, ``wandb.config``, ...) unless a run that
    other code started is global now."""
    import wandb

    current = wandb.run
    if current is None or any(s.run is current for s in _ours):
        _set_global(shared.run)


def _set_global(run: Any) -> None:
    try:
        from wandb.sdk.wandb_init import _set_global_run
    except ImportError:  # another wandb: native calls keep raising "call wandb.init() first"
        return
    _set_global_run(run)


def _restore_global() -> None:
    """After a run of instrument's finished: the newest unfinished one is global again."""
    wandb = sys.modules.get("wandb")
    if wandb is None or wandb.run is not None:
        return
    with _lock:
        _ours[:] = [s for s in _ours if not getattr(s.run, "_is_finished", False)]
        newest = _ours[-1].run if _ours else None
    if newest is not None:
        _set_global(newest)


# wandb.init while instrument owns a run ------------------------------------------------------------
def disabled_run() -> Any:
    """Return a wandb run that keeps nothing (``wandb.init(mode="disabled")``), global, so native
    wandb calls do nothing either; one per process."""
    global _disabled
    if _disabled is None or getattr(_disabled, "_is_finished", False):
        _disabled = original_init()(mode="disabled")
    return _disabled


_disabled: Any = None


def expect(run_id: str) -> None:
    """Note that run *run_id* will be started on another thread: ``wandb.init`` calls wait for it.

    The guard on ``wandb.init`` is installed now if wandb is imported, else the moment any thread
    imports it (before another thread can see the module): a library that imports wandb itself
    and calls ``wandb.init`` at once (Accelerate's ``init_trackers``) would otherwise call wandb's
    own ``init`` while the run's thread is still importing wandb, and be asked for an API key.
    """
    global _guard_on_import
    with _lock:
        _starting.setdefault(run_id, threading.Event())
        hook = not _guard_on_import
        _guard_on_import = True
    if hook:
        wrapt.register_post_import_hook(install_init_guard, "wandb")  # at once if wandb is imported


_guard_on_import = False  # the import hook that installs the guard is registered


def started(run_id: str) -> None:
    """Note that the start of *run_id* is over (started or failed)."""
    with _lock:
        event = _starting.pop(run_id, None)
    if event is not None:
        event.set()


def original_init() -> Callable[..., Any]:
    """Return wandb's own ``wandb.init`` (instrument starts its runs with it); imports wandb."""
    install_init_guard()
    if _original_init is None:  # pragma: no cover - install_init_guard sets it
        raise RuntimeError("instrument: wandb.init was not found")
    return _original_init


def install_init_guard(wandb: Any = None) -> None:
    """Replace ``wandb.init`` by :func:`_guarded_init` once per process (idempotent); *wandb* is
    the module, imported if not given."""
    global _original_init
    if wandb is None:
        import wandb

    with _lock:
        if getattr(wandb.init, "__instrument_guard__", False):
            return
        _original_init = wandb.init
        guarded = functools.wraps(_original_init)(_guarded_init)
        guarded.__instrument_guard__ = True  # type: ignore[attr-defined]
        wandb.init = guarded


def _guarded_init(*args: Any, **kwargs: Any) -> Any:
    """``wandb.init`` while instrument may own a run: wait for a run of instrument's that is still
    starting, then return instrument's global run where wandb would return the active run
    (reinit default or ``return_previous``, outside notebooks, not ``resume="must"``, not
    ``mode="disabled"``); otherwise call wandb's own ``init`` unchanged."""
    init = _original_init
    if init is None:  # pragma: no cover - the guard is installed with it
        raise RuntimeError("instrument: wandb.init was not found")
    with _lock:
        waiting = list(_starting.values())
    for event in waiting:
        event.wait(START_WAIT_SECONDS)
    try:
        given = inspect.signature(init).bind_partial(*args, **kwargs).arguments
    except TypeError:
        return init(*args, **kwargs)
    shared = _returned(given)
    if shared is None:
        return init(*args, **kwargs)
    shared.handed(given.get("config"))
    return shared.run


def _returned(given: Mapping[str, Any]) -> SharedRun | None:
    """Return the run of instrument's that wandb's rule for an active run would return, or None."""
    import wandb

    current = wandb.run
    shared = next((s for s in reversed(_ours) if s.run is current), None) if current is not None else None
    if shared is None:
        return None
    settings = given.get("settings")
    reinit = _given(given, settings, "reinit")
    resume = _given(given, settings, "resume")
    mode = _given(given, settings, "mode")
    if reinit in (True, "finish_previous", "create_new") or resume == "must" or mode == "disabled":
        return None
    if reinit in (None, "default"):
        try:
            from wandb.sdk.lib import ipython

            if ipython.in_notebook():  # wandb finishes the previous run there
                return None
        except ImportError:
            pass
    return shared


def _given(given: Mapping[str, Any], settings: Any, name: str) -> Any:
    """Return the ``wandb.init`` argument *name*, else the same field of its ``settings=``."""
    if given.get(name) is not None:
        return given[name]
    return settings.get(name) if isinstance(settings, dict) else getattr(settings, name, None)


# Helpers -------------------------------------------------------------------------------------------
def _caller() -> str:
    """Name the code that called into wandb: the first frame outside wandb and instrument, and the
    first frame outside installed packages when that is another one."""
    skip = tuple(os.path.dirname(getattr(sys.modules.get(name), "__file__", "") or "") + os.sep
                 for name in ("wandb", "instrument"))
    frame = sys._getframe(1)
    while frame is not None and frame.f_code.co_filename.startswith(skip):
        frame = frame.f_back  # type: ignore[assignment]
    if frame is None:
        return "wandb itself"
    first = _frame_name(frame)
    outer = frame
    while outer is not None and _installed(outer.f_code.co_filename):
        outer = outer.f_back  # type: ignore[assignment]
    if outer is None or outer is frame:
        return first
    return f"{first}, called from {_frame_name(outer)}"


def _installed(path: str) -> bool:
    return "site-packages" in path or "dist-packages" in path


def _frame_name(frame: Any) -> str:
    path = frame.f_code.co_filename
    for marker in ("site-packages" + os.sep, "dist-packages" + os.sep):
        if marker in path:
            path = path.split(marker, 1)[1]
            break
    else:
        relative = os.path.relpath(path)
        path = path if relative.startswith("..") else relative
    name = getattr(frame.f_code, "co_qualname", frame.f_code.co_name)
    return f"{name} ({path}:{frame.f_lineno})"


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    try:
        return bool(a == b)
    except Exception:  # arrays and the like: not the same
        return False


def _plain(config: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in config.items() if k != "_wandb"}


def _flatten(values: Mapping[str, Any], path: str, into: dict[str, Any]) -> None:
    for key, value in values.items():
        if isinstance(value, dict):
            _flatten(value, f"{path}{key}.", into)
        else:
            into[f"{path}{key}"] = value
