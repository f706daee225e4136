"""Fine-tuning methods on tiny BERT / Llama checkpoints: every method x arch x task kind."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from scalelab.config import Config, alias_targets, plain
from scalelab.errors import UserError
from scalelab.finetune.methods import (
    METHODS,
    AdaLoraSettings,
    LoraSettings,
    MethodConfig,
    PrefixSettings,
    PromptSettings,
    apply_method,
    load_base_model,
    load_task_model,
)

VOCAB, HIDDEN, LAYERS, HEADS, KV_HEADS, FFN, MAX_POS = 100, 32, 2, 4, 2, 64, 64
LABELS = {0: "O", 1: "B-X", 2: "I-X"}
B, T, NV = 3, 7, 3  # batch, tokens, virtual tokens
ARCHS = ("bert", "llama")
KINDS = ("ner", "classification")


# ====================================================================== helpers


@pytest.fixture(scope="module")
def bases(tmp_path_factory) -> dict[str, Path]:
    """A BertForPreTraining and a LlamaForCausalLM checkpoint, as pretraining leaves them."""
    from transformers import BertConfig, BertForPreTraining, LlamaConfig, LlamaForCausalLM

    root = tmp_path_factory.mktemp("bases")
    torch.manual_seed(0)
    bert = BertForPreTraining(
        BertConfig(
            vocab_size=VOCAB,
            hidden_size=HIDDEN,
            num_hidden_layers=LAYERS,
            num_attention_heads=HEADS,
            intermediate_size=FFN,
            max_position_embeddings=MAX_POS,
        )
    )
    llama = LlamaForCausalLM(
        LlamaConfig(
            vocab_size=VOCAB,
            hidden_size=HIDDEN,
            num_hidden_layers=LAYERS,
            num_attention_heads=HEADS,
            num_key_value_heads=KV_HEADS,
            intermediate_size=FFN,
            max_position_embeddings=MAX_POS,
            pad_token_id=0,
        )
    )
    paths = {"bert": root / "bert", "llama": root / "llama"}
    bert.save_pretrained(paths["bert"])
    llama.save_pretrained(paths["llama"])
    return paths


def make_batch(kind: str, *, seed: int = 0, batch: int = B, pad_row: bool = True) -> dict:
    """input_ids [B, T] (id 0 pads; row 1 right-padded), masks, token types, labels."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(1, VOCAB, (batch, T), generator=g)
    mask = torch.ones(batch, T, dtype=torch.long)
    if pad_row:
        ids[1, 5:] = 0
        mask[1, 5:] = 0
    if kind == "ner":
        labels = torch.randint(0, 3, (batch, T), generator=g)
        labels[mask == 0] = -100
    else:
        labels = torch.randint(0, 3, (batch,), generator=g)
    return {
        "input_ids": ids,
        "attention_mask": mask,
        "token_type_ids": torch.zeros_like(ids),
        "labels": labels,
    }


def build(bases, arch: str, kind: str, method: str, *, total_steps: int = 40, **cfg):
    torch.manual_seed(1)
    base = load_base_model(bases[arch], task_kind=kind, num_labels=3, id2label=LABELS)
    config = MethodConfig(
        method=method,
        prefix=PrefixSettings(num_virtual_tokens=NV),
        prompt=PromptSettings(num_virtual_tokens=NV),
        **cfg,
    )
    return apply_method(base, config, task_kind=kind, total_steps=total_steps)


def train(model, kind: str, steps: int, *, lr: float = 1e-2, on_step=None, batches=None):
    """AdamW steps through the shared training step (scalelab.train.step); returns losses."""
    from scalelab.train.step import make_optimizer, train_step

    model.train()
    opt = make_optimizer(model, lr=lr, weight_decay=0.0)
    losses = []
    for step in range(1, steps + 1):
        b = batches[step % len(batches)] if batches else make_batch(kind, seed=step % 4)
        metrics, _ = train_step(model, [b], opt, precision="fp32")
        losses.append(metrics["loss"])
        if on_step is not None:
            on_step(step)
    return losses


def logits(model, kind: str, seed: int = 0) -> torch.Tensor:
    model.eval()
    batch = make_batch(kind, seed=seed)
    batch.pop("labels")
    with torch.no_grad():
        return model(**batch)["logits"]


# The trained head; PEFT keeps a frozen copy of the original head as "original_module".
_HEAD = re.compile(r"\.(classifier|score)\.(?!original_module\.)")
_INTENDED = {
    "full": lambda n: True,
    "lora": lambda n: "lora_A" in n or "lora_B" in n,
    "adalora": lambda n: re.search(r"lora_[ABE]\b", n) is not None,
    "prefix": lambda n: "prompt_encoder" in n,
    "prompt": lambda n: "prompt_encoder" in n,
    "adapter": lambda n: ".adapter." in n or re.search(r"(LayerNorm|layernorm|\.norm\.)", n),
}


# ====================================================================== every method


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("method", METHODS)
def test_forward_backward_trains_only_intended_parameters(bases, method, arch, kind):
    tm = build(bases, arch, kind, method)
    tm.train()
    batch = make_batch(kind)
    out = tm(**batch)
    assert out["loss"].dim() == 0 and torch.isfinite(out["loss"])
    # Logits aligned with the input tokens, also when prompt tuning prepends NV positions.
    assert out["logits"].shape == ((B, T, 3) if kind == "ner" else (B, 3))
    out["loss"].backward()

    intended = _INTENDED[method]
    method_grad = 0.0
    for name, param in tm.named_parameters():
        wanted = bool(intended(name) or _HEAD.search(name))
        assert param.requires_grad == wanted, name
        assert (param.grad is not None) == wanted, name
        if wanted and not _HEAD.search(name):
            method_grad += float(param.grad.abs().sum())
    assert method_grad > 0  # the method's own parameters receive a gradient

    report = tm.parameter_report()
    assert report["trainable"] == tm.trainable_parameters() > 0
    assert report["percent"] == pytest.approx(100 * report["trainable"] / report["total"], abs=1e-3)
    assert (report["percent"] == 100.0) == (method == "full")


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("method", METHODS)
def test_save_load_gives_identical_outputs(bases, tmp_path, method, arch, kind):
    tm = build(bases, arch, kind, method, total_steps=40)
    train(tm, kind, 2, on_step=tm.on_step_end)  # so LoRA's B, adapters' up ... are not zero
    before = logits(tm, kind)
    out = tm.save(tmp_path / "saved")
    files = {p.name for p in out.iterdir()}
    assert "task_model.json" in files
    expected = {
        "full": {"config.json", "model.safetensors"},
        "adapter": {"adapters.safetensors"},
    }.get(method, {"adapter_config.json", "adapter_model.safetensors"})
    assert expected <= files, files
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp leftovers

    again = load_task_model(out)
    assert torch.equal(logits(again, kind), before)
    assert not again.training and again.trainable_parameters() == 0
    # Reloaded to continue training: the same trainable tensors in the same order (so an
    # optimizer state saved by the loop fits).
    resumed = load_task_model(out, trainable=True)

    def trainable(m):
        return [(n, tuple(p.shape)) for n, p in m.named_parameters() if p.requires_grad]

    assert trainable(resumed) == trainable(tm)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("method", ("prefix", "prompt", "lora", "adapter"))
def test_padding_does_not_change_real_positions(bases, method, arch, kind):
    """Row 1 padded to T gives the same outputs as row 1 alone, unpadded: the prompt
    methods' attention masks and (prompt + Llama classification) last-token pooling."""
    tm = build(bases, arch, kind, method).eval()
    batch = make_batch(kind)
    alone = {k: v[1:2, :5] for k, v in batch.items() if k != "labels"}
    batch.pop("labels")
    with torch.no_grad():
        padded = tm(**batch)["logits"][1]
        single = tm(**alone)["logits"][0]
    if kind == "ner":
        padded = padded[:5]
    torch.testing.assert_close(padded, single, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("arch", ARCHS)
def test_prompt_ner_pads_labels_and_drops_virtual_positions(bases, arch):
    tm = build(bases, arch, "ner", "prompt").eval()
    batch = make_batch("ner")
    out = tm(**batch)
    assert out["logits"].shape == (B, T, 3)
    with torch.no_grad():
        raw = tm.model(
            input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]
        ).logits  # [B, NV+T, C]
    assert raw.shape == (B, NV + T, 3)
    assert torch.equal(out["logits"], raw[:, NV:])
    expected = F.cross_entropy(out["logits"].reshape(-1, 3), batch["labels"].reshape(-1))
    torch.testing.assert_close(out["loss"], expected)
    assert tm.max_input_tokens == MAX_POS - NV


def _lora_hand_count(arch: str, r: int) -> int:
    """r * (fan_in + fan_out) for every default target, over all layers."""
    h, i = HIDDEN, FFN
    if arch == "bert":  # query, key, value, attention.output.dense, intermediate, output
        shapes = [(h, h)] * 4 + [(h, i), (i, h)]
    else:  # q, k, v, o, gate, up, down with grouped K/V heads
        kv = KV_HEADS * (HIDDEN // HEADS)
        shapes = [(h, h), (h, kv), (h, kv), (h, h), (h, i), (h, i), (i, h)]
    return LAYERS * sum(r * (a + b) for a, b in shapes)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("arch", ARCHS)
def test_lora_trainable_count_matches_hand_count(bases, arch, kind):
    base = load_base_model(bases[arch], task_kind=kind, num_labels=3)
    base_total = sum(p.numel() for p in base.parameters())
    head = 3 * HIDDEN + (0 if (arch, kind) == ("llama", "classification") else 3)
    tm = apply_method(
        base, MethodConfig(method="lora", lora=LoraSettings(r=4)), task_kind=kind, total_steps=1
    )
    lora = _lora_hand_count(arch, 4)
    report = tm.parameter_report()
    assert report["trainable"] == lora + head
    assert report["head"] == head and report["method_params"] == lora
    assert report["total"] == base_total + lora  # the head counted once


@pytest.mark.parametrize("arch", ARCHS)
def test_merged_lora_matches_unmerged(bases, tmp_path, arch):
    tm = build(bases, arch, "ner", "lora")
    train(tm, "ner", 5)
    lora_b = [p for n, p in tm.named_parameters() if "lora_B" in n]
    assert lora_b and all(float(p.detach().abs().max()) > 0 for p in lora_b)
    before = logits(tm, "ner")
    tm.merge()
    assert not [n for n, _ in tm.named_parameters() if "lora_" in n]
    torch.testing.assert_close(logits(tm, "ner"), before, atol=1e-5, rtol=1e-5)
    saved = tm.save(tmp_path / "merged")
    assert (saved / "model.safetensors").is_file()
    torch.testing.assert_close(logits(load_task_model(saved), "ner"), before, atol=1e-5, rtol=1e-5)


def test_adalora_reallocates_ranks_over_the_schedule(bases, tmp_path):
    total = 20  # tinit 2, tfinal 4, deltaT 1 by default
    tm = build(bases, "bert", "ner", "adalora", total_steps=total)
    init_r, target_r = tm.method_config.adalora.init_r, tm.method_config.adalora.target_r
    assert tm.rank_pattern() is None
    # on_step_end runs after the training step has cleared the gradients, as in the loop.
    losses = []
    train(tm, "ner", total, on_step=lambda s: losses.append(tm.on_step_end(s)))
    pattern = tm.rank_pattern()
    assert pattern, "no rank allocation happened"
    kept = {name: sum(mask) for name, mask in pattern.items()}
    n_matrices = LAYERS * 6
    assert len(kept) == n_matrices
    assert sum(kept.values()) == target_r * n_matrices < init_r * n_matrices
    zero_e = sum(int((p == 0).sum()) for n, p in tm.named_parameters() if "lora_E" in n)
    assert zero_e == init_r * n_matrices - sum(kept.values())  # pruned triplets are masked
    before = logits(tm, "ner")
    again = load_task_model(tm.save(tmp_path / "ada"))
    torch.testing.assert_close(logits(again, "ner"), before, atol=1e-6, rtol=1e-6)


def test_adalora_eval_loss_excludes_orthogonality_penalty(bases):
    tm = build(bases, "llama", "classification", "adalora")
    batch = make_batch("classification")
    tm.train()
    train_out = tm(**batch)
    assert float(train_out["loss"].detach()) > float(
        train_out["task_loss"].detach()
    )  # penalty added
    tm.eval()
    eval_out = tm(**batch)
    torch.testing.assert_close(eval_out["loss"], eval_out["task_loss"])
    torch.testing.assert_close(
        eval_out["loss"], F.cross_entropy(eval_out["logits"], batch["labels"])
    )


def test_lora_reduces_loss_on_a_separable_toy_task(bases):
    tm = build(bases, "bert", "ner", "lora")
    g = torch.Generator().manual_seed(3)
    batches = []
    for _ in range(4):
        ids = torch.randint(1, 7, (8, T), generator=g)  # six tokens: label = id % 3
        batches.append(
            {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": ids % 3}
        )
    losses = train(tm, "ner", 40, lr=2e-2, batches=batches)
    assert losses[-1] < 0.5 * losses[0], losses


def test_missing_backbone_weights_train_and_are_saved(tmp_path):
    """A checkpoint without a pooler, loaded as a sequence classifier: the fresh pooler
    trains with the head and reloads identically."""
    from transformers import BertConfig, BertModel

    torch.manual_seed(0)
    cfg = BertConfig(
        vocab_size=VOCAB,
        hidden_size=HIDDEN,
        num_hidden_layers=LAYERS,
        num_attention_heads=HEADS,
        intermediate_size=FFN,
        max_position_embeddings=MAX_POS,
    )
    BertModel(cfg, add_pooling_layer=False).save_pretrained(tmp_path / "nopool")
    for method in ("lora", "adapter"):
        torch.manual_seed(5)
        base = load_base_model(tmp_path / "nopool", task_kind="classification", num_labels=3)
        assert base.scalelab_new_weights == ["bert.pooler.dense.bias", "bert.pooler.dense.weight"]
        tm = apply_method(
            base, MethodConfig(method=method), task_kind="classification", total_steps=5
        )
        assert tm.extra_modules == ("bert.pooler.dense",)
        pooler = [p for n, p in tm.named_parameters() if "pooler" in n and p.requires_grad]
        assert pooler
        train(tm, "classification", 2)
        before = logits(tm, "classification")
        torch.manual_seed(99)  # a reload must not depend on the random init of the pooler
        again = load_task_model(tm.save(tmp_path / method))
        assert torch.equal(logits(again, "classification"), before)


# ====================================================================== bad input


def test_prefix_on_a_model_without_kv_cache_is_a_user_error():
    from transformers import DistilBertConfig, DistilBertForTokenClassification

    model = DistilBertForTokenClassification(
        DistilBertConfig(
            vocab_size=VOCAB, dim=HIDDEN, n_layers=2, n_heads=4, hidden_dim=FFN, num_labels=3
        )
    )
    with pytest.raises(UserError, match=r"past_key_values.*lora, adalora, prompt, adapter"):
        apply_method(model, MethodConfig(method="prefix"), task_kind="ner", total_steps=10)
    # The methods the message names do work on it.
    tm = apply_method(model, MethodConfig(method="lora"), task_kind="ner", total_steps=10)
    assert tm(**make_batch("ner"))["logits"].shape == (B, T, 3)


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"lora": {"r": 0}}, "lora.r must be at least 1"),
        ({"lora": {"dropout": 1.0}}, "lora.dropout"),
        ({"adalora": {"init_r": 4, "target_r": 8}}, "must not exceed"),
        ({"prefix": {"num_virtual_tokens": 0}}, "num_virtual_tokens"),
        ({"prompt": {"num_virtual_tokens": 0}}, "num_virtual_tokens"),
        ({"adapter": {"size": 0}}, "adapter.size"),
        ({"adalora": {"beta1": 1.0}}, "adalora.beta1"),
        # The old flat names reach the same checks.
        ({"lora_r": 0}, "lora.r must be at least 1"),
        ({"num_virtual_tokens": 0}, "num_virtual_tokens"),
    ],
)
def test_method_config_rejects_bad_values(changes, message):
    with pytest.raises(UserError, match=message):
        MethodConfig.from_dict(changes)


def test_method_config_from_text():
    cfg = MethodConfig.from_dict(
        {"method": "lora", "lora_target_modules": "query,value", "adapter_size": "none"}
    )
    assert cfg.method == "lora" and cfg.lora.target_modules == ("query", "value")
    assert cfg.adapter.size is None
    nested = {
        "method": "lora",
        "lora": {"target_modules": "query,value"},
        "adapter": {"size": "none"},
    }
    assert MethodConfig.from_dict(nested) == cfg
    with pytest.raises(UserError, match="method"):
        MethodConfig.from_dict({"method": "ia3"})
    assert cfg.adalora.schedule(1000) == (100, 200, 10)
    with pytest.raises(UserError, match="no budget-pruning phase"):
        AdaLoraSettings(tinit=5, tfinal=5).schedule(10)


def test_unknown_lora_target_is_a_user_error(bases):
    base = load_base_model(bases["bert"], task_kind="ner", num_labels=3)
    cfg = MethodConfig(method="lora", lora=LoraSettings(target_modules=("q_proj",)))
    with pytest.raises(UserError, match="q_proj.*defaults for this model: query"):
        apply_method(base, cfg, task_kind="ner", total_steps=1)


def test_merge_of_a_non_lora_method_is_a_user_error(bases):
    with pytest.raises(UserError, match="only meaningful for lora"):
        build(bases, "bert", "ner", "adapter").merge()


def test_decoder_classifier_without_pad_token_is_a_user_error(bases):
    base = load_base_model(bases["llama"], task_kind="classification", num_labels=3)
    base.config.pad_token_id = None
    with pytest.raises(UserError, match="pad_token_id"):
        apply_method(base, MethodConfig(), task_kind="classification", total_steps=1)


def test_bad_directories_are_user_errors(bases, tmp_path):
    with pytest.raises(UserError, match="not found"):
        load_base_model(tmp_path / "nope", task_kind="ner", num_labels=2)
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="no config.json"):
        load_base_model(tmp_path / "empty", task_kind="ner", num_labels=2)
    with pytest.raises(UserError, match="no task_model.json"):
        load_task_model(tmp_path / "empty")


def test_moved_base_model_needs_base_model_path(bases, tmp_path):
    import shutil

    moved = tmp_path / "base"
    shutil.copytree(bases["bert"], moved)
    torch.manual_seed(1)
    base = load_base_model(moved, task_kind="ner", num_labels=3)
    tm = apply_method(base, MethodConfig(method="lora"), task_kind="ner", total_steps=1)
    before = logits(tm, "ner")
    saved = tm.save(tmp_path / "lora")
    shutil.move(moved, tmp_path / "elsewhere")
    with pytest.raises(UserError, match="base model not found"):
        load_task_model(saved)
    again = load_task_model(saved, base_model_path=tmp_path / "elsewhere")
    assert torch.equal(logits(again, "ner"), before)


def test_failed_save_leaves_nothing_behind(bases, tmp_path, monkeypatch):
    tm = build(bases, "bert", "ner", "lora")

    def broken(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(type(tm.model), "save_pretrained", broken)
    with pytest.raises(OSError, match="disk full"):
        tm.save(tmp_path / "out")
    assert list(tmp_path.iterdir()) == []


# ====================================================================== the method config

# model/task_model.json's "method_config" as the flat MethodConfig of scalelab before the
# per-method sections wrote it (saved run directories and config.yaml files hold these).
FLAT_METHOD_CONFIG = {
    "method": "lora", "lora_r": 4, "lora_alpha": 16.0, "lora_dropout": 0.0, "lora_target_modules": [],
    "adalora_init_r": 12, "adalora_target_r": 8, "adalora_tinit": None, "adalora_tfinal": None,
    "adalora_delta_t": None, "adalora_beta1": 0.85, "adalora_beta2": 0.85,
    "adalora_orth_reg_weight": 0.5, "num_virtual_tokens": 3, "prefix_projection": False,
    "prompt_init": "vocab", "adapter_placement": "houlsby", "adapter_size": 6,
    "adapter_reduction": 16, "adapter_activation": "relu", "adapter_train_norms": True,
}  # fmt: skip


def test_flat_method_config_loads_with_the_same_values():
    cfg = MethodConfig.from_dict(FLAT_METHOD_CONFIG)
    assert set(FLAT_METHOD_CONFIG) == {"method", *MethodConfig.renamed}
    for old, value in FLAT_METHOD_CONFIG.items():
        for target in alias_targets(MethodConfig, old) or (old,):
            node = cfg
            for part in target.split("."):
                node = getattr(node, part)
            assert plain(node) == value, (old, target)
    nested = cfg.to_dict()
    assert nested["lora"] == {"r": 4, "alpha": 16.0, "dropout": 0.0, "target_modules": []}
    assert nested["prefix"]["num_virtual_tokens"] == nested["prompt"]["num_virtual_tokens"] == 3
    assert MethodConfig.from_dict(nested) == cfg  # the nested form round-trips
    assert MethodConfig.from_dict({"method": "lora", "lora_r": 4}).lora.r == 4
    # The new spelling wins over the old one when both are given.
    assert MethodConfig.from_dict({"lora_r": 4, "lora": {"r": 2}}).lora.r == 2


def test_flat_names_work_as_overrides_also_nested():
    cfg = MethodConfig().with_overrides(["lora_r=16", "lora_dropout=0", "num_virtual_tokens=5"])
    assert (cfg.lora.r, cfg.lora.dropout) == (16, 0.0)
    assert cfg.prefix.num_virtual_tokens == cfg.prompt.num_virtual_tokens == 5

    @dataclass(kw_only=True)
    class Stage(Config):
        method: MethodConfig = field(default_factory=MethodConfig)

    stage = Stage().with_overrides({"method.adapter_size": 8, "method.method": "adapter"})
    assert stage.method.adapter.size == 8
    assert Stage.from_dict({"method": {"adapter_size": 8}}).method.adapter.size == 8


def test_flat_attribute_reads_are_deprecated_but_work():
    cfg = MethodConfig(method="prompt", lora=LoraSettings(r=4))
    with pytest.warns(DeprecationWarning, match=r"lora_r is deprecated; use MethodConfig\.lora\.r"):
        assert cfg.lora_r == 4
    # A name that moved to several sections reads the active method's.
    prompt = MethodConfig(method="prompt", prompt=PromptSettings(num_virtual_tokens=5))
    with pytest.warns(DeprecationWarning, match="prompt.num_virtual_tokens"):
        assert prompt.num_virtual_tokens == 5
    with pytest.raises(AttributeError, match="lora_rank"):
        cfg.lora_rank  # noqa: B018


def test_reserved_positions_by_method():
    n = {m: MethodConfig(method=m).reserved_positions() for m in METHODS}
    assert n == {"full": 0, "lora": 0, "adalora": 0, "prefix": 20, "prompt": 20, "adapter": 0}


@pytest.mark.parametrize("method", ("lora", "adapter"))
def test_directory_with_a_flat_method_config_still_loads(bases, tmp_path, method):
    """A model saved before the per-method sections (task_model.json format 1, flat
    method_config) reloads with the same outputs."""
    flat = {**FLAT_METHOD_CONFIG, "method": method}
    torch.manual_seed(1)
    base = load_base_model(bases["bert"], task_kind="ner", num_labels=3, id2label=LABELS)
    tm = apply_method(base, MethodConfig.from_dict(flat), task_kind="ner", total_steps=4)
    train(tm, "ner", 2)
    before = logits(tm, "ner")
    saved = tm.save(tmp_path / method)
    meta_path = saved / "task_model.json"
    meta = json.loads(meta_path.read_text())
    assert meta["format_version"] == 2 and meta["method_config"]["lora"]["r"] == 4
    meta["method_config"] = flat  # what scalelab 0.1 wrote
    meta["format_version"] = 1
    meta_path.write_text(json.dumps(meta))
    again = load_task_model(saved)
    assert again.method_config == tm.method_config
    assert torch.equal(logits(again, "ner"), before)


# ====================================================================== the registry


def test_registering_a_method_is_enough_to_use_it(bases, tmp_path):
    """BitFit (Ben Zaken et al. 2022: only the bias terms train), registered here, outside
    the package: applied, trained, saved and reloaded like a built-in method."""
    from scalelab.finetune.methods import REGISTRY, FinetuneMethod, register
    from scalelab.finetune.methods.base import in_modules

    class BitFit(FinetuneMethod):
        saves_full_model = True

        def mark_trainable(self, model, trained):
            for name, param in model.named_parameters():
                param.requires_grad_(name.endswith(".bias") or in_modules(name, trained))

    register("bitfit")(BitFit)
    try:
        with pytest.raises(ValueError, match="already registered"):
            register("bitfit")(type("Other", (FinetuneMethod,), {}))
        tm = build(bases, "bert", "ner", "bitfit")
        trainable = [n for n, p in tm.model.named_parameters() if p.requires_grad]
        assert {"classifier.weight", "bert.encoder.layer.0.output.dense.bias"} <= set(trainable)
        assert all(n.endswith(".bias") or n.startswith("classifier.") for n in trainable)
        frozen = {n: p.detach().clone() for n, p in tm.named_parameters() if not p.requires_grad}
        biases = {n: p.detach().clone() for n, p in tm.named_parameters() if n.endswith(".bias")}
        train(tm, "ner", 2)
        params = dict(tm.named_parameters())
        assert all(torch.equal(params[n], value) for n, value in frozen.items())
        assert any(not torch.equal(params[n], value) for n, value in biases.items())
        before = logits(tm, "ner")
        saved = tm.save(tmp_path / "bitfit")
        assert (saved / "model.safetensors").is_file()
        again = load_task_model(saved)
        assert again.method == "bitfit" and torch.equal(logits(again, "ner"), before)
        resumed = load_task_model(saved, trainable=True)
        assert [n for n, p in resumed.model.named_parameters() if p.requires_grad] == trainable
    finally:
        REGISTRY.pop("bitfit")
    with pytest.raises(UserError, match="unknown fine-tuning method 'bitfit'"):
        MethodConfig(method="bitfit")  # type: ignore[arg-type]
