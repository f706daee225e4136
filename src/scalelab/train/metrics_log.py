"""Where metrics go: ``metrics.jsonl`` (always), TensorBoard and Weights & Biases (opt-in
sinks), ``summary.json``.

Every sink sees the same records, tagged ``<type>/<key>`` (``train/loss``,
``eval/val_loss``). A session starts logging once the trainer knows where it resumes
(:meth:`MetricsLog.start`): records after the checkpoint are dropped from the JSONL log,
TensorBoard's writer gets ``purge_step`` so events after it are hidden (no duplicated
steps after a kill), and W&B resumes the run whose id is kept in ``RUN/wandb-run.json``.
When the run completes, TensorBoard gets the run's hyperparameters (the scalar fields of
``config.yaml``) with the final metrics, and W&B the summary.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import math
import os
import secrets
import string
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, BinaryIO

from scalelab.errors import UserError
from scalelab.train.config import RuntimeConfig
from scalelab.utils.io import (
    append_jsonl,
    atomic_write_json,
    atomic_write_text,
    json_safe,
    read_json,
    read_jsonl,
)

#: The W&B run id of a run directory, kept across restarts (resume the same W&B run).
WANDB_ID_FILE = "wandb-run.json"
# Summary fields that are clock times or settings, not results (no hparams metrics).
_NOT_METRICS = ("started_at", "updated_at", "seed", "world_size", "total_steps")


class MetricsLog:
    """Append-only JSONL log of one run (rank 0 only), mirrored to TensorBoard (when
    installed and enabled) and to W&B (``runtime.wandb``).

    Sinks open lazily, at the first record of the session, so rerunning a finished run
    leaves them untouched.
    """

    def __init__(
        self,
        run_dir: Path,
        *,
        enabled: bool = True,
        tensorboard: bool = True,
        runtime: RuntimeConfig | None = None,
        config: dict[str, Any] | None = None,
    ) -> None:
        """``runtime`` picks the sinks (its ``tensorboard`` and ``wandb`` fields); ``config``
        is what trackers record when the run directory holds no ``config.yaml``."""
        self.run_dir = Path(run_dir)
        self.path = self.run_dir / "metrics.jsonl"
        self.enabled = enabled
        tensorboard = tensorboard and (runtime is None or runtime.tensorboard)
        self._want_tb = enabled and tensorboard and _tensorboard_installed()
        self._tb: Any = None
        self._purge_step: int | None = None
        self._config = config or {}
        self._wrote = False
        self._wandb: WandbSink | None = None
        if enabled and runtime is not None and runtime.wandb:
            self._wandb = WandbSink(self.run_dir, runtime)

    def truncate_after(self, step: int) -> None:
        """On resume: drop records logged after the checkpoint, so the curve stays one line."""
        if not self.enabled or not self.path.exists():
            return
        kept = [r for r in read_jsonl(self.path) if r.get("step", 0) <= step]
        atomic_write_text(self.path, "".join(json.dumps(r) + "\n" for r in kept))

    def start(self, step: int | None) -> None:
        """Begin this session at the checkpoint of ``step`` (None: from scratch).

        What a killed session logged after that step is dropped from ``metrics.jsonl``
        (all of it for a fresh start) and hidden from TensorBoard (``purge_step``).
        """
        if not self.enabled:
            return
        keep = -1 if step is None else step
        self.truncate_after(keep)
        self._purge_step = keep + 1
        if self._tb is not None:  # opened before the resume point was known: reopen
            self._tb.close()
            self._tb = None

    def write(self, record: dict[str, Any]) -> None:
        """Append ``record`` to the JSONL log and send its numbers to every sink."""
        if not self.enabled:
            return
        append_jsonl(self.path, record)
        self._wrote = True
        scalars = _scalars(record)
        step = int(record.get("step", 0))
        tb = self._tensorboard()
        if tb is not None:
            for tag, value in scalars.items():
                tb.add_scalar(tag, value, step)
        if self._wandb is not None:
            self._wandb.log(scalars, step, self._run_config())

    def flush(self) -> None:
        """Push buffered TensorBoard events to disk (the JSONL log is always on disk)."""
        if self._tb is not None:
            self._tb.flush()

    def close(self, summary: dict[str, Any] | None = None) -> None:
        """End the session; with the final ``summary`` of a run this session trained, record
        TensorBoard hparams (completed runs) and the W&B summary."""
        if summary is not None and self._wrote:
            completed = summary.get("status") == "completed"
            if completed and self._tensorboard() is not None:
                self._add_hparams(summary)
            if self._wandb is not None:
                self._wandb.finish(summary, self._run_config())
        if self._tb is not None:
            self._tb.close()
            self._tb = None

    def _tensorboard(self) -> Any:
        """The TensorBoard writer of this session, opened on first use (None: disabled)."""
        if self._tb is None and self._want_tb:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:  # a broken tensorboard install: JSONL (and W&B) only
                self._want_tb = False
                return None
            log_dir = self.run_dir / "tensorboard"
            _after_existing_event_files(log_dir)
            self._tb = SummaryWriter(log_dir=str(log_dir), purge_step=self._purge_step)
            self._purge_step = None  # purged once, by the session's first event file
        return self._tb

    def _run_config(self) -> dict[str, Any]:
        """The stage's ``config.yaml`` (as saved), else the config the trainer was given."""
        return run_config(self.run_dir) or self._config

    def _add_hparams(self, summary: dict[str, Any]) -> None:
        """The run's scalar config fields and final metrics for TensorBoard's HPARAMS tab."""
        from torch.utils.tensorboard.summary import hparams

        params = flat_scalars(self._run_config())
        metrics = {
            f"hparams/{k}": float(v)
            for k, v in {**_numbers(summary), **_numbers(summary.get("last_eval") or {})}.items()
        }
        if not params or not metrics:
            return
        step = int(summary.get("step", 0))
        exp, ssi, sei = hparams(params, metrics)
        writer = self._tb.file_writer
        for proto in (exp, ssi, sei):
            writer.add_summary(proto, step)
        for tag, value in metrics.items():
            self._tb.add_scalar(tag, value, step)


class WandbSink:
    """One run directory's W&B run: config at the start, every record, the summary.

    The W&B run id is kept in ``RUN/wandb-run.json`` and resumed after a restart. W&B
    writes below ``RUN/wandb/`` (``$WANDB_DIR/wandb/`` when that is set), its cache and
    staging files too unless ``WANDB_CACHE_DIR`` / ``WANDB_DATA_DIR`` are set: nothing goes
    into the home directory. ``WANDB_MODE=offline`` logs without an account (``wandb sync`` uploads).
    """

    def __init__(self, run_dir: Path, runtime: RuntimeConfig) -> None:
        try:
            import wandb  # noqa: F401 - fail now, not at the first record
        except ImportError:
            raise UserError(
                "--runtime.wandb needs the wandb package: pip install 'scalelab[wandb]' "
                "(or pip install wandb), or run without --runtime.wandb"
            ) from None
        self.run_dir = run_dir
        self.project = runtime.wandb_project
        self.name = runtime.wandb_name or run_dir.resolve().name
        self.group = runtime.wandb_group or None
        self._run: Any = None

    def run_id(self) -> str:
        """The W&B id of this run directory: the stored one, else a new one (stored now)."""
        path = self.run_dir / WANDB_ID_FILE
        try:
            stored = read_json(path).get("id")
        except (OSError, ValueError, AttributeError):
            stored = None
        if isinstance(stored, str) and stored:
            return stored
        alphabet = string.ascii_lowercase + string.digits
        new = "".join(secrets.choice(alphabet) for _ in range(8))
        atomic_write_json(path, {"id": new, "project": self.project, "name": self.name})
        return new

    def _start(self, config: dict[str, Any]) -> Any:
        import wandb

        explicit = os.environ.get("WANDB_DIR")
        wandb_dir = (Path(explicit) if explicit else self.run_dir) / "wandb"
        defaults = {"WANDB_CACHE_DIR": wandb_dir / "cache", "WANDB_DATA_DIR": wandb_dir / "data"}
        wandb_dir.mkdir(parents=True, exist_ok=True)
        run_id = self.run_id()
        if wandb.run is not None and wandb.run.id == run_id:  # a session that died in-process
            wandb.run.finish(exit_code=1)
        with _env_defaults(defaults):
            run = wandb.init(
                project=self.project,
                name=self.name,
                group=self.group,
                id=run_id,
                resume="allow",
                dir=None if explicit else str(self.run_dir),
                config=json_safe(config),
                allow_val_change=True,  # runtime fields may change between sessions
            )
        # Our step is the x axis: replayed steps after a resume are not dropped by W&B.
        run.define_metric("step")
        run.define_metric("*", step_metric="step")
        return run

    def log(self, scalars: dict[str, float], step: int, config: dict[str, Any]) -> None:
        if self._run is None:
            self._run = self._start(config)
        self._run.log({**scalars, "step": step})

    def finish(self, summary: dict[str, Any], config: dict[str, Any]) -> None:
        """Write the run's summary and close the W&B run (exit code 0: completed)."""
        if self._run is None:
            self._run = self._start(config)
        self._run.summary.update(json_safe(summary))
        self._run.finish(exit_code=0 if summary.get("status") == "completed" else 1)
        self._run = None


@contextlib.contextmanager
def _env_defaults(values: dict[str, Path]) -> Iterator[None]:
    """Set environment variables that are unset, for the block only."""
    added = [k for k in values if not os.environ.get(k)]
    for key in added:
        os.environ[key] = str(values[key])
    try:
        yield
    finally:
        for key in added:
            os.environ.pop(key, None)


def _tensorboard_installed() -> bool:
    return importlib.util.find_spec("tensorboard") is not None


def _numbers(record: dict[str, Any]) -> dict[str, float]:
    """The finite int/float fields of a record (not bools, not clock times)."""
    return {
        k: v
        for k, v in record.items()
        if isinstance(v, int | float)
        and not isinstance(v, bool)
        and k not in _NOT_METRICS
        and math.isfinite(v)
    }


def _scalars(record: dict[str, Any]) -> dict[str, float]:
    """A record's numbers tagged ``<type>/<key>``, as every sink logs them."""
    prefix = record.get("type", "train")
    return {f"{prefix}/{k}": v for k, v in _numbers(record).items() if k not in ("type", "step")}


def run_config(run_dir: Path) -> dict[str, Any]:
    """The stage config saved in ``RUN/config.yaml`` as a nested dict ({} when absent)."""
    import yaml

    try:
        data = yaml.safe_load((Path(run_dir) / "config.yaml").read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError):
        return {}
    return data if isinstance(data, dict) else {}


def flat_scalars(config: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """The scalar fields of a nested config as dotted keys (lists of scalars as text)."""
    out: dict[str, Any] = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(flat_scalars(value, f"{name}."))
        elif isinstance(value, bool | int | str) or (
            isinstance(value, float) and math.isfinite(value)
        ):
            out[name] = value
        elif isinstance(value, list | tuple) and all(
            isinstance(v, bool | int | float | str) for v in value
        ):
            out[name] = ",".join(map(str, value))
    return out


def write_summary(run_dir: Path, summary: dict[str, Any]) -> None:
    atomic_write_json(Path(run_dir) / "summary.json", summary)


def read_summary(run_dir: Path) -> dict[str, Any]:
    """``summary.json`` of a run as it stands ({} when missing or unreadable)."""
    try:
        summary = read_json(Path(run_dir) / "summary.json")
    except (OSError, ValueError):
        return {}
    return summary if isinstance(summary, dict) else {}


def last_logged_step(run_dir: Path, *, window: int = 8192) -> int | None:
    """The step of the newest record in ``metrics.jsonl`` (None: nothing logged yet).

    Reads the file from its end, a growing window at a time, so that a study polling a
    long run every second does not parse its whole log; a torn last line is skipped.
    """
    try:
        with open(Path(run_dir) / "metrics.jsonl", "rb") as fh:
            return _last_step(fh, window)
    except OSError:
        return None


def _last_step(fh: BinaryIO, window: int) -> int | None:
    size = fh.seek(0, os.SEEK_END)
    while True:
        start = max(0, size - window)
        fh.seek(start)
        lines = fh.read(size - start).splitlines()
        if start > 0:
            lines = lines[1:]  # probably cut by the window
        for line in reversed(lines):
            try:
                step = json.loads(line).get("step")
            except (ValueError, AttributeError):
                continue
            if isinstance(step, int):
                return step
        if start == 0:
            return None
        window *= 4


def _after_existing_event_files(log_dir: Path) -> None:
    """Wait (under a second) until a new event file sorts after the existing ones.

    TensorBoard reads a directory's event files in name order, and the name starts with
    the creation time in whole seconds, then host and pid: a session resumed within the
    second its killed predecessor started could sort first and have its purge undone."""
    stamps = []
    for f in log_dir.glob("events.out.tfevents.*"):
        with contextlib.suppress(IndexError, ValueError):
            stamps.append(int(f.name.split(".")[3]))
    if stamps:
        wait = max(stamps) + 1 - time.time()
        if 0 < wait <= 2:
            time.sleep(wait)
