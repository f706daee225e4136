"""Zero-shot evaluation: task files, tokenization at the boundary, log-likelihoods against
the logits, metrics, the held-out built-in tasks, ``scalelab eval`` and ``study eval``."""

from __future__ import annotations

import csv
import json
import math
import shutil
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from scalelab.cli import main
from scalelab.errors import UserError
from scalelab.evals.config import EvalConfig
from scalelab.evals.metrics import per_example, summarise
from scalelab.evals.score import PairEncoder, loglikelihoods
from scalelab.evals.tasks import Example, Task, load_jsonl
from scalelab.utils.io import read_json


def _write_jsonl(path, records):
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


@pytest.fixture(scope="module")
def tok_dir(tiny_bpe_dataset):
    return tiny_bpe_dataset / "tokenizer"


def _tiny_model(vocab: int, *, seed: int = 0, max_seq_len: int = 48, arch: str = "llama"):
    from scalelab.models.build import build_model
    from scalelab.models.config import ModelConfig

    torch.manual_seed(seed)
    cfg = ModelConfig(
        arch=arch, n_layer=1, d_model=32, n_head=2, vocab_size=vocab, max_seq_len=max_seq_len
    )
    return build_model(cfg).eval()


def _save_model_dir(model, tok_dir, directory):
    from scalelab.models.hf import save_hf

    save_hf(model, directory)
    for f in tok_dir.iterdir():
        shutil.copy2(f, directory / f.name)
    return directory


# ====================================================================== task files


@pytest.mark.parametrize(
    "line, message",
    [
        ("not json", "not valid JSON"),
        ('["a"]', "expected a JSON object"),
        ('{"choices": [" a", " b"], "gold": 0}', "no field 'context'"),
        ('{"context": 3, "choices": [" a", " b"], "gold": 0}', "context must be a string"),
        ('{"context": "c", "choices": [" a"], "gold": 0}', "at least 2 strings"),
        ('{"context": "c", "choices": [" a", ""], "gold": 0}', "choices[1] is empty"),
        ('{"context": "c", "choices": [" a", 5], "gold": 0}', "choices[1] must be a string"),
        ('{"context": "c", "choices": [" a", " b"], "gold": 2}', "out of range for 2 choices"),
        ('{"context": "c", "choices": [" a", " b"], "gold": true}', "gold must be an integer"),
    ],
)
def test_task_file_errors_name_file_and_line(tmp_path, line, message):
    path = tmp_path / "t.jsonl"
    path.write_text('{"context": "ok", "choices": [" a", " b"], "gold": 1}\n\n' + line + "\n")
    with pytest.raises(UserError) as exc:
        load_jsonl(path)
    text = str(exc.value)
    assert f"{path}:3:" in text and message in text and "\n" not in text


def test_task_file_reads_ids_and_limit(tmp_path):
    path = _write_jsonl(
        tmp_path / "t.jsonl",
        [
            {"id": "q1", "context": "A", "choices": [" x", " y"], "gold": 1, "extra": 1},
            {"context": "B", "choices": [" x", " y", " z"], "gold": 2},
        ],
    )
    exs = load_jsonl(path)
    assert exs[0] == Example("q1", "A", (" x", " y"), 1)
    assert exs[1].id == "2" and exs[1].gold == 2  # the line number when no id is given
    assert len(load_jsonl(path, limit=1)) == 1
    task = Task(name=str(path), key="t", examples=tuple(exs))
    assert task.chance == pytest.approx((1 / 2 + 1 / 3) / 2)
    assert task.hash != Task(name="t", key="t", examples=tuple(exs[:1])).hash
    with pytest.raises(UserError, match="unknown built-in task"):
        EvalConfig(tasks=("builtin:nope",))


# ====================================================================== tokenization


def test_pair_encoding_keeps_the_continuation_tokens_exact(tok_dir):
    enc = PairEncoder(tok_dir)
    tok = enc.context_tok
    assert enc.start_id == tok.token_to_id("<|endoftext|>")
    ctx, cont, text = enc.encode_pair("The king is", " dead")
    assert ctx[0] == enc.start_id and text == " dead"
    whole = tok.encode("The king is dead", add_special_tokens=False).ids
    assert ctx[1:] + cont == whole  # the usual case: the same tokens as the running text
    assert cont == tok.encode(" dead", add_special_tokens=False).ids
    # A continuation that glues onto the last word gets no dummy-prefix space.
    _, glued, _ = enc.encode_pair("The king", "dom")
    assert not enc.continuation_tok.id_to_token(glued[0]).startswith("Ġ")
    assert tok.encode("dom", add_special_tokens=False).tokens[0].startswith("Ġ")
    # Trailing whitespace of the context moves to the continuation (lm-eval's rule).
    ctx2, cont2, text2 = enc.encode_pair("The king is ", "dead")
    assert text2 == " dead" and ctx2 == ctx and cont2 == cont


# ====================================================================== log-likelihoods


def _direct(model, ctx, cont, max_len):
    full = (ctx + cont)[-(max_len + 1) :]
    with torch.no_grad():
        logits = model(torch.tensor([full[:-1]]))["logits"][0].double()
    logp = torch.log_softmax(logits, dim=-1)
    n = len(cont)
    positions = range(len(full) - 1 - n, len(full) - 1)
    return float(sum(logp[t, full[t + 1]] for t in positions))


@pytest.mark.parametrize("arch", ["llama", "gpt2"])
def test_loglikelihoods_equal_the_logits(tok_dir, arch):
    enc = PairEncoder(tok_dir)
    model = _tiny_model(enc.vocab_size, max_seq_len=24, arch=arch)
    examples = [
        Example("a", "To be, or not to be", (" that is the question", " no", " 7"), 0),
        Example("b", "", (" Hello", " world again"), 0),  # empty context: the start token predicts
        Example("c", "word " * 40, (" end", " finish it now"), 1),  # over 24 tokens: cut left
    ]
    requests = enc.requests(examples)
    assert len(requests) == 7 and max(len(r.context) for r in requests) > 24
    got = loglikelihoods(model, requests, batch_size=3)
    for r, ll in zip(requests, got, strict=True):
        assert ll == pytest.approx(_direct(model, r.context, r.continuation, 24), abs=1e-5)
        assert ll < 0
    again = loglikelihoods(model, requests, batch_size=1)
    assert np.allclose(got, again, atol=1e-5)  # padding and batching change nothing
    too_long = enc.requests([Example("d", "x", (" word" * 30, " y"), 0)])
    with pytest.raises(UserError, match="longer than the model's context"):
        loglikelihoods(model, too_long)


def test_the_choice_the_model_was_trained_on_wins(tok_dir):
    from scalelab.evals.evaluate import score_task

    enc = PairEncoder(tok_dir)
    model = _tiny_model(enc.vocab_size).train()
    texts = ["The cat sat on the mat.", "A bird flew over the sea."]
    seqs = [[enc.start_id] + enc.context_tok.encode(t, add_special_tokens=False).ids for t in texts]
    width = max(map(len, seqs))
    ids = torch.tensor([s + [0] * (width - len(s)) for s in seqs])
    labels = torch.tensor([s[1:] + [-100] * (width - len(s) + 1) for s in seqs])
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(30):
        opt.zero_grad()
        model(ids, labels=labels)["loss"].backward()
        opt.step()
    task = Task(
        name="t",
        key="t",
        examples=(
            Example("1", "The cat sat on the", (" sea.", " mat.", " cat."), 1),
            Example("2", "A bird flew over the", (" sea.", " mat.", " bird."), 0),
        ),
    )
    res = score_task(model.eval(), enc, task, EvalConfig(progress=False), "cpu")
    assert [r["pred"] for r in res["examples"]] == [1, 0]
    assert res["metrics"]["acc"] == {"value": 1.0, "stderr": 0.0}
    # bpb of the gold answer from its summed log-likelihood and its bytes.
    ex = res["examples"][0]
    assert ex["bpb"] == pytest.approx(-ex["loglik"][1] / (math.log(2) * len(b" mat.")))


def test_metrics_acc_norm_bpb_and_standard_errors():
    examples = [
        Example("1", "c", ("a", "bbbbbbbb"), 1),
        Example("2", "c", ("a", "bbbbbbbb"), 0),
        Example("3", "c", (" é", " x"), 0),
    ]
    lls = [[-2.0, -4.0], [-1.0, -12.0], [-5.0, -1.0]]
    rows = per_example(examples, lls, [" bbbbbbbb", "a", " é"])
    # raw: argmax picks 0, 0, 1; normalised by characters: -2/1 < -4/8 picks 1.
    assert [r["pred"] for r in rows] == [0, 0, 1]
    assert [r["pred_norm"] for r in rows] == [1, 0, 1]
    assert rows[2]["bpb"] == pytest.approx(5.0 / (math.log(2) * 3))  # " é" is 3 UTF-8 bytes
    m = summarise(rows)
    assert m["acc"]["value"] == pytest.approx(1 / 3)
    assert m["acc"]["stderr"] == pytest.approx(math.sqrt((1 / 3) * (2 / 3) / 3))
    assert m["acc_norm"]["value"] == pytest.approx(2 / 3)
    bpbs = [r["bpb"] for r in rows]
    assert m["bpb"]["value"] == pytest.approx(np.mean(bpbs))
    assert m["bpb"]["stderr"] == pytest.approx(np.std(bpbs, ddof=1) / math.sqrt(3))


# ====================================================================== built-in tasks


def _train_text(dataset, source):
    from scalelab.data.dataset import open_dataset
    from scalelab.data.tokenizer import load_backend

    ds = open_dataset(dataset)
    backend = load_backend(ds.tokenizer_path)
    return backend.decode(ds.tokens("train", source).tolist())


def test_builtin_tasks_use_held_out_text_only(tiny_bpe_dataset):
    from scalelab.evals.tasks import resolve_task

    task = resolve_task("builtin:continuation", dataset=tiny_bpe_dataset, limit=8, seed=0)
    assert len(task.examples) == 8 and task.key == "continuation"
    train = {s: _train_text(tiny_bpe_dataset, s) for s in ("shakespeare", "wikipedia")}
    for ex in task.examples:
        assert len(ex.choices) == 4 and len(set(ex.choices)) == 4
        gold = ex.choices[ex.gold]
        assert gold.startswith(" ") and len(gold) >= 20
        source = ex.id.split("/", 1)[0]
        assert gold.strip() not in train[source]  # never training text
        assert ex.context[-60:] not in train[source]
    again = resolve_task("builtin:continuation", dataset=tiny_bpe_dataset, limit=8, seed=0)
    other = resolve_task("builtin:continuation", dataset=tiny_bpe_dataset, limit=8, seed=1)
    assert again.hash == task.hash != other.hash

    wiki = resolve_task("builtin:wiki-topic", dataset=tiny_bpe_dataset, limit=12, seed=0)
    assert len(wiki.examples) == 12 and len(wiki.examples[0].choices) == 11
    assert " people." in wiki.examples[0].choices
    for ex in wiki.examples:
        lead = ex.context.removesuffix(" This article is about")
        assert lead != ex.context and lead[:200] not in train["wikipedia"]
    with pytest.raises(UserError, match="--dataset"):
        resolve_task("builtin:wiki-topic", dataset=None, limit=1, seed=0)


# ====================================================================== scalelab eval


def test_cli_eval_of_a_model_directory(tmp_path, tiny_bpe_dataset, tok_dir, capsys):
    model_dir = _save_model_dir(_tiny_model(512, max_seq_len=64), tok_dir, tmp_path / "model")
    task = _write_jsonl(
        tmp_path / "mine.jsonl",
        [{"context": "To be, or not", "choices": [" to be", " xq"], "gold": 0}] * 3,
    )
    out = tmp_path / "scores.json"
    args = ["eval", str(model_dir), "--tasks", f"builtin:continuation,{task}", "--limit", "4",
            "--dataset", str(tiny_bpe_dataset), "--out", str(out), "--no-progress"]  # fmt: skip
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert "continuation" in printed and "acc_norm" in printed
    data = read_json(out)
    cont = data["tasks"]["continuation"]
    assert cont["n"] == 4 and set(cont["metrics"]) == {"acc", "acc_norm", "bpb"}
    assert cont["metrics"]["bpb"]["value"] > 0 and len(cont["examples"]) == 4
    mine = next(v for k, v in data["tasks"].items() if k.startswith("mine-"))
    assert mine["n"] == 3 and mine["chance"] == 0.5
    assert main(["eval", str(tmp_path / "nothing"), "--tasks", str(task)]) == 2
    assert "neither a run directory" in capsys.readouterr().err


# ====================================================================== scalelab study eval


@pytest.fixture(scope="module")
def tiny_study(tmp_path_factory, tiny_bpe_dataset):
    out = tmp_path_factory.mktemp("zs") / "s"
    plan = [
        "plan", "--design", "grid", "--sizes", "2e3,6e3", "--tokens", "2048",
        "--min-tokens", "1024", "--base.dataset", str(tiny_bpe_dataset), "--base.seq-len", "64",
        "--base.eval-tokens", "1024", "--policy.rule", "fixed", "--policy.batch-tokens", "128",
        "--holdout", "0", "--out", str(out),
    ]  # fmt: skip
    assert main(plan) == 0
    from scalelab.study.run import RunConfig, run_study
    from scalelab.study.study import Study

    # Training only (`study run` would also fit and render the report).
    statuses = run_study(Study.load(out), RunConfig(in_process=True, progress=False))
    assert set(statuses.values()) == {"completed"}
    return out


def test_study_eval_writes_csv_and_resumes(tiny_study, tmp_path, capsys):
    from scalelab.study.report.html import Report
    from scalelab.study.report.zeroshot import render_zeroshot
    from scalelab.study.study import Study

    task = _write_jsonl(
        tmp_path / "mine.jsonl",
        [{"context": "Thou art", "choices": [" a king", " zq"], "gold": 0}] * 2,
    )
    args = ["study", "eval", str(tiny_study), "--tasks", f"builtin:continuation,{task}",
            "--limit", "5", "--no-progress"]  # fmt: skip
    assert main(args) == 0
    out = capsys.readouterr().out
    study = Study.load(tiny_study)
    n_rungs = len(study.rungs)
    assert n_rungs == 2 and "ladder not fitted" in out and "at least 6" in out
    with open(tiny_study / "zeroshot.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert list(rows[0]) == ["rung", "N_non_embedding", "D", "task", "metric", "value", "stderr"]
    assert len(rows) == n_rungs * 2 * 3
    assert {r["rung"] for r in rows} == {r.id for r in study.rungs}
    key = next(r["task"] for r in rows if r["task"].startswith("mine-"))
    for r in rows:
        res = read_json(tiny_study / "zeroshot" / r["rung"] / f"{r['task']}.json")
        assert float(r["value"]) == pytest.approx(res["metrics"][r["metric"]]["value"])
        assert (
            int(r["D"])
            == study.rung_summary(next(x for x in study.rungs if x.id == r["rung"]))["tokens"]
        )
    assert (tiny_study / "zeroshot" / "tasks" / "continuation.jsonl").is_file()
    summary = read_json(tiny_study / "zeroshot" / "summary.json")
    assert "at least 6" in summary["tasks"]["continuation"]["error"]

    files = sorted((tiny_study / "zeroshot").glob("r*/*.json"))
    stamps = {p: p.stat().st_mtime_ns for p in files}
    assert main(args) == 0  # resumed: nothing is scored again
    assert "scored 0 (rung, task) pair(s), kept 4" in capsys.readouterr().out
    assert {p: p.stat().st_mtime_ns for p in files} == stamps
    # A changed task file is scored again; the other task is kept.
    _write_jsonl(task, [{"context": "Thou art", "choices": [" a king", " zq"], "gold": 1}] * 2)
    assert main(args) == 0
    assert "scored 2 (rung, task) pair(s), kept 2" in capsys.readouterr().out
    res = read_json(tiny_study / "zeroshot" / study.rungs[0].id / f"{key}.json")
    assert res["examples"][0]["gold"] == 1

    rep = Report("t")
    render_zeroshot(rep, study)
    html = rep.to_html()
    assert "Zero-shot evaluation" in html and "data:image/png" in html and "continuation" in html


def _synthetic_results(n_fit: int = 7):
    """Fit rungs whose bpb follows a Chinchilla law and accuracy a sigmoid of it."""
    rng = np.random.default_rng(0)
    ns = np.geomspace(1e4, 1e6, n_fit + 1)
    out = []
    for i, n in enumerate(ns):
        d = float(20 * n * rng.uniform(0.5, 2.0))
        bpb = 0.8 + 40 / n**0.3 + 60 / d**0.3
        acc = 0.6 / (1 + math.exp(2.0 * (bpb - 3.0))) + 0.25
        out.append(
            {
                "rung": f"r{i}",
                "role": "holdout" if i == n_fit else "fit",
                "N": float(n),
                "D": d,
                "chance": 0.25,
                "metrics": {
                    "acc": {"value": acc, "stderr": 0.01},
                    "bpb": {"value": bpb, "stderr": 0.01},
                    "acc_norm": {"value": acc, "stderr": 0.01},
                },  # fmt: skip
            }
        )
    return out


def test_ladder_on_gold_bpb_predicts_the_held_out_rung(tmp_path):
    from scalelab.laws import load_fit
    from scalelab.study.report.zeroshot import plot_task
    from scalelab.study.zeroshot import fit_task_ladder

    study = SimpleNamespace(root=tmp_path)
    (tmp_path / "zeroshot").mkdir()
    results = _synthetic_results()
    info = fit_task_ladder(study, "syn", results)
    assert "error" not in info and info["n_fit"] == 7
    fit = load_fit(tmp_path / "zeroshot" / "ladder_syn.json")
    h = info["holdout"][0]
    assert h["predicted_bpb"] == pytest.approx(h["bpb"], rel=1e-3)
    assert h["predicted_acc"] == pytest.approx(h["acc"], abs=1e-3)
    assert info["params"]["sigmoid.L0"] == pytest.approx(3.0, rel=1e-3)
    assert float(fit.predict(h["N"], h["D"])[0]) == pytest.approx(h["predicted_acc"])
    assert len(plot_task("syn", results, info, fit).axes) == 3
    few = fit_task_ladder(study, "syn", results[:3])
    assert "at least 6" in few["error"] and not (tmp_path / "zeroshot" / "ladder_syn.json").exists()
