"""A pretraining run's ``model/`` as plain Transformers sees it: special ids, generate, batches."""

from __future__ import annotations

import json

import pytest
import torch
from tests.conftest import TINY_PRETRAIN

from scalelab.cli import main


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory, tiny_bpe_dataset):
    run = tmp_path_factory.mktemp("export") / "run"
    assert main(["pretrain", str(run), "--dataset", str(tiny_bpe_dataset), *TINY_PRETRAIN]) == 0
    return run


def test_final_model_carries_the_special_token_ids(tiny_run):
    final = json.loads((tiny_run / "model" / "config.json").read_text())
    ckpts = sorted((tiny_run / "checkpoints").glob("step-*"))
    ckpt = json.loads((ckpts[-1] / "config.json").read_text())
    for key in ("bos_token_id", "eos_token_id", "pad_token_id"):
        assert final[key] is not None, key
        assert final[key] == ckpt[key], key


def test_generate_stops_at_eos(tiny_run):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(tiny_run / "model")
    tok = AutoTokenizer.from_pretrained(tiny_run / "model")
    eos = model.config.eos_token_id
    assert model.generation_config.eos_token_id == eos
    ids = tok("To be, or not", return_tensors="pt").input_ids
    # Make eos the only likely next token: generation must stop right after emitting it.
    with torch.no_grad():
        head = model.get_output_embeddings()
        head.weight.zero_()
        head.weight[eos] = 1.0
        if getattr(head, "bias", None) is not None:
            head.bias.zero_()
    out = model.generate(ids, max_new_tokens=20, do_sample=False)
    new = out[0, ids.shape[1] :].tolist()
    assert new == [eos]


def test_batched_sequence_classification_loads_and_runs(tiny_run):
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    model = AutoModelForSequenceClassification.from_pretrained(tiny_run / "model", num_labels=3)
    tok = AutoTokenizer.from_pretrained(tiny_run / "model")
    assert model.config.pad_token_id is not None
    if tok.pad_token is None:
        tok.pad_token_id = model.config.pad_token_id
    batch = tok(
        ["a short one", "a rather longer second sentence here"], padding=True, return_tensors="pt"
    )
    with torch.no_grad():
        logits = model(**batch).logits
    assert logits.shape == (2, 3) and torch.isfinite(logits).all()
