"""Stopping a run cleanly: Ctrl-C / SIGTERM (and a dead parent) become "checkpoint, then stop"."""

from __future__ import annotations

import contextlib
import os
import signal
import sys
from typing import Any


class StopFlag:
    """First Ctrl-C/SIGTERM: finish the step, checkpoint, stop. Second: stop now.

    With ``SCALELAB_STOP_WITH_PARENT=1`` (set by the study runner) the run also stops
    after a checkpoint when its parent process dies, so a SIGKILLed study never leaves
    orphaned rungs training.
    """

    def __init__(self) -> None:
        self.requested = False
        self._old: dict[int, Any] = {}
        self._parent = os.getppid() if os.environ.get("SCALELAB_STOP_WITH_PARENT") == "1" else None

    def _handler(self, signum, frame):  # noqa: ANN001
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True
        print(
            "\nscalelab: stopping after this step and writing a checkpoint "
            "(press Ctrl-C again to stop at once)",
            file=sys.stderr,
        )

    def poll(self) -> bool:
        """Whether a stop was asked for (or the watched parent process went away)."""
        if self._parent is not None and os.getppid() != self._parent:
            self.requested = True
        return self.requested

    def __enter__(self) -> StopFlag:
        with contextlib.suppress(ValueError):  # not in the main thread: leave signals alone
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._old[sig] = signal.signal(sig, self._handler)
        return self

    def __exit__(self, *exc: object) -> None:
        for sig, old in self._old.items():
            signal.signal(sig, old)
