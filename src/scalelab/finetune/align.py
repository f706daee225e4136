"""Words <-> subwords for any Hugging Face *fast* tokenizer: NER windows, classification, padding.

NER (:func:`encode_ner`). Each sentence is tokenized word by word
(``is_split_into_words=True``) and ``word_ids()`` tells which word every subword came
from. The word's label goes on its **first subword**; the other subwords and the special
tokens get ``-100`` (ignored by the loss) -- or, with ``label_all_subwords``, every
subword carries the word's label (``B-X`` continuations become ``I-X``).

Byte-level BPE (GPT-2/RoBERTa style) and SentencePiece-style tokenizers mark a word
boundary with a leading space; tokenized word by word they would see every word as the
start of a text. A probe detects such tokenizers and the words after the first get a
leading space, so the subwords equal those of the running text.

Sentences longer than the window are **never truncated**: they are split into windows
of whole words that fit ``max_length`` (special tokens included), consecutive windows
overlapping by at most ``stride`` subword tokens. A word whose subwords alone exceed a
window keeps only its first ones (counted in ``n_clipped_words``; its label is kept).

:func:`merge_predictions` maps per-window, per-token predictions back to one tag per
word. A word seen in several windows takes the prediction from the window where its
first subword is **most central** -- farthest from a window edge that cuts the sentence
(an edge at the sentence start or end costs no context). ``rule="mean"`` instead
averages the first-subword logits over the windows. Words the tokenizer turns into no
token at all (e.g. a lone zero-width space) are predicted as ``O``.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from typing import Any, Literal

from scalelab.errors import UserError
from scalelab.finetune.examples import NerExample

IGNORE = -100
"""Label id ignored by the loss (PyTorch's cross-entropy default ``ignore_index``)."""


# ====================================================================== tokenizer helpers


def _check_fast(tokenizer: Any) -> None:
    if not getattr(tokenizer, "is_fast", False) or not hasattr(tokenizer, "backend_tokenizer"):
        raise UserError(
            f"{type(tokenizer).__name__} is not a fast tokenizer; word alignment needs one "
            "(a tokenizer.json in the model directory)"
        )


def needs_space_prefix(tokenizer: Any) -> bool:
    """True if words after the first need a leading space to tokenize as in running text.

    Probes: tokenizing ``["model", "world"]`` as pre-split words must give the tokens of
    ``"model world"``. WordPiece does; byte-level BPE without ``add_prefix_space`` does
    only when the second word is passed as ``" world"``.
    """
    words = ["model", "world", "tokenizer"]
    text = tokenizer(" ".join(words), add_special_tokens=False)["input_ids"]
    plain = tokenizer(words, is_split_into_words=True, add_special_tokens=False)["input_ids"]
    if plain == text:
        return False
    spaced = [words[0]] + [" " + w for w in words[1:]]
    prefixed = tokenizer(spaced, is_split_into_words=True, add_special_tokens=False)["input_ids"]
    return prefixed == text


def _prepare_words(words: Sequence[str], prefix: bool) -> list[str]:
    if not prefix:
        return list(words)
    return [w if i == 0 else " " + w for i, w in enumerate(words)]


def _type_ids_wanted(tokenizer: Any) -> bool:
    return "token_type_ids" in getattr(tokenizer, "model_input_names", ())


# ====================================================================== NER


@dataclasses.dataclass(frozen=True)
class TokenWindow:
    """One model input for token classification: a window of one sentence's words."""

    input_ids: tuple[int, ...]
    labels: tuple[int, ...]
    """Label id per token; ``-100`` for special tokens and non-labelled subwords."""
    word_ids: tuple[int | None, ...]
    """Index of the sentence word each token comes from (None for special tokens)."""
    token_type_ids: tuple[int, ...] | None
    example_index: int
    window_index: int
    word_start: int
    """First word of the sentence in this window."""
    word_end: int
    """One past the last word in this window."""
    n_words: int
    """Words in the whole sentence."""

    def to_dict(self) -> dict[str, list[int]]:
        """The model inputs as lists (for ``datasets``/HF ``Trainer``)."""
        out = {"input_ids": list(self.input_ids), "labels": list(self.labels)}
        if self.token_type_ids is not None:
            out["token_type_ids"] = list(self.token_type_ids)
        return out


@dataclasses.dataclass(frozen=True)
class NerEncoding:
    """The windows of a list of sentences, and what the encoding had to do."""

    windows: tuple[TokenWindow, ...]
    n_words: tuple[int, ...]
    """Words per input sentence."""
    n_split: int
    """Sentences longer than one window (split into several)."""
    n_empty_words: int
    """Words that became no token at all (never predicted; merged as ``O``)."""
    n_clipped_words: int
    """Words longer than a whole window, of which only the first subwords were kept."""
    max_length: int
    stride: int

    def summary(self) -> str:
        text = f"{len(self.n_words)} sentences -> {len(self.windows)} windows of <= {self.max_length} tokens"
        if self.n_split:
            text += f"; {self.n_split} long sentences split with overlap <= {self.stride}"
        if self.n_empty_words:
            text += f"; {self.n_empty_words} words have no token (predicted O)"
        if self.n_clipped_words:
            text += f"; {self.n_clipped_words} over-long words clipped to one window"
        return text


def _plan_windows(counts: Sequence[int], budget: int, stride: int) -> list[tuple[int, int]]:
    """Windows ``[start, end)`` of whole words with at most ``budget`` subwords each.

    Consecutive windows overlap by whole words worth at most ``stride`` subwords, and
    always advance by at least one word.
    """
    n = len(counts)
    if sum(counts) <= budget:
        return [(0, n)]
    windows = []
    start = 0
    while True:
        end, total = start, 0
        while end < n and total + counts[end] <= budget:
            total += counts[end]
            end += 1
        end = max(end, start + 1)  # one over-long word alone (clipped later)
        windows.append((start, end))
        if end >= n:
            return windows
        nxt, overlap = end, 0
        while nxt - 1 > start and overlap + counts[nxt - 1] <= stride:
            nxt -= 1
            overlap += counts[nxt]
        start = nxt


def _clip(ids: list[int], word_ids: list[int | None], max_length: int) -> slice | list[int]:
    """Positions to keep so that at most ``max_length`` remain: all specials, first content."""
    if len(ids) <= max_length:
        return slice(None)
    lead = next(i for i, w in enumerate(word_ids) if w is not None)
    trail = next(i for i, w in enumerate(reversed(word_ids)) if w is not None)
    keep = max_length - lead - trail
    return list(range(lead + keep)) + list(range(len(ids) - trail, len(ids)))


def encode_ner(
    tokenizer: Any,
    examples: Sequence[NerExample] | Sequence[Sequence[str]],
    label2id: Mapping[str, int] | None = None,
    *,
    max_length: int = 128,
    stride: int | None = None,
    label_all_subwords: bool = False,
) -> NerEncoding:
    """Turn sentences into model windows with aligned labels (see the module docstring).

    ``examples`` are :class:`NerExample` (tags become label ids through ``label2id``) or
    plain word lists for prediction (all labels ``-100``). ``stride`` is the most overlap
    of consecutive windows of a long sentence, in subword tokens (default: a quarter of
    the room left by the special tokens).
    """
    _check_fast(tokenizer)
    budget, stride = _window_budget(tokenizer, max_length, stride)
    sentences = [ex.words if isinstance(ex, NerExample) else tuple(ex) for ex in examples]
    tags = [ex.tags if isinstance(ex, NerExample) else None for ex in examples]
    if any(t is not None for t in tags) and label2id is None:
        raise UserError("encode_ner needs label2id to turn tags into label ids")
    prefix = needs_space_prefix(tokenizer)
    prepared = [_prepare_words(words, prefix) for words in sentences]
    counts = _subword_counts(tokenizer, prepared)
    plan: list[tuple[int, int, int]] = []  # (example, start word, end word)
    for i, c in enumerate(counts):
        if c:
            plan += [(i, s, e) for s, e in _plan_windows(c, budget, stride)]
    windows = _encode_windows(
        tokenizer, prepared, plan, tags, label2id, max_length, label_all_subwords
    )
    return NerEncoding(
        windows=tuple(windows),
        n_words=tuple(len(w) for w in sentences),
        n_split=sum(1 for c in counts if c and sum(c) > budget),
        n_empty_words=sum(1 for c in counts for k in c if k == 0),
        n_clipped_words=sum(1 for c in counts for k in c if k > budget),
        max_length=max_length,
        stride=stride,
    )


def _window_budget(tokenizer: Any, max_length: int, stride: int | None) -> tuple[int, int]:
    """``(subwords per window, stride)``: the room next to the special tokens, checked."""
    n_special = tokenizer.num_special_tokens_to_add(pair=False)
    budget = max_length - n_special
    if budget < 1:
        raise UserError(
            f"max_length={max_length} leaves no room next to {n_special} special tokens"
        )
    if stride is None:
        stride = budget // 4
    if not 0 <= stride < budget:
        raise UserError(
            f"stride must be in [0, {budget}) for max_length={max_length}, got {stride}"
        )
    return budget, stride


def _subword_counts(tokenizer: Any, prepared: list[list[str]]) -> list[list[int]]:
    """Subwords per word of every sentence (pass 1, no special tokens), to plan the windows."""
    counts: list[list[int]] = [[] for _ in prepared]
    non_empty = [i for i, words in enumerate(prepared) if words]
    if not non_empty:
        return counts
    first = tokenizer(
        [prepared[i] for i in non_empty],
        is_split_into_words=True,
        add_special_tokens=False,
        verbose=False,  # no "longer than the model's maximum" warning: we window
    )
    for row, i in enumerate(non_empty):
        c = [0] * len(prepared[i])
        for w in first.word_ids(row):
            if w is not None:
                c[w] += 1
        counts[i] = c
    return counts


def _encode_windows(
    tokenizer: Any,
    prepared: list[list[str]],
    plan: list[tuple[int, int, int]],
    tags: list[tuple[str, ...] | None],
    label2id: Mapping[str, int] | None,
    max_length: int,
    label_all_subwords: bool,
) -> list[TokenWindow]:
    """Pass 2, with special tokens: the planned ``(example, start, end)`` windows themselves."""
    second = (
        tokenizer(
            [prepared[i][s:e] for i, s, e in plan],
            is_split_into_words=True,
            add_special_tokens=True,
            verbose=False,  # a clipped over-long word may still exceed the model maximum
        )
        if plan
        else {}
    )
    with_types = _type_ids_wanted(tokenizer) and "token_type_ids" in second
    windows: list[TokenWindow] = []
    window_index: dict[int, int] = {}
    for row, (i, s, e) in enumerate(plan):
        ids = list(second["input_ids"][row])
        wids = [None if w is None else w + s for w in second.word_ids(row)]
        keep = _clip(ids, wids, max_length)
        types = list(second["token_type_ids"][row]) if with_types else None
        if not isinstance(keep, slice):
            ids = [ids[k] for k in keep]
            wids = [wids[k] for k in keep]
            types = [types[k] for k in keep] if types is not None else None
        if tags[i] is None:
            labels = [IGNORE] * len(ids)
        else:  # encode_ner checked that tags come with a label2id
            labels = _window_labels(wids, tags[i], label2id, label_all_subwords)  # type: ignore[arg-type]
        k = window_index.get(i, 0)
        window_index[i] = k + 1
        windows.append(
            TokenWindow(
                input_ids=tuple(ids),
                labels=tuple(labels),
                word_ids=tuple(wids),
                token_type_ids=tuple(types) if types is not None else None,
                example_index=i,
                window_index=k,
                word_start=s,
                word_end=e,
                n_words=len(prepared[i]),  # one entry per word of the sentence
            )
        )
    return windows


def _window_labels(
    wids: list[int | None],
    tags: Sequence[str],
    label2id: Mapping[str, int],
    label_all_subwords: bool,
) -> list[int]:
    """Label ids of one window: a word's tag on its first subword (or all, label_all_subwords)."""
    labels = [IGNORE] * len(wids)
    previous: int | None = None
    for pos, w in enumerate(wids):
        if w is None:
            previous = None
            continue
        tag = tags[w]
        if w != previous:
            labels[pos] = _label_id(label2id, tag)
        elif label_all_subwords:
            cont = "I-" + tag[2:] if tag.startswith("B-") else tag
            labels[pos] = _label_id(label2id, cont if cont in label2id else tag)
        previous = w
    return labels


def _label_id(label2id: Mapping[str, int], tag: str) -> int:
    try:
        return label2id[tag]
    except KeyError:
        raise UserError(
            f"tag '{tag}' is not in the model's label list ({', '.join(list(label2id)[:8])}...)"
        ) from None


def _as_array(values: Any) -> Any:
    import numpy as np

    if hasattr(values, "detach"):  # a torch tensor, possibly on an accelerator
        values = values.detach().float().cpu().numpy()
    return np.asarray(values)


def merge_predictions(
    encoding: NerEncoding,
    predictions: Sequence[Any] | Any,
    id2label: Mapping[int, str] | Sequence[str],
    *,
    rule: Literal["central", "mean"] = "central",
    default: str = "O",
    virtual_tokens: int = 0,
) -> list[list[str]]:
    """One tag per word of every encoded sentence, from per-window token predictions.

    ``predictions[k]`` belongs to ``encoding.windows[k]`` and holds, per token position
    of its ``input_ids`` (extra right padding is ignored), either a label id (shape
    ``[T]``) or logits (shape ``[T, num_labels]``); a padded array ``[windows, T(, C)]``
    works too. ``virtual_tokens`` leading positions of every row are skipped (the virtual
    tokens of PEFT prompt / p-tuning). ``rule`` picks the window of a word seen twice
    (module docstring); ``"mean"`` needs logits.
    """
    if rule not in ("central", "mean"):
        raise UserError(f"unknown merge rule '{rule}'; choose central or mean")
    if len(predictions) != len(encoding.windows):
        raise UserError(
            f"{len(predictions)} predictions for {len(encoding.windows)} windows; "
            "pass one per window, in order"
        )
    names = id2label if isinstance(id2label, Mapping) else dict(enumerate(id2label))
    # Per word: the best (score, window order) so far and its prediction; or summed logits.
    best: list[list[tuple[float, Any] | None]] = [[None] * n for n in encoding.n_words]
    sums: list[list[Any]] = [[None] * n for n in encoding.n_words]
    for window, pred in zip(encoding.windows, predictions):
        pred = _as_array(pred)[virtual_tokens:]
        if rule == "mean" and pred.ndim != 2:
            raise UserError("rule='mean' needs logits of shape [tokens, num_labels]")
        content = [p for p, w in enumerate(window.word_ids) if w is not None]
        if not content:
            continue
        lo, hi = content[0], content[-1]
        cut_left = window.word_start > 0
        cut_right = window.word_end < window.n_words
        previous = None
        for pos, w in enumerate(window.word_ids):
            if w is None or w == previous:
                previous = w
                continue
            previous = w
            value = pred[pos]
            if rule == "mean":
                slot = sums[window.example_index]
                slot[w] = value.astype("float64") if slot[w] is None else slot[w] + value
                continue
            left = pos - lo if cut_left else math.inf
            right = hi - pos if cut_right else math.inf
            score = min(left, right)
            current = best[window.example_index][w]
            if current is None or score > current[0]:
                best[window.example_index][w] = (score, value)
    out: list[list[str]] = []
    for k, n in enumerate(encoding.n_words):
        tags = []
        for w in range(n):
            if rule == "mean":
                value = sums[k][w]
            else:
                value = None if best[k][w] is None else best[k][w][1]  # type: ignore[index]
            if value is None:
                tags.append(default)
                continue
            label = int(value.argmax()) if getattr(value, "ndim", 0) >= 1 else int(value)
            tags.append(names[label])
        out.append(tags)
    return out


# ====================================================================== classification


@dataclasses.dataclass(frozen=True)
class TextFeature:
    """One model input for sequence classification."""

    input_ids: tuple[int, ...]
    label: int
    """Class id (``-100`` when encoding texts without labels, for prediction)."""
    token_type_ids: tuple[int, ...] | None
    example_index: int
    truncated: bool

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"input_ids": list(self.input_ids), "labels": self.label}
        if self.token_type_ids is not None:
            out["token_type_ids"] = list(self.token_type_ids)
        return out


@dataclasses.dataclass(frozen=True)
class ClassificationEncoding:
    features: tuple[TextFeature, ...]
    n_truncated: int
    """Texts longer than ``max_length`` tokens whose end was cut (report it)."""
    max_length: int

    def summary(self) -> str:
        text = f"{len(self.features)} texts, <= {self.max_length} tokens"
        if self.n_truncated:
            share = self.n_truncated / max(len(self.features), 1)
            text += f"; {self.n_truncated} ({share:.1%}) truncated"
        return text


def encode_classification(
    tokenizer: Any,
    texts: Sequence[str],
    labels: Sequence[str] | Sequence[int] | None,
    max_length: int,
    *,
    label2id: Mapping[str, int] | None = None,
) -> ClassificationEncoding:
    """Tokenize texts for sequence classification, truncating at ``max_length`` tokens.

    A long text keeps its first tokens (and the special tokens). Unlike NER this does cut
    text, so the number of truncated texts is returned for the caller to report. String
    labels need ``label2id``; ``labels=None`` encodes for prediction.
    """
    _check_fast(tokenizer)
    if labels is not None and len(labels) != len(texts):
        raise UserError(f"{len(texts)} texts but {len(labels)} labels")
    n_special = tokenizer.num_special_tokens_to_add(pair=False)
    if max_length - n_special < 1:
        raise UserError(
            f"max_length={max_length} leaves no room next to {n_special} special tokens"
        )
    # Truncating at max_length + 1 keeps the work bounded for long documents and still
    # tells which texts were longer than max_length (they come back one token too long).
    enc = (
        tokenizer(list(texts), add_special_tokens=True, truncation=True, max_length=max_length + 1)
        if texts
        else {"input_ids": []}
    )
    with_types = _type_ids_wanted(tokenizer) and "token_type_ids" in enc
    features = []
    n_truncated = 0
    for i, ids in enumerate(enc["input_ids"]):
        ids = list(ids)
        types = list(enc["token_type_ids"][i]) if with_types else None
        truncated = len(ids) > max_length
        if truncated:
            keep = _clip(ids, list(enc.word_ids(i)), max_length)
            ids = [ids[k] for k in keep]  # type: ignore[union-attr]
            types = [types[k] for k in keep] if types is not None else None  # type: ignore[union-attr]
            n_truncated += 1
        if labels is None:
            label = IGNORE
        elif isinstance(labels[i], str):
            if label2id is None:
                raise UserError("encode_classification needs label2id for text labels")
            label = _label_id(label2id, labels[i])  # type: ignore[arg-type]
        else:
            label = int(labels[i])
        features.append(
            TextFeature(
                input_ids=tuple(ids),
                label=label,
                token_type_ids=tuple(types) if types is not None else None,
                example_index=i,
                truncated=truncated,
            )
        )
    return ClassificationEncoding(tuple(features), n_truncated, max_length)


# ====================================================================== padding


class PadCollator:
    """Pad a batch of :class:`TokenWindow`/:class:`TextFeature` (or their dicts) to tensors.

    Returns ``input_ids`` and ``attention_mask`` of shape ``[batch, longest]`` (padded on
    the right), ``token_type_ids`` when the features have them, and ``labels``: ``[batch,
    longest]`` padded with ``-100`` for token classification, ``[batch]`` for sequence
    classification.

    ``virtual_tokens``: PEFT prompt / p-tuning put that many virtual tokens before the
    input of a token classifier, so its logits are ``[batch, virtual + longest, C]`` while
    PEFT leaves the labels alone; token labels then get ``virtual_tokens`` extra ``-100``
    in front (``labels`` ``[batch, virtual + longest]``). Inputs are left as they are --
    PEFT extends the attention mask itself.
    """

    def __init__(
        self, pad_token_id: int, *, pad_to_multiple_of: int | None = None, virtual_tokens: int = 0
    ) -> None:
        if virtual_tokens < 0:
            raise ValueError(f"virtual_tokens must be >= 0, got {virtual_tokens}")
        self.pad_token_id = int(pad_token_id)
        self.pad_to_multiple_of = pad_to_multiple_of
        self.virtual_tokens = virtual_tokens

    @classmethod
    def for_tokenizer(
        cls, tokenizer: Any, *, pad_to_multiple_of: int | None = None, virtual_tokens: int = 0
    ) -> PadCollator:
        # Decoder tokenizers often have no pad token; any id works under attention_mask 0.
        pad = tokenizer.pad_token_id
        if pad is None:
            pad = tokenizer.eos_token_id if tokenizer.eos_token_id is not None else 0
        return cls(pad, pad_to_multiple_of=pad_to_multiple_of, virtual_tokens=virtual_tokens)

    def __call__(self, batch: Sequence[Any]) -> dict[str, Any]:
        import torch

        rows = [b if isinstance(b, Mapping) else b.to_dict() for b in batch]
        longest = max(len(r["input_ids"]) for r in rows)
        if self.pad_to_multiple_of:
            m = self.pad_to_multiple_of
            longest = (longest + m - 1) // m * m

        def pad(seq: Sequence[int], value: int) -> list[int]:
            return list(seq) + [value] * (longest - len(seq))

        out = {
            "input_ids": torch.tensor([pad(r["input_ids"], self.pad_token_id) for r in rows]),
            "attention_mask": torch.tensor([pad([1] * len(r["input_ids"]), 0) for r in rows]),
        }
        if all("token_type_ids" in r for r in rows):
            out["token_type_ids"] = torch.tensor([pad(r["token_type_ids"], 0) for r in rows])
        if all("labels" in r for r in rows):
            first = rows[0]["labels"]
            if isinstance(first, Sequence):
                front = [IGNORE] * self.virtual_tokens
                out["labels"] = torch.tensor([front + pad(r["labels"], IGNORE) for r in rows])
            else:
                out["labels"] = torch.tensor([int(r["labels"]) for r in rows])
        return out
