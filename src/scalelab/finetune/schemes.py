"""Tagging schemes for entity labels: parsing, detection, normalisation to IOB2, spans.

Everything inside scalelab works in **IOB2** (``B-X`` opens every entity, ``I-X``
continues it, ``O`` is outside); readers convert other schemes on the way in:

========  ===============================================  =======================
scheme    opens an entity                                   continues / closes
========  ===============================================  =======================
IOB1      ``I-X`` (``B-X`` only between two adjacent X's)  ``I-X``
IOB2      ``B-X``                                          ``I-X``
IOBES     ``B-X`` (``S-X`` for one token)                  ``I-X``, last ``E-X``
BILOU     ``B-X`` (``U-X`` for one token)                  ``I-X``, last ``L-X``
IO        a type after ``O`` or another type               the same type again
========  ===============================================  =======================

Converting to IOB2 maps single/last tags to ``B``/``I`` and turns any tag that opens an
entity without the scheme's opening prefix (``I-X`` after ``O``, after another type, or
after a closed ``E-X``/``S-X``) into ``B-X``. For IOB1 that is the normal conversion; for
the other schemes it repairs an invalid tag, and the number of such repairs is returned
so readers can report it instead of hiding it.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable, Sequence

from scalelab.errors import UserError

SCHEMES = ("IOB1", "IOB2", "IOBES", "BILOU", "IO")
_ALIASES = {"BIO": "IOB2", "BIOES": "IOBES", "BILUO": "BILOU", "IOBES": "IOBES"}
_PREFIXES = {
    "IOB1": "BI",
    "IOB2": "BI",
    "IOBES": "BIES",
    "BILOU": "BILU",
    "IO": "",
}
_TAG = re.compile(r"^([BIESLU])-(\S+)$")


def canonical_scheme(name: str, *, allow_auto: bool = True) -> str:
    """``"bio"`` -> ``"IOB2"``; ``"auto"`` passes through; anything unknown is a UserError."""
    upper = str(name).strip().upper()
    if allow_auto and upper == "AUTO":
        return "auto"
    upper = _ALIASES.get(upper, upper)
    if upper not in SCHEMES:
        choices = ", ".join(("auto",) + SCHEMES if allow_auto else SCHEMES)
        raise UserError(f"unknown tagging scheme '{name}'; choose one of {choices} (BIO = IOB2)")
    return upper


def split_tag(tag: str) -> tuple[str, str]:
    """``"B-geo-loc"`` -> ``("B", "geo-loc")``; ``"O"`` -> ``("O", "")``.

    A tag without one of the prefixes B, I, E, S, L, U followed by ``-`` is returned as
    ``("", tag)`` -- a bare type, as in the IO scheme (or simply an invalid tag).
    """
    if tag == "O":
        return "O", ""
    m = _TAG.match(tag)
    if m is None:
        return "", tag
    return m.group(1), m.group(2)


def check_tag(tag: str, scheme: str) -> str | None:
    """Why ``tag`` is not valid in ``scheme`` (None if it is). ``scheme`` is canonical."""
    if tag == "O":
        return None
    prefix, typ = split_tag(tag)
    allowed = _PREFIXES[scheme]
    if scheme == "IO":
        if prefix:
            return f"tag '{tag}' has a prefix, but the IO scheme uses bare types"
        if not typ or any(c.isspace() for c in typ):
            return f"invalid tag '{tag}'"
        return None
    if not prefix:
        want = "/".join(f"{p}-" for p in allowed)
        return f"invalid {scheme} tag '{tag}' (expected O or {want}TYPE)"
    if prefix not in allowed:
        return f"tag '{tag}' uses prefix {prefix}- which {scheme} does not have"
    return None


def detect_scheme(sequences: Iterable[Sequence[str]]) -> tuple[str, str]:
    """Guess the scheme of some tag sequences; returns ``(scheme, reason)``.

    The rule, in order:

    1. more bare non-O tags (no ``B-``/``I-``/... prefix) than prefixed ones -> ``IO``;
    2. any ``E-``/``S-`` -> ``IOBES``; else any ``L-``/``U-`` -> ``BILOU`` (if both
       occur, the more frequent family);
    3. only ``B-``/``I-``: count the entities opened by ``I-X`` (at the sentence start,
       after ``O`` or after another type) and those opened by ``B-X`` where IOB1 would
       have written ``I-X`` (not right after an X). No ``I-`` openers -> ``IOB2``; no such
       ``B-`` openers -> ``IOB1``; both -> the majority (ties ``IOB2``), the minority
       being annotation errors that the conversion repairs.

    Tags that the chosen scheme does not allow are left for :func:`check_tag` to report.
    """
    bare = prefixed = 0
    seen: Counter[str] = Counter()
    i_open = b_open = 0
    for seq in sequences:
        prev_type = ""
        for tag in seq:
            prefix, typ = split_tag(tag)
            if prefix == "O":
                prev_type = ""
                continue
            if prefix == "":
                bare += 1
            else:
                prefixed += 1
                seen[prefix] += 1
            if prefix == "I" and typ != prev_type:
                i_open += 1
            elif prefix == "B" and typ != prev_type:
                b_open += 1
            prev_type = typ
    # Mixtures pick the majority; the reader's per-tag check then names the first line
    # holding a tag of the minority, which is more useful than a file-wide complaint.
    if bare > prefixed:
        return "IO", "non-O tags have no B-/I- prefix"
    es, lu = seen["E"] + seen["S"], seen["L"] + seen["U"]
    if es and es >= lu:
        return "IOBES", "E-/S- prefixes present"
    if lu:
        return "BILOU", "L-/U- prefixes present"
    if i_open == 0:
        return "IOB2", "every entity opens with B-"
    if b_open == 0:
        return "IOB1", "entities open with I- and B- only separates adjacent entities"
    if i_open > b_open:
        return "IOB1", f"mostly IOB1 ({b_open} B- openers treated as entity starts)"
    return "IOB2", f"mostly IOB2 ({i_open} I- openers repaired to B-)"


def to_iob2(tags: Sequence[str], scheme: str) -> tuple[tuple[str, ...], int]:
    """Convert one sentence's tags from ``scheme`` (canonical) to IOB2.

    Returns ``(iob2_tags, n_repaired)`` where ``n_repaired`` counts tags that were invalid
    in ``scheme`` and were turned into an entity start (an ``I-X`` opener in IOB2, an
    ``I-X``/``E-X`` after a closed entity in IOBES, ...). Tags are assumed to have passed
    :func:`check_tag`.
    """
    out: list[str] = []
    repaired = 0
    prev_type = ""  # type of the entity that is open and may continue ("" if none)
    for tag in tags:
        prefix, typ = split_tag(tag)
        if prefix == "O":
            out.append("O")
            prev_type = ""
            continue
        if scheme == "IO":
            out.append(("I-" if typ == prev_type else "B-") + typ)
            prev_type = typ
            continue
        if prefix in "BSU":
            out.append("B-" + typ)
        elif typ == prev_type:  # I, E or L continuing the open entity
            out.append("I-" + typ)
        else:  # I, E or L opening an entity
            out.append("B-" + typ)
            if scheme != "IOB1" or prefix != "I":
                repaired += 1
        # After a single-token or last tag the entity is closed: a following I-X opens anew.
        prev_type = "" if prefix in "ESLU" else typ
    return tuple(out), repaired


def iob2_spans(tags: Sequence[str]) -> list[tuple[str, int, int]]:
    """Entities of an IOB2 sequence under the strict rule, as ``(type, start, end)``.

    ``end`` is exclusive. An entity is ``B-X`` followed by any number of ``I-X``; an
    ``I-X`` that does not continue an open X (after ``O``, another type, or at the start)
    belongs to no entity, and any other tag ends the open entity. This is seqeval's strict
    IOB2 mode.
    """
    spans: list[tuple[str, int, int]] = []
    open_type, start = "", -1
    for i, tag in enumerate(tags):
        prefix, typ = split_tag(tag)
        if prefix == "I" and open_type and typ == open_type:
            continue
        if open_type:
            spans.append((open_type, start, i))
        open_type, start = (typ, i) if prefix == "B" else ("", -1)
    if open_type:
        spans.append((open_type, start, len(tags)))
    return spans


def spans_to_iob2(length: int, spans: Iterable[tuple[str, int, int]]) -> tuple[str, ...]:
    """The IOB2 tags of a sentence of ``length`` tokens with the given (non-overlapping) spans."""
    tags = ["O"] * length
    for typ, start, end in spans:
        tags[start] = "B-" + typ
        for j in range(start + 1, end):
            tags[j] = "I-" + typ
    return tuple(tags)


def iob2_labels(entity_types: Iterable[str]) -> tuple[str, ...]:
    """The tag list of a task: ``O`` first, then ``B-X, I-X`` per type in sorted order."""
    labels = ["O"]
    for typ in sorted(set(entity_types)):
        labels += [f"B-{typ}", f"I-{typ}"]
    return tuple(labels)


def entity_types_of(sequences: Iterable[Sequence[str]]) -> tuple[str, ...]:
    """Sorted entity types used by some IOB2 tag sequences."""
    types = {split_tag(t)[1] for seq in sequences for t in seq if t != "O"}
    return tuple(sorted(types))
