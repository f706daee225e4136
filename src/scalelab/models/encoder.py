"""The BERT encoder: Hugging Face ``BertForPreTraining`` built from a :class:`ModelConfig`.

Masked-LM + next-sentence prediction as in Devlin et al. 2019. The Transformers class is
used as is (a subclass only changes what ``forward`` returns), so checkpoints are plain
``BertForPreTraining`` and load into ``AutoModelForTokenClassification`` /
``AutoModelForSequenceClassification``. Attention runs through SDPA.

Forward contract (what the trainer calls): ``model(input_ids, token_type_ids,
attention_mask, labels, next_sentence_label)`` returns ``{"loss", "mlm_loss",
"nsp_loss"}`` with loss = mlm_loss + nsp_loss; the masked-LM loss (mean over positions
whose label is not -100) is what goes on a scaling ladder. Without ``labels`` it returns
``{"logits", "nsp_logits"}``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from transformers import BertConfig, BertForPreTraining

from scalelab.models.config import ModelConfig


def bert_config(cfg: ModelConfig, extra: dict[str, Any] | None = None) -> BertConfig:
    """The ``BertConfig`` of ``cfg`` (GELU, 2 token types, SDPA attention)."""
    kwargs: dict[str, Any] = {
        "vocab_size": cfg.vocab_size,
        "hidden_size": cfg.d_model,
        "num_hidden_layers": cfg.n_layer,
        "num_attention_heads": cfg.n_head,
        "intermediate_size": cfg.ffn_dim,
        "hidden_act": "gelu",
        "hidden_dropout_prob": cfg.dropout,
        "attention_probs_dropout_prob": cfg.dropout,
        "max_position_embeddings": cfg.max_seq_len,
        "type_vocab_size": 2,
        "initializer_range": cfg.init_std,
        "layer_norm_eps": cfg.norm_eps,
        "tie_word_embeddings": cfg.tie_embeddings,
        "pad_token_id": None,
    }
    config = BertConfig(**{**kwargs, **(extra or {})})
    config._attn_implementation = "sdpa"
    return config


class BertPretrainingModel(BertForPreTraining):
    """``BertForPreTraining`` whose forward returns the loss components as a dict."""

    scalelab_config: ModelConfig

    def forward(  # type: ignore[override]
        self,
        input_ids: torch.Tensor,
        token_type_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        next_sentence_label: torch.Tensor | None = None,
    ) -> dict[str, torch.Tensor]:
        out = self.bert(
            input_ids,
            attention_mask=attention_mask,
            token_type_ids=token_type_ids,
            return_dict=True,
        )
        seq, pooled = out.last_hidden_state, out.pooler_output  # [B, T, d], [B, d]
        nsp_logits = self.cls.seq_relationship(pooled)  # [B, 2]
        if labels is None:
            return {"logits": self.cls.predictions(seq), "nsp_logits": nsp_logits}
        # Only the masked positions (~15%) go through the vocabulary head: [M, d].
        flat = labels.reshape(-1)
        picked = (flat != -100).nonzero().squeeze(1)
        if picked.numel() == 0:
            mlm_loss = seq.sum() * 0.0
        else:
            h = seq.reshape(-1, seq.shape[-1]).index_select(0, picked)
            logits = self.cls.predictions(h)  # [M, V]
            mlm_loss = F.cross_entropy(logits.float(), flat.index_select(0, picked))
        if next_sentence_label is None:
            # Keep the NSP head in the graph (zero gradient) so DDP sees every parameter used.
            nsp_loss = nsp_logits.sum() * 0.0
        else:
            nsp_loss = F.cross_entropy(nsp_logits.float(), next_sentence_label.reshape(-1))
        return {"loss": mlm_loss + nsp_loss, "mlm_loss": mlm_loss, "nsp_loss": nsp_loss}


def _share_decoder_bias(model: BertPretrainingModel) -> None:
    # Transformers ties the masked-LM decoder's bias to ``cls.predictions.bias`` only
    # when the embeddings are tied; untied, that second bias would be a parameter no
    # forward uses (DDP rejects those). One bias either way.
    head = model.cls.predictions
    head.decoder.bias = head.bias


def build_bert(cfg: ModelConfig) -> BertPretrainingModel:
    """A freshly initialised BERT (Hugging Face init: N(0, init_std), zero biases)."""
    model = BertPretrainingModel(bert_config(cfg))
    _share_decoder_bias(model)
    model.scalelab_config = cfg
    return model


def bert_state_dict(model: BertPretrainingModel) -> dict[str, torch.Tensor]:
    """Weights to save, as contiguous copies; a tied decoder weight is left out (it is
    the word embedding, re-tied by ``from_pretrained``)."""
    tied = model.scalelab_config.tie_embeddings
    return {
        name: tensor.detach().contiguous().clone()
        for name, tensor in model.state_dict().items()
        if not (tied and name == "cls.predictions.decoder.weight")
    }


def load_bert(directory: str | Path, cfg: ModelConfig) -> BertPretrainingModel:
    """A saved BERT (ours or any ``BertForPreTraining`` layout) as our pretraining model."""
    model = BertPretrainingModel.from_pretrained(
        str(directory), config=bert_config(cfg), trust_remote_code=False
    )
    _share_decoder_bias(model)
    model.scalelab_config = cfg
    return model
