"""The two kinds of downstream example, shared by readers, tasks, alignment and metrics.

Plain frozen dataclasses of Python strings: cheap to hash, compare and print, and free of
any tokenizer, so a task can be loaded, split and perturbed without importing torch.
"""

from __future__ import annotations

import dataclasses
import re
from typing import Any, Literal

TaskKind = Literal["ner", "classification"]


@dataclasses.dataclass(frozen=True)
class NerExample:
    """One sentence: words and their IOB2 tags (same length)."""

    words: tuple[str, ...]
    tags: tuple[str, ...]
    source: str = ""
    """Where it came from, e.g. ``"train.conll:1234"`` (first line of the sentence)."""

    def __post_init__(self) -> None:
        # Callers pass lists as often as tuples; store tuples so the example stays hashable.
        object.__setattr__(self, "words", tuple(self.words))
        object.__setattr__(self, "tags", tuple(self.tags))
        if len(self.words) != len(self.tags):
            raise ValueError(
                f"NerExample{f' ({self.source})' if self.source else ''}: "
                f"{len(self.words)} words but {len(self.tags)} tags"
            )

    def to_dict(self) -> dict[str, Any]:
        return {"words": list(self.words), "tags": list(self.tags), "source": self.source}


@dataclasses.dataclass(frozen=True)
class TextExample:
    """One text with its class label."""

    text: str
    label: str
    source: str = ""
    """Where it came from, e.g. ``"data.csv:17"``."""

    def to_dict(self) -> dict[str, Any]:
        return {"text": self.text, "label": self.label, "source": self.source}


Example = NerExample | TextExample


# URLs, @mentions and #hashtags whole; words with inner hyphens/apostrophes/periods
# ("state-of-the-art", "don't", "U.S"); any other non-space character alone.
_WORDS = re.compile(r"https?://\S+|[@#]?\w+(?:[-'\u2019.]\w+)*|[^\w\s]")


def split_words(text: str) -> list[str]:
    """Split raw text into words for tagging (``scalelab predict`` on plain text).

    A simple rule-based splitter: URLs, ``@mentions`` and ``#hashtags`` stay whole, words
    keep inner hyphens, apostrophes and periods, punctuation stands alone.
    ``"Hi @bob, it's New-York!"`` -> ``["Hi", "@bob", ",", "it's", "New-York", "!"]``.
    """
    return _WORDS.findall(text)
