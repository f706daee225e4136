"""Deterministic document-level train/validation split.

A document goes to validation when a hash of ``(seed, source, document id)`` falls below
``val_fraction``. The decision depends on nothing else -- not on reading order, not on
the other documents, not on an RNG -- so the same document lands in the same split on
every machine and every run, and adding documents to a source never moves old ones.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

_SCALE = float(1 << 64)


def split_hash(source: str, doc_id: str, seed: int = 0) -> float:
    """A uniform number in [0, 1) fixed by the seed, the source name and the document id."""
    digest = hashlib.blake2b(f"{seed}\x00{source}\x00{doc_id}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") / _SCALE


def assign_splits(
    source: str, doc_ids: Sequence[str], *, val_fraction: float, seed: int = 0
) -> list[bool]:
    """``True`` for each document held out for validation.

    So that every source can report a validation loss and still train, a source with two
    or more documents keeps at least one in each split: if the hash sends none to
    validation, the document with the smallest hash goes there; if it sends all, the one
    with the largest stays in training. (With ``val_fraction == 0`` nothing is held out.)
    """
    hashes = [split_hash(source, d, seed) for d in doc_ids]
    is_val = [h < val_fraction for h in hashes]
    if val_fraction > 0 and len(doc_ids) >= 2:
        if not any(is_val):
            is_val[min(range(len(hashes)), key=hashes.__getitem__)] = True
        if all(is_val):
            is_val[max(range(len(hashes)), key=hashes.__getitem__)] = False
    return is_val


class SplitStream:
    """:func:`assign_splits` one document at a time, for sources too large to hold.

    :meth:`add` gives each document's provisional decision (its hash against
    ``val_fraction``) and keeps only the hash (8 bytes a document). :meth:`finish` then
    names the documents whose decision the keep-one-in-each-split rule changes, so that
    the final decisions are exactly :func:`assign_splits`' over the whole source.
    """

    def __init__(self, source: str, *, val_fraction: float, seed: int = 0) -> None:
        from array import array

        self.source = source
        self.val_fraction = val_fraction
        self.seed = seed
        self.hashes = array("d")
        self._n_val = 0

    def add(self, doc_id: str) -> bool:
        """``True`` when the next document goes to validation (before :meth:`finish`)."""
        h = split_hash(self.source, doc_id, self.seed)
        self.hashes.append(h)
        is_val = h < self.val_fraction
        self._n_val += is_val
        return is_val

    def finish(self) -> dict[int, bool]:
        """``{index: is_val}`` for the (at most one) document whose decision changes."""
        n = len(self.hashes)
        if self.val_fraction <= 0 or n < 2:
            return {}
        hashes = self.hashes
        if self._n_val == 0:  # first-minimum, as min(range(n), key=...) picks
            return {min(range(n), key=hashes.__getitem__): True}
        if self._n_val == n:
            return {max(range(n), key=hashes.__getitem__): False}
        return {}
