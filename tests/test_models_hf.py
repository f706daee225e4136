"""Hugging Face export/import: same logits in transformers, BERT into task heads."""

from __future__ import annotations

import json

import pytest
import torch
import transformers

from scalelab.errors import UserError
from scalelab.models import ModelConfig, build_model, load_hf, param_counts, save_hf
from scalelab.models.hf import model_config_from_hf


def _ids(vocab, b=2, t=12, seed=0):
    return torch.randint(0, vocab, (b, t), generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("arch", ["llama", "gpt2"])
@pytest.mark.parametrize("tied", [True, False])
def test_decoder_export_gives_same_logits(tmp_path, arch, tied):
    cfg = ModelConfig(
        arch=arch,
        n_layer=2,
        d_model=32,
        n_head=4,
        vocab_size=61,
        max_seq_len=16,
        tie_embeddings=tied,
        norm_eps=1e-6,
        rope_theta=500.0,
    )
    torch.manual_seed(0)
    model = build_model(cfg).eval()
    with torch.no_grad():  # non-trivial norm gains and biases, so a swap would show
        for p in model.parameters():
            if p.dim() == 1:
                p.add_(0.1 * torch.randn_like(p))
    save_hf(model, tmp_path / "m")
    hf = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "m").eval()
    expected = {"llama": "LlamaForCausalLM", "gpt2": "GPT2LMHeadModel"}[arch]
    assert type(hf).__name__ == expected
    assert sum(p.numel() for p in hf.parameters()) == param_counts(cfg).total
    ids = _ids(61)
    with torch.no_grad():
        ours = model(ids)["logits"]
        theirs = hf(ids).logits
    assert (ours - theirs).abs().max().item() < 1e-5
    # And back: load_hf restores the same model.
    again, cfg2 = load_hf(tmp_path / "m")
    assert cfg2 == cfg
    with torch.no_grad():
        assert torch.equal(again(ids)["logits"], ours)


def test_export_from_plain_hf_config_and_bf16(tmp_path):
    # A Llama checkpoint written by transformers itself (no scalelab key) loads too.
    config = transformers.LlamaConfig(
        vocab_size=50,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=1,
        num_attention_heads=2,
        max_position_embeddings=32,
        tie_word_embeddings=False,
    )
    torch.manual_seed(0)
    hf = transformers.LlamaForCausalLM(config).eval()
    hf.save_pretrained(tmp_path / "hf")
    model, cfg = load_hf(tmp_path / "hf")
    assert (cfg.arch, cfg.d_ff, cfg.tie_embeddings) == ("llama", 64, False)
    ids = _ids(50)
    with torch.no_grad():
        assert (model(ids)["logits"] - hf(ids).logits).abs().max() < 1e-5
    save_hf(model, tmp_path / "bf16", dtype=torch.bfloat16)
    meta = json.loads((tmp_path / "bf16" / "config.json").read_text())
    assert meta["dtype"] == "bfloat16" and meta["architectures"] == ["LlamaForCausalLM"]
    small, _ = load_hf(tmp_path / "bf16")
    assert next(small.parameters()).dtype == torch.bfloat16


def test_unsupported_or_missing_checkpoints_are_user_errors(tmp_path):
    with pytest.raises(UserError, match="no config.json"):
        load_hf(tmp_path / "nothing")
    gqa = {
        "model_type": "llama",
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "hidden_size": 32,
        "num_hidden_layers": 1,
        "intermediate_size": 64,
        "max_position_embeddings": 16,
        "vocab_size": 10,
    }
    with pytest.raises(UserError, match="grouped-query"):
        model_config_from_hf(gqa)
    with pytest.raises(UserError, match="model_type"):
        model_config_from_hf({"model_type": "t5"})


def test_bert_forward_contract():
    cfg = ModelConfig(arch="bert", n_layer=2, d_model=32, n_head=4, vocab_size=80, max_seq_len=16)
    torch.manual_seed(0)
    model = build_model(cfg)
    ids = _ids(80, b=3, t=16)
    labels = torch.full_like(ids, -100)
    labels[:, 2:5] = ids[:, 2:5]
    nsp = torch.tensor([0, 1, 0])
    batch = dict(
        input_ids=ids,
        token_type_ids=torch.zeros_like(ids),
        attention_mask=torch.ones_like(ids),
        labels=labels,
        next_sentence_label=nsp,
    )
    out = model(**batch)
    assert set(out) == {"loss", "mlm_loss", "nsp_loss"}
    assert torch.allclose(out["loss"], out["mlm_loss"] + out["nsp_loss"])
    # The masked-LM loss equals cross-entropy over the full logits at labelled positions.
    logits = model(ids, token_type_ids=torch.zeros_like(ids), attention_mask=torch.ones_like(ids))
    ref = torch.nn.functional.cross_entropy(logits["logits"].reshape(-1, 80), labels.reshape(-1))
    assert torch.allclose(out["mlm_loss"], ref, atol=1e-5)
    out["loss"].backward()
    assert all(p.grad is not None for p in model.parameters())
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert torch.isfinite(model(**batch)["loss"])


def test_bert_export_loads_into_task_heads(tmp_path):
    cfg = ModelConfig(arch="bert", n_layer=2, d_model=32, n_head=4, vocab_size=80, max_seq_len=16)
    torch.manual_seed(0)
    model = build_model(cfg)
    save_hf(model, tmp_path / "bert")
    ours = {k: v for k, v in model.state_dict().items() if k.startswith("bert.")}
    for auto in (
        transformers.AutoModelForTokenClassification,
        transformers.AutoModelForSequenceClassification,
    ):
        head = auto.from_pretrained(tmp_path / "bert", num_labels=5)
        theirs = head.state_dict()
        carried = [k for k in ours if k in theirs and "pooler" not in k]
        assert len(carried) >= 2 * 16  # embeddings + every encoder layer
        for k in carried:
            assert torch.equal(ours[k], theirs[k]), k
        ids = _ids(80)
        assert head(ids).logits.shape[-1] == 5
    again, cfg2 = load_hf(tmp_path / "bert")
    assert cfg2 == cfg
    for k, v in model.state_dict().items():
        assert torch.equal(v, again.state_dict()[k]), k
