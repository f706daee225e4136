"""Reading a prepared dataset: manifest, tokenizer, per-(split, source) token memmaps."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from scalelab.errors import UserError
from scalelab.utils.io import read_json


class TokenDataset:
    """A prepared dataset directory (see :mod:`scalelab.data.prepare` for the layout).

    ``tokens(split, source)`` is a read-only ``numpy.memmap`` of token ids (uint16 or
    uint32) with the separator token after every document; ``doc_starts(split, source)``
    is an int64 array of each document's start offset followed by the shard's length, so
    document ``i`` is ``tokens[s[i] : s[i + 1] - 1]`` (the separator left out).
    """

    def __init__(self, path: str | Path, manifest: dict[str, Any]) -> None:
        self.path = Path(path)
        self.manifest = manifest
        self._arrays: dict[tuple[str, str, str], Any] = {}

    # ---------------------------------------------------------------- facts
    @property
    def vocab_size(self) -> int:
        return int(self.manifest["tokenizer"]["vocab_size"])

    @property
    def tokenizer_kind(self) -> str:
        return str(self.manifest["tokenizer"]["kind"])

    @property
    def tokenizer_path(self) -> Path:
        return self.path / self.manifest["tokenizer"].get("path", "tokenizer")

    @property
    def special_ids(self) -> dict[str, int]:
        """Special token ids by role: eos/bos/pad (bpe) or pad/unk/cls/sep/mask (wordpiece)."""
        return {k: int(v) for k, v in self.manifest["tokenizer"]["special_ids"].items()}

    @property
    def separator_id(self) -> int:
        """The token written after each document in the shards."""
        return int(self.manifest["separator_id"])

    @property
    def dtype(self) -> str:
        return str(self.manifest["dtype"])

    @property
    def sources(self) -> list[str]:
        return list(self.manifest["sources"])

    @property
    def mixture(self) -> dict[str, float]:
        """Default sampling probability of each source (natural share times its weight)."""
        return {k: float(v) for k, v in self.manifest["mixture"].items()}

    def num_tokens(self, split: str = "train", source: str | None = None) -> int:
        if source is None:
            return int(self.manifest["splits"][self._split(split)]["tokens"])
        return int(self.manifest["sources"][self._source(source)]["tokens"][self._split(split)])

    def num_docs(self, split: str = "train", source: str | None = None) -> int:
        if source is None:
            return int(self.manifest["splits"][self._split(split)]["docs"])
        return int(self.manifest["sources"][self._source(source)]["docs"][self._split(split)])

    # ---------------------------------------------------------------- arrays
    def tokens(self, split: str, source: str) -> Any:
        """The token ids of one shard as a read-only memmap (an empty array if it is empty)."""
        import numpy as np

        key = ("tokens", self._split(split), self._source(source))
        if key not in self._arrays:
            path = self.path / self.manifest["shards"][split][source]["tokens"]
            n = self.num_tokens(split, source)
            self._arrays[key] = (
                np.memmap(path, dtype=self.dtype, mode="r", shape=(n,))
                if n
                else np.zeros(0, dtype=self.dtype)  # numpy cannot map an empty file
            )
        return self._arrays[key]

    def doc_starts(self, split: str, source: str) -> Any:
        """int64 start offsets of the shard's documents, followed by its length."""
        import numpy as np

        key = ("docs", self._split(split), self._source(source))
        if key not in self._arrays:
            path = self.path / self.manifest["shards"][split][source]["docs"]
            self._arrays[key] = np.load(path, allow_pickle=False)
        return self._arrays[key]

    def load_tokenizer(self) -> Any:
        """The dataset's tokenizer as a ``transformers`` fast tokenizer."""
        from scalelab.data.tokenizer import load_tokenizer

        return load_tokenizer(self.tokenizer_path)

    # ---------------------------------------------------------------- checks
    def _split(self, split: str) -> str:
        if split not in self.manifest["shards"]:
            raise UserError(
                f"{self.path}: no split {split!r}; splits are {', '.join(self.manifest['shards'])}"
            )
        return split

    def _source(self, source: str) -> str:
        if source not in self.manifest["sources"]:
            raise UserError(
                f"{self.path}: no source {source!r}; sources are {', '.join(self.sources)}"
            )
        return source

    def __repr__(self) -> str:
        return (
            f"TokenDataset({str(self.path)!r}, sources={self.sources}, vocab={self.vocab_size}, "
            f"train={self.num_tokens('train'):,} tokens, val={self.num_tokens('val'):,} tokens)"
        )


def open_dataset(path: str | Path) -> TokenDataset:
    """Open a prepared dataset, checking that its manifest and every shard are complete."""
    from scalelab.data.prepare import FORMAT, FORMAT_VERSION

    path = Path(path)
    if not path.is_dir():
        raise UserError(f"dataset not found: {path} (run `scalelab data prepare` first)")
    try:
        manifest = read_json(path / "manifest.json")
    except FileNotFoundError:
        raise UserError(f"{path} is not a scalelab dataset (no manifest.json)") from None
    except (OSError, ValueError) as exc:
        raise UserError(f"{path}/manifest.json is unreadable: {exc}") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise UserError(f"{path}/manifest.json is not a scalelab dataset manifest")
    if manifest.get("format_version") != FORMAT_VERSION:
        raise UserError(
            f"{path}: dataset format {manifest.get('format_version')} is not supported by this "
            f"scalelab (format {FORMAT_VERSION}); prepare it again"
        )
    itemsize = 2 if manifest["dtype"] == "uint16" else 4
    for split, by_source in manifest["shards"].items():
        for source, files in by_source.items():
            n = int(manifest["sources"][source]["tokens"][split])
            tok_file, doc_file = path / files["tokens"], path / files["docs"]
            if not tok_file.is_file() or tok_file.stat().st_size != n * itemsize:
                raise UserError(f"{tok_file} is missing or truncated; prepare the dataset again")
            if not doc_file.is_file():
                raise UserError(f"{doc_file} is missing; prepare the dataset again")
    if not (path / manifest["tokenizer"].get("path", "tokenizer") / "tokenizer.json").is_file():
        raise UserError(f"{path}: the tokenizer is missing; prepare the dataset again")
    return TokenDataset(path, manifest)
