"""Test setup: quiet, single-threaded torch; offline; tiny shapes everywhere."""

from __future__ import annotations

import os

# Must happen before torch is imported anywhere (OpenMP reads it at load time).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("MPLBACKEND", "Agg")

import pytest  # noqa: E402


@pytest.fixture(autouse=True, scope="session")
def _private_cache(tmp_path_factory):
    """The planner's throughput-probe cache lives in a temporary directory, never ~/.cache."""
    old = os.environ.get("SCALELAB_CACHE_DIR")
    os.environ["SCALELAB_CACHE_DIR"] = str(tmp_path_factory.mktemp("cache"))
    yield
    if old is None:
        os.environ.pop("SCALELAB_CACHE_DIR", None)
    else:
        os.environ["SCALELAB_CACHE_DIR"] = old


@pytest.fixture(autouse=True, scope="session")
def _one_thread():
    try:
        import torch
    except ImportError:  # pragma: no cover - torch is a hard dependency
        yield
        return
    torch.set_num_threads(1)
    yield


# ---------------------------------------------------------------- shared tiny corpora
TINY_DATA = {
    "sources": ("shakespeare", "wikipedia"),
    "max_chars": 150_000,
    "vocab_size": 512,
    "val_fraction": 0.05,
}


def _prepare(tmp_path_factory, **kw):
    from scalelab.data.prepare import DataConfig, prepare

    return prepare(DataConfig(**{**TINY_DATA, **kw}), root=tmp_path_factory.mktemp("data"))


@pytest.fixture(scope="session")
def tiny_bpe_dataset(tmp_path_factory):
    """A real (small) slice of the built-in corpus, byte-level BPE, 512 tokens."""
    return _prepare(tmp_path_factory)


@pytest.fixture(scope="session")
def tiny_wordpiece_dataset(tmp_path_factory):
    """The same slice with a 512-token WordPiece vocabulary (for BERT-style models)."""
    return _prepare(tmp_path_factory, tokenizer="wordpiece")


# Flags for a model that trains in about a second.
TINY_PRETRAIN = [
    "--model.n-layer", "1", "--model.d-model", "32", "--model.n-head", "2",
    "--seq-len", "32", "--batch-tokens", "256", "--tokens", "12800",
    "--eval-tokens", "2048", "--runtime.threads", "1",
    "--no-runtime.progress", "--no-runtime.tensorboard",
]  # fmt: skip
