"""One process per directory: an advisory ``flock`` on ``DIR/.lock``.

A run directory is held by its training process (:func:`run_lock`), a study directory by
its ``study run`` runner (:func:`dir_lock` with the study's own message). The kernel drops
the lock when its process dies (SIGKILL included), so a crash never leaves a stale lock,
and a study can tell a live rung from an interrupted one (:func:`is_locked`). The holder
writes its pid into the file, so that the one-line refusal can name it.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import time
from collections.abc import Iterator
from pathlib import Path

from scalelab.errors import UserError

LOCK_NAME = ".lock"

# is_locked() probes by taking the lock for an instant; a process starting at that very
# moment retries for this long instead of mistaking the probe for another owner.
_ACQUIRE_TRIES, _ACQUIRE_WAIT_S = 10, 0.05


def holder_pid(directory: Path) -> int | None:
    """The pid written by the process holding ``directory``'s lock (None: unknown)."""
    try:
        text = (Path(directory) / LOCK_NAME).read_text().strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None


def _flock(fd: int) -> bool:
    for attempt in range(_ACQUIRE_TRIES):
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return True
        except BlockingIOError:
            if attempt + 1 < _ACQUIRE_TRIES:
                time.sleep(_ACQUIRE_WAIT_S)
    return False


@contextlib.contextmanager
def dir_lock(directory: Path, busy: str, *, then: str = "") -> Iterator[None]:
    """Hold ``directory`` exclusively; another process gets one line: ``busy``, the pid
    of the holder when known, then ``then`` (what to do about it)."""
    path = Path(directory) / LOCK_NAME
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        if not _flock(fd):
            pid = holder_pid(directory)
            who = f" (pid {pid})" if pid is not None else ""
            raise UserError(busy + who + (f"; {then}" if then else ""))
        os.ftruncate(fd, 0)
        os.write(fd, str(os.getpid()).encode())
        yield
    finally:
        os.close(fd)  # closing the descriptor releases the lock


def run_lock(run_dir: Path) -> contextlib.AbstractContextManager[None]:
    """Hold the run directory exclusively; a second process gets a one-line error."""
    return dir_lock(run_dir, f"{run_dir} is in use by another scalelab process")


def is_locked(directory: Path) -> bool:
    """Whether a live process holds ``directory``'s lock (read-only: never creates it)."""
    path = Path(directory) / LOCK_NAME
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return False
    try:
        # Shared: probes (study status, the progress bar) never block one another.
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    else:
        fcntl.flock(fd, fcntl.LOCK_UN)
        return False
    finally:
        os.close(fd)
