"""Chunk counting that reproduces the official CoNLL scorer (``conlleval``, Tjong Kim Sang).

The scorer reads one token per line (gold tag, then guessed tag, last on the line) with
blank lines between sentences, and decides chunk boundaries from pairs of consecutive
tags. This module re-implements its rules -- described here in prose, the code is
scalelab's own -- so that phrases found, correct phrases, gold phrases and token accuracy
agree exactly with the script's for any tag sequences, fed to it as "one token per line,
each sentence followed by a blank line" (and no token spelled ``-X-``, which the script
takes for a sentence boundary).

Tag parsing. A tag is cut at hyphens and only the first two pieces are kept: the piece
before the first hyphen is the *chunk tag* and the piece between the first and second
hyphen is the *type* (so ``B-geo-loc`` has type ``geo``; Perl's ``split`` with two
targets). An absent type, or the type ``0`` (false in Perl), is the empty type. A tag
without a hyphen is a chunk tag with the empty type (``O``, but also ``PER`` or ``B``).

Between the previous tag (p, type pt) and the current one (c, type ct):

* a chunk **ends** if (p, c) is one of B-B, B-O, I-B, I-O, E-E, E-I, E-O; or p is
  neither ``O`` nor ``.`` and pt != ct; or p is ``[`` or ``]``;
* a chunk **starts** if (p, c) is one of B-B, I-B, O-B, O-I, E-E, E-I, O-E; or c is
  neither ``O`` nor ``.`` and pt != ct; or c is ``[`` or ``]``.

Note what is *not* there: I after B of the same type continues; ``I-X`` after ``O`` or
after another type starts a chunk (unlike strict IOB2); E-B of one type neither ends nor
starts; ``S-`` is unknown to the script and is handled only by the type rule.

Counting. Each chunk start in the gold (guessed) tags adds a gold (found) phrase of the
current type. A phrase is *correct* when gold and guessed chunks start on the same token
with the same type and then both end on the same later token, with the type of the last
tags equal; the match is abandoned as soon as only one side ends, or a token's gold and
guessed types differ. Sentence breaks act as an ``O``/``O`` token that is not counted in
the token total; a match still open at the end of the input counts. A token is tagged
correctly when chunk tag and type (as parsed above) both agree.
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from collections.abc import Iterator, Sequence

# (previous chunk tag, current chunk tag) pairs that end / start a chunk.
_ENDS = frozenset(
    {("B", "B"), ("B", "O"), ("I", "B"), ("I", "O"), ("E", "E"), ("E", "I"), ("E", "O")}
)
_STARTS = frozenset(
    {("B", "B"), ("I", "B"), ("O", "B"), ("O", "I"), ("E", "E"), ("E", "I"), ("O", "E")}
)
_OUTSIDE = ("O", ".")  # chunk tags exempt from the "type changed" rule
_BRACKETS = ("[", "]")  # single-token chunks


def conlleval_split(tag: str) -> tuple[str, str]:
    """``"B-geo-loc"`` -> ``("B", "geo")``, ``"O"`` -> ``("O", "")``: the scorer's parse."""
    pieces = tag.split("-", 2)
    chunk = pieces[0]
    typ = pieces[1] if len(pieces) > 1 else ""
    return chunk, ("" if typ == "0" else typ)


def chunk_ends(prev: str, cur: str, prev_type: str, cur_type: str) -> bool:
    """Does a chunk end between the previous and the current token?"""
    return (
        (prev, cur) in _ENDS
        or (prev not in _OUTSIDE and prev_type != cur_type)
        or prev in _BRACKETS
    )


def chunk_starts(prev: str, cur: str, prev_type: str, cur_type: str) -> bool:
    """Does a chunk start at the current token?"""
    return (
        (prev, cur) in _STARTS
        or (cur not in _OUTSIDE and prev_type != cur_type)
        or cur in _BRACKETS
    )


@dataclasses.dataclass(frozen=True)
class ConllevalCounts:
    """The scorer's counters (per type keyed by display name, see :func:`conlleval_counts`)."""

    tokens: int
    correct_tags: int
    gold: int
    found: int
    correct: int
    gold_by_type: dict[str, int]
    found_by_type: dict[str, int]
    correct_by_type: dict[str, int]


def _stream(
    gold: Sequence[Sequence[str]], pred: Sequence[Sequence[str]]
) -> Iterator[tuple[str, str, bool]]:
    """(gold tag, guessed tag, counts as a token) with an O/O break after each sentence."""
    for g_seq, p_seq in zip(gold, pred):
        for g, p in zip(g_seq, p_seq):
            yield g, p, True
        yield "O", "O", False


def _display_names(tags: Sequence[Sequence[str]]) -> dict[str, str]:
    """Map the scorer's cut type back to the full type where that is unambiguous.

    ``B-geo-loc`` is type ``geo`` to the scorer; if no other full type also cuts to
    ``geo``, report it as ``geo-loc``. Counts are unaffected.
    """
    full_by_cut: dict[str, set[str]] = {}
    for seq in tags:
        for tag in seq:
            if "-" in tag:
                cut = conlleval_split(tag)[1]
                if cut:
                    full_by_cut.setdefault(cut, set()).add(tag.split("-", 1)[1])
    return {cut: next(iter(full)) for cut, full in full_by_cut.items() if len(full) == 1}


def conlleval_counts(
    gold: Sequence[Sequence[str]], pred: Sequence[Sequence[str]]
) -> ConllevalCounts:
    """Run the scorer's counting over sentences of gold and predicted tags.

    Sequences must be paired and of equal length (checked by the caller).
    """
    tokens = correct_tags = 0
    gold_by: Counter[str] = Counter()
    found_by: Counter[str] = Counter()
    correct_by: Counter[str] = Counter()
    matching = False  # inside a gold and a guessed chunk that began together with one type
    last_g, last_g_type, last_p, last_p_type = "O", "", "O", ""
    for g_tag, p_tag, counted in _stream(gold, pred):
        g, g_type = conlleval_split(g_tag)
        p, p_type = conlleval_split(p_tag)
        if matching:
            g_end = chunk_ends(last_g, g, last_g_type, g_type)
            p_end = chunk_ends(last_p, p, last_p_type, p_type)
            if g_end and p_end and last_p_type == last_g_type:
                matching = False
                correct_by[last_g_type] += 1
            elif g_end != p_end or p_type != g_type:
                matching = False
        g_start = chunk_starts(last_g, g, last_g_type, g_type)
        p_start = chunk_starts(last_p, p, last_p_type, p_type)
        if g_start and p_start and p_type == g_type:
            matching = True
        if g_start:
            gold_by[g_type] += 1
        if p_start:
            found_by[p_type] += 1
        if counted:
            tokens += 1
            correct_tags += g == p and g_type == p_type
        last_g, last_g_type, last_p, last_p_type = g, g_type, p, p_type
    if matching:
        correct_by[last_g_type] += 1

    names = _display_names(list(gold) + list(pred))

    def rename(counter: Counter[str]) -> dict[str, int]:
        return {names.get(k, k): v for k, v in counter.items()}

    return ConllevalCounts(
        tokens=tokens,
        correct_tags=correct_tags,
        gold=sum(gold_by.values()),
        found=sum(found_by.values()),
        correct=sum(correct_by.values()),
        gold_by_type=rename(gold_by),
        found_by_type=rename(found_by),
        correct_by_type=rename(correct_by),
    )
