"""The wandb backend: the only module besides the run-file reader that imports wandb, lazily.

``import wandb`` costs about a second (WANDB_FACTS 5), so it happens in :meth:`WandbBackend.start`,
when a run is really started, never at ``import instrument``.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from instrument._backend import BackendRun, RunSpec
from instrument._values import Histogram, Image, Table

#: Seconds between flushes of wandb's transaction log. wandb's default is 15 s, so a SIGKILLed
#: process lost up to 15 s of points (WANDB_FACTS 7); at 1 s it loses about a second.
FLUSH_INTERVAL_SECONDS = 1.0

#: Run ids started by this library in this process, so an active ``wandb.run`` of ours is never
#: mistaken for a framework's run.
_OURS: set[str] = set()


def image_array(image: Image) -> list[Any]:
    """Return the HxWxC uint8 arrays (or PIL images) that *image* holds, one per picture.

    CHW becomes HWC, float 0..1 becomes uint8 0..255, a batch NxHxWxC becomes N pictures.
    """
    data = image.data
    if type(data).__module__.split(".")[0] != "numpy":
        return [data]
    import numpy as np

    array = np.asarray(data)
    if array.dtype.kind == "f":
        array = (np.clip(array, 0.0, 1.0) * 255).round().astype(np.uint8)
    elif array.dtype.kind == "b":
        array = array.astype(np.uint8) * 255
    if array.ndim == 3 and array.shape[0] in (1, 3, 4) and array.shape[2] not in (1, 3, 4):
        array = np.transpose(array, (1, 2, 0))
    if array.ndim == 4:
        return [a for a in array]
    return [array]


def to_wandb(value: Any) -> Any:
    """Return *value* with instrument's media values turned into wandb objects (recursively)."""
    import wandb

    if isinstance(value, Table):
        return wandb.Table(columns=list(value.columns), data=[list(r) for r in value.rows])
    if isinstance(value, Histogram):
        return wandb.Histogram(list(value.values))
    if isinstance(value, Image):
        pictures = [wandb.Image(a, caption=value.caption) for a in image_array(value)]
        return pictures[0] if len(pictures) == 1 else pictures
    if isinstance(value, dict):
        return {k: to_wandb(v) for k, v in value.items()}
    return value


class WandbRun:
    """A live ``wandb.Run`` behind the :class:`~instrument._backend.BackendRun` protocol."""

    def __init__(self, run: Any, *, owned: bool) -> None:
        self.run = run
        self.id: str = run.id
        self.owned = owned

    def log(self, row: dict[str, Any]) -> None:
        self.run.log(to_wandb(row))

    def define_metric(self, name: str, step_metric: str | None, summary: str | None) -> None:
        kwargs: dict[str, Any] = {}
        if step_metric:
            kwargs["step_metric"] = step_metric
        if summary:
            kwargs["summary"] = summary
        self.run.define_metric(name, **kwargs)

    def update_summary(self, values: dict[str, Any]) -> None:
        self.run.summary.update(to_wandb(values))

    def update_config(self, values: dict[str, Any]) -> None:
        self.run.config.update(values, allow_val_change=True)

    def save(self, path: str, base_path: str | None, policy: str) -> None:
        saved = self.run.save(path, base_path=base_path, policy=policy)
        if isinstance(saved, list) and not saved:  # wandb saves nothing for no match, silently
            raise FileNotFoundError(f"no file matches {path!r}; nothing was saved")

    def log_artifact(self, path: str, type: str, name: str, aliases: tuple[str, ...]) -> None:
        import wandb

        artifact = wandb.Artifact(name=name, type=type)
        if Path(path).is_dir():
            artifact.add_dir(path)
        else:
            artifact.add_file(path)
        self.run.log_artifact(artifact, aliases=list(aliases) or None)

    def alert(self, title: str, text: str, level: str) -> None:
        import wandb

        self.run.alert(title=title, text=text, level=getattr(wandb.AlertLevel, level))

    def finish(self, exit_code: int) -> None:
        if self.owned:
            self.run.finish(exit_code=exit_code)

    def location(self) -> str:
        return str(getattr(self.run.settings, "sync_dir", "") or self.run.dir)


class WandbBackend:
    """Start real wandb runs (online or offline), one ``wandb.init`` per run spec."""

    name = "wandb"

    def start(self, spec: RunSpec) -> BackendRun:
        """Start a run with ``wandb.init`` (``reinit="create_new"``, so a second pipeline in one
        process is a second run, never the previous run returned; WANDB_FACTS 3.4).

        The transaction log is flushed every second (a SIGKILLed process loses about a second of
        points, not wandb's default 15 s; WANDB_FACTS 7) and wandb's ``finish_timeout`` is
        ``INSTRUMENT_EXIT_TIMEOUT``, so its upload at the end cannot block the exit for longer.

        Raises:
            Exception: whatever ``wandb.init`` raises (the session falls back and warns).
        """
        import wandb

        from instrument import _env

        settings = wandb.Settings(
            x_transaction_log_flush_interval=FLUSH_INTERVAL_SECONDS,
            finish_timeout=_env.exit_timeout(),  # wandb gives up uploading at the end after this
            silent=True,
        )
        run = wandb.init(
            id=spec.id,
            project=spec.project,
            entity=spec.entity,
            name=spec.name,
            group=spec.group,
            job_type=spec.job_type,
            tags=list(spec.tags) or None,
            config=dict(spec.config) or None,
            mode=spec.mode,  # type: ignore[arg-type]
            reinit="create_new",
            resume=spec.resume,  # type: ignore[arg-type]
            settings=settings,
        )
        _OURS.add(run.id)
        if spec.announce:
            where = run.settings.sync_dir
            print(
                f"instrument: no W&B credentials found, so run {run.id} was written offline to "
                f"{where}; upload it with `wandb sync {where}`",
                file=sys.stderr,
            )
        return WandbRun(run, owned=True)

    def adopt(self) -> BackendRun | None:
        """Return the active ``wandb.run`` that someone else started (a framework), or None.

        Looks only if wandb is already imported: adopting never imports it.
        """
        wandb = sys.modules.get("wandb")
        run = getattr(wandb, "run", None) if wandb is not None else None
        if run is None or run.id in _OURS:
            return None
        return WandbRun(run, owned=False)
