"""Downstream tasks: built-in ones read in place from installed data packages, or user files.

A :class:`Task` is a frozen bundle of a label list and deterministic train/dev/test
splits::

    task = load_task("twitter-ner", seed=0)          # built-in
    task = load_task("data/ner.conll")                # one file, split 80/10/10
    task = load_task(train_file="tr.csv", dev_file="dev.csv", test_file="te.csv")
    print(task.summary())

Splits are decided by a SHA-256 of ``(seed, example index)``, so they are identical on any
machine and Python version; classification splits are stratified by label. Capping a split
(``max_examples``) or subsampling the training set (:meth:`Task.with_train_subset`) takes a
prefix of the same order, so smaller sets are nested inside larger ones.

Built-in tasks live in :mod:`.builtin`.
"""

from __future__ import annotations

import dataclasses
import difflib
import hashlib
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

from scalelab.config import Config
from scalelab.data import readers
from scalelab.errors import UserError
from scalelab.finetune.builtin_tasks import BUILTIN_TASKS, builtin_task_names, package_dir
from scalelab.finetune.conll import read_conll, read_table_ner
from scalelab.finetune.examples import Example, NerExample, TaskKind
from scalelab.finetune.schemes import entity_types_of, iob2_labels, iob2_spans
from scalelab.finetune.textcls import (
    check_encoding,
    infer_table_kind,
    inner_suffix,
    read_classification_file,
)

SPLITS = ("train", "dev", "test")


# ====================================================================== the Task


@dataclasses.dataclass(frozen=True)
class Task:
    """A downstream task: labels and train/dev/test examples."""

    name: str
    kind: TaskKind
    labels: tuple[str, ...]
    """NER: the IOB2 tag list (``O`` first, then ``B-X, I-X`` per type); classification: the classes."""
    entity_types: tuple[str, ...]
    """NER entity types (sorted); empty for classification."""
    train: tuple[Example, ...]
    dev: tuple[Example, ...]
    test: tuple[Example, ...]
    source: str
    """Where the data comes from (package and file, or the user's files)."""
    license: str
    notes: tuple[str, ...] = ()
    """What loading did that a user should know: dropped examples, repaired tags, ..."""
    seed: int = 0

    @property
    def label2id(self) -> dict[str, int]:
        return {label: i for i, label in enumerate(self.labels)}

    @property
    def id2label(self) -> dict[int, str]:
        return dict(enumerate(self.labels))

    @property
    def num_labels(self) -> int:
        return len(self.labels)

    def split(self, name: str) -> tuple[Example, ...]:
        """The examples of ``"train"``, ``"dev"`` (alias ``"validation"``) or ``"test"``."""
        key = {"validation": "dev", "valid": "dev", "val": "dev"}.get(name, name)
        if key not in SPLITS:
            raise UserError(f"unknown split '{name}'; choose train, dev or test")
        return getattr(self, key)

    def sizes(self) -> dict[str, int]:
        return {s: len(self.split(s)) for s in SPLITS}

    def label_counts(self, split: str) -> dict[str, int]:
        """Examples per class (classification) or entities per type (NER) in one split."""
        counts: Counter[str] = Counter()
        for ex in self.split(split):
            if isinstance(ex, NerExample):
                counts.update(typ for typ, _s, _e in iob2_spans(ex.tags))
            else:
                counts[ex.label] += 1
        return dict(sorted(counts.items()))

    def summary(self) -> str:
        """A few lines for the CLI: kind, labels, split sizes, source and notes."""
        sizes = self.sizes()
        if self.kind == "ner":
            what = f"NER, {len(self.entity_types)} entity types, {self.num_labels} tags"
            unit = "sentences"
        else:
            what = f"classification, {self.num_labels} classes"
            unit = "examples"
        lines = [
            f"task {self.name} ({what}): train {sizes['train']} / dev {sizes['dev']} / "
            f"test {sizes['test']} {unit} (seed {self.seed})",
            f"  source: {self.source}" + (f"; license: {self.license}" if self.license else ""),
        ]
        lines += [f"  note: {note}" for note in self.notes]
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe description without the examples (for run directories and reports)."""
        return {
            "name": self.name,
            "kind": self.kind,
            "labels": list(self.labels),
            "entity_types": list(self.entity_types),
            "sizes": self.sizes(),
            "label_counts": {s: self.label_counts(s) for s in SPLITS},
            "source": self.source,
            "license": self.license,
            "notes": list(self.notes),
            "seed": self.seed,
        }

    def with_train_subset(self, n: int, *, seed: int | None = None) -> Task:
        """A copy whose training set is ``n`` examples (nested: smaller n gives a subset).

        For label-efficiency curves. Classification subsets keep the class proportions;
        a subset that loses a class still keeps the full label list.
        """
        if n <= 0:
            raise UserError(f"training subset size must be positive, got {n}")
        seed = self.seed if seed is None else seed
        order = _split_order(self.train, self.kind, seed)
        keep = sorted(order[:n])
        return dataclasses.replace(self, train=tuple(self.train[i] for i in keep))


# ====================================================================== splitting


def _unit(seed: int, index: int) -> float:
    """A uniform number in [0, 1) from ``(seed, index)``, identical on every platform."""
    digest = hashlib.sha256(f"scalelab-split:{seed}:{index}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2.0**64


def _split_order(examples: Sequence[Example], kind: TaskKind, seed: int) -> list[int]:
    """An order of the example indices whose every prefix is a fair sample.

    NER: by a seeded hash. Classification: stratified -- within each class the examples
    are ranked by the hash and example r of n gets position (r + 0.5) / n, so any prefix
    of the positions holds each class in proportion (ties broken by the hash).
    """
    keys = [_unit(seed, i) for i in range(len(examples))]
    if kind == "ner":
        return sorted(range(len(examples)), key=keys.__getitem__)
    by_label: dict[str, list[int]] = {}
    for i, ex in enumerate(examples):
        by_label.setdefault(ex.label, []).append(i)  # type: ignore[union-attr]
    position = [0.0] * len(examples)
    for members in by_label.values():
        members.sort(key=keys.__getitem__)
        for rank, i in enumerate(members):
            position[i] = (rank + 0.5) / len(members)
    return sorted(range(len(examples)), key=lambda i: (position[i], keys[i]))


def _carve(
    examples: Sequence[Example], kind: TaskKind, seed: int, fractions: Sequence[float]
) -> list[tuple[Example, ...]]:
    """Cut ``examples`` into ``len(fractions)`` held-out parts plus the rest (last)."""
    order = _split_order(examples, kind, seed)
    parts: list[tuple[Example, ...]] = []
    start = 0
    for fraction in fractions:
        n = round(len(examples) * fraction)
        if fraction > 0 and n == 0 and len(examples) > len(fractions):
            n = 1  # a tiny file still gets a non-empty held-out split
        idx = sorted(order[start : start + n])
        parts.append(tuple(examples[i] for i in idx))
        start += n
    parts.append(tuple(examples[i] for i in sorted(order[start:])))
    return parts


def _cap(examples: tuple[Example, ...], kind: TaskKind, seed: int, n: int | None) -> tuple:
    if n is None or len(examples) <= n:
        return examples
    keep = sorted(_split_order(examples, kind, seed)[:n])
    return tuple(examples[i] for i in keep)


def _labels_of(ex: Example) -> set[str]:
    if isinstance(ex, NerExample):
        return {t[2:] for t in ex.tags if t != "O"}
    return {ex.label}


# ====================================================================== loading


def _infer_kind(path: Path, text_field: str = "text") -> TaskKind:
    if readers.is_table_source(path):  # Parquet/Arrow: by its columns
        return infer_table_kind(path, text_field)
    # .tsv stays NER: CoNLL-style column files are often tab separated.
    if inner_suffix(path) in (".csv", ".jsonl", ".json", ".ndjson"):
        return "classification"
    return "ner"


def _read_file(path: Path, kind: TaskKind, options: dict[str, Any]) -> tuple[list[Example], str]:
    """Examples of one user file and a note about it."""
    if kind == "ner" and readers.is_table_source(path):
        found = read_table_ner(
            path,
            token_field=options["text_field"],
            tag_field=options["label_field"],
            scheme=options["scheme"],
        )
        return list(found.examples), found.note()
    if kind == "ner":
        found = read_conll(
            path,
            token_column=options["token_column"],
            label_column=options["label_column"],
            scheme=options["scheme"],
            encoding=options["encoding"],
        )
        return list(found.examples), found.note()
    examples = read_classification_file(
        path,
        text_field=options["text_field"],
        label_field=options["label_field"],
        encoding=options["encoding"],
    )
    return list(examples), f"{path}: {len(examples)} examples"


def _unknown_task(spec: str) -> UserError:
    names = builtin_task_names()
    close = difflib.get_close_matches(spec, names, n=1)
    hint = f"did you mean '{close[0]}'? " if close else ""
    return UserError(
        f"unknown task '{spec}': not a built-in task and no such file; {hint}"
        f"built-in tasks: {', '.join(names)}"
    )


def _drop_or_raise_unseen(
    splits: dict[str, tuple[Example, ...]], drop: bool, notes: list[str]
) -> None:
    seen = set().union(*(_labels_of(ex) for ex in splits["train"]))
    for name in ("dev", "test"):
        unseen: Counter[str] = Counter()
        for ex in splits[name]:
            unseen.update(_labels_of(ex) - seen)
        if not unseen:
            continue
        listing = ", ".join(f"'{label}' ({n} examples)" for label, n in sorted(unseen.items()))
        if not drop:
            raise UserError(
                f"the {name} split has labels never seen in training: {listing}; "
                "pass drop_unseen_labels=True (--task.drop-unseen-labels) to drop those examples"
            )
        kept = tuple(ex for ex in splits[name] if not _labels_of(ex) - seen)
        notes.append(
            f"dropped {len(splits[name]) - len(kept)} {name} examples with labels never seen "
            f"in training: {listing}"
        )
        splits[name] = kept


def _check_not_empty(splits: dict[str, tuple[Example, ...]], name: str) -> None:
    for split in SPLITS:
        if not splits[split]:
            fix = (
                f"set {split}_fraction > 0 or pass {split}_file"
                if split != "train"
                else "the data has too few examples"
            )
            raise UserError(f"task '{name}': the {split} split is empty; {fix}")


def load_task(
    spec: str | Path | None = None,
    *,
    seed: int = 0,
    dev_fraction: float = 0.1,
    test_fraction: float = 0.1,
    max_examples: int | None = None,
    train_file: str | Path | None = None,
    dev_file: str | Path | None = None,
    test_file: str | Path | None = None,
    kind: TaskKind | None = None,
    scheme: str = "auto",
    token_column: int = 0,
    label_column: int = -1,
    text_field: str = "text",
    label_field: str = "label",
    encoding: str = "utf-8",
    drop_unseen_labels: bool = False,
) -> Task:
    """Load a built-in task by name, or a task from files, with deterministic splits.

    ``spec`` is a built-in name (:data:`BUILTIN_TASKS`) or one data file; alternatively
    give ``train_file`` and optionally ``dev_file``/``test_file``. Splits not given as files
    are carved out of the training data: ``test_fraction`` then ``dev_fraction`` of it,
    seeded by ``seed`` (stratified by label for classification). ``max_examples`` caps
    every split (a seeded, nested subsample). ``kind`` defaults to the built-in's, or to
    classification for ``.csv``/``.jsonl`` files and NER for anything else. Column files
    use ``token_column``, ``label_column`` and ``scheme``; CSV/JSONL use ``text_field``
    and ``label_field``.

    Raises :class:`UserError` for an unknown task, a missing package or file, an empty
    split, or (unless ``drop_unseen_labels``) a dev/test label never seen in training.
    """
    _check_load_arguments(dev_fraction, test_fraction, max_examples, kind)
    check_encoding(encoding)
    files = {"train": train_file, "dev": dev_file, "test": test_file}
    notes: list[str] = []
    given: dict[str, tuple[Example, ...]] = {}
    if spec is not None and str(spec) in BUILTIN_TASKS:
        kind, name, source, license_ = _read_builtin(str(spec), files, kind, given, notes)
    else:
        options = {
            "token_column": token_column,
            "label_column": label_column,
            "scheme": scheme,
            "encoding": encoding,
            "text_field": text_field,
            "label_field": label_field,
        }
        kind, name, source, license_ = _read_files(spec, files, kind, options, given, notes)

    splits = _carve_and_cap(given, kind, seed, dev_fraction, test_fraction, max_examples)
    if max_examples is not None:
        notes.append(f"every split capped at {max_examples} examples")
    _check_not_empty(splits, name)
    _drop_or_raise_unseen(splits, drop_unseen_labels, notes)
    _check_not_empty(splits, name)  # dropping may have emptied a split

    if kind == "ner":
        types = entity_types_of(ex.tags for ex in splits["train"])  # type: ignore[union-attr]
        labels = iob2_labels(types)
    else:
        types = ()
        labels = tuple(sorted({ex.label for ex in splits["train"]}))  # type: ignore[union-attr]
        _check_classes(labels, name)
    return Task(
        name=name,
        kind=kind,
        labels=labels,
        entity_types=types,
        train=splits["train"],
        dev=splits["dev"],
        test=splits["test"],
        source=source,
        license=license_,
        notes=tuple(notes),
        seed=seed,
    )


def _check_classes(labels: tuple[str, ...], name: str) -> None:
    """A classifier trained on one class learns nothing and scores accuracy 1.0 on a test
    split of that class: refuse it rather than report that."""
    if len(labels) < 2:
        found = f"only the class '{labels[0]}'" if labels else "no class"
        raise UserError(
            f"task '{name}': the training split has {found}; a classification task needs at "
            "least 2 classes (check the label field/column of the data)"
        )


def _check_load_arguments(
    dev_fraction: float, test_fraction: float, max_examples: int | None, kind: str | None
) -> None:
    """Raise :class:`UserError` for split fractions, a cap or a kind :func:`load_task` rejects."""
    for name, value in (("dev_fraction", dev_fraction), ("test_fraction", test_fraction)):
        if not 0.0 <= value < 1.0:
            raise UserError(f"{name} must be in [0, 1), got {value}")
    if dev_fraction + test_fraction >= 1.0:
        raise UserError("dev_fraction + test_fraction must leave some training data (< 1)")
    if max_examples is not None and max_examples <= 0:
        raise UserError(f"max_examples must be positive, got {max_examples}")
    if kind is not None and kind not in ("ner", "classification"):
        raise UserError(f"unknown task kind '{kind}'; choose ner or classification")


def _read_builtin(
    spec: str,
    files: dict[str, str | Path | None],
    kind: TaskKind | None,
    given: dict[str, tuple[Example, ...]],
    notes: list[str],
) -> tuple[TaskKind, str, str, str]:
    """Read a built-in task's data into ``given["train"]``: (kind, name, source, license)."""
    if any(files.values()):
        raise UserError(f"'{spec}' is a built-in task; do not also pass data files")
    builtin = BUILTIN_TASKS[spec]
    if kind is not None and kind != builtin.kind:
        raise UserError(f"built-in task '{spec}' is {builtin.kind}, not {kind}")
    examples, load_notes, file = builtin.loader(package_dir(builtin))
    notes += load_notes
    given["train"] = tuple(examples)
    return builtin.kind, builtin.name, f"{builtin.pip}: {file}", builtin.license


def _read_files(
    spec: str | Path | None,
    files: dict[str, str | Path | None],
    kind: TaskKind | None,
    options: dict[str, Any],
    given: dict[str, tuple[Example, ...]],
    notes: list[str],
) -> tuple[TaskKind, str, str, str]:
    """Read the user's data file(s) into ``given``: (kind, name, source, license)."""
    if spec is not None:
        if files["train"] is not None:
            raise UserError("give the data either as the task argument or as train_file, not both")
        splits = readers.dataset_dir_splits(spec) if Path(spec).is_dir() else None
        if splits is not None:  # a DatasetDict directory: its splits are the task's
            _dataset_dict_files(Path(spec), splits, files)
        elif Path(spec).is_file() or readers.is_table_source(spec):
            files["train"] = spec  # one data file given as the task: it is the training data
        else:
            raise _unknown_task(str(spec))
    if files["train"] is None:
        raise UserError(
            f"no task: give a built-in task name ({', '.join(builtin_task_names())}) or a data file"
        )
    train_path = Path(files["train"])  # type: ignore[arg-type]
    kind = kind or _infer_kind(train_path, options["text_field"])
    for split, file in files.items():
        if file is not None:
            examples, note = _read_file(Path(file), kind, options)
            given[split] = tuple(examples)
            notes.append(note)
    source = ", ".join(str(f) for f in files.values() if f is not None)
    name = Path(spec).name if spec is not None and Path(spec).is_dir() else train_path.stem
    if inner_suffix(train_path) != train_path.suffix.lower():  # x.jsonl.gz -> x
        name = Path(train_path.stem).stem
    return kind, name, source, ""


_DEV_SPLITS = ("validation", "dev", "valid", "val")


def _dataset_dict_files(
    path: Path, splits: dict[str, Path], files: dict[str, str | Path | None]
) -> None:
    """Fill ``files`` from a ``DatasetDict`` directory: train, validation (dev), test."""
    if "train" not in splits:
        raise UserError(
            f"{path}: a DatasetDict without a 'train' split (splits: {', '.join(splits)}); "
            "pass its split directories as train_file/dev_file/test_file"
        )
    files["train"] = splits["train"]
    dev = next((splits[s] for s in _DEV_SPLITS if s in splits), None)
    if dev is not None and files["dev"] is None:
        files["dev"] = dev
    if "test" in splits and files["test"] is None:
        files["test"] = splits["test"]


def _carve_and_cap(
    given: dict[str, tuple[Example, ...]],
    kind: TaskKind,
    seed: int,
    dev_fraction: float,
    test_fraction: float,
    max_examples: int | None,
) -> dict[str, tuple[Example, ...]]:
    """All three splits: the given ones, the missing held-out ones carved out of train, capped."""
    # Carve the missing held-out splits out of the training data (test first, then dev).
    missing = [s for s in ("test", "dev") if s not in given]
    fractions = {"test": test_fraction, "dev": dev_fraction}
    parts = _carve(given["train"], kind, seed, [fractions[s] for s in missing])
    splits = dict(zip(missing, parts[:-1]))
    splits["train"] = parts[-1]
    splits.update({s: given[s] for s in ("dev", "test") if s in given})
    return {s: _cap(splits[s], kind, seed, max_examples) for s in SPLITS}


@dataclasses.dataclass(kw_only=True)
class TaskConfig(Config):
    """Which downstream task to load and how to split it (see :func:`load_task`)."""

    task: str | None = None
    """Built-in task (twitter-ner, wiki-topics, movie-sentiment, bbc-news) or one data file to split."""
    train_file: Path | None = None
    """Training data file (instead of `task`): CoNLL-style columns, .csv, .jsonl (also .gz/.zst), .json, or a Parquet/Arrow file or directory."""
    dev_file: Path | None = None
    """Dev data file; if absent, dev_fraction of the training data."""
    test_file: Path | None = None
    """Test data file; if absent, test_fraction of the training data."""
    kind: Literal["auto", "ner", "classification"] = "auto"
    """ner, classification, or auto (.csv/.jsonl/.json are classification, tables by their columns, other files NER)."""
    scheme: str = "auto"
    """Tagging scheme of NER files: auto, IOB1, IOB2 (BIO), IOBES, BILOU or IO; converted to IOB2."""
    token_column: int = 0
    """0-based column of the token in NER files (negative counts from the end)."""
    label_column: int = -1
    """0-based column of the tag in NER files (default: the last)."""
    text_field: str = "text"
    """Text column (CSV, Parquet, Arrow) or field (JSON) of classification files; the list-of-words column of NER tables (default there: tokens)."""
    label_field: str = "label"
    """Label column (CSV, Parquet, Arrow) or field (JSON) of classification files; the list-of-tags column of NER tables (default there: ner_tags, else tags)."""
    encoding: str = "utf-8"
    """Text encoding of the data files."""
    split_seed: int = 0
    """Seed of the train/dev/test split (separate from the training seed, so seeds vary training, not the test set)."""
    dev_fraction: float = 0.1
    """Share of the data held out for dev when no dev file is given."""
    test_fraction: float = 0.1
    """Share of the data held out for test when no test file is given."""
    max_examples: int | None = None
    """Cap every split at this many examples (a seeded subsample; for quick runs)."""
    drop_unseen_labels: bool = False
    """Drop dev/test examples whose label never occurs in training (otherwise an error)."""

    def validate(self) -> None:
        if self.kind not in ("auto", "ner", "classification"):
            raise UserError(f"task kind '{self.kind}' must be auto, ner or classification")
        from scalelab.finetune.schemes import canonical_scheme

        canonical_scheme(self.scheme)
        check_encoding(self.encoding)
        for name in ("dev_fraction", "test_fraction"):
            value = getattr(self, name)
            if not 0.0 <= value < 1.0:
                raise UserError(f"{name} must be in [0, 1), got {value}")
        if self.max_examples is not None and self.max_examples <= 0:
            raise UserError(f"max_examples must be positive, got {self.max_examples}")
        if self.task is not None and self.train_file is not None:
            raise UserError("give either task or train_file, not both")

    def load_task(self) -> Task:
        """Load the task this config describes."""
        return load_task(
            self.task,
            seed=self.split_seed,
            dev_fraction=self.dev_fraction,
            test_fraction=self.test_fraction,
            max_examples=self.max_examples,
            train_file=self.train_file,
            dev_file=self.dev_file,
            test_file=self.test_file,
            kind=None if self.kind == "auto" else self.kind,  # type: ignore[arg-type]
            scheme=self.scheme,
            token_column=self.token_column,
            label_column=self.label_column,
            text_field=self.text_field,
            label_field=self.label_field,
            encoding=self.encoding,
            drop_unseen_labels=self.drop_unseen_labels,
        )
