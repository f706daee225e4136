"""Multiple-choice / cloze tasks: the example type, the JSONL reader and task resolution.

A task file holds one JSON object per line, in the spirit of lm-evaluation-harness::

    {"id": "q1", "context": "The capital of France is", "choices": [" Paris", " Rome"], "gold": 0}

``context`` is a string (may be empty), ``choices`` a list of at least two non-empty
strings -- the continuations, written as they follow the context, so a word after a word
keeps its leading space (``" Paris"``) -- and ``gold`` the index of the right one; ``id``
is optional (the line number otherwise). Blank lines are skipped; other keys are ignored.
Every malformed line is a one-line :class:`UserError` naming the file, the line and what
is wrong.

A task is named on the command line as ``builtin:NAME`` (:mod:`scalelab.evals.builtin`) or
as the path of such a file.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
from pathlib import Path
from typing import Any

from scalelab.errors import UserError
from scalelab.utils.io import atomic_write_text, sha256_text

BUILTIN_PREFIX = "builtin:"
#: The built-in tasks (built from the pretraining dataset's held-out text).
BUILTIN_NAMES = ("continuation", "wiki-topic")


@dataclasses.dataclass(frozen=True)
class Example:
    """One multiple-choice example: the context, the candidate continuations, the answer."""

    id: str
    context: str
    choices: tuple[str, ...]
    gold: int

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "context": self.context,
            "choices": list(self.choices),
            "gold": self.gold,
        }


@dataclasses.dataclass(frozen=True)
class Task:
    """A resolved task: its name, a file-safe key, the examples and how they were made."""

    name: str
    """As given: ``builtin:continuation`` or the file's path."""
    key: str
    """File-safe name for result files (``continuation``, ``mytask-1a2b3c4d``)."""
    examples: tuple[Example, ...]
    notes: tuple[str, ...] = ()
    """How the examples were built (held-out documents, templates, what was dropped)."""

    @property
    def hash(self) -> str:
        """Content hash of the examples scored (changes with the file, the limit, the seed)."""
        return examples_hash(self.examples)

    @property
    def chance(self) -> float:
        """Expected accuracy of a uniform guess: the mean of 1 / number of choices."""
        return sum(1.0 / len(e.choices) for e in self.examples) / max(1, len(self.examples))

    def write_jsonl(self, path: str | Path) -> Path:
        """The examples as a task file (atomically), loadable with :func:`load_jsonl`."""
        text = "".join(json.dumps(e.to_dict(), ensure_ascii=False) + "\n" for e in self.examples)
        atomic_write_text(path, text)
        return Path(path)


def examples_hash(examples: tuple[Example, ...] | list[Example]) -> str:
    blob = json.dumps([e.to_dict() for e in examples], sort_keys=True, ensure_ascii=False)
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()[:16]


# ====================================================================== the JSONL reader


def _example(record: Any, where: str, lineno: int) -> Example:
    """Validate one parsed line (``where`` is ``FILE:LINE``)."""
    if not isinstance(record, dict):
        raise UserError(f"{where}: expected a JSON object, got {type(record).__name__}")
    for key in ("context", "choices", "gold"):
        if key not in record:
            raise UserError(f"{where}: no field {key!r} (a line needs context, choices, gold)")
    context, choices, gold = record["context"], record["choices"], record["gold"]
    if not isinstance(context, str):
        raise UserError(f"{where}: context must be a string, got {type(context).__name__}")
    if not isinstance(choices, list) or len(choices) < 2:
        raise UserError(f"{where}: choices must be a list of at least 2 strings")
    for k, choice in enumerate(choices):
        if not isinstance(choice, str):
            raise UserError(f"{where}: choices[{k}] must be a string, got {type(choice).__name__}")
        if not choice:
            raise UserError(f"{where}: choices[{k}] is empty (a continuation needs text)")
    if isinstance(gold, bool) or not isinstance(gold, int):
        raise UserError(f"{where}: gold must be an integer index, got {gold!r}")
    if not 0 <= gold < len(choices):
        raise UserError(f"{where}: gold {gold} is out of range for {len(choices)} choices")
    ident = record.get("id", lineno)
    if not isinstance(ident, str | int) or isinstance(ident, bool):
        raise UserError(f"{where}: id must be a string or an integer, got {ident!r}")
    return Example(id=str(ident), context=context, choices=tuple(choices), gold=gold)


def load_jsonl(path: str | Path, *, limit: int | None = None) -> list[Example]:
    """The examples of a task file (the first ``limit`` of them); see the module docstring."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"task file not found: {path}")
    from scalelab.data import readers

    out: list[Example] = []
    # The data package's JSON-lines reader: streamed, gzip/zstd too, one line per error.
    fmt = readers.Format("jsonl", readers.compression_of(path))
    lines = readers.iter_json_lines(path, fmt, errors="strict", tally=readers.Tally())
    for lineno, record in lines:
        out.append(_example(record, f"{path}:{lineno}", lineno))
        if limit is not None and len(out) >= limit:
            break
    if not out:
        raise UserError(f"{path}: no examples (one JSON object per line)")
    return out


# ====================================================================== naming and resolving


def check_task_spec(spec: str) -> None:
    """A UserError for an unknown built-in (files are checked when they are read)."""
    if not spec.strip():
        raise UserError("tasks: an empty task name")
    if spec.startswith(BUILTIN_PREFIX) and spec[len(BUILTIN_PREFIX) :] not in BUILTIN_NAMES:
        known = ", ".join(BUILTIN_PREFIX + n for n in BUILTIN_NAMES)
        raise UserError(f"unknown built-in task {spec!r}; built-ins are {known}")


def task_key(spec: str) -> str:
    """The file-safe key of a task: the built-in's name, or a slug of the file's stem and a
    hash of its resolved path (so the key holds no path, and two files of one stem differ)."""
    if spec.startswith(BUILTIN_PREFIX):
        return spec[len(BUILTIN_PREFIX) :]
    path = Path(spec).expanduser().resolve()
    slug = re.sub(r"[^a-z0-9]+", "-", path.stem.lower()).strip("-")[:40] or "task"
    return f"{slug}-{sha256_text(str(path))[:8]}"


def resolve_task(spec: str, *, dataset: str | Path | None, limit: int | None, seed: int) -> Task:
    """Build or read the task ``spec`` names; built-ins need the pretraining ``dataset``."""
    check_task_spec(spec)
    if not spec.startswith(BUILTIN_PREFIX):
        examples = load_jsonl(Path(spec).expanduser(), limit=limit)
        return Task(name=spec, key=task_key(spec), examples=tuple(examples))
    from scalelab.evals.builtin import build_builtin
    from scalelab.evals.config import DEFAULT_BUILTIN_EXAMPLES

    name = spec[len(BUILTIN_PREFIX) :]
    if dataset is None:
        raise UserError(
            f"{spec} is built from the held-out text of the pretraining dataset, which is not "
            "known here; give it with --dataset DIR"
        )
    n = limit if limit is not None else DEFAULT_BUILTIN_EXAMPLES
    examples, notes = build_builtin(name, Path(dataset), n=n, seed=seed)
    return Task(name=spec, key=name, examples=tuple(examples), notes=tuple(notes))
