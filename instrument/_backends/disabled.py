"""The disabled backend (``mode="disabled"``): runs that keep nothing."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from instrument._backends.base import BackendRun, RunSpec


class DisabledRun:
    """A run that keeps nothing (``mode="disabled"``)."""

    def __init__(self, spec: RunSpec) -> None:
        self.id = spec.id

    def log(self, row: dict[str, Any]) -> None:
        pass

    def define_metric(self, name: str, step_metric: str | None, summary: str | None) -> None:
        pass

    def update_summary(self, values: dict[str, Any]) -> None:
        pass

    def update_config(self, values: dict[str, Any]) -> None:
        pass

    def save(self, path: str, base_path: str | None, policy: str) -> None:
        pass

    def log_artifact(self, path: str, type: str, name: str, aliases: tuple[str, ...]) -> None:
        pass

    def alert(self, title: str, text: str, level: str) -> None:
        pass

    def finish(self, exit_code: int) -> None:
        pass

    def location(self) -> str:
        return "nowhere (mode=disabled)"

    native = None  # no wandb run (instrument.current().run gives wandb's own disabled run)

    def watch(self, settle: Callable[[float], object], finished: Callable[[str | None], None]) -> None:
        pass


class DisabledBackend:
    """A backend that writes nothing: every decorated function still returns its value."""

    synchronous = True  # nothing to hand to a thread

    def start(self, spec: RunSpec) -> BackendRun:
        """Return a run that keeps nothing."""
        return DisabledRun(spec)

    def adopt(self) -> BackendRun | None:
        """Return None: a disabled backend never adopts a run."""
        return None

    def expect(self, spec: RunSpec) -> Callable[[], None]:
        """Return a no-op: runs that keep nothing start at once."""
        return _nothing


def _nothing() -> None:
    pass
