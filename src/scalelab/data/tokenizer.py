"""Tokenizer training with the ``tokenizers`` library, saved in Hugging Face format.

Two kinds behind one trainer:

* ``bpe`` -- byte-level BPE for decoder LMs (GPT-2's byte alphabet, so no unknown token).
  A space is put before the first word of a text, as SentencePiece's ``add_dummy_prefix``
  does for Llama, so a word is the same token(s) at the start of a text and in the
  middle, and in word-split input (``is_split_into_words=True``, which fine-tuning on NER
  uses). The decoder strips that one space again, so ``decode(encode(s)) == s``. Special
  tokens: ``<|endoftext|>`` (end of document, also used as beginning) and ``<|pad|>``.
* ``wordpiece`` -- BERT-style: BERT's normaliser (lowercase and accent stripping by
  default), BERT's pre-tokeniser, ``##`` continuation pieces, and the special tokens
  ``[PAD] [UNK] [CLS] [SEP] [MASK]`` with the ``[CLS] A [SEP] B [SEP]`` template.

Special tokens take the first ids. The result is saved with
``PreTrainedTokenizerFast.save_pretrained`` and loads offline with
``transformers.AutoTokenizer.from_pretrained(dir)`` as a *fast* tokenizer.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from scalelab.errors import UserError
from scalelab.utils.io import sha256_file

#: The special tokens of each kind, by role, in id order.
SPECIAL_TOKENS: dict[str, dict[str, str]] = {
    "bpe": {"eos": "<|endoftext|>", "pad": "<|pad|>"},
    "wordpiece": {"pad": "[PAD]", "unk": "[UNK]", "cls": "[CLS]", "sep": "[SEP]", "mask": "[MASK]"},
}
#: Token that separates documents in the shards, by tokenizer kind.
SEPARATOR_ROLE = {"bpe": "eos", "wordpiece": "sep"}
_BYTE_ALPHABET = 256


@contextlib.contextmanager
def parallelism() -> Iterator[None]:
    """Let ``tokenizers`` use all cores inside the block.

    The CLI sets ``TOKENIZERS_PARALLELISM=false`` for the whole process (it avoids a
    deadlock warning when training forks workers); tokenizer training and batch encoding
    are exactly where threads pay, so the setting is lifted here and restored after.
    """
    old = os.environ.get("TOKENIZERS_PARALLELISM")
    os.environ["TOKENIZERS_PARALLELISM"] = "true"
    try:
        yield
    finally:
        if old is None:
            os.environ.pop("TOKENIZERS_PARALLELISM", None)
        else:
            os.environ["TOKENIZERS_PARALLELISM"] = old


def build_tokenizer(kind: str, *, lowercase: bool) -> Any:
    """An untrained ``tokenizers.Tokenizer`` of the given kind."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors

    if kind == "bpe":
        tok = Tokenizer(models.BPE())
        if lowercase:
            tok.normalizer = normalizers.Lowercase()
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=True)
        tok.post_processor = processors.ByteLevel(trim_offsets=True)
        # Undo the prefix space on decode (Llama's tokenizer.json does the same).
        tok.decoder = decoders.Sequence([decoders.ByteLevel(), decoders.Strip(" ", 1, 0)])
        return tok
    if kind == "wordpiece":
        sp = SPECIAL_TOKENS["wordpiece"]
        tok = Tokenizer(models.WordPiece(unk_token=sp["unk"]))
        tok.normalizer = normalizers.BertNormalizer(
            clean_text=True, handle_chinese_chars=True, strip_accents=lowercase, lowercase=lowercase
        )
        tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
        tok.decoder = decoders.WordPiece(prefix="##")
        return tok
    raise UserError(f"unknown tokenizer kind {kind!r}; choose bpe or wordpiece")


def _trainer(kind: str, vocab_size: int) -> Any:
    from tokenizers import pre_tokenizers, trainers

    specials = list(dict.fromkeys(SPECIAL_TOKENS[kind].values()))
    if kind == "bpe":
        return trainers.BpeTrainer(
            vocab_size=vocab_size,
            min_frequency=2,
            special_tokens=specials,
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
            show_progress=False,
        )
    return trainers.WordPieceTrainer(
        vocab_size=vocab_size,
        min_frequency=2,
        special_tokens=specials,
        # BERT's tokenizer-training default: rare characters beyond 1000 become [UNK].
        limit_alphabet=1000,
        continuing_subword_prefix="##",
        show_progress=False,
    )


def min_vocab_size(kind: str) -> int:
    """The smallest vocabulary a kind can have before seeing text (bytes + special tokens)."""
    n_special = len(set(SPECIAL_TOKENS[kind].values()))
    return _BYTE_ALPHABET + n_special if kind == "bpe" else n_special + 1


def train_tokenizer(
    texts: Iterable[str],
    out_dir: str | Path,
    *,
    kind: str = "bpe",
    vocab_size: int = 8192,
    lowercase: bool = False,
    length: int | None = None,
) -> dict[str, Any]:
    """Train on ``texts`` and save in Hugging Face format to ``out_dir``.

    Returns the tokenizer's description for the manifest: kind, vocab size, lowercase,
    special token ids by role, the document separator id and the hash of
    ``tokenizer.json``. A vocabulary the corpus cannot fill, or one too small for its
    alphabet, is a :class:`UserError`.
    """
    if vocab_size < min_vocab_size(kind):
        raise UserError(
            f"vocab_size {vocab_size} is too small: {kind} needs at least {min_vocab_size(kind)} "
            "(its base alphabet plus special tokens)"
        )
    tok = build_tokenizer(kind, lowercase=lowercase)
    with parallelism():
        tok.train_from_iterator(texts, _trainer(kind, vocab_size), length=length)
    got = tok.get_vocab_size()
    if got < vocab_size:
        raise UserError(
            f"vocab_size {vocab_size} is too large for this corpus: {kind} training stops at {got} "
            f"tokens; use --vocab-size {got} or less, or more text"
        )
    if got > vocab_size:
        raise UserError(
            f"vocab_size {vocab_size} is too small for this corpus's alphabet ({got} tokens needed); "
            f"use --vocab-size {got} or more"
        )
    if kind == "wordpiece":
        from tokenizers import processors

        sp = SPECIAL_TOKENS["wordpiece"]
        cls_id, sep_id = tok.token_to_id(sp["cls"]), tok.token_to_id(sp["sep"])
        tok.post_processor = processors.TemplateProcessing(
            single=f"{sp['cls']} $A {sp['sep']}",
            pair=f"{sp['cls']} $A {sp['sep']} $B:1 {sp['sep']}:1",
            special_tokens=[(sp["cls"], cls_id), (sp["sep"], sep_id)],
        )
    return save_hf_tokenizer(tok, out_dir, kind=kind, lowercase=lowercase)


def save_hf_tokenizer(
    tok: Any, out_dir: str | Path, *, kind: str, lowercase: bool
) -> dict[str, Any]:
    """Save a trained ``tokenizers.Tokenizer`` as a ``PreTrainedTokenizerFast``."""
    from transformers import PreTrainedTokenizerFast

    roles = SPECIAL_TOKENS[kind]
    kwargs = {f"{role}_token": token for role, token in roles.items()}
    if kind == "bpe":
        kwargs["bos_token"] = roles["eos"]  # GPT-2 convention: one token begins and ends
    else:
        # BERT takes segment ids; without this the tokenizer would not return them.
        kwargs["model_input_names"] = ["input_ids", "token_type_ids", "attention_mask"]
    hf = PreTrainedTokenizerFast(tokenizer_object=tok, **kwargs)
    out_dir = Path(out_dir)
    hf.save_pretrained(str(out_dir))
    ids = {role: tok.token_to_id(token) for role, token in roles.items()}
    if kind == "bpe":
        ids["bos"] = ids["eos"]
    return {
        "kind": kind,
        "vocab_size": tok.get_vocab_size(),
        "lowercase": lowercase,
        "special_tokens": dict(roles),
        "special_ids": ids,
        "separator_id": ids[SEPARATOR_ROLE[kind]],
        "hash": tokenizer_hash(out_dir),
        "path": out_dir.name,
    }


def tokenizer_hash(directory: str | Path) -> str:
    """Hash of ``tokenizer.json`` (vocabulary, merges, normaliser, pre-tokeniser, specials)."""
    return sha256_file(Path(directory) / "tokenizer.json")[:16]


def load_tokenizer(directory: str | Path) -> Any:
    """The saved tokenizer as a ``transformers`` fast tokenizer (offline)."""
    from transformers import AutoTokenizer

    path = Path(directory)
    if not (path / "tokenizer.json").is_file():
        raise UserError(f"{path}: no tokenizer.json here; is it a scalelab dataset's tokenizer/?")
    return AutoTokenizer.from_pretrained(str(path), local_files_only=True, trust_remote_code=False)


def load_backend(directory: str | Path) -> Any:
    """The saved tokenizer as a raw ``tokenizers.Tokenizer`` (fast batch encoding)."""
    from tokenizers import Tokenizer

    return Tokenizer.from_file(str(Path(directory) / "tokenizer.json"))


def encode_ids(backend: Any, texts: list[str]) -> list[Any]:
    """The encodings of each text (no special tokens), made in parallel by Rust threads;
    :func:`pack_ids` takes their ids (in another thread, while the next batch encodes).

    ``encode_batch_fast`` (tokenizers >= 0.21) skips the offsets that ``encode_batch``
    computes; both release the GIL while they encode. Call inside :func:`parallelism`.
    """
    encode = getattr(backend, "encode_batch_fast", backend.encode_batch)
    return encode(texts, add_special_tokens=False)


def pack_ids(ids: list[Any], *, separator: int, dtype: str) -> tuple[Any, Any]:
    """``(tokens, lengths)``: every document's ids (a list, or an encoding's ``.ids``)
    followed by ``separator``, back to back as one ``dtype`` array, and each document's
    length with its separator (int64)."""
    import itertools

    import numpy as np

    ids = [x if isinstance(x, list) else x.ids for x in ids]

    lengths = np.fromiter((len(x) + 1 for x in ids), dtype=np.int64, count=len(ids))
    flat = np.fromiter(
        itertools.chain.from_iterable(itertools.chain(x, (separator,)) for x in ids),
        dtype=dtype,
        count=int(lengths.sum()),
    )
    return flat, lengths
