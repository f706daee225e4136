"""Atomic, crash-safe file writing and small JSON helpers.

Everything a run leaves behind is written so that a crash or SIGKILL at any moment leaves
either the old file or the new one, never half of one: write to a temporary sibling,
flush and fsync, then ``os.replace`` (atomic on POSIX), then fsync the directory.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from scalelab.errors import UserError


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


# mkstemp/mkdtemp create private (0600/0700) files; the renamed results get the modes an
# ordinary open() would have given them, so reports and checkpoints are shareable.
_FILE_MODE = 0o666 & ~_umask()
_DIR_MODE = 0o777 & ~_umask()


def set_output_mode(path: str | Path) -> None:
    """Give ``path`` the mode every other output has (what open()/mkdir() give under the
    umask), for files a library wrote private (safetensors writes 0600)."""
    os.chmod(path, _DIR_MODE if Path(path).is_dir() else _FILE_MODE)


def ensure_dir(path: str | Path, what: str, *, create: bool = True) -> Path:
    """``path`` as a directory to write into, created with its parents (unless ``create``
    is false); a one-line :class:`UserError` when it is a file, does not exist (with
    ``create`` false), cannot be created or is not writable. ``what`` names it."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise UserError(f"{what} {path} is a file, not a directory")
    if not path.exists():
        if not create:
            raise UserError(f"{what} {path} does not exist; create it first")
        try:
            path.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise UserError(f"cannot create {what} {path}: {exc.strerror or exc}") from None
    # Checked now rather than failing with a traceback at the first file written in it.
    if not os.access(path, os.W_OK | os.X_OK):
        raise UserError(f"{what} {path} is not writable")
    return path


def check_output_file(path: str | Path, flag: str, *, example: str = "") -> Path:
    """An output file goes into a directory that exists (a mistyped path is not created)
    and is not itself a directory; a one-line UserError otherwise, before any work."""
    path = Path(path)
    if path.is_dir():
        hint = f" such as {path / example}" if example else ""
        raise UserError(f"{flag} {path} is a directory; give a file name{hint}")
    ensure_dir(path.parent, f"{flag} {path}: directory", create=False)
    return path


def fsync_dir(path: str | Path) -> None:
    """Make a rename inside ``path`` durable."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, _FILE_MODE)
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    fsync_dir(path.parent)


def atomic_write_text(path: str | Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def json_safe(value: Any) -> Any:
    """Convert numpy scalars/arrays, paths, tuples and non-finite floats to plain JSON."""
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    if hasattr(value, "tolist") and not isinstance(value, str | bytes):
        return json_safe(value.tolist())
    if isinstance(value, float) and not math.isfinite(value):
        return None if math.isnan(value) else ("inf" if value > 0 else "-inf")
    return value


def atomic_write_json(path: str | Path, data: Any, *, indent: int = 2) -> None:
    atomic_write_text(path, json.dumps(json_safe(data), indent=indent, sort_keys=False) + "\n")


def read_json(path: str | Path) -> Any:
    with open(path, encoding="utf-8") as fh:
        return json.load(fh)


def append_jsonl(path: str | Path, record: dict[str, Any]) -> None:
    """Append one JSON line and flush it to disk (a crash loses at most the line in flight)."""
    with open(path, "a", encoding="utf-8") as fh:
        fh.write(json.dumps(json_safe(record)) + "\n")
        fh.flush()
        os.fsync(fh.fileno())


def read_jsonl(path: str | Path) -> list[dict[str, Any]]:
    """Read a JSONL file, ignoring a torn last line left by a crash."""
    out: list[dict[str, Any]] = []
    path = Path(path)
    if not path.exists():
        return out
    with open(path, encoding="utf-8") as fh:
        for line in fh:
            line = line.strip()
            if not line:
                continue
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError:
                break
    return out


@contextlib.contextmanager
def atomic_dir(path: str | Path, *, overwrite: bool = True) -> Iterator[Path]:
    """Build a directory under a temporary name and rename it into place when done.

    Yields the temporary directory to fill. On an exception the temporary directory is
    removed and ``path`` is untouched. Every file inside is fsynced before the rename.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    try:
        os.chmod(tmp, _DIR_MODE)
        yield tmp
        for root, _dirs, files in os.walk(tmp):
            for name in files:
                # Libraries write some files private (safetensors: 0600); outputs are umask-mode.
                os.chmod(os.path.join(root, name), _FILE_MODE)
                fd = os.open(os.path.join(root, name), os.O_RDONLY)
                try:
                    os.fsync(fd)
                finally:
                    os.close(fd)
            fsync_dir(root)
        if path.exists():
            if not overwrite:
                raise FileExistsError(path)
            old = path.with_name(f".{path.name}.old")
            shutil.rmtree(old, ignore_errors=True)
            os.replace(path, old)
            os.replace(tmp, path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, path)
        fsync_dir(path.parent)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def sha256_file(path: str | Path, *, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()


def sha256_text(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()
