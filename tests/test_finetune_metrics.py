"""In-house evaluation: strict mode against seqeval, conlleval mode against hand-derived counts."""

from __future__ import annotations

import json
import math
import random
import warnings

import pytest

from scalelab.errors import UserError
from scalelab.finetune.conlleval import conlleval_counts, conlleval_split
from scalelab.finetune.metrics import (
    classification_scores,
    entity_scores,
    evaluate_ner,
    token_scores,
)
from scalelab.finetune.schemes import to_iob2

TAGS = ["O", "O", "O", "B-A", "I-A", "B-B", "I-B", "B-geo-loc", "I-geo-loc"]


def random_corpus(rng: random.Random) -> list[list[str]]:
    return [[rng.choice(TAGS) for _ in range(rng.randint(0, 10))] for _ in range(rng.randint(1, 5))]


# ---------------------------------------------------------------- strict vs seqeval


def test_strict_mode_matches_seqeval_on_random_sequences():
    v1 = pytest.importorskip("seqeval.metrics.v1")
    scheme = pytest.importorskip("seqeval.scheme").IOB2
    rng = random.Random(0)
    compared = 0
    for _ in range(400):
        gold, pred = random_corpus(rng), random_corpus(rng)
        pred = [[rng.choice(TAGS) for _ in g] for g in gold]  # same shapes
        ours = entity_scores(gold, pred, mode="strict")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                p, r, f, s = v1.precision_recall_fscore_support(
                    gold, pred, average=None, scheme=scheme
                )
                averages = {
                    avg: v1.precision_recall_fscore_support(gold, pred, average=avg, scheme=scheme)
                    for avg in ("micro", "macro", "weighted")
                }
            except Exception:  # seqeval crashes on some inputs (e.g. no entities at all)
                continue
        if any(math.isnan(float(x)) for avg in averages.values() for x in avg[:3]):
            continue  # seqeval's nan for "no entities anywhere"; ours is 0 (tested below)
        compared += 1
        assert len(ours.table.rows) == len(s)
        for row, pi, ri, fi, si in zip(ours.table.rows, p, r, f, s):
            assert (row.precision, row.recall, row.f1, row.support) == pytest.approx(
                (pi, ri, fi, si)
            ), (gold, pred, row.name)
        for avg, (pa, ra, fa, _sa) in averages.items():
            got = getattr(ours.table, avg)
            assert (got.precision, got.recall, got.f1) == pytest.approx((pa, ra, fa)), (
                gold,
                pred,
                avg,
            )
    assert compared > 300


def test_strict_ignores_i_without_b():
    # I-A after O and I-A after B-B open no entity in strict mode.
    report = entity_scores(
        [["O", "I-A", "B-B", "I-A"]], [["B-A", "I-A", "B-B", "O"]], mode="strict"
    )
    assert (report.gold_entities, report.predicted_entities, report.correct_entities) == (1, 2, 1)


# ---------------------------------------------------------------- conlleval mode


def counts(gold, pred):
    c = conlleval_counts(gold, pred)
    return c.gold, c.found, c.correct, c.tokens, c.correct_tags


def test_conlleval_exact_match():
    gold = [["B-PER", "I-PER", "O", "B-LOC"]]
    assert counts(gold, gold) == (2, 2, 2, 4, 4)


def test_conlleval_i_after_o_starts_a_chunk():
    # Gold "O I I O": I after O starts a PER chunk (the O->I rule); the guess opens the
    # same chunk with B. Both end at the last O with type PER: one correct phrase. The
    # I-vs-B token counts as a wrong tag: 3 of 4 right. Strict mode sees no gold entity.
    gold, pred = [["O", "I-PER", "I-PER", "O"]], [["O", "B-PER", "I-PER", "O"]]
    assert counts(gold, pred) == (1, 1, 1, 4, 3)
    strict = entity_scores(gold, pred, mode="strict")
    assert (strict.gold_entities, strict.predicted_entities, strict.correct_entities) == (0, 1, 0)


def test_conlleval_type_change_inside_a_chunk():
    # Guess "B-PER I-LOC": the type change ends PER and starts LOC (2 found); gold is one
    # PER chunk. At token 1 only the guess ends, so the match is abandoned: 0 correct.
    assert counts([["B-PER", "I-PER"]], [["B-PER", "I-LOC"]]) == (1, 2, 0, 2, 1)


def test_conlleval_i_of_new_type_after_b():
    # Gold "B-Y I-X" is two chunks (type rule), guess "B-Y B-X" too. At token 1 both Y
    # chunks end together (Y correct) and both X chunks start together; the sentence
    # break ends them together (X correct). Strict mode drops the gold I-X.
    gold, pred = [["B-Y", "I-X"]], [["B-Y", "B-X"]]
    assert counts(gold, pred) == (2, 2, 2, 2, 1)
    assert entity_scores(gold, pred, mode="strict").correct_entities == 1


def test_conlleval_sentence_break_ends_chunks():
    # The break acts as O: "B-X" | "I-X" is two chunks (I after the break's O starts one).
    gold = [["B-X"], ["I-X"]]
    assert counts(gold, gold) == (2, 2, 2, 2, 2)


def test_conlleval_e_then_b_neither_ends_nor_starts():
    # The scorer has no rule for E followed by B of the same type: gold "B E B O" is ONE
    # chunk over tokens 0-2. The guess "B E O B" ends at token 2 (E->O) and starts again at
    # token 3 (O->B): 2 found. Ends differ at token 2, so nothing is correct. Tags right: 2.
    gold, pred = [["B-X", "E-X", "B-X", "O"]], [["B-X", "E-X", "O", "B-X"]]
    assert counts(gold, pred) == (1, 2, 0, 4, 2)


def test_conlleval_types_are_cut_at_the_second_hyphen():
    # "B-geo-loc" and "I-geo-xyz" are both type "geo" to the scorer: gold is one chunk.
    # The guess "B B" is two chunks; the first ends early, so 0 correct.
    c = conlleval_counts([["B-geo-loc", "I-geo-xyz"]], [["B-geo-loc", "B-geo-loc"]])
    assert (c.gold, c.found, c.correct) == (1, 2, 0)
    assert c.gold_by_type == {"geo": 1}  # ambiguous cut type: reported as the scorer does
    # Unambiguous: reported under the full name, with the same counts.
    c = conlleval_counts([["B-geo-loc", "I-geo-loc"]], [["B-geo-loc", "I-geo-loc"]])
    assert c.correct_by_type == {"geo-loc": 1}
    assert conlleval_split("B-geo-loc") == ("B", "geo")
    assert conlleval_split("B-0") == ("B", "")  # "0" is false in Perl: empty type
    assert conlleval_split("O") == ("O", "")


def test_conlleval_different_types_never_match():
    assert counts([["B-X", "I-X", "O"]], [["B-Y", "I-Y", "O"]]) == (1, 1, 0, 3, 1)


def test_conlleval_equals_strict_after_repairing_openers():
    # For B/I/O tags the scorer's chunks are exactly the IOB2 spans once every I-X that
    # opens a chunk is read as B-X, and a phrase is correct iff its span and type match.
    # An independent, span-based check of the state machine on random input.
    rng = random.Random(3)
    tags = ["O", "O", "B-A", "I-A", "B-B", "I-B"]
    for _ in range(400):
        gold = [[rng.choice(tags) for _ in range(rng.randint(0, 9))] for _ in range(3)]
        pred = [[rng.choice(tags) for _ in g] for g in gold]
        ours = conlleval_counts(gold, pred)
        repaired = entity_scores(
            [list(to_iob2(g, "IOB2")[0]) for g in gold],
            [list(to_iob2(p, "IOB2")[0]) for p in pred],
            mode="strict",
        )
        assert (ours.gold, ours.found, ours.correct) == (
            repaired.gold_entities,
            repaired.predicted_entities,
            repaired.correct_entities,
        ), (gold, pred)


def test_conlleval_report_uses_the_counts():
    gold = [["B-PER", "I-PER", "O", "B-LOC"], ["O", "I-ORG", "O"]]
    pred = [["B-PER", "I-PER", "O", "B-LOC"], ["O", "I-ORG", "B-ORG"]]
    report = entity_scores(gold, pred, mode="conlleval")
    assert (report.gold_entities, report.predicted_entities, report.correct_entities) == (3, 4, 3)
    assert report.precision == pytest.approx(0.75) and report.recall == 1.0
    assert report.table.row("ORG").precision == pytest.approx(0.5)
    assert report.token_accuracy == pytest.approx(6 / 7)


# ---------------------------------------------------------------- edge cases


@pytest.mark.parametrize("mode", ["strict", "conlleval"])
def test_no_crash_on_edge_cases(mode):
    empty = entity_scores([], [], mode=mode)
    assert (empty.f1, empty.n_tokens, empty.table.rows) == (0.0, 0, ())
    all_o = entity_scores([["O", "O"]], [["O", "O"]], mode=mode)
    assert all_o.f1 == 0.0 and all_o.token_accuracy == 1.0
    unseen = entity_scores([["O", "O"]], [["B-NEW", "O"]], mode=mode)
    assert unseen.table.row("NEW").support == 0 and unseen.precision == 0.0
    missed = entity_scores([["B-A", "O"]], [["O", "O"]], mode=mode)
    assert missed.recall == 0.0 and missed.table.macro.f1 == 0.0
    for report in (empty, all_o, unseen, missed):
        json.dumps(report.to_dict())
        assert "micro avg" in report.render()


def test_mismatched_lengths_and_bad_mode():
    with pytest.raises(UserError, match="sentence 0: 2 gold tags but 1 predicted"):
        entity_scores([["O", "O"]], [["O"]])
    with pytest.raises(UserError, match="1 gold sentences but 0"):
        entity_scores([["O"]], [])
    with pytest.raises(UserError, match="unknown entity mode"):
        entity_scores([], [], mode="lenient")  # type: ignore[arg-type]


def test_averages_by_hand():
    # A: 1 gold, found and correct. B: 3 gold, 1 found and correct -> P 1, R 1/3.
    gold = [["B-A", "O", "B-B", "B-B", "B-B"]]
    pred = [["B-A", "O", "B-B", "O", "O"]]
    t = entity_scores(gold, pred).table
    assert t.micro.precision == 1.0 and t.micro.recall == pytest.approx(0.5)
    assert t.macro.recall == pytest.approx((1 + 1 / 3) / 2)
    assert t.weighted.recall == pytest.approx((1 * 1 + 3 * (1 / 3)) / 4)
    assert t.row("B").f1 == pytest.approx(0.5)


# ---------------------------------------------------------------- token level


def test_token_table_matches_sklearn():
    skm = pytest.importorskip("sklearn.metrics")
    rng = random.Random(1)
    gold = [[rng.choice(TAGS) for _ in range(8)] for _ in range(30)]
    pred = [[rng.choice(TAGS) for _ in g] for g in gold]
    report = token_scores(gold, pred, labels=["O", "B-A", "I-A", "B-ZZZ"])
    names = report.table.names
    assert names[:4] == ("O", "B-A", "I-A", "B-ZZZ")  # given order first, unseen kept
    flat_g = [t for s in gold for t in s]
    flat_p = [t for s in pred for t in s]
    p, r, f, s = skm.precision_recall_fscore_support(
        flat_g, flat_p, labels=list(names), zero_division=0
    )
    for row, pi, ri, fi, si in zip(report.table.rows, p, r, f, s):
        assert (row.precision, row.recall, row.f1, row.support) == pytest.approx((pi, ri, fi, si))
    for avg in ("macro", "weighted"):
        pa, ra, fa, _ = skm.precision_recall_fscore_support(
            flat_g, flat_p, labels=list(names), average=avg, zero_division=0
        )
        got = getattr(report.table, avg)
        assert (got.precision, got.recall, got.f1) == pytest.approx((pa, ra, fa))
    assert report.accuracy == pytest.approx(skm.accuracy_score(flat_g, flat_p))
    assert report.table.micro.f1 == pytest.approx(report.accuracy)


def test_evaluate_ner_bundle_is_json_safe():
    result = evaluate_ner([["B-A", "I-A"]], [["B-A", "I-A"]], labels=["O", "B-A", "I-A"])
    data = json.loads(json.dumps(result.to_dict()))
    assert data["f1"] == 1.0 and data["strict"]["f1"] == 1.0
    assert data["tokens"]["per_label"]["O"]["support"] == 0
    text = result.render()
    assert "entity level (conlleval)" in text and "token level" in text


# ---------------------------------------------------------------- classification


def test_classification_matches_sklearn():
    skm = pytest.importorskip("sklearn.metrics")
    rng = random.Random(2)
    labels = ["pos", "neg", "neu"]
    gold = [rng.choice(labels) for _ in range(200)]
    pred = [g if rng.random() < 0.6 else rng.choice(labels + ["weird"]) for g in gold]
    report = classification_scores(gold, pred, labels=labels)
    assert report.labels == ("pos", "neg", "neu", "weird")
    assert report.accuracy == pytest.approx(skm.accuracy_score(gold, pred))
    assert report.macro_f1 == pytest.approx(
        skm.f1_score(gold, pred, labels=list(report.labels), average="macro", zero_division=0)
    )
    expected = skm.confusion_matrix(gold, pred, labels=list(report.labels)).tolist()
    assert [list(r) for r in report.confusion] == expected
    data = json.loads(json.dumps(report.to_dict()))
    assert data["confusion"] == expected
    assert "gold \\ pred" in report.render()


def test_classification_edge_cases():
    empty = classification_scores([], [])
    assert empty.accuracy == 0.0 and empty.labels == ()
    assert "confusion matrix" in empty.render()
    with pytest.raises(UserError, match="2 gold labels but 1"):
        classification_scores(["a", "b"], ["a"])
