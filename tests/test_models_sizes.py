"""Size registry, the parameter dial and ModelConfig validation (pure Python, no torch)."""

from __future__ import annotations

import math

import pytest

from scalelab.errors import UserError
from scalelab.models import (
    SIZES,
    ModelConfig,
    Shape,
    model_config,
    param_counts,
    resolve_size,
    shape_for_params,
)
from scalelab.models import sizes as sizes_mod


def _n(shape: Shape, arch: str) -> int:
    return param_counts(shape.to_config(arch=arch, vocab_size=2, max_seq_len=8)).non_embedding


@pytest.mark.parametrize("arch", ["llama", "gpt2", "bert"])
def test_dial_hits_targets_and_is_monotone(arch):
    prev_n, prev_layers = 0, 0
    for i in range(601):  # 1e4 .. 1e10, 1% apart
        target = 10 ** (4 + 6 * i / 600)
        shape = shape_for_params(target, arch=arch)
        n = _n(shape, arch)
        assert abs(n / target - 1) < 0.03, (target, shape, n)
        assert n >= prev_n and shape.n_layer >= prev_layers, (target, shape)
        assert shape.d_model % shape.n_head == 0 and shape.d_model // shape.n_head >= 4
        prev_n, prev_layers = n, shape.n_layer


def test_dial_is_monotone_for_close_targets():
    # Adjacent targets 0.01% apart across cell boundaries: never fewer parameters.
    prev = 0
    for i in range(3000):
        target = 4e5 * 1.0001**i  # crosses several (n_layer, d_model) cells
        n = _n(shape_for_params(target), "llama")
        assert n >= prev
        prev = n


def test_dial_keeps_aspect_ratio_and_nominal_ffn():
    for target in (1e6, 1e7, 1e8, 1e9):
        s = shape_for_params(target)
        assert 40 <= s.d_model / s.n_layer <= 100  # aspect ratio ~64
        assert 0.75 <= s.d_ff / (8 / 3 * s.d_model) <= 1.4  # SwiGLU nominal 8/3 d
    assert shape_for_params(1e8) == Shape(n_layer=13, d_model=768, n_head=12, d_ff=2304)


def test_dial_rejects_out_of_range():
    with pytest.raises(UserError, match="outside"):
        shape_for_params(10)
    with pytest.raises(UserError, match="arch"):
        shape_for_params(1e6, arch="mamba")


def test_registry_sizes_are_valid_and_ordered():
    counts = []
    for name in SIZES:
        cfg = model_config(name, vocab_size=512, max_seq_len=64)
        assert isinstance(cfg, ModelConfig)
        if name != "tiny":
            counts.append(param_counts(cfg).non_embedding)
    assert counts == sorted(counts)
    tiny = model_config("tiny", arch="gpt2", vocab_size=512, max_seq_len=64)
    assert (tiny.n_layer, tiny.d_model, tiny.ffn_dim) == (2, 64, 256)


def test_registry_table_in_docstring_matches_dial():
    doc = sizes_mod.__doc__
    for row in sizes_mod.size_table("llama"):
        line = next(ln for ln in doc.splitlines() if ln.split()[:1] == [row["name"]])
        cells = line.split()
        assert [int(c) for c in cells[2:6]] == [
            row["n_layer"],
            row["d_model"],
            row["n_head"],
            row["d_ff"],
        ], line
        assert int(cells[6].replace(",", "")) == row["non_embedding"], line


def test_resolve_size_accepts_numbers_and_names():
    assert resolve_size("1m") == shape_for_params(1e6)
    assert resolve_size("2.5M") == shape_for_params(2.5e6)
    assert resolve_size("250k") == shape_for_params(2.5e5)
    assert resolve_size("3e6") == resolve_size(3e6)
    with pytest.raises(UserError, match="unknown model size"):
        resolve_size("huge")


def test_model_config_validation_and_defaults():
    cfg = ModelConfig()
    assert cfg.ffn_dim == 176  # 8/3 * 64 = 170.7, rounded up to a multiple of 8
    assert ModelConfig(arch="gpt2").ffn_dim == 256
    assert cfg.resolved().d_ff == 176
    with pytest.raises(UserError, match="multiple of model.n_head"):
        ModelConfig(d_model=60, n_head=8)
    with pytest.raises(UserError, match="even head dim"):
        ModelConfig(d_model=24, n_head=8)
    with pytest.raises(UserError, match="arch"):
        ModelConfig.from_dict({"arch": "rnn"})
    with pytest.raises(UserError, match="dropout"):
        ModelConfig(dropout=1.0)
    # Round trip through the YAML the trainer saves.
    again = ModelConfig.from_dict(ModelConfig(arch="bert", d_ff=100).to_dict())
    assert again.arch == "bert" and again.d_ff == 100
    assert math.isclose(again.norm_eps, 1e-5)
