"""Hostile model directories, output paths and corrupt run files end in one line (exit 2),
never a prompt, a traceback, code shipped with a model, or files outside where they belong;
and every output of a run is shareable (the same mode as its config.yaml)."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from tests.conftest import TINY_PRETRAIN

from scalelab.cli import main
from scalelab.finetune.tasks import TaskConfig
from scalelab.study.downstream import (
    DOWNSTREAM,
    StudyFinetuneConfig,
    downstream_keys,
    finetune_study,
    rung_finetune_defaults,
)
from scalelab.study.study import Study

FT = ["--task.max-examples", "24", "--epochs", "1", "--max-length", "24", "--batch-size", "8",
      "--runtime.precision", "fp32", "--no-runtime.progress", "--no-runtime.tensorboard",
      "--runtime.threads", "1"]  # fmt: skip


def _one_line(capsys, needle: str) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and needle in err[0], err
    return err[0]


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory, tiny_bpe_dataset):
    run = tmp_path_factory.mktemp("pre") / "run"
    assert main(["pretrain", str(run), "--dataset", str(tiny_bpe_dataset), *TINY_PRETRAIN]) == 0
    return run


# ---------------------------------------------------------------- 1. shipped model code


def _evil_model(directory: Path, marker: Path) -> Path:
    """A model directory whose config asks Transformers to import its own modeling file."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "config.json").write_text(
        json.dumps(
            {
                "model_type": "evil-xyz",
                "auto_map": {
                    "AutoConfig": "modeling_evil.EvilConfig",
                    "AutoModelForSequenceClassification": "modeling_evil.EvilModel",
                    "AutoTokenizer": ["modeling_evil.EvilTokenizer", None],
                },
            }
        )
    )
    (directory / "modeling_evil.py").write_text(
        f"import pathlib\npathlib.Path({str(marker)!r}).write_text('ran')\n"
    )
    return directory


def _task_meta(model_dir: Path) -> None:
    meta = {"task": {"task": "wiki-topics"}, "labels": ["a", "b"], "kind": "classification",
            "max_length": 16}  # fmt: skip
    (model_dir / "scalelab_task.json").write_text(json.dumps(meta))


def test_finetune_refuses_shipped_model_code_with_stdin_closed(tmp_path):
    marker = tmp_path / "MARKER"
    evil = _evil_model(tmp_path / "evil", marker)
    cmd = [sys.executable, "-m", "scalelab", "finetune", str(tmp_path / "ft"), "--model",
           str(evil), "--task", "wiki-topics"]  # fmt: skip
    env = {**os.environ, "HF_MODULES_CACHE": str(tmp_path / "hf-modules")}
    proc = subprocess.run(
        cmd, stdin=subprocess.DEVNULL, capture_output=True, text=True, env=env, timeout=120
    )
    assert proc.returncode == 2, proc.stderr
    err = proc.stderr.strip().splitlines()
    assert len(err) == 1 and str(evil) in err[0] and "never runs code shipped" in err[0], err
    assert "custom code" not in proc.stdout + proc.stderr  # no prompt
    assert not marker.exists() and not (tmp_path / "ft").exists()


def test_evaluate_and_infer_refuse_shipped_model_code_even_answering_yes(
    tmp_path, capsys, monkeypatch
):
    # Were the guard to fail, Transformers would copy the code here, not into ~/.cache.
    monkeypatch.setattr(
        "transformers.dynamic_module_utils.HF_MODULES_CACHE", str(tmp_path / "hf-modules")
    )
    marker = tmp_path / "MARKER"
    evil = _evil_model(tmp_path / "evil", marker)
    # A run whose own model/ (a full fine-tuning) ships code, and a LoRA run whose base does.
    runs = []
    for name, method, base in (("own", "full", None), ("based", "lora", str(evil))):
        model = tmp_path / name / "model"
        if base is None:
            _evil_model(model, marker)
        else:
            model.mkdir(parents=True)
        _task_meta(model)
        task_model = {"format": "scalelab.task_model", "format_version": 2, "method": method,
                      "merged": False, "task_kind": "classification", "model_class": "X",
                      "base_model_path": base, "num_labels": 2, "id2label": {"0": "a", "1": "b"},
                      "label2id": {"a": 0, "b": 1}, "head_modules": ["score"],
                      "extra_modules": [], "method_config": {"method": method}}  # fmt: skip
        (model / "task_model.json").write_text(json.dumps(task_model))
        runs.append((model.parent, model if base is None else evil))
    for run, named in runs:
        for argv in (["evaluate", str(run)], ["infer", str(run), "--input", "-"]):
            monkeypatch.setattr(sys, "stdin", io.StringIO("y\n" * 20))  # as if piped "yes"
            assert main(argv) == 2, argv
            line = _one_line(capsys, "never runs code shipped with a model")
            assert str(named) in line
    assert not marker.exists()


# ---------------------------------------------------------------- 2. study finetune keys


def _tiny_study(root: Path) -> Study:
    argv = ["plan", "--design", "grid", "--sizes", "2e3", "--tokens", "2048", "--min-tokens",
            "1024", "--base.seq-len", "32", "--policy.rule", "fixed", "--policy.batch-tokens",
            "128", "--out", str(root)]  # fmt: skip
    assert main(argv) == 0
    return Study.load(root)


def _spec(**task: object) -> StudyFinetuneConfig:
    ft = rung_finetune_defaults()
    return StudyFinetuneConfig(finetune=ft.replace(task=TaskConfig(**task)))  # type: ignore[arg-type]


def _files(root: Path) -> set[Path]:
    return {p for p in root.rglob("*")}


def test_study_finetune_on_a_file_task_stays_inside_the_study(tmp_path, monkeypatch, capsys):
    study = _tiny_study(tmp_path / "study")
    data = tmp_path / "data"
    data.mkdir()
    (data / "my task.conll").write_text("EU B-ORG\nrejects O\n")
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    before = _files(tmp_path) - _files(study.root)
    specs = [
        _spec(task=str(data / "my task.conll")),
        _spec(task="../data/my task.conll"),
        _spec(train_file=Path("../data/my task.conll")),
    ]
    keys = {s.key for s in specs}
    assert len(keys) == 1  # one resolved file, one directory
    (key,) = keys
    assert (
        key.startswith("my-task-") and key.endswith("__full") and len(key) == len("my-task-") + 14
    )
    for spec in specs:
        finetune_study(study, spec)
    assert _files(tmp_path) - _files(study.root) == before  # nothing next to the data file
    assert (study.root / DOWNSTREAM / key / "spec.yaml").is_file()
    assert downstream_keys(study) == [key]
    capsys.readouterr()


def test_built_in_keys_and_0_1_file_task_directories_are_kept(tmp_path, monkeypatch):
    assert _spec(task="wiki-topics").key == "wiki-topics__full"
    monkeypatch.chdir(tmp_path)
    (tmp_path / "mytask.conll").write_text("EU B-ORG\n")
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "mytask.conll").write_text("EU B-ORG\n")
    downstream = tmp_path / "study" / DOWNSTREAM
    spec = _spec(train_file=Path("mytask.conll"))
    assert spec.key_in(downstream) == spec.key  # nothing there yet
    # 0.1 named the directory after the file's stem: found again for that same file ...
    old = downstream / "mytask__full"
    old.mkdir(parents=True)
    spec.to_yaml(old / "spec.yaml")
    assert spec.key_in(downstream) == "mytask__full"
    assert _spec(task=str(tmp_path / "mytask.conll")).key_in(downstream) == "mytask__full"
    # ... but not for another file of the same stem.
    other = _spec(train_file=Path("other/mytask.conll"))
    assert other.key_in(downstream) == other.key != spec.key


# ---------------------------------------------------------------- 3. output files


def test_output_files_need_an_existing_directory(tmp_path, capsys):
    table = tmp_path / "runs.csv"
    table.write_text("params,tokens,loss\n1,2,3\n")
    missing = tmp_path / "nonexistent" / "dir"
    fit = ["fit", str(table), "--n", "params", "--d", "tokens"]
    cases = [
        ([*fit, "--out", str(missing / "fit.json")], "does not exist; create it first"),
        ([*fit, "--out", str(tmp_path)], "is a directory"),
        (["evaluate", str(tmp_path), "--out", str(missing / "e.json")], "does not exist"),
        (["evaluate", str(tmp_path), "--out", str(tmp_path)], "is a directory"),
        (["infer", str(tmp_path), "--output", str(missing / "o.jsonl")], "does not exist"),
        (["infer", str(tmp_path), "--output", str(tmp_path)], "is a directory"),
    ]
    for argv, needle in cases:
        assert main(argv) == 2, argv
        _one_line(capsys, needle)
    assert not missing.parent.exists()


# ---------------------------------------------------------------- 4. file modes


@pytest.mark.parametrize("method", ["full", "lora"])
def test_every_output_has_the_mode_of_config_yaml(tiny_run, tmp_path, method):
    run = tmp_path / method
    argv = ["finetune", str(run), "--model", str(tiny_run), "--task", "wiki-topics", "--method",
            method, *FT]  # fmt: skip
    assert main(argv) == 0
    for root in (tiny_run, run):
        want = (root / "config.yaml").stat().st_mode & 0o777
        modes = {
            str(p.relative_to(root)): oct(p.stat().st_mode & 0o777)
            for p in root.rglob("*")
            if p.is_file()
        }
        assert {k: v for k, v in modes.items() if v != oct(want)} == {}
        assert any(k.endswith(".safetensors") for k in modes)


# ---------------------------------------------------------------- 5. run directories


def test_a_run_directory_that_is_a_file_is_one_line(tiny_run, tiny_bpe_dataset, tmp_path, capsys):
    afile = tmp_path / "a-file"
    afile.write_text("not a directory\n")
    cases = [
        ["pretrain", str(afile), "--dataset", str(tiny_bpe_dataset), *TINY_PRETRAIN],
        ["pretrain", str(afile / "run"), "--dataset", str(tiny_bpe_dataset), *TINY_PRETRAIN],
        ["finetune", str(afile), "--model", str(tiny_run), "--task", "wiki-topics", *FT],
        ["labelcurve", str(afile), "--finetune.model", str(tiny_run), "--task", "wiki-topics"],
        ["plan", "--design", "grid", "--sizes", "2e3", "--tokens", "2048", "--min-tokens",
         "1024", "--out", str(afile)],
    ]  # fmt: skip
    for argv in cases:
        assert main(argv) == 2, argv
        line = _one_line(capsys, str(afile))
        assert "directory" in line
    assert afile.read_text() == "not a directory\n"


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only directories")
def test_a_read_only_run_directory_is_one_line(tiny_bpe_dataset, tmp_path, capsys):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    try:
        argv = ["pretrain", str(ro), "--dataset", str(tiny_bpe_dataset), *TINY_PRETRAIN]
        assert main(argv) == 2
        _one_line(capsys, "not writable")
    finally:
        ro.chmod(0o755)


# ---------------------------------------------------------------- 6. corrupt run files


@pytest.mark.parametrize(
    ("name", "text", "needle"),
    [
        ("scalelab_task.json", "{not json", "not a readable JSON file"),
        ("scalelab_task.json", "[1, 2]", "expected a JSON object"),
        ("scalelab_task.json", '{"kind": "ner"}', "missing key(s) labels, max_length, task"),
        ("scalelab_task.json", '{"kind": "ner", "labels": ["O"], "max_length": "x", "task": {}}',
         "malformed"),
        ("task_model.json", "{not json", "not a readable JSON file"),
        ("task_model.json", '{"format": "scalelab.task_model", "format_version": 2}',
         "missing key(s) method_config"),
        ("task_model.json", '{"format": "scalelab.task_model", "format_version": "x"}',
         "not a task model this scalelab version can read"),
    ],
)  # fmt: skip
def test_broken_run_files_are_one_line_naming_the_file(tmp_path, capsys, name, text, needle):
    model = tmp_path / "run" / "model"
    model.mkdir(parents=True)
    _task_meta(model)
    (model / "task_model.json").write_text("{}")
    (model / name).write_text(text)
    for argv in (["evaluate", str(model.parent)], ["infer", str(model.parent), "--input", "-"]):
        assert main(argv) == 2, argv
        assert str(model / name) in _one_line(capsys, needle)
