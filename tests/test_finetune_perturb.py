"""Perturbations: seeded, label-preserving, rates respected."""

from __future__ import annotations

import random
import string

import pytest

from scalelab.errors import UserError
from scalelab.finetune.examples import NerExample, TextExample
from scalelab.finetune.perturb import (
    entity_inventory,
    parse_perturbations,
    perturb_task_split,
)
from scalelab.finetune.schemes import iob2_spans


def ner_examples(n: int = 60, seed: int = 0) -> list[NerExample]:
    rng = random.Random(seed)
    people = [("Alice",), ("Bob", "Smith"), ("Carol", "de", "Vries")]
    places = [("Paris",), ("New", "York")]
    out = []
    for _ in range(n):
        words, tags = [], []
        for _ in range(rng.randint(3, 8)):
            r = rng.random()
            if r < 0.2:
                ent, typ = rng.choice(people), "PER"
            elif r < 0.3:
                ent, typ = rng.choice(places), "LOC"
            else:
                words.append(
                    "".join(rng.choice(string.ascii_lowercase) for _ in range(rng.randint(1, 8)))
                )
                tags.append("O")
                continue
            words += ent
            tags += ["B-" + typ] + ["I-" + typ] * (len(ent) - 1)
        words.append(".")
        tags.append("O")
        out.append(NerExample(tuple(words), tuple(tags)))
    return out


TEXTS = [
    TextExample("The Quick brown fox, jumps over 2 lazy dogs!", "a"),
    TextExample("Hello   world", "b"),
] * 30


@pytest.mark.parametrize("perturbation", ["lower", "upper", "typos"])
def test_ner_word_perturbations_keep_tags_and_lengths(perturbation):
    data = ner_examples()
    out = perturb_task_split(data, "ner", perturbation=perturbation, seed=1)
    assert len(out.examples) == len(data)
    for before, after in zip(data, out.examples):
        assert after.tags == before.tags and len(after.words) == len(before.words)
        assert all(after.words)  # no word vanished
    assert out.n_changed > 0
    again = perturb_task_split(data, "ner", perturbation=perturbation, seed=1)
    assert again == out  # pure and seeded


def test_casing_does_what_it_says():
    data = ner_examples()
    lower = perturb_task_split(data, "ner", perturbation="lower").examples
    upper = perturb_task_split(data, "ner", perturbation="upper").examples
    assert all(w == w.lower() for ex in lower for w in ex.words)
    assert all(w == w.upper() for ex in upper for w in ex.words)
    text = perturb_task_split(TEXTS, "classification", perturbation="upper").examples[0]
    assert text == TextExample("THE QUICK BROWN FOX, JUMPS OVER 2 LAZY DOGS!", "a")


def test_typo_rates_are_respected_and_seeded():
    data = ner_examples(400)
    for rate in (0.05, 0.3):
        out = perturb_task_split(data, "ner", perturbation="typos", rate=rate, seed=7)
        assert out.n_units > 1000
        assert abs(out.changed_fraction - rate) < 0.03
        changed = sum(a != b for x, y in zip(data, out.examples) for a, b in zip(x.words, y.words))
        assert changed == out.n_changed  # every selected word really changed
    chars = perturb_task_split(
        data, "ner", perturbation="typos", rate=0.02, typo_unit="char", seed=7
    )
    assert chars.unit == "letter" and abs(chars.changed_fraction - 0.02) < 0.01
    a = perturb_task_split(data, "ner", perturbation="typos", seed=1)
    b = perturb_task_split(data, "ner", perturbation="typos", seed=2)
    assert a.examples != b.examples
    zero = perturb_task_split(data, "ner", perturbation="typos", rate=0.0)
    assert list(zero.examples) == data and zero.n_changed == 0


def test_typos_on_text_keep_label_and_spacing():
    out = perturb_task_split(TEXTS, "classification", perturbation="typos", rate=1.0, seed=3)
    for before, after in zip(TEXTS, out.examples):
        assert after.label == before.label
        assert len(after.text.split()) == len(before.text.split())
        assert after.text != before.text
    assert "   " in out.examples[1].text  # whitespace runs are kept
    # Tokens without letters ("2") are never edited.
    assert all(ex.text.split()[6] == "2" for ex in out.examples[::2])


def test_entity_swap_uses_training_entities_of_the_same_type():
    train = ner_examples(80, seed=1)
    test = ner_examples(40, seed=2)
    inventory = entity_inventory(train)
    out = perturb_task_split(test, "ner", perturbation="entity-swap", seed=0, train_examples=train)
    assert out.unit == "entity" and out.n_units == sum(len(iob2_spans(ex.tags)) for ex in test)
    assert out.changed_fraction == 1.0  # every type has alternatives here
    for before, after in zip(test, out.examples):
        old, new = iob2_spans(before.tags), iob2_spans(after.tags)
        assert [t for t, _s, _e in old] == [t for t, _s, _e in new]  # same types, same order
        assert len(after.words) == len(after.tags)
        for (typ, s0, e0), (_t, s1, e1) in zip(old, new):
            replacement = after.words[s1:e1]
            assert replacement in inventory[typ]
            assert replacement != before.words[s0:e0]
        # Words outside entities are untouched.
        outside_before = [w for w, t in zip(before.words, before.tags) if t == "O"]
        outside_after = [w for w, t in zip(after.words, after.tags) if t == "O"]
        assert outside_before == outside_after
    half = perturb_task_split(
        test, "ner", perturbation="entity-swap", rate=0.5, seed=0, train_examples=train
    )
    assert 0.25 < half.changed_fraction < 0.75


def test_errors_and_parsing():
    assert parse_perturbations("casing,typos,entity-swap") == (
        "lower",
        "upper",
        "typos",
        "entity-swap",
    )
    assert parse_perturbations(["typos", "typos"]) == ("typos",)
    with pytest.raises(UserError, match="unknown perturbation 'noise'"):
        parse_perturbations("casing,noise")
    with pytest.raises(UserError, match="NER tasks only"):
        perturb_task_split(
            TEXTS, "classification", perturbation="entity-swap", train_examples=TEXTS
        )
    with pytest.raises(UserError, match="needs the training examples"):
        perturb_task_split(ner_examples(3), "ner", perturbation="entity-swap")
    with pytest.raises(UserError, match="rate must be in"):
        perturb_task_split(TEXTS, "classification", perturbation="typos", rate=2.0)
    with pytest.raises(UserError, match="need NerExample"):
        perturb_task_split(TEXTS, "ner", perturbation="lower")
    json_ready = perturb_task_split(TEXTS, "classification", perturbation="lower").to_dict()
    assert json_ready["n_examples"] == len(TEXTS) and "examples" not in json_ready
