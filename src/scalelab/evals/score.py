"""Per-choice log-likelihoods under a causal LM: tokenization at the boundary, batching.

**Tokenization** (as lm-evaluation-harness does for its loglikelihood requests): trailing
whitespace of the context is moved to the front of the continuation; the context is
encoded on its own and the continuation on its own, and the request is the concatenation
``[start] + context tokens + continuation tokens``, so the scored tokens are exactly the
continuation's, whatever the tokenizer would merge across the boundary. Choices are
written with their leading space (``" Paris"``); that space then belongs to the
continuation's first token, as it does in running text (``"ĠParis"``).

scalelab's byte-level BPE puts a space before the first word of every text it encodes
(SentencePiece's dummy prefix, see :mod:`scalelab.data.tokenizer`): right for a context,
which is a document start as in pretraining, wrong for a continuation, which is not. The
continuation is therefore encoded by a copy of the tokenizer with that prefix switched off
(ByteLevel ``add_prefix_space``, Metaspace ``prepend_scheme``, a ``Prepend`` normaliser):
``" Paris"`` encodes as in running text and a choice that glues onto the last word
(``"ing"``) gets no space it does not have.

``[start]`` is the tokenizer's beginning-of-text token (scalelab's ``<|endoftext|>``,
which precedes every document in the pretraining stream), so a context is scored the way a
document opening is seen in training, and an empty context still predicts its first token.

**Scoring**: a request longer than the model's context keeps its last ``max_seq_len + 1``
tokens (the context is cut from the left); requests are sorted by length, batched, padded
on the right with an attention mask marking the real tokens. For a causal model right
padding changes nothing before the padding (a position attends only to earlier ones), so
the mask only says which positions to score. Only the continuation's positions go through
the output head, in fp32, with a log-softmax over the vocabulary.
"""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from scalelab.errors import UserError


def _no_prefix_space(node: Any) -> Any:
    """A tokenizer.json tree with every "add a space before the text" step switched off."""
    if isinstance(node, list):
        return [_no_prefix_space(x) for x in node]
    if not isinstance(node, dict):
        return node
    out = {k: _no_prefix_space(v) for k, v in node.items()}
    kind = out.get("type")
    if kind == "ByteLevel" and "add_prefix_space" in out:
        out["add_prefix_space"] = False
    elif kind == "Metaspace":
        if "prepend_scheme" in out:
            out["prepend_scheme"] = "never"
        if "add_prefix_space" in out:
            out["add_prefix_space"] = False
    elif kind == "Prepend":
        out["prepend"] = ""
    return out


def _special(config: dict[str, Any], key: str) -> str | None:
    value = config.get(key)
    if isinstance(value, dict):
        value = value.get("content")
    return value if isinstance(value, str) and value else None


@dataclass
class Request:
    """One (example, choice) pair as tokens, and the text its continuation tokens spell."""

    example: int
    choice: int
    context: list[int]
    continuation: list[int]
    text: str
    id: str = ""
    """The example's id (for messages)."""


class PairEncoder:
    """Encodes (context, continuation) pairs as described in the module docstring."""

    def __init__(self, tokenizer_dir: str | Path, *, start_id: int | None = None) -> None:
        from tokenizers import Tokenizer

        directory = Path(tokenizer_dir)
        path = directory / "tokenizer.json"
        if not path.is_file():
            raise UserError(f"{directory}: no tokenizer.json (not a tokenizer directory)")
        data = json.loads(path.read_text(encoding="utf-8"))
        self.directory = directory
        self.context_tok = Tokenizer.from_str(json.dumps(data))
        self.continuation_tok = Tokenizer.from_str(
            json.dumps(_no_prefix_space(copy.deepcopy(data)))
        )
        self.start_id = self._start_id() if start_id is None else start_id

    def _start_id(self) -> int | None:
        """The tokenizer's bos token (else its eos token), from tokenizer_config.json."""
        cfg_path = self.directory / "tokenizer_config.json"
        config = json.loads(cfg_path.read_text(encoding="utf-8")) if cfg_path.is_file() else {}
        for key in ("bos_token", "eos_token"):
            token = _special(config, key)
            if token is not None and self.context_tok.token_to_id(token) is not None:
                return int(self.context_tok.token_to_id(token))
        return None

    @property
    def vocab_size(self) -> int:
        return int(self.context_tok.get_vocab_size())

    def encode_pair(self, context: str, continuation: str) -> tuple[list[int], list[int], str]:
        """``(context ids with the start token, continuation ids, continuation text)``."""
        stripped = context.rstrip()
        continuation = context[len(stripped) :] + continuation
        ctx = self.context_tok.encode(stripped, add_special_tokens=False).ids if stripped else []
        cont = self.continuation_tok.encode(continuation, add_special_tokens=False).ids
        start = [self.start_id] if self.start_id is not None else []
        return start + ctx, cont, continuation

    def requests(self, examples: Any) -> list[Request]:
        """Every (example, choice) of ``examples`` as a :class:`Request`."""
        out = []
        for i, ex in enumerate(examples):
            for j, choice in enumerate(ex.choices):
                ctx, cont, text = self.encode_pair(ex.context, choice)
                if not cont:
                    raise UserError(f"example {ex.id!r}: choice {j} encodes to no tokens")
                if not ctx:
                    raise UserError(
                        f"example {ex.id!r}: an empty context and a tokenizer without a "
                        "beginning-of-text token leave nothing to predict the first token from"
                    )
                out.append(Request(i, j, ctx, cont, text, ex.id))
        return out


def _windows(requests: list[Request], max_len: int) -> list[tuple[list[int], list[int]]]:
    """Per request: model input (at most ``max_len`` tokens) and the continuation targets."""
    out = []
    for r in requests:
        n = len(r.continuation)
        if n > max_len:
            raise UserError(
                f"example {r.id!r}: choice {r.choice} is {n} tokens, longer than the model's "
                f"context of {max_len}; shorten the task's choices"
            )
        full = (r.context + r.continuation)[-(max_len + 1) :]
        out.append((full[:-1], full[-n:]))
    return out


def loglikelihoods(
    model: Any,
    requests: list[Request],
    *,
    batch_size: int = 32,
    device: Any = "cpu",
    precision: str = "fp32",
    progress: bool = False,
    desc: str = "scoring",
) -> list[float]:
    """Summed log-probability (nats) of each request's continuation given its context."""
    import torch
    from tqdm.auto import tqdm

    from scalelab.train.step import autocast

    max_len = int(model.config.max_seq_len)
    windows = _windows(requests, max_len)
    order = sorted(range(len(windows)), key=lambda k: -len(windows[k][0]))
    out = [0.0] * len(windows)
    model.eval()
    bar = tqdm(
        total=len(order), desc=desc, unit="seq", disable=None if progress else True, leave=False
    )
    with torch.no_grad():
        for s in range(0, len(order), batch_size):
            batch = order[s : s + batch_size]
            sums = _batch_loglik(model, [windows[k] for k in batch], device, precision, autocast)
            for k, value in zip(batch, sums, strict=True):
                out[k] = value
            bar.update(len(batch))
    bar.close()
    return out


def _batch_loglik(
    model: Any, items: list[tuple[list[int], list[int]]], device: Any, precision: str, autocast: Any
) -> list[float]:
    """Summed continuation log-probs of one batch (right-padded; see the module docstring)."""
    import torch
    import torch.nn.functional as F

    width = max(len(inp) for inp, _ in items)
    ids = torch.zeros((len(items), width), dtype=torch.long)
    mask = torch.zeros((len(items), width), dtype=torch.bool)
    rows, cols, targets, owner = [], [], [], []
    for b, (inp, tgt) in enumerate(items):
        ids[b, : len(inp)] = torch.tensor(inp, dtype=torch.long)
        mask[b, : len(inp)] = True
        # The continuation's targets are predicted at the last len(tgt) input positions.
        first = len(inp) - len(tgt)
        rows += [b] * len(tgt)
        cols += range(first, len(inp))
        targets += tgt
        owner += [b] * len(tgt)
    ids = ids.to(device)
    with autocast(device, precision):
        hidden = _hidden(model, ids)
    sel = hidden[torch.tensor(rows, device=device), torch.tensor(cols, device=device)]
    assert bool(mask[rows, cols].all())  # only real positions are scored
    weight = _head_weight(model)
    logits = F.linear(sel.float(), weight.float())
    logp = torch.log_softmax(logits, dim=-1)
    picked = logp.gather(1, torch.tensor(targets, device=device)[:, None])[:, 0].double()
    sums = torch.zeros(len(items), dtype=torch.float64, device=device)
    sums.index_add_(0, torch.tensor(owner, device=device), picked)
    return sums.cpu().tolist()


def _hidden(model: Any, ids: Any) -> Any:
    if hasattr(model, "hidden_states"):
        return model.hidden_states(ids)
    raise UserError("zero-shot scoring needs a scalelab decoder (llama or gpt2)")


def _head_weight(model: Any) -> Any:
    return model.head_weight
