"""Text sources, tokenizer training, token shards and batch sampling.

Stage function: ``scalelab.data.prepare.prepare(cfg, root, out) -> Path`` (``scalelab data
prepare``); import it from its module -- ``scalelab.data.prepare`` is the module, so that
``import``, ``monkeypatch`` and ``mock.patch`` paths mean what they say. The trainer reads
a dataset with :func:`open_dataset` and samples it with :class:`DecoderBatches` /
:class:`EncoderBatches` and :func:`validation_batches`.

Names are imported on first use, so ``import scalelab.data`` (and ``scalelab --help``)
stays free of numpy, tokenizers and torch.
"""

from __future__ import annotations

from scalelab.utils.lazy import lazy_exports

_EXPORTS = {
    "DataConfig": "scalelab.data.config",
    "DEFAULT_SOURCES": "scalelab.data.config",
    "prepare_dataset": "scalelab.data.prepare",
    "shard_dtype": "scalelab.data.prepare",
    "PrepareResult": "scalelab.data.prepare",
    "open_dataset": "scalelab.data.dataset",
    "TokenDataset": "scalelab.data.dataset",
    "DecoderBatches": "scalelab.data.batches",
    "EncoderBatches": "scalelab.data.batches",
    "validation_batches": "scalelab.data.batches",
    "encoder_validation_batches": "scalelab.data.batches",
    "load_tokenizer": "scalelab.data.tokenizer",
    "train_tokenizer": "scalelab.data.tokenizer",
    "resolve_sources": "scalelab.data.sources",
    "Document": "scalelab.data.sources",
    "Source": "scalelab.data.sources",
}

__getattr__, __dir__, __all__ = lazy_exports(__name__, _EXPORTS)
