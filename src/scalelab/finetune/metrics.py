"""Evaluation written in-house: entity-level (strict IOB2 and conlleval), token-level, classification.

Why not seqeval: unmaintained since 2020, it crashes on inputs without entities, and it is
kept only as a test oracle for the strict mode here.

* :func:`entity_scores` -- per-type precision / recall / F1 / support with micro, macro
  and weighted averages, in two modes:

  - ``"strict"``: an entity is ``B-X`` followed by ``I-X``...; an ``I-X`` that does not
    continue an open ``X`` is no entity (seqeval's strict IOB2 mode);
  - ``"conlleval"``: the chunk rules of the official CoNLL scorer ``conlleval`` (see
    :mod:`.conlleval`), whose counts it reproduces exactly.

* :func:`token_scores` -- the per-tag table including ``O`` (the layout of a
  classification report).
* :func:`classification_scores` -- accuracy, macro-F1, per-class table, confusion matrix.
* :func:`evaluate_ner` -- all three NER views at once.

Every result is a frozen dataclass with ``to_dict()`` (plain JSON) and ``render()``
(text). Averages follow sklearn/seqeval: macro is the unweighted mean of the per-label
precision, recall and F1 over every label seen in gold or predictions; weighted weighs
them by support; a ratio with a zero denominator is 0. Nothing here raises on empty
input, on inputs without entities, or on labels the gold data never uses.
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from collections.abc import Iterable, Sequence
from typing import Any, Literal

from scalelab.errors import UserError
from scalelab.finetune.conlleval import conlleval_counts
from scalelab.finetune.schemes import iob2_spans, split_tag

EntityMode = Literal["strict", "conlleval"]


def _ratio(num: float, den: float) -> float:
    return float(num) / den if den else 0.0


def _f1(p: float, r: float) -> float:
    return 2 * p * r / (p + r) if p + r else 0.0


@dataclasses.dataclass(frozen=True)
class Score:
    """One row of a precision/recall/F1 table."""

    name: str
    precision: float
    recall: float
    f1: float
    support: int
    """Gold count (entities, tokens or examples) of this label."""
    predicted: int
    """Predicted count of this label."""
    correct: int
    """True positives."""

    def to_dict(self) -> dict[str, Any]:
        return {
            "precision": self.precision,
            "recall": self.recall,
            "f1": self.f1,
            "support": self.support,
            "predicted": self.predicted,
            "correct": self.correct,
        }


@dataclasses.dataclass(frozen=True)
class ScoreTable:
    """Per-label rows plus micro, macro and weighted averages."""

    rows: tuple[Score, ...]
    micro: Score
    macro: Score
    weighted: Score

    def row(self, name: str) -> Score:
        for row in self.rows:
            if row.name == name:
                return row
        raise KeyError(name)

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(r.name for r in self.rows)

    def to_dict(self) -> dict[str, Any]:
        return {
            "per_label": {r.name: r.to_dict() for r in self.rows},
            "micro": self.micro.to_dict(),
            "macro": self.macro.to_dict(),
            "weighted": self.weighted.to_dict(),
        }

    def render(self, *, digits: int = 4, micro_name: str = "micro avg") -> str:
        """The table as text, one row per label then the three averages."""
        names = [r.name or '""' for r in self.rows]
        width = max([len(n) for n in names] + [len("weighted avg"), len(micro_name)])
        num = max(digits + 2, 9)
        head = f"{'':>{width}}  {'precision':>{num}} {'recall':>{num}} {'f1-score':>{num}} {'support':>{num}}"

        def line(name: str, s: Score) -> str:
            return (
                f"{name:>{width}}  {s.precision:>{num}.{digits}f} {s.recall:>{num}.{digits}f} "
                f"{s.f1:>{num}.{digits}f} {s.support:>{num}d}"
            )

        out = [head, ""]
        out += [line(name, r) for name, r in zip(names, self.rows)]
        out.append("")
        out.append(line(micro_name, self.micro))
        out.append(line("macro avg", self.macro))
        out.append(line("weighted avg", self.weighted))
        return "\n".join(out)


def build_table(
    names: Iterable[str],
    correct: Counter[str] | dict[str, int],
    predicted: Counter[str] | dict[str, int],
    gold: Counter[str] | dict[str, int],
) -> ScoreTable:
    """A :class:`ScoreTable` from per-label true-positive, predicted and gold counts."""
    rows = []
    for name in names:
        tp, n_pred, n_gold = correct.get(name, 0), predicted.get(name, 0), gold.get(name, 0)
        p, r = _ratio(tp, n_pred), _ratio(tp, n_gold)
        rows.append(Score(name, p, r, _f1(p, r), n_gold, n_pred, tp))
    tp = sum(r.correct for r in rows)
    n_pred = sum(r.predicted for r in rows)
    n_gold = sum(r.support for r in rows)
    p, r = _ratio(tp, n_pred), _ratio(tp, n_gold)
    micro = Score("micro", p, r, _f1(p, r), n_gold, n_pred, tp)
    k = len(rows)
    macro = Score(
        "macro",
        _ratio(sum(x.precision for x in rows), k),
        _ratio(sum(x.recall for x in rows), k),
        _ratio(sum(x.f1 for x in rows), k),
        n_gold,
        n_pred,
        tp,
    )
    weighted = Score(
        "weighted",
        _ratio(sum(x.precision * x.support for x in rows), n_gold),
        _ratio(sum(x.recall * x.support for x in rows), n_gold),
        _ratio(sum(x.f1 * x.support for x in rows), n_gold),
        n_gold,
        n_pred,
        tp,
    )
    return ScoreTable(tuple(rows), micro, macro, weighted)


def _check_pairs(gold: Sequence[Sequence[str]], pred: Sequence[Sequence[str]]) -> None:
    if len(gold) != len(pred):
        raise UserError(f"{len(gold)} gold sentences but {len(pred)} predicted ones")
    for i, (g, p) in enumerate(zip(gold, pred)):
        if isinstance(g, str) or isinstance(p, str):
            raise UserError("expected one list of tags per sentence, got a plain string")
        if len(g) != len(p):
            raise UserError(f"sentence {i}: {len(g)} gold tags but {len(p)} predicted")


# ====================================================================== entity level


@dataclasses.dataclass(frozen=True)
class EntityReport:
    """Entity-level scores in one mode."""

    mode: str
    table: ScoreTable
    n_sentences: int
    n_tokens: int
    gold_entities: int
    """Phrases in the gold data (conlleval's "phrases")."""
    predicted_entities: int
    """Phrases predicted (conlleval's "found")."""
    correct_entities: int
    """Predicted phrases with the right type and boundaries (conlleval's "correct")."""
    token_accuracy: float
    """Tokens whose predicted tag equals the gold tag (conlleval's "accuracy")."""

    @property
    def precision(self) -> float:
        return self.table.micro.precision

    @property
    def recall(self) -> float:
        return self.table.micro.recall

    @property
    def f1(self) -> float:
        return self.table.micro.f1

    def to_dict(self) -> dict[str, Any]:
        return {
            "mode": self.mode,
            "precision": self.precision,
            "recall": self.recall,
            "f1": self.f1,
            "token_accuracy": self.token_accuracy,
            "n_sentences": self.n_sentences,
            "n_tokens": self.n_tokens,
            "gold_entities": self.gold_entities,
            "predicted_entities": self.predicted_entities,
            "correct_entities": self.correct_entities,
            **self.table.to_dict(),
        }

    def render(self, *, digits: int = 4) -> str:
        head = (
            f"entity level ({self.mode}): {self.n_tokens} tokens, {self.gold_entities} gold "
            f"entities, {self.predicted_entities} predicted, {self.correct_entities} correct; "
            f"token accuracy {self.token_accuracy:.{digits}f}"
        )
        return head + "\n" + self.table.render(digits=digits)


def entity_scores(
    gold: Sequence[Sequence[str]],
    pred: Sequence[Sequence[str]],
    *,
    mode: EntityMode = "strict",
) -> EntityReport:
    """Entity-level precision / recall / F1 of predicted tag sequences against gold ones.

    ``gold`` and ``pred`` hold one tag sequence per sentence (IOB2 expected; in
    ``conlleval`` mode anything conlleval accepts). Rows are the entity types found in
    gold or predictions, sorted.
    """
    if mode not in ("strict", "conlleval"):
        raise UserError(f"unknown entity mode '{mode}'; choose strict or conlleval")
    _check_pairs(gold, pred)
    n_tokens = sum(len(g) for g in gold)
    if mode == "conlleval":
        counts = conlleval_counts(gold, pred)
        table = build_table(
            sorted(set(counts.gold_by_type) | set(counts.found_by_type)),
            counts.correct_by_type,
            counts.found_by_type,
            counts.gold_by_type,
        )
        return EntityReport(
            mode=mode,
            table=table,
            n_sentences=len(gold),
            n_tokens=counts.tokens,
            gold_entities=counts.gold,
            predicted_entities=counts.found,
            correct_entities=counts.correct,
            token_accuracy=_ratio(counts.correct_tags, counts.tokens),
        )
    correct: Counter[str] = Counter()
    found: Counter[str] = Counter()
    golden: Counter[str] = Counter()
    same_tags = 0
    for g, p in zip(gold, pred):
        g_spans, p_spans = set(iob2_spans(g)), set(iob2_spans(p))
        golden.update(s[0] for s in g_spans)
        found.update(s[0] for s in p_spans)
        correct.update(s[0] for s in g_spans & p_spans)
        same_tags += sum(a == b for a, b in zip(g, p))
    table = build_table(sorted(set(golden) | set(found)), correct, found, golden)
    return EntityReport(
        mode=mode,
        table=table,
        n_sentences=len(gold),
        n_tokens=n_tokens,
        gold_entities=sum(golden.values()),
        predicted_entities=sum(found.values()),
        correct_entities=sum(correct.values()),
        token_accuracy=_ratio(same_tags, n_tokens),
    )


# ====================================================================== token level


@dataclasses.dataclass(frozen=True)
class TokenReport:
    """Per-tag scores over tokens (``O`` included); micro average = accuracy."""

    table: ScoreTable
    accuracy: float
    n_tokens: int

    def to_dict(self) -> dict[str, Any]:
        return {"accuracy": self.accuracy, "n_tokens": self.n_tokens, **self.table.to_dict()}

    def render(self, *, digits: int = 4) -> str:
        head = f"token level: {self.n_tokens} tokens, accuracy {self.accuracy:.{digits}f}"
        return head + "\n" + self.table.render(digits=digits, micro_name="micro avg")


def _tag_order(tag: str) -> tuple[int, str, str]:
    prefix, typ = split_tag(tag)
    return (0, "", "") if tag == "O" else (1, typ, prefix)


def _ordered(known: Sequence[str] | None, seen: Iterable[str], key=None) -> list[str]:
    """``known`` labels in their order, then labels only seen in the data, sorted."""
    first = list(dict.fromkeys(known or ()))
    rest = sorted(set(seen) - set(first), key=key)
    return first + rest


def token_scores(
    gold: Sequence[Sequence[str]],
    pred: Sequence[Sequence[str]],
    *,
    labels: Sequence[str] | None = None,
) -> TokenReport:
    """Per-tag precision / recall / F1 / support over all tokens, ``O`` included.

    Rows are ``labels`` (e.g. the task's tag list, in its order) and then any other tag
    seen, ``O`` first and the rest grouped by type; a listed label never seen has zeros.
    """
    _check_pairs(gold, pred)
    correct: Counter[str] = Counter()
    found: Counter[str] = Counter()
    golden: Counter[str] = Counter()
    for g, p in zip(gold, pred):
        golden.update(g)
        found.update(p)
        correct.update(a for a, b in zip(g, p) if a == b)
    names = _ordered(labels, set(golden) | set(found), key=_tag_order)
    table = build_table(names, correct, found, golden)
    n = sum(golden.values())
    return TokenReport(table=table, accuracy=_ratio(sum(correct.values()), n), n_tokens=n)


# ====================================================================== NER bundle


@dataclasses.dataclass(frozen=True)
class NerEvaluation:
    """Strict and conlleval entity scores and the token table of one prediction set."""

    strict: EntityReport
    conlleval: EntityReport
    tokens: TokenReport

    @property
    def f1(self) -> float:
        """The headline number: conlleval micro F1 (what CoNLL papers report)."""
        return self.conlleval.f1

    def to_dict(self) -> dict[str, Any]:
        return {
            "f1": self.f1,
            "strict": self.strict.to_dict(),
            "conlleval": self.conlleval.to_dict(),
            "tokens": self.tokens.to_dict(),
        }

    def render(self, *, digits: int = 4) -> str:
        return "\n\n".join(
            r.render(digits=digits) for r in (self.conlleval, self.strict, self.tokens)
        )


def evaluate_ner(
    gold: Sequence[Sequence[str]],
    pred: Sequence[Sequence[str]],
    *,
    labels: Sequence[str] | None = None,
) -> NerEvaluation:
    """Entity scores in both modes and the per-tag token table."""
    return NerEvaluation(
        strict=entity_scores(gold, pred, mode="strict"),
        conlleval=entity_scores(gold, pred, mode="conlleval"),
        tokens=token_scores(gold, pred, labels=labels),
    )


# ====================================================================== classification


@dataclasses.dataclass(frozen=True)
class ClassificationReport:
    """Accuracy, macro-F1, per-class table and confusion matrix (rows gold, columns predicted)."""

    labels: tuple[str, ...]
    accuracy: float
    table: ScoreTable
    confusion: tuple[tuple[int, ...], ...]
    n_examples: int

    @property
    def macro_f1(self) -> float:
        return self.table.macro.f1

    @property
    def f1(self) -> float:
        return self.macro_f1

    def to_dict(self) -> dict[str, Any]:
        return {
            "accuracy": self.accuracy,
            "macro_f1": self.macro_f1,
            "n_examples": self.n_examples,
            "labels": list(self.labels),
            "confusion": [list(row) for row in self.confusion],
            **self.table.to_dict(),
        }

    def render_confusion(self) -> str:
        """The confusion matrix with gold labels down and predicted labels across."""
        if not self.labels:
            return "confusion matrix: (empty)"
        short = [label[:12] for label in self.labels]
        corner = "gold \\ pred"
        width = max(len(max(self.labels, key=len)), len(corner))
        cell = max([len(s) for s in short] + [len(str(max(max(r) for r in self.confusion)))])
        lines = [f"{corner:>{width}}  " + " ".join(f"{s:>{cell}}" for s in short)]
        for label, row in zip(self.labels, self.confusion):
            lines.append(f"{label:>{width}}  " + " ".join(f"{v:>{cell}d}" for v in row))
        return "\n".join(lines)

    def render(self, *, digits: int = 4) -> str:
        head = (
            f"classification: {self.n_examples} examples, accuracy {self.accuracy:.{digits}f}, "
            f"macro-F1 {self.macro_f1:.{digits}f}"
        )
        return "\n".join(
            [
                head,
                self.table.render(digits=digits),
                "",
                "confusion matrix:",
                self.render_confusion(),
            ]
        )


def classification_scores(
    gold: Sequence[str],
    pred: Sequence[str],
    *,
    labels: Sequence[str] | None = None,
) -> ClassificationReport:
    """Accuracy, per-class precision / recall / F1 / support, macro-F1, confusion matrix.

    Classes are ``labels`` (e.g. the task's, in its order) followed by any other label
    seen in gold or predictions, sorted.
    """
    if len(gold) != len(pred):
        raise UserError(f"{len(gold)} gold labels but {len(pred)} predictions")
    gold = [str(g) for g in gold]
    pred = [str(p) for p in pred]
    names = _ordered(labels, set(gold) | set(pred))
    index = {name: i for i, name in enumerate(names)}
    matrix = [[0] * len(names) for _ in names]
    for g, p in zip(gold, pred):
        matrix[index[g]][index[p]] += 1
    correct = Counter({n: matrix[i][i] for n, i in index.items()})
    found = Counter({n: sum(row[i] for row in matrix) for n, i in index.items()})
    golden = Counter({n: sum(matrix[i]) for n, i in index.items()})
    table = build_table(names, correct, found, golden)
    return ClassificationReport(
        labels=tuple(names),
        accuracy=_ratio(sum(correct.values()), len(gold)),
        table=table,
        confusion=tuple(tuple(row) for row in matrix),
        n_examples=len(gold),
    )
