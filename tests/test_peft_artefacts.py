"""Fine-tuned outputs load with Hugging Face / PEFT's own classes, from the user's side.

The PEFT auto classes load a saved directory with no arguments and give the logits of
scalelab's own loader; the directory still loads after it moved (with its base, or alone
given its ``base/`` copy); ``modules_to_save`` names each real module once; bottleneck
adapters describe themselves in ``adapters_config.json``; directories written before
(scalelab 0.1 / 0.2) still load.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from scalelab.errors import UserError
from scalelab.finetune.methods import (
    MethodConfig,
    PrefixSettings,
    PromptSettings,
    apply_method,
    load_base_model,
    load_task_model,
)
from scalelab.finetune.methods.adapter import load_adapters
from scalelab.finetune.methods.peft_common import peft_path

VOCAB = 100
LABELS = {0: "O", 1: "B-PER", 2: "I-PER", 3: "B-LOC", 4: "I-LOC"}
LABEL2ID = {v: k for k, v in LABELS.items()}
NV = 3  # virtual tokens of prefix / prompt tuning


# ====================================================================== helpers


def save_base(directory: Path, arch: str) -> Path:
    """A checkpoint as scalelab's pretraining leaves it (scalelab.models -> save_hf)."""
    from scalelab.models import ModelConfig, build_model
    from scalelab.models.hf import save_hf

    torch.manual_seed(0)
    cfg = ModelConfig(arch=arch, n_layer=1, d_model=32, n_head=2, vocab_size=VOCAB, max_seq_len=32)
    extra = {"pad_token_id": 0} if arch == "llama" else None
    return save_hf(build_model(cfg), directory, extra_config=extra)


def save_masked_lm_base(directory: Path) -> Path:
    """A BERT checkpoint without a pooler: the pooler is a new weight of the classifier."""
    from transformers import BertConfig, BertForMaskedLM

    torch.manual_seed(0)
    cfg = BertConfig(
        vocab_size=VOCAB,
        hidden_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=32,
    )
    BertForMaskedLM(cfg).save_pretrained(directory)
    return directory


def fine_tuned(base: Path, kind: str, method: str):
    """The method on ``base`` with every trained tensor moved off its init (so LoRA's B,
    the adapters' up projections ... are not zero and the head is not the base's)."""
    torch.manual_seed(1)
    model = load_base_model(base, task_kind=kind, num_labels=len(LABELS), id2label=LABELS)
    cfg = MethodConfig(
        method=method,
        prefix=PrefixSettings(num_virtual_tokens=NV),
        prompt=PromptSettings(num_virtual_tokens=NV),
    )
    tm = apply_method(model, cfg, task_kind=kind, total_steps=20)
    g = torch.Generator().manual_seed(2)
    with torch.no_grad():
        for param in tm.parameters():
            if param.requires_grad:
                param.add_(0.1 * torch.randn(param.shape, generator=g))
    return tm.eval()


def batch() -> dict[str, torch.Tensor]:
    """input_ids [3, 7] (id 0 pads; row 1 right-padded) and the attention mask."""
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(1, VOCAB, (3, 7), generator=g)
    mask = torch.ones_like(ids)
    ids[1, 5:] = 0
    mask[1, 5:] = 0
    return {"input_ids": ids, "attention_mask": mask}


def scalelab_logits(tm) -> torch.Tensor:
    with torch.no_grad():
        return tm.eval()(**batch())["logits"]


def hf_logits(model) -> torch.Tensor:
    with torch.no_grad():
        return model.eval()(**batch()).logits


def peft_auto(kind: str):
    import peft

    if kind == "ner":
        return peft.AutoPeftModelForTokenClassification
    return peft.AutoPeftModelForSequenceClassification


def read(path: Path) -> dict:
    return json.loads(path.read_text())


# ====================================================================== PEFT auto classes


def test_lora_ner_loads_with_the_auto_class_and_after_moving(tmp_path, monkeypatch):
    from transformers import AutoModelForTokenClassification

    root = tmp_path / "a"
    save_base(root / "pretrain" / "model", "bert")
    monkeypatch.chdir(root)  # saved and loaded from the project's directory, as the CLI runs
    tm = fine_tuned(Path("pretrain/model"), "ner", "lora")
    expected = scalelab_logits(tm)
    out = tm.save("ft/model")

    config = read(out / "adapter_config.json")
    assert config["base_model_name_or_path"] == "./ft/model/base"
    assert config["modules_to_save"] == ["classifier"]  # once, and only what BERT has
    base_config = read(out / "base" / "config.json")
    assert base_config["id2label"] == {str(k): v for k, v in LABELS.items()}
    assert base_config["label2id"] == LABEL2ID
    assert base_config["architectures"] == ["BertForTokenClassification"]
    meta = read(out / "task_model.json")
    assert meta["label2id"] == LABEL2ID and meta["base_model_relpath"] == "../../pretrain/model"

    own = scalelab_logits(load_task_model(out))
    assert torch.equal(own, expected)
    auto = peft_auto("ner").from_pretrained("ft/model")  # no extra arguments
    assert auto.config.id2label == LABELS and auto.config.num_labels == 5
    assert torch.allclose(hf_logits(auto), own, atol=1e-6)
    # transformers' own PEFT integration reads the same adapter_config.json.
    plain = AutoModelForTokenClassification.from_pretrained("ft/model")
    assert torch.allclose(hf_logits(plain), own, atol=1e-6)

    # The whole tree copied elsewhere, the original gone: loads from the new place.
    moved = tmp_path / "b"
    shutil.copytree(root, moved)
    monkeypatch.chdir(tmp_path)
    shutil.rmtree(root)
    monkeypatch.chdir(moved)
    assert torch.allclose(hf_logits(peft_auto("ner").from_pretrained("ft/model")), own, atol=1e-6)
    # scalelab finds the moved base by the relative path.
    again = load_task_model(moved / "ft" / "model")
    assert again.base_model_path == str((moved / "pretrain" / "model").resolve())
    assert torch.equal(scalelab_logits(again), own)

    # The output alone, the pretraining run deleted: its base/ copy is the base.
    alone = tmp_path / "c" / "lora"
    shutil.copytree(moved / "ft" / "model", alone)
    shutil.rmtree(moved)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(UserError, match=r"base model not found.*holds a copy of it"):
        load_task_model(alone)
    again = load_task_model(alone, base_model_path=alone / "base")
    assert torch.equal(scalelab_logits(again), own)


@pytest.mark.parametrize(
    ("arch", "method", "modules"),
    [
        ("bert", "adalora", ["classifier"]),
        ("bert", "prompt", ["classifier"]),
        ("llama", "prefix", ["score"]),
        ("llama", "lora", ["score"]),
        ("masked-lm", "lora", ["classifier", "bert.pooler.dense"]),  # the new pooler trains too
    ],
)
def test_sequence_classification_loads_with_the_auto_class(
    tmp_path, monkeypatch, arch, method, modules
):
    monkeypatch.chdir(tmp_path)
    base = Path("base-ckpt")
    if arch == "masked-lm":
        save_masked_lm_base(base)
    else:
        save_base(base, arch)
    tm = fine_tuned(base, "classification", method)
    expected = scalelab_logits(tm)
    out = tm.save(Path("runs") / method)
    config = read(out / "adapter_config.json")
    assert config["modules_to_save"] == modules
    assert config["base_model_name_or_path"] == f"./runs/{method}/base"
    assert read(out / "base" / "config.json")["id2label"] == {str(k): v for k, v in LABELS.items()}

    own = scalelab_logits(load_task_model(out))
    assert torch.equal(own, expected)
    auto = peft_auto("classification").from_pretrained(f"runs/{method}")
    assert torch.allclose(hf_logits(auto), own, atol=1e-6)
    assert auto.config.label2id == LABEL2ID


def test_saved_under_a_temporary_name_then_renamed(tmp_path, monkeypatch):
    """As the fine-tuning stage saves (``run/.model.tmp``, completed, renamed to
    ``run/model``): ``location`` writes the paths for the final place."""
    import os

    monkeypatch.chdir(tmp_path)
    save_base(Path("base-ckpt"), "bert")
    tm = fine_tuned(Path("base-ckpt"), "classification", "lora")
    tm.save("run/.model.tmp", location="run/model")
    os.replace("run/.model.tmp", "run/model")
    assert read(Path("run/model/adapter_config.json"))["base_model_name_or_path"] == (
        "./run/model/base"
    )
    own = scalelab_logits(load_task_model("run/model"))
    auto = peft_auto("classification").from_pretrained("run/model")
    assert torch.allclose(hf_logits(auto), own, atol=1e-6)


def test_adalora_ner_on_a_decoder_with_the_auto_class(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    save_base(Path("llama"), "llama")
    tm = fine_tuned(Path("llama"), "ner", "adalora")
    out = tm.save("adalora")
    own = scalelab_logits(load_task_model(out))
    assert torch.allclose(hf_logits(peft_auto("ner").from_pretrained("adalora")), own, atol=1e-6)


def test_peft_path_is_relative_below_the_current_directory_and_never_a_hub_id(
    tmp_path, monkeypatch
):
    from huggingface_hub.errors import HFValidationError
    from huggingface_hub.utils import validate_repo_id

    monkeypatch.chdir(tmp_path)
    assert peft_path(Path("m")) == "./m"
    assert peft_path(tmp_path / "x" / "base") == "./x/base"
    assert peft_path(tmp_path) == "."
    outside = tmp_path.parent / "elsewhere" / "base"
    assert peft_path(outside) == outside.as_posix()
    for path in ("./m", "./x/base", outside.as_posix()):
        with pytest.raises(HFValidationError):
            validate_repo_id(path)


def test_a_saved_peft_directory_from_before_still_loads(tmp_path):
    """What scalelab 0.2 wrote: no base/, an absolute base path, duplicated
    modules_to_save, no base_model_relpath / base_copy in task_model.json."""
    base = save_base(tmp_path / "base", "bert")
    tm = fine_tuned(base, "ner", "lora")
    out = tm.save(tmp_path / "old")
    expected = scalelab_logits(tm)
    shutil.rmtree(out / "base")
    config = read(out / "adapter_config.json")
    config.update(base_model_name_or_path=str(base), modules_to_save=["classifier"] * 2 + ["score"])
    (out / "adapter_config.json").write_text(json.dumps(config))
    meta = read(out / "task_model.json")
    del meta["base_model_relpath"], meta["base_copy"]
    (out / "task_model.json").write_text(json.dumps(meta))
    assert torch.equal(scalelab_logits(load_task_model(out)), expected)


# ====================================================================== bottleneck adapters


def test_bottleneck_adapters_describe_themselves_and_load(tmp_path):
    from safetensors.torch import load_file

    from scalelab.utils.env import package_version

    base = save_base(tmp_path / "pretrain", "bert")
    tm = fine_tuned(base, "ner", "adapter")
    expected = scalelab_logits(tm)
    out = tm.save(tmp_path / "ft" / "adapter")
    config = read(out / "adapters_config.json")
    assert config["format"] == "scalelab.bottleneck_adapters" and config["method"] == "adapter"
    assert config["scalelab_version"] == package_version("scalelab")
    assert config["base_model_path"] == str(base.resolve())
    assert config["base_model_relpath"] == "../../pretrain"
    assert config["model_class"] == "BertForTokenClassification" and config["task_kind"] == "ner"
    assert config["id2label"] == {str(k): v for k, v in LABELS.items()}
    assert config["label2id"] == LABEL2ID and config["num_labels"] == 5
    spec = tm.impl.spec
    assert (config["placement"], config["bottleneck"], config["activation"]) == (
        "houlsby", 32 // 16, "relu",
    )  # fmt: skip
    assert config["modules"] == list(spec.modules) and len(spec.modules) == 2  # 1 layer
    assert config["train_norms"] is True and config["head_modules"] == ["classifier"]
    weights = load_file(str(out / config["weights"]))
    params = dict(tm.model.named_parameters())
    assert set(weights) == {n for n, p in params.items() if p.requires_grad}
    assert all(torch.equal(weights[n], params[n]) for n in weights)

    assert torch.equal(scalelab_logits(load_task_model(out)), expected)
    # On a transformers model the caller loaded (the way PeftModel.from_pretrained works).
    from transformers import AutoModelForTokenClassification

    model = AutoModelForTokenClassification.from_pretrained(
        base, num_labels=5, id2label=LABELS, label2id=LABEL2ID
    )
    load_adapters(model, out)
    assert torch.allclose(hf_logits(model), expected, atol=1e-6)
    assert not any(p.requires_grad for p in model.parameters())
    wrong = AutoModelForTokenClassification.from_pretrained(base, num_labels=2)
    with pytest.raises(UserError, match="saved with 5 labels"):
        load_adapters(wrong, out)

    # Moved together with its base: found by the relative path.
    shutil.move(tmp_path / "ft", tmp_path / "moved" / "ft")
    shutil.move(tmp_path / "pretrain", tmp_path / "moved" / "pretrain")
    assert torch.equal(scalelab_logits(load_task_model(tmp_path / "moved/ft/adapter")), expected)


def test_a_bottleneck_directory_from_before_still_loads(tmp_path):
    """What scalelab 0.1 / 0.2 wrote: adapters.safetensors, the spec in task_model.json."""
    base = save_base(tmp_path / "base", "llama")
    tm = fine_tuned(base, "classification", "adapter")
    expected = scalelab_logits(tm)
    out = tm.save(tmp_path / "old")
    (out / "adapters_config.json").unlink()
    meta = read(out / "task_model.json")
    for key in ("adapter_config", "base_model_relpath"):
        del meta[key]
    (out / "task_model.json").write_text(json.dumps(meta))
    assert torch.equal(scalelab_logits(load_task_model(out)), expected)
    with pytest.raises(UserError, match="no adapters_config.json"):
        load_adapters(tm.hf_model, out)
