"""Hugging Face export and import: ``config.json`` + ``model.safetensors``.

:func:`save_hf` writes a directory that ``transformers.AutoModelForCausalLM`` (decoders:
``LlamaForCausalLM`` or ``GPT2LMHeadModel``) or ``AutoModelFor{TokenClassification,
SequenceClassification}`` (bert: ``BertForPreTraining`` layout) load offline with the
same outputs. :func:`load_hf` reads such a directory back into a scalelab model and its
:class:`ModelConfig` (ours, or a compatible one written by any other tool).

The decoder's weights differ from the Hugging Face layout only by renames, splits and
transposes, listed once in :func:`_decoder_layout` and used in both directions:

- llama: our fused ``qkv`` [3d, d] = rows of ``q_proj | k_proj | v_proj``; our ``fc``
  [2f, d] = rows of ``gate_proj | up_proj``. Rotary uses the same split-halves
  convention and frequencies, RMSNorm the same eps and gain, attention the same scale.
- gpt2: ``Conv1D`` stores [in, out], the transpose of ``nn.Linear``'s [out, in].

A tied head is stored once (the embedding), with ``tie_word_embeddings`` true.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from scalelab.errors import UserError
from scalelab.models.build import build_model, unwrap_model

if TYPE_CHECKING:  # pragma: no cover
    from transformers import PretrainedConfig
from scalelab.models.config import ModelConfig
from scalelab.utils.io import set_output_mode

CONFIG_KEY = "scalelab_model"  # our ModelConfig, stored inside config.json for exact reloads
WEIGHTS = "model.safetensors"


# ====================================================================== configs


def hf_config(cfg: ModelConfig, extra: dict[str, Any] | None = None) -> PretrainedConfig:
    """The ``transformers`` config equivalent to ``cfg`` (``extra``: e.g. token ids)."""
    import transformers

    extra = dict(extra or {})
    common: dict[str, Any] = {
        "vocab_size": cfg.vocab_size,
        "tie_word_embeddings": cfg.tie_embeddings,
        "initializer_range": cfg.init_std,
        "bos_token_id": None,
        "eos_token_id": None,
        "pad_token_id": None,
    }
    if cfg.arch == "llama":
        kwargs = {
            **common,
            "hidden_size": cfg.d_model,
            "intermediate_size": cfg.ffn_dim,
            "num_hidden_layers": cfg.n_layer,
            "num_attention_heads": cfg.n_head,
            "num_key_value_heads": cfg.n_head,
            "head_dim": cfg.head_dim,
            "hidden_act": "silu",
            "max_position_embeddings": cfg.max_seq_len,
            "rms_norm_eps": cfg.norm_eps,
            "rope_parameters": {"rope_type": "default", "rope_theta": cfg.rope_theta},
            "attention_bias": False,
            "mlp_bias": False,
            "attention_dropout": cfg.dropout,
        }
        config = transformers.LlamaConfig(**{**kwargs, **extra})
    elif cfg.arch == "gpt2":
        kwargs = {
            **common,
            "n_positions": cfg.max_seq_len,
            "n_embd": cfg.d_model,
            "n_layer": cfg.n_layer,
            "n_head": cfg.n_head,
            "n_inner": cfg.ffn_dim,
            # torch's tanh-approximate GELU, exactly what the scalelab module computes.
            "activation_function": "gelu_pytorch_tanh",
            "resid_pdrop": cfg.dropout,
            "embd_pdrop": cfg.dropout,
            "attn_pdrop": cfg.dropout,
            "layer_norm_epsilon": cfg.norm_eps,
        }
        config = transformers.GPT2Config(**{**kwargs, **extra})
    else:
        from scalelab.models.encoder import bert_config

        config = bert_config(cfg, extra)
    setattr(config, CONFIG_KEY, cfg.to_dict())
    return config


def model_config_from_hf(data: dict[str, Any], where: str = "config.json") -> ModelConfig:
    """Our :class:`ModelConfig` from a ``config.json`` dict (ours or a compatible one)."""
    if isinstance(data.get(CONFIG_KEY), dict):
        return ModelConfig.from_dict(data[CONFIG_KEY], where=f"{where}: {CONFIG_KEY}.")
    kind = data.get("model_type")
    try:
        if kind == "llama":
            heads = data["num_attention_heads"]
            rope = data.get("rope_parameters") or {}
            unsupported = {
                "grouped-query attention": data.get("num_key_value_heads", heads) != heads,
                "a head_dim other than hidden_size/heads": data.get("head_dim")
                not in (None, data["hidden_size"] // heads),
                "biases": data.get("attention_bias") or data.get("mlp_bias"),
                f"hidden_act {data.get('hidden_act')}": data.get("hidden_act", "silu") != "silu",
                f"rope_type {rope.get('rope_type')}": rope.get("rope_type", "default") != "default",
            }
            fields = {
                "arch": "llama",
                "n_layer": data["num_hidden_layers"],
                "d_model": data["hidden_size"],
                "n_head": heads,
                "d_ff": data["intermediate_size"],
                "max_seq_len": data["max_position_embeddings"],
                "norm_eps": data.get("rms_norm_eps", 1e-6),
                "rope_theta": rope.get("rope_theta", data.get("rope_theta", 10000.0)),
                "dropout": data.get("attention_dropout", 0.0),
                "tie_embeddings": data.get("tie_word_embeddings", False),
            }
        elif kind == "gpt2":
            act = data.get("activation_function", "gelu_new")
            unsupported = {
                f"activation_function {act}": act not in ("gelu_new", "gelu_pytorch_tanh"),
                "scale_attn_by_inverse_layer_idx": data.get("scale_attn_by_inverse_layer_idx"),
            }
            fields = {
                "arch": "gpt2",
                "n_layer": data["n_layer"],
                "d_model": data["n_embd"],
                "n_head": data["n_head"],
                "d_ff": data.get("n_inner") or 4 * data["n_embd"],
                "max_seq_len": data["n_positions"],
                "norm_eps": data.get("layer_norm_epsilon", 1e-5),
                "dropout": data.get("resid_pdrop", 0.0),
                "tie_embeddings": data.get("tie_word_embeddings", True),
            }
        elif kind == "bert":
            unsupported = {
                f"hidden_act {data.get('hidden_act')}": data.get("hidden_act", "gelu") != "gelu",
                "type_vocab_size != 2": data.get("type_vocab_size", 2) != 2,
            }
            fields = {
                "arch": "bert",
                "n_layer": data["num_hidden_layers"],
                "d_model": data["hidden_size"],
                "n_head": data["num_attention_heads"],
                "d_ff": data["intermediate_size"],
                "max_seq_len": data["max_position_embeddings"],
                "norm_eps": data.get("layer_norm_eps", 1e-12),
                "dropout": data.get("hidden_dropout_prob", 0.0),
                "tie_embeddings": data.get("tie_word_embeddings", True),
            }
        else:
            raise UserError(f"{where}: model_type {kind!r} is not llama, gpt2 or bert")
        fields["vocab_size"] = data["vocab_size"]
        fields["init_std"] = data.get("initializer_range", 0.02)
    except KeyError as exc:
        raise UserError(f"{where}: missing key {exc}") from None
    bad = [name for name, flag in unsupported.items() if flag]
    if bad:
        raise UserError(f"{where}: unsupported {kind} feature(s): {', '.join(bad)}")
    return ModelConfig.from_dict(fields, where=f"{where}: ")


# ====================================================================== weights


def _decoder_layout(cfg: ModelConfig) -> list[tuple[str, list[str], bool]]:
    """(our name, Hugging Face names (row blocks of ours, in order), transpose?)."""
    out: list[tuple[str, list[str], bool]] = []
    if cfg.arch == "llama":
        out.append(("wte.weight", ["model.embed_tokens.weight"], False))
        for i in range(cfg.n_layer):
            p, q = f"blocks.{i}.", f"model.layers.{i}."
            out += [
                (p + "norm1.weight", [q + "input_layernorm.weight"], False),
                (
                    p + "attn.qkv.weight",
                    [q + f"self_attn.{n}_proj.weight" for n in ("q", "k", "v")],
                    False,
                ),
                (p + "attn.proj.weight", [q + "self_attn.o_proj.weight"], False),
                (p + "norm2.weight", [q + "post_attention_layernorm.weight"], False),
                (
                    p + "mlp.fc.weight",
                    [q + "mlp.gate_proj.weight", q + "mlp.up_proj.weight"],
                    False,
                ),
                (p + "mlp.proj.weight", [q + "mlp.down_proj.weight"], False),
            ]
        out.append(("norm_f.weight", ["model.norm.weight"], False))
    else:
        out += [
            ("wte.weight", ["transformer.wte.weight"], False),
            ("wpe.weight", ["transformer.wpe.weight"], False),
        ]
        for i in range(cfg.n_layer):
            p, q = f"blocks.{i}.", f"transformer.h.{i}."
            for ours, theirs, conv in (
                ("norm1", "ln_1", False),
                ("attn.qkv", "attn.c_attn", True),
                ("attn.proj", "attn.c_proj", True),
                ("norm2", "ln_2", False),
                ("mlp.fc", "mlp.c_fc", True),
                ("mlp.proj", "mlp.c_proj", True),
            ):
                out.append((f"{p}{ours}.weight", [f"{q}{theirs}.weight"], conv))
                out.append((f"{p}{ours}.bias", [f"{q}{theirs}.bias"], False))
        out += [
            ("norm_f.weight", ["transformer.ln_f.weight"], False),
            ("norm_f.bias", ["transformer.ln_f.bias"], False),
        ]
    if not cfg.tie_embeddings:
        out.append(("lm_head.weight", ["lm_head.weight"], False))
    return out


def to_hf_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """Decoder weights under Hugging Face names (contiguous copies, safe to serialise)."""
    model = unwrap_model(model)
    ours = model.state_dict()
    out: dict[str, torch.Tensor] = {}
    for name, targets, transpose in _decoder_layout(model.config):
        pieces = ours[name].chunk(len(targets), dim=0) if len(targets) > 1 else (ours[name],)
        for target, piece in zip(targets, pieces, strict=True):
            out[target] = (piece.t() if transpose else piece).detach().contiguous().clone()
    return out


def from_hf_state_dict(cfg: ModelConfig, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Inverse of :func:`to_hf_state_dict`: Hugging Face names -> our state dict."""
    out: dict[str, torch.Tensor] = {}
    for name, sources, transpose in _decoder_layout(cfg):
        missing = [s for s in sources if s not in state]
        if missing:
            raise UserError(f"checkpoint lacks weight {missing[0]!r} needed for {cfg.arch}")
        pieces = [state[s].t() if transpose else state[s] for s in sources]
        out[name] = torch.cat(pieces, dim=0) if len(pieces) > 1 else pieces[0]
    return out


# ====================================================================== save / load


def save_hf(
    model: nn.Module,
    directory: str | Path,
    *,
    dtype: torch.dtype | None = None,
    extra_config: dict[str, Any] | None = None,
) -> Path:
    """Write ``config.json`` + ``model.safetensors`` for ``transformers`` to load offline.

    ``model`` may be wrapped in DDP or compiled. ``dtype`` converts floating weights
    (default: as they are); ``extra_config`` adds config keys such as
    ``bos_token_id``/``eos_token_id``/``pad_token_id``. Writes into ``directory`` as it
    is; the trainer makes the checkpoint atomic around it (temporary dir + rename).
    """
    from safetensors.torch import save_file

    model = unwrap_model(model)
    cfg: ModelConfig = model.scalelab_config if hasattr(model, "scalelab_config") else model.config
    if not isinstance(cfg, ModelConfig):
        raise UserError("save_hf: not a scalelab model (build it with scalelab.models.build_model)")
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    config = hf_config(cfg, extra_config)
    if cfg.is_decoder:
        state = to_hf_state_dict(model)
        config.architectures = ["LlamaForCausalLM" if cfg.arch == "llama" else "GPT2LMHeadModel"]
    else:
        from scalelab.models.encoder import bert_state_dict

        state = bert_state_dict(model)
        config.architectures = ["BertForPreTraining"]
    if dtype is not None:
        state = {k: v.to(dtype) if v.is_floating_point() else v for k, v in state.items()}
    saved_dtype = next(iter(state.values())).dtype
    config.dtype = str(saved_dtype).removeprefix("torch.")
    config.save_pretrained(directory)
    save_file(state, str(directory / WEIGHTS), metadata={"format": "pt"})
    set_output_mode(directory / WEIGHTS)  # safetensors writes it 0600
    return directory


def _read_weights(directory: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    single = directory / WEIGHTS
    if single.is_file():
        return load_file(str(single))
    index = directory / "model.safetensors.index.json"
    if index.is_file():
        files = sorted(set(json.loads(index.read_text())["weight_map"].values()))
        state: dict[str, torch.Tensor] = {}
        for name in files:
            state.update(load_file(str(directory / name)))
        return state
    raise UserError(f"{directory}: no {WEIGHTS} (or sharded index) found")


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise UserError(f"{path}: not valid JSON ({getattr(exc, 'msg', exc)})") from None


def load_hf(directory: str | Path) -> tuple[nn.Module, ModelConfig]:
    """A scalelab model and its config from a Hugging Face directory (ours or compatible).

    Weights keep the dtype they were saved in. Raises :class:`UserError` for a missing
    directory, an unsupported architecture or missing weights.
    """
    directory = Path(directory)
    config_path = directory / "config.json"
    if not config_path.is_file():
        raise UserError(f"{directory}: no config.json (not a Hugging Face model directory)")
    data = _read_json(config_path)
    cfg = model_config_from_hf(data, where=str(config_path))
    if not cfg.is_decoder:
        from scalelab.models.encoder import load_bert

        return load_bert(directory, cfg), cfg
    state = _read_weights(directory)
    model = build_model(cfg)
    ours = from_hf_state_dict(cfg, state)
    dtypes = {v.dtype for v in ours.values() if v.is_floating_point()}
    if len(dtypes) == 1:
        model.to(dtypes.pop())
    model.load_state_dict(ours, strict=True)
    return model, cfg


# ====================================================================== shipped code

# Files in which a Hugging Face directory can name Python classes of its own (``auto_map``:
# ``modeling_*.py``, ``tokenization_*.py`` shipped next to the weights) for Transformers
# to import.
_CODE_MAPS = ("config.json", "tokenizer_config.json")


def refuse_custom_code(directory: str | Path) -> None:
    """A one-line :class:`UserError` when ``directory`` asks to run code it ships.

    Transformers would otherwise ask on the terminal whether to run it (and run it on
    "y"); scalelab loads every model with ``trust_remote_code=False`` and refuses such a
    directory before loading anything from it.
    """
    directory = Path(directory)
    for name in _CODE_MAPS:
        path = directory / name
        if not path.is_file():
            continue
        data = _read_json(path)
        if isinstance(data, dict) and data.get("auto_map"):
            raise UserError(
                f"{directory}: {name} names model code shipped with the model (auto_map); "
                "scalelab never runs code shipped with a model"
            )
