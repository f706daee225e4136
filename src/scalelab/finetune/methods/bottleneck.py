"""Bottleneck adapters (Houlsby et al. 2019; Pfeiffer et al. 2020), written in-house.

PEFT has no bottleneck adapters and the ``adapters`` package pins an old transformers,
so they live here. An adapter is a small residual MLP applied to the output of a
projection inside each Transformer block::

    h -> h + W_up · f(W_down · h + b_down) + b_up        h: [B, T, d], W_down: [m, d], W_up: [d, m]

Placements (where the adapted projections sit; the residual add and, for post-LN models,
the layer norm of the block come right after the projection, so the adapter acts
"before the residual add" as in both papers):

* ``houlsby`` (Houlsby et al. 2019, Fig. 2): after the attention output projection and
  after the feed-forward output projection, two adapters per block.
* ``pfeiffer`` (Pfeiffer et al. 2020, AdapterFusion §3 / Fig. 1): only after the
  feed-forward output projection, one adapter per block.

``W_up`` and ``b_up`` start at zero, so at initialisation every adapter returns its input
unchanged and the adapted model computes *exactly* the base model's function (``h + 0 ==
h`` in floating point). ``W_down`` keeps ``nn.Linear``'s default (Kaiming-uniform) init,
the same reasoning as LoRA's A/B init (Hu et al. 2021): one factor random so the other
receives a gradient, the other zero so training starts from the base model.

Adapters wrap the projection module (an :class:`AdapterWrapper` replaces it in its
parent), so the rest of the Hugging Face model runs unchanged. The wrapper's dropout
position differs slightly from the papers (the projection's output passes through the
adapter before the block's dropout rather than after); in evaluation mode the two are
identical.

Which parameters train (Houlsby et al. 2019 §2.1 and Pfeiffer et al. 2020 both also train
the layer normalisation parameters): the adapters, the task head and, by default, every
normalisation layer (LayerNorm / RMSNorm). :func:`mark_adapter_trainable` applies this.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn

from scalelab.errors import UserError

Placement = Literal["houlsby", "pfeiffer"]
Activation = Literal["relu", "gelu", "swish", "tanh"]

# Where the attention-output and FFN-output projections live, by module-name layout.
# Each layout is tried in turn; the one that finds one attention and one FFN projection per
# block wins. Keyed by layout rather than model_type so that relatives sharing a layout
# (RoBERTa, ELECTRA ... share BERT's; Mistral, Qwen2 ... share Llama's) work unchanged.
_LAYOUTS: dict[str, tuple[str, str]] = {
    # BertSelfOutput.dense, then dropout, then LayerNorm(h + residual)
    "bert": (r"(^|\.)layer\.\d+\.attention\.output\.dense$", r"(^|\.)layer\.\d+\.output\.dense$"),
    # LlamaAttention.o_proj / LlamaMLP.down_proj, then residual add in the decoder layer
    "llama": (r"(^|\.)layers\.\d+\.self_attn\.o_proj$", r"(^|\.)layers\.\d+\.mlp\.down_proj$"),
    # GPT-2's Conv1D projections (weights stored transposed; output width is weight.shape[1])
    "gpt2": (r"(^|\.)h\.\d+\.attn\.c_proj$", r"(^|\.)h\.\d+\.mlp\.c_proj$"),
    "distilbert": (r"(^|\.)layer\.\d+\.attention\.out_lin$", r"(^|\.)layer\.\d+\.ffn\.lin2$"),
}


class BottleneckAdapter(nn.Module):
    """``h + up(f(down(h)))`` with ``up`` zero-initialised (an exact identity at init)."""

    def __init__(
        self,
        dim: int,
        bottleneck: int,
        activation: Activation = "relu",
        *,
        dtype: torch.dtype | None = None,
        device: torch.device | None = None,
    ) -> None:
        super().__init__()
        self.down = nn.Linear(dim, bottleneck, dtype=dtype, device=device)
        self.act = _activation(activation)
        self.up = nn.Linear(bottleneck, dim, dtype=dtype, device=device)
        nn.init.zeros_(self.up.weight)
        nn.init.zeros_(self.up.bias)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        # hidden: [..., dim] -> [..., bottleneck] -> [..., dim]; internal skip connection.
        return hidden + self.up(self.act(self.down(hidden)))


class AdapterWrapper(nn.Module):
    """A projection followed by its adapter: ``adapter(base(*args))``."""

    def __init__(self, base: nn.Module, adapter: BottleneckAdapter) -> None:
        super().__init__()
        self.base = base
        self.adapter = adapter

    def forward(self, *args, **kwargs) -> torch.Tensor:
        return self.adapter(self.base(*args, **kwargs))

    # Some model code reads the projection's weight directly (dtype checks, tied weights).
    @property
    def weight(self) -> torch.Tensor:
        return self.base.weight

    @property
    def bias(self) -> torch.Tensor | None:
        return getattr(self.base, "bias", None)


@dataclass(frozen=True)
class AdapterSpec:
    """What :func:`add_bottleneck_adapters` did, enough to redo it on a fresh base model."""

    placement: Placement
    bottleneck: int
    activation: Activation
    layout: str
    modules: tuple[str, ...]
    """Names of the wrapped projection modules (before wrapping)."""

    def to_dict(self) -> dict:
        return {
            "placement": self.placement,
            "bottleneck": self.bottleneck,
            "activation": self.activation,
            "layout": self.layout,
            "modules": list(self.modules),
        }

    @classmethod
    def from_dict(cls, data: dict) -> AdapterSpec:
        return cls(
            placement=data["placement"],
            bottleneck=int(data["bottleneck"]),
            activation=data["activation"],
            layout=data["layout"],
            modules=tuple(data["modules"]),
        )


def find_adapter_sites(model: nn.Module, placement: Placement) -> tuple[str, list[str]]:
    """The layout name and the projection modules to wrap for ``placement``.

    Raises :class:`UserError` when no known layout matches the model.
    """
    names = [name for name, _ in model.named_modules()]
    n_layers = _num_layers(model)
    for layout, (attn_pat, ffn_pat) in _LAYOUTS.items():
        attn = [n for n in names if re.search(attn_pat, n)]
        ffn = [n for n in names if re.search(ffn_pat, n)]
        if not ffn or len(attn) != len(ffn):
            continue
        if n_layers is not None and len(ffn) != n_layers:
            continue
        sites = sorted(attn + ffn, key=_natural_key) if placement == "houlsby" else ffn
        return layout, sites
    raise UserError(
        f"method 'adapter' cannot find the attention/feed-forward output projections of "
        f"{type(model).__name__}; bottleneck adapters support BERT-, Llama-, GPT-2- and "
        f"DistilBERT-style layouts; use --method lora, adalora, prompt or full instead"
    )


def add_bottleneck_adapters(
    model: nn.Module,
    *,
    placement: Placement = "houlsby",
    bottleneck: int | None = None,
    reduction_factor: int = 16,
    activation: Activation = "relu",
    modules: tuple[str, ...] | None = None,
) -> AdapterSpec:
    """Wrap the projections of ``model`` (in place) with zero-initialised adapters.

    ``bottleneck`` is the adapter width ``m``; when None it is ``d // reduction_factor``
    (Pfeiffer et al. 2020's parametrisation; at least 1). ``modules`` re-applies a saved
    :class:`AdapterSpec` instead of searching for the sites.
    """
    if modules is None:
        layout, sites = find_adapter_sites(model, placement)
    else:
        layout, sites = "saved", list(modules)
    width = None
    for name in sites:
        proj = model.get_submodule(name)
        if isinstance(proj, AdapterWrapper):
            raise ValueError(f"{name} already has an adapter")
        dim = _output_width(proj)
        if width is None:
            width = bottleneck if bottleneck is not None else max(1, dim // reduction_factor)
        ref = next(proj.parameters())
        adapter = BottleneckAdapter(dim, width, activation, dtype=ref.dtype, device=ref.device)
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        setattr(parent, child, AdapterWrapper(proj, adapter))
    if width is None:
        raise UserError(f"no adapter sites found in {type(model).__name__}")
    return AdapterSpec(
        placement=placement,
        bottleneck=width,
        activation=activation,
        layout=layout,
        modules=tuple(sites),
    )


def is_norm(module: nn.Module) -> bool:
    """LayerNorm, RMSNorm and their per-model subclasses (LlamaRMSNorm, T5LayerNorm ...)."""
    if isinstance(module, nn.LayerNorm | nn.RMSNorm | nn.GroupNorm):
        return True
    return type(module).__name__.endswith("Norm") and not any(True for _ in module.children())


def adapter_trainable_names(
    model: nn.Module, *, head_modules: tuple[str, ...], train_norms: bool = True
) -> list[str]:
    """Names of the parameters that train (and are saved) with adapters.

    The adapters, every parameter under ``head_modules`` and, with ``train_norms``, every
    normalisation layer. Decided by module type and name, not by ``requires_grad``, so the
    same set comes out for a model reloaded for inference.
    """
    keep: set[str] = set()
    for module_name, module in model.named_modules():
        if isinstance(module, BottleneckAdapter) or (train_norms and is_norm(module)):
            prefix = f"{module_name}." if module_name else ""
            keep.update(prefix + n for n, _ in module.named_parameters())
    for head in head_modules:
        keep.update(f"{head}.{n}" for n, _ in model.get_submodule(head).named_parameters())
    return [name for name, _ in model.named_parameters() if name in keep]


def mark_adapter_trainable(
    model: nn.Module, *, head_modules: tuple[str, ...], train_norms: bool = True
) -> None:
    """Freeze everything, then unfreeze adapters, the head modules and (optionally) norms."""
    names = set(adapter_trainable_names(model, head_modules=head_modules, train_norms=train_norms))
    for name, param in model.named_parameters():
        param.requires_grad_(name in names)


def _activation(name: str) -> nn.Module:
    table = {"relu": nn.ReLU, "gelu": nn.GELU, "swish": nn.SiLU, "tanh": nn.Tanh}
    if name not in table:
        raise UserError(f"adapter.activation '{name}' is not one of {', '.join(table)}")
    return table[name]()


def _output_width(module: nn.Module) -> int:
    if isinstance(module, nn.Linear):
        return module.out_features
    if type(module).__name__ == "Conv1D":  # transformers' GPT-2 projection, weight [in, out]
        return int(module.weight.shape[1])
    out = getattr(module, "out_features", None)
    if isinstance(out, int):
        return out
    raise UserError(f"cannot put an adapter after {type(module).__name__}: unknown output width")


def _num_layers(model: nn.Module) -> int | None:
    config = getattr(model, "config", None)
    if config is None:
        return None
    text = config.get_text_config() if hasattr(config, "get_text_config") else config
    for key in ("num_hidden_layers", "n_layer", "n_layers"):
        value = getattr(text, key, None)
        if isinstance(value, int):
            return value
    return None


def _natural_key(name: str) -> list:
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", name)]
