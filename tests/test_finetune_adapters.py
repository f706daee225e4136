"""In-house bottleneck adapters (Houlsby / Pfeiffer) on tiny BERT, Llama and GPT-2 models."""

from __future__ import annotations

import copy

import pytest
import torch

from scalelab.errors import UserError
from scalelab.finetune.methods import (
    AdapterSettings,
    MethodConfig,
    PrefixSettings,
    PromptSettings,
    apply_method,
)
from scalelab.finetune.methods.bottleneck import (
    AdapterWrapper,
    BottleneckAdapter,
    add_bottleneck_adapters,
    find_adapter_sites,
)

HIDDEN, LAYERS, FFN, VOCAB = 32, 2, 64, 100


def tiny(arch: str, kind: str = "ner"):
    """A randomly initialised tiny classifier (no checkpoint needed for these tests)."""
    import transformers as tf

    torch.manual_seed(0)
    common = {"vocab_size": VOCAB, "num_labels": 3, "max_position_embeddings": 64}
    suffix = "ForTokenClassification" if kind == "ner" else "ForSequenceClassification"
    if arch == "bert":
        cfg = tf.BertConfig(
            hidden_size=HIDDEN,
            num_hidden_layers=LAYERS,
            num_attention_heads=4,
            intermediate_size=FFN,
            **common,
        )
    elif arch == "llama":
        cfg = tf.LlamaConfig(
            hidden_size=HIDDEN,
            num_hidden_layers=LAYERS,
            num_attention_heads=4,
            num_key_value_heads=2,
            intermediate_size=FFN,
            pad_token_id=0,
            **common,
        )
    else:
        common["n_positions"] = common.pop("max_position_embeddings")
        cfg = tf.GPT2Config(n_embd=HIDDEN, n_layer=LAYERS, n_head=4, pad_token_id=0, **common)
    name = {"bert": "Bert", "llama": "Llama", "gpt2": "GPT2"}[arch] + suffix
    return getattr(tf, name)(cfg).eval()


def inputs(batch: int = 2, length: int = 6) -> dict[str, torch.Tensor]:
    ids = torch.randint(1, VOCAB, (batch, length), generator=torch.Generator().manual_seed(0))
    mask = torch.ones_like(ids)
    ids[1, 4:], mask[1, 4:] = 0, 0
    return {"input_ids": ids, "attention_mask": mask}


@pytest.mark.parametrize("kind", ("ner", "classification"))
@pytest.mark.parametrize("arch", ("bert", "llama", "gpt2"))
@pytest.mark.parametrize("placement", ("houlsby", "pfeiffer"))
def test_adapters_are_an_exact_identity_at_init(placement, arch, kind):
    base = tiny(arch, kind)
    adapted = copy.deepcopy(base)
    spec = add_bottleneck_adapters(adapted, placement=placement, bottleneck=4)
    assert len(spec.modules) == (2 if placement == "houlsby" else 1) * LAYERS
    with torch.no_grad():
        expected = base(**inputs()).logits
        got = adapted(**inputs()).logits
    assert torch.equal(got, expected)
    # ...and not a no-op once the up-projection is non-zero.
    with torch.no_grad():
        for module in adapted.modules():
            if isinstance(module, BottleneckAdapter):
                module.up.weight.fill_(0.1)
        assert not torch.equal(adapted(**inputs()).logits, expected)


def test_sites_follow_the_papers():
    layout, houlsby = find_adapter_sites(tiny("bert"), "houlsby")
    assert layout == "bert"
    assert houlsby == [
        "bert.encoder.layer.0.attention.output.dense",
        "bert.encoder.layer.0.output.dense",
        "bert.encoder.layer.1.attention.output.dense",
        "bert.encoder.layer.1.output.dense",
    ]
    _, pfeiffer = find_adapter_sites(tiny("llama"), "pfeiffer")
    assert pfeiffer == ["model.layers.0.mlp.down_proj", "model.layers.1.mlp.down_proj"]
    _, houlsby = find_adapter_sites(tiny("llama"), "houlsby")
    assert "model.layers.0.self_attn.o_proj" in houlsby and len(houlsby) == 4


def test_adapter_wrapper_keeps_the_projection_and_its_weight():
    model = tiny("bert")
    dense = model.bert.encoder.layer[0].output.dense
    add_bottleneck_adapters(model, placement="pfeiffer", bottleneck=4)
    wrapped = model.bert.encoder.layer[0].output.dense
    assert isinstance(wrapped, AdapterWrapper) and wrapped.base is dense
    assert wrapped.weight is dense.weight
    with pytest.raises(ValueError, match="already has an adapter"):
        add_bottleneck_adapters(model, modules=("bert.encoder.layer.0.output.dense",))


def _norm_params(arch: str) -> int:
    if arch == "bert":  # embeddings LayerNorm + 2 LayerNorms per layer, weight and bias
        return 2 * HIDDEN * (1 + 2 * LAYERS)
    return HIDDEN * (1 + 2 * LAYERS)  # Llama: 2 RMSNorms per layer + final norm, weight only


@pytest.mark.parametrize("arch", ("bert", "llama"))
@pytest.mark.parametrize("placement", ("houlsby", "pfeiffer"))
def test_trainable_count_matches_hand_count(arch, placement):
    model = tiny(arch)
    total_before = sum(p.numel() for p in model.parameters())
    cfg = MethodConfig(method="adapter", adapter=AdapterSettings(placement=placement, reduction=8))
    tm = apply_method(model, cfg, task_kind="ner", total_steps=1)
    m = HIDDEN // 8
    per_adapter = (HIDDEN * m + m) + (m * HIDDEN + HIDDEN)  # down + up, with biases
    n_adapters = (2 if placement == "houlsby" else 1) * LAYERS
    head = HIDDEN * 3 + 3
    report = tm.parameter_report()
    assert report["trainable"] == n_adapters * per_adapter + _norm_params(arch) + head
    assert report["total"] == total_before + n_adapters * per_adapter
    assert report["head"] == head

    no_norms = apply_method(
        tiny(arch),
        cfg.replace(adapter=cfg.adapter.replace(train_norms=False)),
        task_kind="ner",
        total_steps=1,
    )
    assert no_norms.trainable_parameters() == n_adapters * per_adapter + head


@pytest.mark.parametrize("arch", ("bert", "llama"))
def test_training_changes_only_adapters_norms_and_head(arch):
    from scalelab.train.step import make_optimizer, train_step

    cfg = MethodConfig(method="adapter", adapter=AdapterSettings(size=8))
    tm = apply_method(tiny(arch), cfg, task_kind="ner", total_steps=3)
    frozen = {n: p.detach().clone() for n, p in tm.named_parameters() if not p.requires_grad}
    trained = {n: p.detach().clone() for n, p in tm.named_parameters() if p.requires_grad}
    opt = make_optimizer(tm, lr=1e-2, weight_decay=0.0)
    batch = inputs()
    batch["labels"] = torch.randint(0, 3, batch["input_ids"].shape)
    tm.train()
    for _ in range(3):
        train_step(tm, [batch], opt, precision="fp32")
    for name, param in tm.named_parameters():
        if name in frozen:
            assert torch.equal(param, frozen[name]), name
    ups = [p for n, p in tm.named_parameters() if n.endswith("adapter.up.weight")]
    assert ups and all(float(p.detach().abs().sum()) > 0 for p in ups)
    changed = [
        n for n, p in tm.named_parameters() if n in trained and not torch.equal(p, trained[n])
    ]
    assert any("adapter.down" in n for n in changed)  # the down-projection trains once up != 0


def test_size_from_reduction_factor_and_explicit_size():
    spec = add_bottleneck_adapters(tiny("bert"), reduction_factor=16)
    assert spec.bottleneck == HIDDEN // 16
    spec = add_bottleneck_adapters(tiny("bert"), bottleneck=5, activation="gelu")
    assert spec.bottleneck == 5 and spec.activation == "gelu"
    assert spec.to_dict()["modules"] == list(spec.modules)


def test_unknown_layout_is_a_user_error():
    class Odd(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.proj = torch.nn.Linear(4, 4)

    with pytest.raises(UserError, match="adapter.*use --method lora"):
        find_adapter_sites(Odd(), "houlsby")


def test_gpt2_lora_and_prompt_run():
    """GPT-2 (Conv1D projections, last-token pooling) takes the PEFT methods too."""
    for method in ("lora", "prompt", "prefix"):
        model = tiny("gpt2", "classification")
        tm = apply_method(
            model,
            MethodConfig(
                method=method,
                prefix=PrefixSettings(num_virtual_tokens=2),
                prompt=PromptSettings(num_virtual_tokens=2),
            ),
            task_kind="classification",
            total_steps=1,
        )
        out = tm(**inputs(), labels=torch.tensor([0, 2]))
        assert out["logits"].shape == (2, 3) and torch.isfinite(out["loss"])
