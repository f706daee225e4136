"""``scalelab finetune`` / ``evaluate`` / ``predict`` end to end on tiny pretrained models,
and ``pretrain --arch bert`` (masked LM + NSP) feeding them."""

from __future__ import annotations

import json

import pytest
from tests.conftest import TINY_PRETRAIN

from scalelab.cli import main
from scalelab.utils.io import read_json

FT = ["--task.max-examples", "40", "--task.drop-unseen-labels", "--epochs", "1", "--max-length", "32", "--batch-size", "8",
      "--runtime.precision", "fp32", "--no-runtime.progress", "--no-runtime.tensorboard",
      "--runtime.threads", "1"]  # fmt: skip


@pytest.fixture(scope="module")
def tiny_bert(tmp_path_factory, tiny_wordpiece_dataset):
    run = tmp_path_factory.mktemp("bert") / "run"
    args = [
        "pretrain",
        str(run),
        "--arch",
        "bert",
        "--dataset",
        str(tiny_wordpiece_dataset),
        *TINY_PRETRAIN,
    ]
    assert main(args) == 0
    return run


@pytest.fixture(scope="module")
def tiny_llama(tmp_path_factory, tiny_bpe_dataset):
    run = tmp_path_factory.mktemp("llama") / "run"
    assert main(["pretrain", str(run), "--dataset", str(tiny_bpe_dataset), *TINY_PRETRAIN]) == 0
    return run


def test_bert_pretraining_records_mlm_and_nsp(tiny_bert):
    s = read_json(tiny_bert / "summary.json")
    assert s["status"] == "completed" and s["arch"] == "bert"
    cfg = read_json(tiny_bert / "model" / "config.json")
    assert cfg["architectures"] == ["BertForPreTraining"]
    train = [json.loads(line) for line in (tiny_bert / "metrics.jsonl").read_text().splitlines()]
    last = [r for r in train if r["type"] == "train"][-1]
    assert {"mlm_loss", "nsp_loss"} <= set(last)
    assert s["final_val_loss"] < 6.3  # masked-LM loss below ln(512): it learned


def test_finetune_ner_lora_then_evaluate_and_predict(tiny_bert, tmp_path, capsys):
    run = tmp_path / "ner"
    assert (
        main(
            [
                "finetune",
                str(run),
                "--model",
                str(tiny_bert),
                "--task",
                "twitter-ner",
                "--method",
                "lora",
                *FT,
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert "trainable of" in out and "best dev f1" in out
    s = read_json(run / "summary.json")
    assert s["status"] == "completed" and s["method"] == "lora" and 0 < s["params"]["percent"] < 100
    assert {"f1", "precision", "recall", "f1_strict"} <= set(s["test"])
    ev = read_json(run / "eval_test.json")
    assert {"conlleval", "strict", "tokens"} <= set(ev)
    assert (run / "model" / "adapter_config.json").is_file() and (
        run / "model" / "tokenizer.json"
    ).is_file()

    assert main(["evaluate", str(run), "--split", "test", "--perturb", "casing,entity-swap"]) == 0
    text = capsys.readouterr().out
    assert "robustness (f1" in text and "entity-swap" in text
    rob = read_json(run / "eval_test.json")["robustness"]
    assert [r["perturbation"] for r in rob["rows"]] == ["lower", "upper", "entity-swap"]

    src = tmp_path / "in.txt"
    src.write_text("Obama visits Paris today\n@bob loves New York\n")
    assert (
        main(["predict", str(run), "--input", str(src), "--output", str(tmp_path / "out.jsonl")])
        == 0
    )
    rows = [json.loads(line) for line in (tmp_path / "out.jsonl").read_text().splitlines()]
    assert [r["tokens"] for r in rows] == [
        ["Obama", "visits", "Paris", "today"],
        ["@bob", "loves", "New", "York"],
    ]
    assert all(len(r["tags"]) == len(r["tokens"]) for r in rows)
    _loads_with_the_peft_auto_class(run / "model")


def _loads_with_the_peft_auto_class(model_dir):
    """What the CLI saved loads with PEFT's own auto class, no arguments, same logits."""
    import torch
    from peft import AutoPeftModelForTokenClassification

    from scalelab.finetune.methods import load_task_model

    theirs = AutoPeftModelForTokenClassification.from_pretrained(str(model_dir)).eval()
    ours = load_task_model(model_dir)
    ours.model.eval()
    ids = torch.tensor([[2, 17, 40, 99, 3]])
    with torch.no_grad():
        a = theirs(input_ids=ids).logits
        b = ours.model(input_ids=ids).logits
    assert a.shape[-1] == len(read_json(model_dir / "scalelab_task.json")["labels"])
    assert torch.allclose(a, b, atol=1e-5)


@pytest.mark.parametrize("method", ["full", "prompt", "adapter"])
def test_finetune_classification_on_a_decoder(tiny_llama, tmp_path, method):
    run = tmp_path / method
    args = [
        "finetune",
        str(run),
        "--model",
        str(tiny_llama),
        "--task",
        "movie-sentiment",
        "--method",
        method,
        *FT,
    ]
    assert main(args) == 0
    s = read_json(run / "summary.json")
    assert s["task_kind"] == "classification" and 0 <= s["test"]["accuracy"] <= 1
    # Rerunning a finished run is a no-op that keeps the result.
    assert main(args) == 0
    assert read_json(run / "summary.json")["test"] == s["test"]


def test_finetune_bad_inputs_are_one_line(tmp_path, tiny_llama, capsys):
    cases = [
        (
            ["finetune", str(tmp_path / "a"), "--model", str(tmp_path), "--task", "twitter-ner"],
            "no config.json",
        ),
        (["finetune", str(tmp_path / "b"), "--model", str(tiny_llama), "--task", "nope"], "nope"),
        (["finetune", str(tmp_path / "c"), "--model", str(tiny_llama)], "give a task"),
        (["evaluate", str(tmp_path)], "not a finished `scalelab finetune` run"),
    ]
    for argv, needle in cases:
        assert main(argv) == 2, argv
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and needle in err[0], err
