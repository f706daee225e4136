"""Encoded task splits, stateless training batches and batched inference.

Training batches are a pure function of the step (a seeded permutation per epoch), like
pretraining batches, so a resumed fine-tuning run sees exactly the examples it would
have seen without the interruption.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from scalelab.finetune.align import (
    ClassificationEncoding,
    NerEncoding,
    PadCollator,
    encode_classification,
    encode_ner,
    merge_predictions,
)
from scalelab.finetune.tasks import Task


@dataclass
class EncodedSplit:
    """One split of a task turned into model features (NER windows or texts)."""

    kind: str
    encoding: NerEncoding | ClassificationEncoding

    @property
    def features(self) -> Sequence[Any]:
        enc = self.encoding
        return enc.windows if isinstance(enc, NerEncoding) else enc.features

    def __len__(self) -> int:
        return len(self.features)


def encode_split(
    task: Task,
    examples: Sequence[Any],
    tokenizer: Any,
    *,
    max_length: int,
    stride: int | None,
    label_all_subwords: bool,
) -> EncodedSplit:
    if task.kind == "ner":
        enc = encode_ner(
            tokenizer,
            examples,
            task.label2id,
            max_length=max_length,
            stride=stride,
            label_all_subwords=label_all_subwords,
        )
    else:
        enc = encode_classification(
            tokenizer,
            [e.text for e in examples],
            [e.label for e in examples],
            max_length,
            label2id=task.label2id,
        )
    return EncodedSplit(task.kind, enc)


class ExampleBatches:
    """Stateless batches over an encoded training split: epoch ``e`` is a seeded permutation.

    ``get(step, micro, rank, world)`` returns rows ``[step * B, (step + 1) * B)`` of the
    concatenated epoch permutations, split into ``world`` rank slices and then into
    micro-batches.
    """

    def __init__(
        self,
        split: EncodedSplit,
        collate: PadCollator,
        *,
        batch_size: int,
        seed: int,
        grad_accum: int = 1,
    ):
        self.features = split.features
        self.collate = collate
        self.batch_size = batch_size
        self.seed = seed
        self.grad_accum = grad_accum
        self._perms: dict[int, np.ndarray] = {}

    def _perm(self, epoch: int) -> np.ndarray:
        if epoch not in self._perms:
            self._perms = {
                epoch: np.random.default_rng([self.seed, epoch]).permutation(len(self.features))
            }
        return self._perms[epoch]

    def rows(self, step: int) -> list[int]:
        n = len(self.features)
        out = []
        for i in range(step * self.batch_size, (step + 1) * self.batch_size):
            out.append(int(self._perm(i // n)[i % n]))
        return out

    def get(
        self, step: int, micro: int = 0, rank: int = 0, world: int = 1
    ) -> dict[str, torch.Tensor]:
        rows = self.rows(step)
        per_rank = len(rows) // world
        mine = rows[rank * per_rank : (rank + 1) * per_rank]
        per_micro = max(1, len(mine) // self.grad_accum)
        part = mine[micro * per_micro : (micro + 1) * per_micro]
        return self.collate([self.features[i] for i in part])


@torch.no_grad()
def predict_logits(
    model: torch.nn.Module,
    split: EncodedSplit,
    collate: PadCollator,
    *,
    batch_size: int,
    precision: str = "fp32",
) -> tuple[list[np.ndarray], float]:
    """Logits per feature (NER: [T_i, C] trimmed to the feature's length; texts: [C]) and the mean loss."""
    from scalelab.train.step import autocast

    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    out: list[np.ndarray] = []
    loss_sum, loss_n = 0.0, 0
    feats = split.features
    try:
        for start in range(0, len(feats), batch_size):
            chunk = feats[start : start + batch_size]
            batch = {k: v.to(device) for k, v in collate(chunk).items()}
            with autocast(device, precision):  # type: ignore[arg-type]
                res = model(**batch)
            logits = res["logits"].float().cpu().numpy()
            if "loss" in res:
                n = (
                    int((batch["labels"] != -100).sum())
                    if batch["labels"].dim() > 1
                    else len(chunk)
                )
                loss_sum += float(res.get("task_loss", res["loss"])) * n
                loss_n += n
            for i, f in enumerate(chunk):
                out.append(logits[i, : len(f.input_ids)] if split.kind == "ner" else logits[i])
    finally:
        model.train(was_training)
    return out, (loss_sum / loss_n if loss_n else float("nan"))


def decode(split: EncodedSplit, logits: list[np.ndarray], id2label: dict[int, str]) -> list[Any]:
    """Per-example predictions: a tag per word (NER) or a label (classification)."""
    if split.kind == "ner":
        return merge_predictions(split.encoding, logits, id2label)  # type: ignore[arg-type]
    return [id2label[int(np.argmax(row))] for row in logits]
