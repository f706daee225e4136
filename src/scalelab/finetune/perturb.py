"""Label-preserving perturbations of a test split, for robustness evaluation.

``scalelab evaluate --perturb casing,typos,entity-swap`` scores a model on perturbed
copies of the test set and reports the drop against the clean score. The perturbations:

* ``lower`` / ``upper`` (``casing`` means both): each word lower- or upper-cased with
  probability ``rate`` (default 1: all of them);
* ``typos``: each word holding a letter gets, with probability ``rate`` (default 0.1),
  one character-level edit -- swap of two neighbours, deletion, insertion or
  substitution of a letter -- or, with ``typo_unit="char"``, each letter gets an edit
  with probability ``rate``; a word never disappears, so NER tags stay aligned;
* ``entity-swap`` (NER only): each gold entity, with probability ``rate`` (default 1), is
  replaced by a different entity string of the same type taken from the *training*
  split, and its tags are rewritten for the new length (``B-X I-X ...``).

All are pure functions of ``(examples, seed)``: every example draws from its own random
stream seeded by SHA-256 of ``(perturbation, seed, index)``, and only
``random.Random.random`` is used, whose sequence Python keeps stable across versions.
"""

from __future__ import annotations

import dataclasses
import hashlib
import random
import re
import string
from collections.abc import Sequence
from typing import Any, Literal

from scalelab.errors import UserError
from scalelab.finetune.examples import Example, NerExample, TaskKind, TextExample
from scalelab.finetune.schemes import iob2_spans

PERTURBATIONS = ("lower", "upper", "typos", "entity-swap")
_GROUPS = {"casing": ("lower", "upper")}
DEFAULT_RATES = {"lower": 1.0, "upper": 1.0, "typos": 0.1, "entity-swap": 1.0}
_WORD = re.compile(r"\S+")


def parse_perturbations(spec: str | Sequence[str]) -> tuple[str, ...]:
    """``"casing,typos"`` -> ``("lower", "upper", "typos")``; unknown names are a UserError."""
    names = [s.strip() for s in spec.split(",")] if isinstance(spec, str) else list(spec)
    out: list[str] = []
    for name in filter(None, names):
        expanded = _GROUPS.get(name, (name,))
        for item in expanded:
            if item not in PERTURBATIONS:
                choices = ", ".join(("casing",) + PERTURBATIONS)
                raise UserError(f"unknown perturbation '{name}'; choose from {choices}")
            if item not in out:
                out.append(item)
    if not out:
        raise UserError("no perturbation given")
    return tuple(out)


@dataclasses.dataclass(frozen=True)
class PerturbedSplit:
    """Perturbed copies of some examples and how much was changed."""

    perturbation: str
    rate: float
    seed: int
    examples: tuple[Example, ...]
    n_units: int
    """Units that could be perturbed: words (casing, typos), letters (char typos), entities."""
    n_changed: int
    """Units actually changed."""
    unit: str

    @property
    def changed_fraction(self) -> float:
        return self.n_changed / self.n_units if self.n_units else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "perturbation": self.perturbation,
            "rate": self.rate,
            "seed": self.seed,
            "unit": self.unit,
            "n_examples": len(self.examples),
            "n_units": self.n_units,
            "n_changed": self.n_changed,
            "changed_fraction": self.changed_fraction,
        }


class _Rng:
    """A per-example random stream built only on ``random.Random.random``."""

    def __init__(self, *key: object) -> None:
        digest = hashlib.sha256(":".join(map(str, key)).encode()).digest()
        self._random = random.Random(int.from_bytes(digest[:8], "big")).random

    def chance(self, p: float) -> bool:
        return self._random() < p

    def below(self, n: int) -> int:
        return min(int(self._random() * n), n - 1)

    def pick(self, items: Sequence[Any]) -> Any:
        return items[self.below(len(items))]


# ====================================================================== word edits


def _letter_like(ch: str, rng: _Rng) -> str:
    letter = rng.pick(string.ascii_lowercase)
    return letter.upper() if ch.isupper() else letter


def _edit_at(word: str, i: int, rng: _Rng) -> str:
    """One random edit at letter position ``i``; never empties the word, always changes it."""
    ops = ["substitute", "insert"]
    if len(word) >= 2:
        ops.append("delete")
    if i + 1 < len(word) and word[i + 1] != word[i]:
        ops.append("swap")
    op = rng.pick(ops)
    if op == "swap":
        return word[:i] + word[i + 1] + word[i] + word[i + 2 :]
    if op == "delete":
        return word[:i] + word[i + 1 :]
    if op == "insert":
        return word[: i + 1] + _letter_like(word[i], rng) + word[i + 1 :]
    new = _letter_like(word[i], rng)
    while new.lower() == word[i].lower():
        new = _letter_like(word[i], rng)
    return word[:i] + new + word[i + 1 :]


def _typo_word(word: str, rate: float, unit: str, rng: _Rng) -> tuple[str, int, int]:
    """(new word, units, changed units) for one word."""
    letters = [i for i, ch in enumerate(word) if ch.isalpha()]
    if not letters:
        return word, 0, 0
    if unit == "word":
        if not rng.chance(rate):
            return word, 1, 0
        return _edit_at(word, rng.pick(letters), rng), 1, 1
    # Per letter: edit right to left so earlier positions stay valid.
    changed = 0
    for i in reversed(letters):
        if rng.chance(rate) and i < len(word):
            word = _edit_at(word, i, rng)
            changed += 1
    return word, len(letters), changed


def _word_op(perturbation: str, rate: float, unit: str):
    def apply(word: str, rng: _Rng) -> tuple[str, int, int]:
        if perturbation == "typos":
            return _typo_word(word, rate, unit, rng)
        if not rng.chance(rate):
            return word, 1, 0
        new = word.lower() if perturbation == "lower" else word.upper()
        return new, 1, int(new != word)

    return apply


# ====================================================================== entity swap


def entity_inventory(train: Sequence[NerExample]) -> dict[str, tuple[tuple[str, ...], ...]]:
    """Distinct entity strings (as word tuples) per type in some IOB2 examples, sorted."""
    found: dict[str, set[tuple[str, ...]]] = {}
    for ex in train:
        for typ, start, end in iob2_spans(ex.tags):
            found.setdefault(typ, set()).add(tuple(ex.words[start:end]))
    return {typ: tuple(sorted(items)) for typ, items in sorted(found.items())}


def _swap_entities(
    ex: NerExample, inventory: dict[str, tuple[tuple[str, ...], ...]], rate: float, rng: _Rng
) -> tuple[NerExample, int, int]:
    words: list[str] = []
    tags: list[str] = []
    cursor = 0
    spans = iob2_spans(ex.tags)
    changed = 0
    for typ, start, end in spans:
        words += ex.words[cursor:start]
        tags += ex.tags[cursor:start]
        old = tuple(ex.words[start:end])
        choices = [e for e in inventory.get(typ, ()) if e != old]
        if choices and rng.chance(rate):
            new = rng.pick(choices)
            changed += 1
        else:
            new = old
        words += new
        tags += ["B-" + typ] + ["I-" + typ] * (len(new) - 1)
        cursor = end
    words += ex.words[cursor:]
    tags += ex.tags[cursor:]
    return NerExample(tuple(words), tuple(tags), source=ex.source), len(spans), changed


# ====================================================================== entry point


def perturb_task_split(
    examples: Sequence[Example],
    kind: TaskKind,
    *,
    perturbation: str,
    rate: float | None = None,
    seed: int = 0,
    train_examples: Sequence[Example] | None = None,
    typo_unit: Literal["word", "char"] = "word",
) -> PerturbedSplit:
    """A perturbed, label-preserving copy of ``examples`` (see the module docstring).

    ``rate`` defaults to :data:`DEFAULT_RATES`. ``entity-swap`` needs ``train_examples``
    (the entity inventory) and applies to NER only.
    """
    if perturbation not in PERTURBATIONS:
        raise UserError(
            f"unknown perturbation '{perturbation}'; choose from {', '.join(PERTURBATIONS)}"
        )
    if kind not in ("ner", "classification"):
        raise UserError(f"unknown task kind '{kind}'")
    rate = DEFAULT_RATES[perturbation] if rate is None else float(rate)
    if not 0.0 <= rate <= 1.0:
        raise UserError(f"perturbation rate must be in [0, 1], got {rate}")
    if typo_unit not in ("word", "char"):
        raise UserError(f"typo_unit must be word or char, got {typo_unit}")
    wanted = NerExample if kind == "ner" else TextExample
    if not all(isinstance(ex, wanted) for ex in examples):
        raise UserError(f"{kind} perturbations need {wanted.__name__} examples")
    out: list[Example] = []
    n_units = n_changed = 0

    if perturbation == "entity-swap":
        if kind != "ner":
            raise UserError("entity-swap applies to NER tasks only")
        if not train_examples:
            raise UserError("entity-swap needs the training examples (its entity inventory)")
        inventory = entity_inventory(train_examples)  # type: ignore[arg-type]
        for i, ex in enumerate(examples):
            new, units, changed = _swap_entities(ex, inventory, rate, _Rng(perturbation, seed, i))  # type: ignore[arg-type]
            out.append(new)
            n_units += units
            n_changed += changed
        return PerturbedSplit(perturbation, rate, seed, tuple(out), n_units, n_changed, "entity")

    op = _word_op(perturbation, rate, typo_unit)
    for i, ex in enumerate(examples):
        rng = _Rng(perturbation, seed, i)
        if isinstance(ex, NerExample):
            words = []
            for word in ex.words:
                new, units, changed = op(word, rng)
                words.append(new)
                n_units += units
                n_changed += changed
            out.append(NerExample(tuple(words), ex.tags, source=ex.source))
        else:
            pieces: list[str] = []
            cursor = 0
            for m in _WORD.finditer(ex.text):
                new, units, changed = op(m.group(), rng)
                pieces += [ex.text[cursor : m.start()], new]
                cursor = m.end()
                n_units += units
                n_changed += changed
            pieces.append(ex.text[cursor:])
            out.append(TextExample("".join(pieces), ex.label, source=ex.source))
    unit = "letter" if perturbation == "typos" and typo_unit == "char" else "word"
    return PerturbedSplit(perturbation, rate, seed, tuple(out), n_units, n_changed, unit)
