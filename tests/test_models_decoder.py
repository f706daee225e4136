"""The decoder LM: loss contract, fused cross-entropy, init, bf16, training sanity."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from scalelab.models import ModelConfig, build_model, linear_cross_entropy, maybe_compile
from scalelab.models.decoder import DecoderLM, apply_rope

V = 97


def _cfg(**kw) -> ModelConfig:
    base = dict(n_layer=2, d_model=32, n_head=4, vocab_size=V, max_seq_len=16)
    return ModelConfig(**{**base, **kw})


def _batch(seed=0, b=3, t=16):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, V, (b, t + 1), generator=g)
    return ids[:, :-1], ids[:, 1:].clone()


@pytest.mark.parametrize("arch", ["llama", "gpt2"])
@pytest.mark.parametrize("tied", [True, False])
def test_loss_equals_cross_entropy_and_ignores_minus_100(arch, tied):
    torch.manual_seed(0)
    model = build_model(_cfg(arch=arch, tie_embeddings=tied))
    ids, labels = _batch()
    labels[0, :5] = -100
    labels[2, -1] = -100
    loss = model(ids, labels)["loss"]
    logits = model(ids)["logits"]
    assert logits.shape == (3, 16, V)
    # Labels are already shifted: no second shift inside the model.
    ref = F.cross_entropy(logits.reshape(-1, V), labels.reshape(-1), ignore_index=-100)
    assert torch.allclose(loss, ref, atol=1e-5)
    grads = torch.autograd.grad(loss, list(model.parameters()))
    ref_grads = torch.autograd.grad(ref, list(model.parameters()))
    for g, r in zip(grads, ref_grads):
        assert torch.allclose(g, r, atol=1e-6)
    # Changing an ignored label changes nothing.
    labels2 = labels.clone()
    labels2[0, :5] = -100
    labels2[1, 3] = (labels[1, 3] + 1) % V
    assert not torch.allclose(model(ids, labels2)["loss"], loss)


def test_linear_cross_entropy_chunks_and_masks():
    torch.manual_seed(0)
    h = torch.randn(1000, 16, requires_grad=True)
    w = torch.randn(300, 16, requires_grad=True)
    labels = torch.randint(0, 300, (1000,))
    labels[::7] = -100
    for chunk in (1, 64, 999, 4096):
        loss = linear_cross_entropy(h, w, labels, chunk=chunk)
        ref = F.cross_entropy(h @ w.t(), labels)
        assert torch.allclose(loss, ref, atol=1e-5)
        gh, gw = torch.autograd.grad(loss * 3.0, (h, w))
        rh, rw = torch.autograd.grad(ref * 3.0, (h, w))
        assert torch.allclose(gh, rh, atol=1e-6) and torch.allclose(gw, rw, atol=1e-6)
    # Nothing labelled: 0 (not nan), zero gradients.
    none = torch.full((1000,), -100)
    loss = linear_cross_entropy(h, w, none)
    assert loss.item() == 0.0
    assert torch.count_nonzero(torch.autograd.grad(loss, h)[0]) == 0


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_linear_cross_entropy_half_close_to_autocast_reference(dtype):
    torch.manual_seed(0)
    h = torch.randn(512, 32, requires_grad=True)
    w = (0.3 * torch.randn(200, 32)).requires_grad_()
    labels = torch.randint(0, 200, (512,))
    with torch.autocast("cpu", dtype=dtype):
        loss = linear_cross_entropy(h, w, labels, chunk=100)
        ref = F.cross_entropy(F.linear(h, w), labels)
    assert loss.dtype == torch.float32
    assert abs(loss.item() - ref.item()) < 1e-3
    gh, gw = torch.autograd.grad(loss, (h, w))
    rh, rw = torch.autograd.grad(ref, (h, w))
    assert (gh - rh).abs().max() < 0.02 * rh.abs().max()
    assert (gw - rw).abs().max() < 0.02 * rw.abs().max()


def test_rope_matches_rotate_half_convention():
    x = torch.randn(2, 5, 3, 8)  # [B, T, H, hd] -> rope over T needs [..., T, hd]
    cos, sin = torch.randn(5, 4), torch.randn(5, 4)
    xt = x.transpose(1, 2)  # [B, H, T, hd]
    out = apply_rope(xt, cos, sin)
    full_cos, full_sin = torch.cat([cos, cos], -1), torch.cat([sin, sin], -1)
    rotated = torch.cat([-xt[..., 4:], xt[..., :4]], -1)
    assert torch.allclose(out, xt * full_cos + rotated * full_sin, atol=1e-6)


def test_init_is_seeded_and_scaled():
    torch.manual_seed(3)
    a = build_model(_cfg(n_layer=4))
    torch.manual_seed(3)
    b = build_model(_cfg(n_layer=4))
    for (na, pa), (_, pb) in zip(a.named_parameters(), b.named_parameters()):
        assert torch.equal(pa, pb), na
    assert isinstance(a, DecoderLM)
    assert a.blocks[0].attn.qkv.weight.std().item() == pytest.approx(0.02, rel=0.1)
    # Residual projections: 0.02 / sqrt(2 n_layer).
    assert a.blocks[0].mlp.proj.weight.std().item() == pytest.approx(0.02 / 8**0.5, rel=0.1)
    assert torch.equal(a.blocks[0].norm1.weight, torch.ones(32))


@pytest.mark.parametrize("arch", ["llama", "gpt2"])
def test_bf16_autocast_forward_and_all_params_get_grads(arch):
    torch.manual_seed(0)
    model = build_model(_cfg(arch=arch, tie_embeddings=False))
    ids, labels = _batch()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(ids, labels)
        logits = model(ids)["logits"]
    assert out["loss"].dtype == torch.float32 and torch.isfinite(out["loss"])
    assert logits.dtype == torch.bfloat16
    out["loss"].backward()
    # DDP without find_unused_parameters needs a gradient for every parameter.
    for name, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
    with torch.no_grad():
        fp32 = model(ids, labels)["loss"]
    assert abs(fp32.item() - out["loss"].item()) < 0.05


def test_tiny_model_overfits_a_fixed_batch():
    torch.manual_seed(0)
    model = build_model(_cfg(n_layer=2, d_model=32, n_head=2))
    ids, labels = _batch(b=4)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    first = None
    for _ in range(60):
        loss = model(ids, labels)["loss"]
        first = first if first is not None else loss.item()
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert first > 4.0  # ~ln(97) at init
    assert loss.item() < 0.5


def test_sequence_longer_than_max_seq_len_is_rejected():
    model = build_model(_cfg(max_seq_len=8))
    with pytest.raises(ValueError, match="max_seq_len"):
        model(torch.zeros(1, 9, dtype=torch.long))


@pytest.mark.slow
def test_compiled_model_matches_eager():
    torch.manual_seed(0)
    eager = build_model(_cfg())
    torch.manual_seed(0)
    compiled = maybe_compile(build_model(_cfg()))
    assert [n for n, _ in compiled.state_dict().items()] == list(eager.state_dict())
    ids, labels = _batch()
    a, b = eager(ids, labels)["loss"], compiled(ids, labels)["loss"]
    assert torch.allclose(a, b, atol=1e-5)
    ga = torch.autograd.grad(a, list(eager.parameters()))
    gb = torch.autograd.grad(b, list(compiled.parameters()))
    for x, y in zip(ga, gb):
        assert torch.allclose(x, y, atol=1e-5)


@pytest.mark.slow
def test_compiled_bert_trains_without_recompiling_per_batch():
    from scalelab.train.step import make_optimizer, train_step

    cfg = ModelConfig(arch="bert", n_layer=1, d_model=32, n_head=2, vocab_size=64, max_seq_len=16)
    torch.manual_seed(0)
    model = maybe_compile(build_model(cfg))
    opt = make_optimizer(model, lr=1e-3)
    torch._dynamo.utils.counters.clear()
    for step in range(4):  # a different number of masked tokens every step
        ids = torch.randint(0, 64, (4, 16))
        labels = torch.full_like(ids, -100)
        labels[:, : 2 + step] = ids[:, : 2 + step]
        batch = dict(
            input_ids=ids,
            token_type_ids=torch.zeros_like(ids),
            attention_mask=torch.ones_like(ids),
            labels=labels,
            next_sentence_label=torch.zeros(4, dtype=torch.long),
        )
        out, _ = train_step(model, [batch], opt, precision="fp32")
        assert out["loss"] == pytest.approx(out["mlm_loss"] + out["nsp_loss"], rel=1e-5)
    assert torch._dynamo.utils.counters["stats"]["unique_graphs"] <= 2
