"""The disabled backend (``mode="disabled"``): runs that keep nothing."""

from __future__ import annotations

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

    def log_artifact(self, path: str, type: str, name: str, aliases: tuple[str, ...], *,
                     metadata: dict[str, Any] | None = None, description: str | None = None) -> None:
        pass

    def log_wandb_artifact(self, artifact: Any, aliases: tuple[str, ...]) -> None:
        pass

    def declare_chart(self, key: str, spec: dict[str, Any]) -> None:
        pass

    def alert(self, title: str, text: str, level: str) -> None:
        pass

    def finish(self, exit_code: int) -> None:
        pass

    def location(self) -> str:
        return "nowhere (mode=disabled)"


class DisabledBackend:
    """A backend that writes nothing: every decorated function still returns its value."""

    synchronous = True  # nothing to hand to a thread

    def start(self, spec: RunSpec) -> BackendRun:
        """Return a run that keeps nothing."""
        return DisabledRun(spec)

    def adopt(self) -> BackendRun | None:
        """Return None: a disabled backend never adopts a run."""
        return None
