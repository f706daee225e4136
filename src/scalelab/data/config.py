"""The config of ``scalelab data prepare``: which sources, which tokenizer, how to split."""

from __future__ import annotations

import dataclasses
import math
import re
from typing import Literal

from scalelab.config import Config
from scalelab.errors import UserError

#: The default corpus: every built-in source at its natural size (see DATA.md).
DEFAULT_SOURCES = ("shakespeare", "wikipedia", "news", "bible")

#: How training windows are drawn from a prepared dataset (:mod:`scalelab.data.batches`):
#: a seeded permutation per epoch, or i.i.d. with replacement (before scalelab 0.3.0).
#: A training choice, not part of :class:`DataConfig`: that config is the dataset's
#: identity (its fields make the content hash that names the directory), and the same
#: prepared dataset serves both samplers.
Sampling = Literal["epoch", "iid"]

_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.+-]*$")


@dataclasses.dataclass(kw_only=True)
class DataConfig(Config):
    """How to turn text sources into a tokenized dataset."""

    sources: tuple[str, ...] = DEFAULT_SOURCES
    """Text sources, each a spec `[NAME=]WHAT[:WEIGHT]`: WHAT is a built-in (shakespeare, wikipedia, news, bible), a text file, a glob, a directory (its *.txt/*.md, recursively; else its *.parquet, *.arrow or *.jsonl files), a .jsonl/.jsonl.gz/.jsonl.zst or .json file, a .parquet or .arrow file, or a datasets save_to_disk directory; NAME names a user source; WEIGHT multiplies its share of the natural mixture when sampling (default 1)."""

    weights: tuple[float, ...] = ()
    """Sampling weights, one per source, instead of the :WEIGHT suffixes (empty: from the specs)."""

    tokenizer: Literal["bpe", "wordpiece"] = "bpe"
    """Tokenizer kind: byte-level BPE (decoder LMs) or WordPiece (BERT-style encoders)."""

    vocab_size: int = 8192
    """Vocabulary size, special tokens included."""

    lowercase: bool | None = None
    """Lowercase text before tokenizing (default: yes for wordpiece, no for bpe)."""

    val_fraction: float = 0.02
    """Fraction of each source's documents held out for validation (by a hash of the document id)."""

    seed: int = 0
    """Seed of the train/validation split hash."""

    doc_chars: int = 4000
    """Long texts are cut into documents of about this many characters at paragraph (else sentence) boundaries."""

    max_chars: int | None = None
    """Read at most this many characters per source (for quick, tiny datasets); none = everything."""

    errors: Literal["replace", "strict", "allow"] = "replace"
    """Undecodable bytes in user files: replace them with U+FFFD and count them, refusing binary files and files where more than 0.1% of the bytes do not decode (replace); stop at the first (strict); or replace them however many there are (allow)."""

    text_field: str = "text"
    """Field of each JSON record, or column of each Parquet/Arrow row, that holds the text."""

    name: str = ""
    """Dataset name, the prefix of its directory under the data root (default: from the sources)."""

    def validate(self) -> None:
        if not self.sources:
            raise UserError("sources: give at least one source")
        if self.weights and len(self.weights) != len(self.sources):
            raise UserError(
                f"weights: {len(self.weights)} weights for {len(self.sources)} sources; give one per source"
            )
        # ``not 0 <= w < inf`` also catches nan, which compares false with everything.
        bad = any(not 0 <= w < math.inf for w in self.weights)
        if bad or (self.weights and sum(self.weights) <= 0):
            raise UserError(
                f"weights must be finite and >= 0 with a positive sum, got {list(self.weights)}"
            )
        if self.vocab_size < 8:
            raise UserError(f"vocab_size must be at least 8, got {self.vocab_size}")
        if self.vocab_size > 2**32:
            raise UserError(f"vocab_size {self.vocab_size} does not fit in uint32 token ids")
        if not 0.0 <= self.val_fraction < 1.0:
            raise UserError(f"val_fraction must be in [0, 1), got {self.val_fraction}")
        if self.doc_chars < 64:
            raise UserError(f"doc_chars must be at least 64, got {self.doc_chars}")
        if self.max_chars is not None and self.max_chars <= 0:
            raise UserError(f"max_chars must be positive, got {self.max_chars}")
        if not self.text_field:
            raise UserError("text_field must not be empty")
        if self.name and not _NAME_RE.match(self.name):
            raise UserError(
                f"name {self.name!r} must start with a letter or digit and hold only letters, "
                "digits and _ . + -"
            )

    @property
    def lowercase_resolved(self) -> bool:
        """``lowercase`` with its per-tokenizer default applied."""
        return self.tokenizer == "wordpiece" if self.lowercase is None else self.lowercase
