"""Stateless batch sampling from a prepared dataset, for decoder and encoder pretraining.

*Stateless* means a batch is a pure function of ``(seed, step, micro)`` and the dataset:
there is no iterator position to save, a resumed run continues the exact same data
stream, and a DDP rank needs nothing but its rank. Decoder windows are drawn one of two
ways (``sampling``):

* ``epoch`` (the default): the training split of every source is tiled into windows of
  ``T + 1`` tokens whose predicted tokens do not overlap (window ``w`` of a source holds
  tokens ``w*T .. w*T + T``, the layout of :func:`validation_batches`; no random offset,
  so every epoch has the same windows, and at most ``T`` tokens at a source's end are
  never used). Global sample ``i`` of the run -- sample ``r`` of rank ``rank`` in
  micro-batch ``micro`` of step ``step`` is ``i = ((step * accum + micro) * world + rank)
  * B + r`` -- lies in epoch ``e = i // W`` at position ``i % W`` of a permutation of the
  epoch's ``W`` slots that depends on ``(seed, e)`` only (:class:`EpochOrder`; a cached
  table of 4 bytes per window). The samples of a step are the same whatever ``world``
  and ``accum`` are, as long as ``accum * world * B`` (the sequences per step) is fixed.
  At the natural mixture (each source by its share of training tokens) every window is
  seen exactly once per epoch; see :class:`EpochOrder` for other weights.
* ``iid`` (before scalelab 0.3.0, kept bit for bit so that their runs resume
  exactly): ``get(step, micro, rank, world)`` draws the global micro-batch of ``world *
  batch_size`` samples from ``numpy.random.default_rng([seed, step, micro])`` -- a source
  by weight, then a uniform offset, with replacement -- and returns rank ``rank``'s
  slice of it. Even a run shorter than an epoch then sees some tokens twice: at ``x``
  epochs each token is drawn a Poisson(``x``) number of times, so a fraction ``1 - (1 -
  exp(-x)) / x`` of the tokens seen are repeats (a quarter at 0.61 epochs).

Encoder (BERT) pairs are always drawn i.i.d. (see :class:`EncoderBatches`).

Shapes (B = batch_size, T = seq_len), all ``torch.long``:

* decoder: ``input_ids`` [B, T], ``labels`` [B, T] with ``labels[:, t] = input_ids[:, t+1]``
  of the same window -- already shifted, so the model takes plain cross-entropy over
  ``logits`` [B, T, V] and ``labels`` without shifting; ``-100`` marks padding (only in the
  last validation window of a source).
* encoder: ``input_ids``, ``token_type_ids``, ``attention_mask``, ``labels`` [B, T] (MLM
  targets, ``-100`` where nothing is predicted) and ``next_sentence_label`` [B] (0 = B
  follows A in the same document, 1 = B is random; the convention of Hugging Face's
  ``BertForPreTraining``).
"""

from __future__ import annotations

import math
import warnings
import zlib
from typing import Any

import numpy as np

from scalelab.data.config import Sampling
from scalelab.data.dataset import TokenDataset
from scalelab.errors import UserError

IGNORE_INDEX = -100
#: BERT's create_pretraining_data.py uses a shorter random length for 10% of the
#: sequences so the model also sees short inputs (Devlin et al. 2019, short_seq_prob).
SHORT_SEQ_PROB = 0.1


def _probabilities(
    dataset: TokenDataset, weights: dict[str, float] | None, split: str, min_tokens: int
) -> tuple[list[str], np.ndarray]:
    """Sources to draw from and their probabilities (sources too short for a sample dropped)."""
    if weights is None:
        weights = dataset.mixture
    unknown = sorted(set(weights) - set(dataset.sources))
    if unknown:
        raise UserError(f"weights name unknown sources {unknown}; sources are {dataset.sources}")
    if any(w < 0 for w in weights.values()):
        raise UserError(f"weights must be >= 0, got {weights}")
    names, probs = [], []
    for name, w in weights.items():
        if w <= 0:
            continue
        n = dataset.num_tokens(split, name)
        if n < min_tokens:
            warnings.warn(
                f"source {name!r} has {n} {split} tokens, fewer than the {min_tokens} one sample "
                "needs; it is left out of the mixture",
                stacklevel=3,
            )
            continue
        names.append(name)
        probs.append(float(w))
    if not names:
        raise UserError(
            f"no source has the {min_tokens} {split} tokens one sample needs; "
            "use a shorter sequence length or more text"
        )
    p = np.asarray(probs, dtype=np.float64)
    return names, p / p.sum()


def _check_call(step: int, micro: int, rank: int, world: int) -> None:
    if step < 0 or micro < 0:
        raise ValueError(f"step and micro must be >= 0, got step={step}, micro={micro}")
    if world < 1 or not 0 <= rank < world:
        raise ValueError(f"need 0 <= rank < world, got rank={rank}, world={world}")


def _pick(rng: np.random.Generator, cum: np.ndarray, n: int) -> np.ndarray:
    """``n`` indices drawn with the probabilities whose cumulative sum is ``cum``."""
    return np.minimum(np.searchsorted(cum, rng.random(n), side="right"), len(cum) - 1)


# ====================================================================== epoch order


class EpochOrder:
    """Global sample index -> ``(source, window)``, an epoch at a time, statelessly.

    An epoch has ``W = sum_s k_s`` slots, ``k_s`` of them for source ``s``, in an order
    that is a seeded permutation of ``[0, W)`` depending on ``(seed, epoch)`` only. With
    ``W_s`` windows in source ``s``, natural token share ``q_s`` and sampling probability
    ``p_s``, ``k_s = round(W_s * p_s / q_s)`` (at least 1): at the natural mixture
    ``k_s = W_s`` and the epoch is every window exactly once. A source weighted up by
    ``m = p_s / q_s`` takes ``m * W_s`` slots, a down-weighted one fewer, so the epoch
    stays about ``sum_s W_s`` windows long and each source's share of it is ``k_s / W``
    (within one window of ``p_s``). Slot ``j`` of source ``s`` in epoch ``e`` is the
    source's occurrence ``g = e * k_s + j``, which reads window ``g mod W_s`` of the
    source's pass ``g // W_s`` -- through a seeded permutation of the source's windows per
    pass when ``k_s != W_s``. An up-weighted source makes ``m`` passes per epoch, a
    down-weighted one spreads a pass over ``1/m`` epochs, and at the end of every epoch
    each window of a source has been seen ``floor(n)`` or ``ceil(n)`` times, ``n = e k_s /
    W_s`` being the source's passes so far (within an epoch the slots are shuffled, so the
    windows of two passes that meet in it interleave).

    The permutations are tables (int32 below 2**31 slots), made when first needed and
    cached: the latest :attr:`CACHE` epochs, and of each source the passes an epoch meets
    plus :attr:`CACHE`. Each is made once, in about 0.1 s per million windows (measured on a
    2-core CPU); a lookup is then one index. Memory: ``8 W`` bytes at the natural mixture,
    up to about ``4 (2 W + sum_s (m_s + 2) W_s)`` with other weights.
    """

    CACHE = 2

    def __init__(
        self,
        windows: list[int],
        probs: np.ndarray,
        tokens: list[int],
        *,
        seed: int,
        names: list[str],
    ) -> None:
        self.windows = np.asarray(windows, dtype=np.int64)  # [S] windows per source
        share = np.asarray(tokens, dtype=np.float64) / float(sum(tokens))  # [S] q_s
        self.per_epoch = np.maximum(1, np.rint(self.windows * (probs / share))).astype(np.int64)
        self.ends = np.cumsum(self.per_epoch)  # [S] end (exclusive) of each source's slots
        self.length = int(self.ends[-1])
        self.seed = seed
        self._tags = [zlib.crc32(n.encode()) for n in names]  # a source's key: its name
        self._passes = np.ceil(self.per_epoch / self.windows)  # [S] passes an epoch meets
        self._perms: dict[int, dict[int, np.ndarray]] = {}

    def _perm(self, source: int, epoch: int) -> np.ndarray:
        """The slot order of ``epoch`` (``source`` -1) or ``source``'s window order in its
        pass ``epoch``: a permutation table, cached (the oldest of its kind dropped)."""
        cache = self._perms.setdefault(source, {})
        perm = cache.get(epoch)
        if perm is None:
            n = self.length if source < 0 else int(self.windows[source])
            tag = 0 if source < 0 else 1 + self._tags[source]
            rng = np.random.default_rng([self.seed, tag, epoch])
            perm = rng.permutation(n).astype(np.int32 if n < 2**31 else np.int64)
            # An epoch meets the passes of an up-weighted source m at once: keep them all.
            keep = self.CACHE if source < 0 else self.CACHE + int(self._passes[source])
            if len(cache) >= keep:
                del cache[next(iter(cache))]
            cache[epoch] = perm
        return perm

    def lookup(self, index: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(source, window)`` int64 arrays of the global sample indices ``index`` [n]."""
        epoch, pos = np.divmod(index, self.length)
        first, last = int(epoch.min()), int(epoch.max())
        if first == last:  # the usual case: the whole micro-batch in one epoch
            slot = self._perm(-1, first)[pos].astype(np.int64)
        else:
            slot = np.empty_like(index)
            for e in np.unique(epoch):
                rows = epoch == e
                slot[rows] = self._perm(-1, int(e))[pos[rows]]
        src = np.searchsorted(self.ends, slot, side="right")
        window = slot - (self.ends[src] - self.per_epoch[src])  # j, the slot within s
        natural = self.per_epoch[src] == self.windows[src]
        if natural.all():
            return src, window
        rows = np.flatnonzero(~natural)  # rows read through their source's pass order
        occurrence = epoch[rows] * self.per_epoch[src[rows]] + window[rows]
        passes, offset = np.divmod(occurrence, self.windows[src[rows]])
        span = int(passes.max()) + 1
        key = src[rows] * span + passes  # one group per (source, pass)
        order = np.argsort(key, kind="stable")
        groups, starts = np.unique(key[order], return_index=True)
        for g, a, b in zip(groups.tolist(), starts, [*starts[1:], len(order)]):
            sel = order[a:b]
            window[rows[sel]] = self._perm(g // span, g % span)[offset[sel]]
        return src, window


# ====================================================================== decoder


class DecoderBatches:
    """Next-token windows: per epoch in a seeded order (``sampling="epoch"``), or a source
    by its weight and then a uniform offset in it, with replacement (``"iid"``).

    ``weights`` are relative sampling probabilities by source name; the default is the
    dataset's mixture (each source's share of training tokens times its spec weight).
    ``accum`` is the number of micro-batches per optimizer step and rank (the epoch order
    numbers samples across them; ``get`` refuses ``micro >= accum`` there).
    """

    def __init__(
        self,
        dataset: TokenDataset,
        *,
        seq_len: int,
        batch_size: int,
        seed: int = 0,
        weights: dict[str, float] | None = None,
        split: str = "train",
        sampling: Sampling = "epoch",
        accum: int = 1,
    ) -> None:
        if seq_len < 1 or batch_size < 1 or accum < 1:
            raise UserError(
                f"seq_len, batch_size and accum must be >= 1, got {seq_len}, {batch_size}, {accum}"
            )
        if seed < 0:
            raise UserError(f"seed must be >= 0, got {seed}")
        if sampling not in ("epoch", "iid"):
            raise UserError(f"sampling must be epoch or iid, got {sampling!r}")
        self.dataset = dataset
        self.seq_len = seq_len
        self.batch_size = batch_size
        self.seed = seed
        self.split = split
        self.sampling, self.accum = sampling, accum
        self.sources, self.probs = _probabilities(dataset, weights, split, seq_len + 1)
        self._cum = np.cumsum(self.probs)
        self._arrays = [dataset.tokens(split, s) for s in self.sources]
        # Offsets are uniform in [0, n - (T + 1)]: `integers` takes the exclusive bound n - T.
        self._high = np.asarray([len(a) - seq_len for a in self._arrays], dtype=np.int64)
        self._window = np.arange(seq_len + 1, dtype=np.int64)
        self.order = EpochOrder(
            [(len(a) - 1) // seq_len for a in self._arrays],
            self.probs,
            [len(a) for a in self._arrays],
            seed=seed,
            names=self.sources,
        )

    @property
    def unique_tokens(self) -> int:
        """Tokens of the split in the sources this sampler draws from (the U of the
        data-constrained law, Muennighoff et al. 2023, arXiv:2305.16264)."""
        return int(sum(len(a) for a in self._arrays))

    @property
    def epoch_windows(self) -> int:
        """Windows (samples) per epoch of the epoch order."""
        return self.order.length

    def get(self, step: int, micro: int = 0, rank: int = 0, world: int = 1) -> dict[str, Any]:
        """The micro-batch ``micro`` of optimizer step ``step`` for ``rank`` of ``world``."""
        import torch

        _check_call(step, micro, rank, world)
        b = self.batch_size
        if self.sampling == "iid":
            rng = np.random.default_rng([self.seed, step, micro])
            src = _pick(rng, self._cum, b * world)  # [world * B]
            off = rng.integers(0, self._high[src])  # [world * B]
            src, off = src[rank * b : (rank + 1) * b], off[rank * b : (rank + 1) * b]
        else:
            if micro >= self.accum:
                raise ValueError(f"micro {micro} out of range: {self.accum} micro-batch(es) a step")
            first = ((step * self.accum + micro) * world + rank) * b  # global sample index
            src, win = self.order.lookup(np.arange(first, first + b, dtype=np.int64))  # [B]
            off = win * self.seq_len
        windows = np.empty((b, self.seq_len + 1), dtype=np.int64)  # [B, T + 1]
        for s in np.unique(src):
            rows = np.flatnonzero(src == s)
            windows[rows] = self._arrays[s][off[rows, None] + self._window]
        t = torch.from_numpy(windows)
        return {"input_ids": t[:, :-1].contiguous(), "labels": t[:, 1:].contiguous()}

    def __repr__(self) -> str:
        mix = ", ".join(f"{s}={p:.3f}" for s, p in zip(self.sources, self.probs))
        return (
            f"DecoderBatches(B={self.batch_size}, T={self.seq_len}, seed={self.seed}, "
            f"{self.sampling}, {mix})"
        )


def validation_batches(
    dataset: TokenDataset,
    *,
    seq_len: int,
    batch_size: int,
    max_tokens_per_source: int | None = None,
    split: str = "val",
) -> dict[str, list[dict[str, Any]]]:
    """Fixed decoder evaluation batches per source, from the start of each validation shard.

    Windows are contiguous and do not overlap: window ``j`` predicts tokens
    ``j*T + 1 .. j*T + T``. At most ``max_tokens_per_source`` tokens are predicted per
    source; the last window is padded (``labels == -100``) rather than dropped. A source
    without validation tokens is left out. The overall loss is the mean over all target
    tokens, i.e. the token-weighted mean of the per-source losses.
    """
    import torch

    if seq_len < 1 or batch_size < 1:
        raise UserError(f"seq_len and batch_size must be >= 1, got {seq_len} and {batch_size}")
    pad = dataset.special_ids.get("pad", dataset.separator_id)
    out: dict[str, list[dict[str, Any]]] = {}
    for source in dataset.sources:
        arr = dataset.tokens(split, source)
        n_pred = len(arr) - 1
        if max_tokens_per_source is not None:
            n_pred = min(n_pred, max_tokens_per_source)
        if n_pred <= 0:
            continue
        n_win = math.ceil(n_pred / seq_len)
        ids = np.full((n_win, seq_len), pad, dtype=np.int64)  # [W, T]
        labels = np.full((n_win, seq_len), IGNORE_INDEX, dtype=np.int64)
        full = n_pred // seq_len
        if full:
            flat = np.asarray(arr[: full * seq_len + 1], dtype=np.int64)
            ids[:full] = flat[:-1].reshape(full, seq_len)
            labels[:full] = flat[1:].reshape(full, seq_len)
        rest = n_pred - full * seq_len
        if rest:
            tail = np.asarray(arr[full * seq_len : full * seq_len + rest + 1], dtype=np.int64)
            ids[full, :rest] = tail[:-1]
            labels[full, :rest] = tail[1:]
        out[source] = [
            {
                "input_ids": torch.from_numpy(ids[i : i + batch_size].copy()),
                "labels": torch.from_numpy(labels[i : i + batch_size].copy()),
            }
            for i in range(0, n_win, batch_size)
        ]
    return out


# ====================================================================== encoder


class EncoderBatches:
    """BERT pretraining batches: ``[CLS] A [SEP] B [SEP]`` pairs with NSP and MLM targets.

    Segment A is a span of a document (the document drawn with probability proportional
    to its length within a source drawn by weight). Half the pairs take B as the span
    right after A in the same document (``next_sentence_label`` 0); the other half take
    B from a random other document of the split (label 1). Segments are token spans
    rather than sentence runs -- the shards keep document boundaries but not sentence
    ones. 10% of the pairs get a shorter random total length (BERT's short_seq_prob).
    Masking follows BERT: each non-special token is chosen with ``mlm_probability`` (at
    least one per sequence), and of the chosen 80% become ``[MASK]``, 10% a random
    non-special token and 10% stay; ``labels`` hold the original ids there, -100
    elsewhere. With ``nsp=False``: one segment ``[CLS] A [SEP]`` and no NSP label.

    Pairs are drawn i.i.d. (with replacement), never by epoch: the random-B half of the
    pairs, the short sequences and spans cut at random lengths do not tile a corpus, so
    "every token once per epoch" has no meaning here without another pair construction.
    """

    def __init__(
        self,
        dataset: TokenDataset,
        *,
        seq_len: int,
        batch_size: int,
        seed: int = 0,
        mlm_probability: float = 0.15,
        nsp: bool = True,
        weights: dict[str, float] | None = None,
        split: str = "train",
    ) -> None:
        ids = dataset.special_ids
        missing = [r for r in ("cls", "sep", "mask", "pad") if r not in ids]
        if missing:
            raise UserError(
                f"{dataset.path}: encoder batches need [CLS]/[SEP]/[MASK]/[PAD] tokens; prepare the "
                "dataset with --tokenizer wordpiece"
            )
        n_special = 3 if nsp else 2
        if seq_len < n_special + (2 if nsp else 1):
            raise UserError(f"seq_len {seq_len} is too short for encoder batches")
        if batch_size < 1 or seed < 0:
            raise UserError(f"batch_size must be >= 1 and seed >= 0, got {batch_size} and {seed}")
        if not 0.0 < mlm_probability < 1.0:
            raise UserError(f"mlm_probability must be in (0, 1), got {mlm_probability}")
        self.dataset, self.split = dataset, split
        self.seq_len, self.batch_size, self.seed = seq_len, batch_size, seed
        self.mlm_probability, self.nsp = mlm_probability, nsp
        self.cls, self.sep, self.mask, self.pad = ids["cls"], ids["sep"], ids["mask"], ids["pad"]
        self.special = np.asarray(sorted(set(ids.values())), dtype=np.int64)
        self.ordinary = np.setdiff1d(np.arange(dataset.vocab_size, dtype=np.int64), self.special)
        self.max_tokens = seq_len - n_special
        min_doc = 2 if nsp else 1
        sources, probs = _probabilities(dataset, weights, split, min_doc + 1)
        self._tokens = {s: dataset.tokens(split, s) for s in dataset.sources}
        self._starts = {s: dataset.doc_starts(split, s) for s in dataset.sources}
        # A segment A needs a document of min_doc tokens (the separator not counted).
        usable = [int((np.diff(self._starts[s]) - 1).max()) >= min_doc for s in sources]
        if not any(usable):
            raise UserError(f"no {split} document has the {min_doc} tokens an encoder pair needs")
        self.sources = [s for s, ok in zip(sources, usable) if ok]
        self.probs = probs[np.asarray(usable)] / probs[np.asarray(usable)].sum()
        self._cum = np.cumsum(self.probs)
        # Random B segments come from any document of the split, by length (BERT draws
        # them from the whole corpus).
        self._all = [s for s in dataset.sources if len(self._tokens[s]) > 1]
        sizes = np.asarray([len(self._tokens[s]) for s in self._all], dtype=np.float64)
        self._all_cum = np.cumsum(sizes / sizes.sum())
        if nsp and sum(len(self._starts[s]) - 1 for s in self._all) < 2:
            raise UserError(f"next-sentence prediction needs at least 2 {split} documents")

    @property
    def unique_tokens(self) -> int:
        """Tokens of the split in the sources segment A is drawn from."""
        return int(sum(len(self._tokens[s]) for s in self.sources))

    def validation(
        self, *, max_tokens_per_source: int, seed: int = 0, split: str = "val"
    ) -> dict[str, list[dict[str, Any]]]:
        """Fixed evaluation batches per source with this sampler's shape and masking.

        The seed is fixed (not the training seed), so runs with different seeds are
        evaluated on the same pairs and masks. See :func:`encoder_validation_batches`.
        """
        return encoder_validation_batches(
            self.dataset,
            seq_len=self.seq_len,
            batch_size=self.batch_size,
            max_tokens_per_source=max_tokens_per_source,
            seed=seed,
            mlm_probability=self.mlm_probability,
            nsp=self.nsp,
            split=split,
        )

    # ---------------------------------------------------------------- sampling
    def _doc(
        self, rng: np.random.Generator, source: str, min_len: int
    ) -> tuple[str, int, int, int]:
        """A document of ``source`` drawn by length: (source, index, start, end), end exclusive."""
        toks, starts = self._tokens[source], self._starts[source]
        for _ in range(64):
            pos = int(rng.integers(0, len(toks)))
            i = int(np.searchsorted(starts, pos, side="right")) - 1
            a, b = int(starts[i]), int(starts[i + 1]) - 1  # b drops the separator
            if b - a >= min_len:
                return source, i, a, b
        raise UserError(f"source {source!r}: no {self.split} document has {min_len}+ tokens")

    def _pair(self, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, int]:
        """Token ids of segments A and B and the NSP label for one example."""
        length = self.max_tokens
        if rng.random() < SHORT_SEQ_PROB:
            length = int(rng.integers(2 if self.nsp else 1, self.max_tokens + 1))
        source = self.sources[int(_pick(rng, self._cum, 1)[0])]
        src, i, a, b = self._doc(rng, source, 2 if self.nsp else 1)
        toks = self._tokens[src]
        if not self.nsp:
            w = min(length, b - a)
            a0 = a + int(rng.integers(0, b - a - w + 1))
            return np.asarray(toks[a0 : a0 + w], dtype=np.int64), np.zeros(0, np.int64), 0
        if rng.random() < 0.5:  # B follows A
            w = min(length, b - a)
            a0 = a + int(rng.integers(0, b - a - w + 1))
            la = int(rng.integers(1, w))
            seg = np.asarray(toks[a0 : a0 + w], dtype=np.int64)
            return seg[:la], seg[la:], 0
        la = min(int(rng.integers(1, length)), b - a)
        a0 = a + int(rng.integers(0, b - a - la + 1))
        for _ in range(64):
            other = self._all[int(_pick(rng, self._all_cum, 1)[0])]
            src2, j, c, d = self._doc(rng, other, 1)
            if (src2, j) != (src, i):
                break
        else:
            raise UserError(f"could not draw a second {self.split} document for NSP")
        lb = min(length - la, d - c)
        b0 = c + int(rng.integers(0, d - c - lb + 1))
        toks2 = self._tokens[src2]
        return (
            np.asarray(toks[a0 : a0 + la], dtype=np.int64),
            np.asarray(toks2[b0 : b0 + lb], dtype=np.int64),
            1,
        )

    def get(self, step: int, micro: int = 0, rank: int = 0, world: int = 1) -> dict[str, Any]:
        """The micro-batch ``micro`` of optimizer step ``step`` for ``rank`` of ``world``."""
        import torch

        _check_call(step, micro, rank, world)
        bsz, t = self.batch_size, self.seq_len
        rng = np.random.default_rng([self.seed, step, micro])
        # One child stream per global example: rank r's examples are the same whichever
        # ranks exist, and no rank builds the others' examples.
        streams = rng.spawn(bsz * world)[rank * bsz : (rank + 1) * bsz]
        ids = np.full((bsz, t), self.pad, dtype=np.int64)  # [B, T]
        types = np.zeros((bsz, t), dtype=np.int64)
        attn = np.zeros((bsz, t), dtype=np.int64)
        labels = np.full((bsz, t), IGNORE_INDEX, dtype=np.int64)
        nsp = np.zeros(bsz, dtype=np.int64)
        for row, r in enumerate(streams):
            seg_a, seg_b, label = self._pair(r)
            la, lb = len(seg_a), len(seg_b)
            ids[row, 0] = self.cls
            ids[row, 1 : 1 + la] = seg_a
            ids[row, 1 + la] = self.sep
            n = 2 + la
            if self.nsp:
                ids[row, n : n + lb] = seg_b
                ids[row, n + lb] = self.sep
                types[row, n : n + lb + 1] = 1
                n += lb + 1
            attn[row, :n] = 1
            nsp[row] = label
            self._mask(r, ids[row, :n], labels[row, :n])
        out = {
            "input_ids": torch.from_numpy(ids),
            "token_type_ids": torch.from_numpy(types),
            "attention_mask": torch.from_numpy(attn),
            "labels": torch.from_numpy(labels),
        }
        if self.nsp:
            out["next_sentence_label"] = torch.from_numpy(nsp)
        return out

    def _mask(self, rng: np.random.Generator, ids: np.ndarray, labels: np.ndarray) -> None:
        """BERT's 80/10/10 masking of one sequence's real tokens ``ids`` [n], in place."""
        candidate = ~np.isin(ids, self.special)  # [n]
        chosen = candidate & (rng.random(len(ids)) < self.mlm_probability)
        if not chosen.any() and candidate.any():  # every sequence gets a target
            cols = np.flatnonzero(candidate)
            chosen[cols[rng.integers(0, len(cols))]] = True
        labels[chosen] = ids[chosen]
        u = rng.random(len(ids))
        to_random = chosen & (u >= 0.8) & (u < 0.9)
        ids[chosen & (u < 0.8)] = self.mask
        ids[to_random] = self.ordinary[rng.integers(0, len(self.ordinary), int(to_random.sum()))]


def encoder_validation_batches(
    dataset: TokenDataset,
    *,
    seq_len: int,
    batch_size: int,
    max_tokens_per_source: int,
    seed: int = 0,
    mlm_probability: float = 0.15,
    nsp: bool = True,
    split: str = "val",
) -> dict[str, list[dict[str, Any]]]:
    """Fixed encoder evaluation batches per source (A segments from that source only).

    Built with a fixed seed, so every evaluation sees the same pairs and masks. About
    ``max_tokens_per_source`` positions (``batch_size * seq_len`` per batch) per source.
    """
    n_batches = max(1, math.ceil(max_tokens_per_source / (batch_size * seq_len)))
    out: dict[str, list[dict[str, Any]]] = {}
    for source in dataset.sources:
        if dataset.num_tokens(split, source) < (3 if nsp else 2):
            continue
        sampler = EncoderBatches(
            dataset,
            seq_len=seq_len,
            batch_size=batch_size,
            seed=seed,
            mlm_probability=mlm_probability,
            nsp=nsp,
            weights={source: 1.0},
            split=split,
        )
        out[source] = [sampler.get(i) for i in range(n_batches)]
    return out
