"""Where metrics go: ``metrics.jsonl`` (always), TensorBoard (opt-in sink), ``summary.json``."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any, BinaryIO

from scalelab.utils.io import (
    append_jsonl,
    atomic_write_json,
    atomic_write_text,
    read_json,
    read_jsonl,
)


class MetricsLog:
    """Append-only JSONL log of one run (rank 0 only), mirrored to TensorBoard if installed."""

    def __init__(self, run_dir: Path, *, enabled: bool = True, tensorboard: bool = True) -> None:
        self.path = Path(run_dir) / "metrics.jsonl"
        self.enabled = enabled
        self._tb = None
        if enabled and tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:  # the tensorboard extra is not installed: JSONL only
                pass
            else:
                self._tb = SummaryWriter(log_dir=str(Path(run_dir) / "tensorboard"))

    def truncate_after(self, step: int) -> None:
        """On resume: drop records logged after the checkpoint, so the curve stays one line."""
        if not self.enabled or not self.path.exists():
            return
        kept = [r for r in read_jsonl(self.path) if r.get("step", 0) <= step]
        atomic_write_text(self.path, "".join(json.dumps(r) + "\n" for r in kept))

    def write(self, record: dict[str, Any]) -> None:
        if not self.enabled:
            return
        append_jsonl(self.path, record)
        if self._tb is not None:
            prefix = record.get("type", "train")
            for key, value in record.items():
                if key in ("type", "step") or not isinstance(value, int | float):
                    continue
                if isinstance(value, float) and not math.isfinite(value):
                    continue
                self._tb.add_scalar(f"{prefix}/{key}", value, record["step"])

    def close(self) -> None:
        if self._tb is not None:
            self._tb.close()
            self._tb = None


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
