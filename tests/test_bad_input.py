"""Bad input to every command: exit 2 and ONE line ``scalelab: error: ...`` naming what is
wrong, never a traceback or a leaked warning, and nothing written anywhere.

Table-driven: a case is a command line (placeholders ``{runs}``, ``{fit}``, ``{kaplan}``,
``{study}``, ``{model}`` name the shared valid fixtures), a regex the error line must match,
and the files the case needs, written into a fresh working directory. Every case runs
in-process with that directory as the cwd; afterwards neither it nor the shared fixtures
may hold a new or changed file. The cheap checks all happen before a model loads or a step
trains, so the module runs in seconds.
"""

from __future__ import annotations

import contextlib
import io
import json
import re
import shlex
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from scalelab.cli import main
from scalelab.laws import chinchilla_loss

# A file's content: text, bytes, None for a directory, or a function of the shared
# fixture directory (a tampered copy of the valid fit, say).
Content = str | bytes | None | Callable[[Path], str | bytes]

TRUE = {"E": 1.8, "A": 400.0, "B": 2000.0, "alpha": 0.34, "beta": 0.37}
FIT = "--n params --d tokens --grid small"
PLACEHOLDERS = {
    "{runs}": "runs.csv",
    "{fit}": "fit.json",
    "{kaplan}": "kaplan.json",
    "{study}": "study",
    "{model}": "model",
}


def case(argv: str, match: str, files: dict[str, Content] | None = None, id: str = ""):  # noqa: A002
    """One row of a table: the command, the regex its error line matches, its files."""
    return pytest.param(argv, match, files or {}, id=id or argv)


def _valid_rows() -> list[str]:
    rows = ["model,params,tokens,loss"]
    for n in np.geomspace(2e7, 2e9, 4):
        for r in (5, 20, 80):
            rows.append(f"m{n:.0e},{n:.6g},{n * r:.6g},{chinchilla_loss(n, n * r, TRUE):.6f}")
    return rows


VALID_CSV = "\n".join(_valid_rows()) + "\n"


def table(*rows: str, header: str = "params,tokens,loss") -> str:
    return "\n".join([header, *rows]) + "\n"


def fit_with(edit: Callable[[dict[str, Any]], Any]) -> Callable[[Path], str]:
    """The shared valid fit JSON, edited by ``edit`` (which changes the dict in place)."""

    def build(shared: Path) -> str:
        data = json.loads((shared / "fit.json").read_text())
        edit(data)
        return json.dumps(data)

    return build


def _set(path: str, value: Any) -> Callable[[dict[str, Any]], None]:
    """An edit that sets the dotted key ``path`` of a fit JSON to ``value``."""

    def edit(data: dict[str, Any]) -> None:
        *parents, leaf = path.split(".")
        for key in parents:
            data = data[key]
        data[leaf] = value

    return edit


def _drop(*paths: str) -> Callable[[dict[str, Any]], None]:
    def edit(data: dict[str, Any]) -> None:
        for path in paths:
            *parents, leaf = path.split(".")
            node = data
            for key in parents:
                node = node[key]
            del node[leaf]

    return edit


# ====================================================================== shared fixtures


@pytest.fixture(scope="module")
def shared(tmp_path_factory) -> Path:
    """Valid inputs made once: a runs table, fits of it, a planned study, a model dir."""
    root = tmp_path_factory.mktemp("shared")
    (root / "runs.csv").write_text(VALID_CSV)
    model = root / "model"
    model.mkdir()
    (model / "config.json").write_text('{"model_type": "bert"}')  # checks stop before loading
    commands = [
        ["fit", str(root / "runs.csv"), *FIT.split(), "--out", str(root / "fit.json")],
        ["fit", str(root / "runs.csv"), "--n", "params", "--form", "kaplan_n"]
        + ["--out", str(root / "kaplan.json")],
        ["plan", "--design", "isoflop", "--budget-flops", "1e15", "--out", str(root / "study")],
    ]
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        for argv in commands:
            assert main(argv) == 0, argv
    return root


def _snapshot(root: Path) -> dict[str, tuple[int, int]]:
    """Every path under ``root`` with its size and modification time."""
    return {
        str(p.relative_to(root)): (p.stat().st_size if p.is_file() else -1, p.stat().st_mtime_ns)
        for p in root.rglob("*")
    }


def _write(cwd: Path, shared: Path, files: dict[str, Content]) -> None:
    for name, content in files.items():
        path = cwd / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if callable(content):
            content = content(shared)
        if content is None:
            path.mkdir(exist_ok=True)
        elif isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content)


def check_case(
    argv: str, match: str, files: dict[str, Content], shared: Path, tmp_path, monkeypatch, capsys
) -> None:
    """Run one case in a fresh cwd and check the one-line error and that nothing was written."""
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    _write(cwd, shared, files)
    before, shared_before = _snapshot(tmp_path), _snapshot(shared)
    args = shlex.split(argv)
    for placeholder, name in PLACEHOLDERS.items():
        args = [a.replace(placeholder, str(shared / name)) for a in args]
    capsys.readouterr()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            code = main(args)
        except SystemExit as exc:  # argparse's usage errors: scalelab's one line, exit 2
            code = exc.code
    out, err = capsys.readouterr()
    lines = err.splitlines()
    assert code == 2, f"exit {code}; stderr: {err}"
    assert len(lines) == 1 and lines[0].startswith("scalelab: error: "), err
    assert re.search(match, lines[0]), f"{lines[0]!r} does not match {match!r}"
    assert "Traceback" not in out + err
    noise = (DeprecationWarning, PendingDeprecationWarning, FutureWarning)
    leaked = [str(w.message) for w in caught if not issubclass(w.category, noise)]
    assert not leaked, leaked
    assert _snapshot(tmp_path) == before, "the command wrote a file"
    assert _snapshot(shared) == shared_before, "the command changed a shared fixture"


def one_line_test(cases: list[Any]) -> Callable[..., None]:
    """The test method of a class of cases: each runs through :func:`check_case`."""

    @pytest.mark.parametrize(("argv", "match", "files"), cases)
    def test_one_line(self, argv, match, files, shared, tmp_path, monkeypatch, capsys) -> None:
        check_case(argv, match, files, shared, tmp_path, monkeypatch, capsys)

    return test_one_line


# ====================================================================== configs and flags

CONFIG_CASES = [
    # pretrain: every section's validation, before any data is prepared
    case("pretrain r --size tiny --runtime.threads -1", r"runtime\.threads must be >= 0 \(0: torch's default\), got -1"),
    case("pretrain r --size tiny --runtime.log-every 0", r"log_every must be at least 1"),
    case("pretrain r --size tiny --runtime.checkpoint-every-s -1", r"checkpoint_every_s must be >= 0"),
    case("pretrain r --size tiny --runtime.keep-checkpoints 0", r"keep_checkpoints must be at least 1"),
    case("pretrain r --size tiny --runtime.device tpu", r"device must be auto, cpu or cuda, got 'tpu'"),
    case("pretrain r --size tiny --runtime.threads two", r"runtime\.threads: expected an integer, got 'two'"),
    case("pretrain r --size tiny --optim.lr -1", r"lr must be positive, got -1"),
    case("pretrain r --size tiny --optim.lr nan", r"lr must be positive, got nan"),
    case("pretrain r --size tiny --optim.lr abc", r"optim\.lr: expected a number, got 'abc'"),
    case("pretrain r --size tiny --optim.beta1 1.5", r"beta1 must be in \[0, 1\)"),
    case("pretrain r --size tiny --optim.beta2 -1", r"beta2 must be in \[0, 1\)"),
    case("pretrain r --size tiny --optim.eps -1e-8", r"eps must be positive"),
    case("pretrain r --size tiny --optim.warmup-fraction 1", r"warmup_fraction must be in \[0, 1\)"),
    case("pretrain r --size tiny --optim.min-lr-ratio 2", r"min_lr_ratio must be in \[0, 1\]"),
    case("pretrain r --size tiny --optim.decay-fraction 0", r"decay_fraction must be in \(0, 1\]"),
    case("pretrain r --size tiny --optim.grad-clip -1", r"grad_clip and weight_decay must be >= 0"),
    case("pretrain r --params -1e6", r"params must be positive, got -1000000"),
    case("pretrain r --params abc", r"params: expected a number, got 'abc'"),
    case("pretrain r --size tiny --tokens 0", r"tokens and batch_tokens must be positive"),
    case("pretrain r --size tiny --tokens 1.5", r"tokens: expected an integer, got '1\.5'"),
    case("pretrain r --size tiny --seq-len 4", r"seq_len must be at least 8, got 4"),
    case("pretrain r --size tiny --batch-tokens 100 --seq-len 64", r"batch_tokens \(100\) must be a multiple of seq_len \(64\)"),
    case("pretrain r --model.n-layer 0", r"model\.n_layer must be a positive integer, got 0"),
    case("pretrain r --model.d-model 30 --model.n-head 4", r"model\.d_model \(30\) must be a multiple of model\.n_head \(4\)"),
    case("pretrain r --model.dropout 1.5", r"model\.dropout must be in \[0, 1\)"),
    case("pretrain r --model.norm-eps 0", r"model\.norm_eps must be positive"),
    case("pretrain r --model.d-ff -4", r"model\.d_ff must be a positive integer or none, got -4"),
    case("pretrain r --model.d-model 2.5", r"model\.d_model: expected an integer, got '2\.5'"),
    case("pretrain r --size tiny --data.vocab-size 3", r"vocab_size must be at least 8, got 3"),
    case("pretrain r --size tiny --set optim.lrr=1", r"unknown config key 'optim\.lrr'; did you mean 'lr'\?"),
    case("pretrain r --size tiny --set model.nlayer=1", r"unknown config key 'model\.nlayer'; did you mean 'n_layer'\?"),
    case("pretrain r --size tiny --set runtime=3", r"runtime: expected a mapping, got int"),
    case("pretrain r --size tiny --set nosuch", r"override 'nosuch' must look like key=value"),
    # config files
    case("pretrain r --config nosuch.yaml", r"config file not found: nosuch\.yaml"),
    case("pretrain r --config c.yaml", r"c\.yaml: not valid YAML/JSON", {"c.yaml": "lr: [\n"}),
    case("pretrain r --config c.yaml", r"c\.yaml: not a text file", {"c.yaml": b"\x00\xff\xfe\x80"}, id="binary config"),
    case("pretrain r --config c.yaml", r"c\.yaml: expected a mapping of config keys, got list", {"c.yaml": "- 1\n- 2\n"}),
    case("pretrain r --config c.yaml", r"c\.yaml: expected a mapping of config keys, got str", {"c.yaml": "just some text\n"}),
    case("pretrain r --config c.yaml", r"c\.yaml: not valid YAML/JSON.*python/object", {"c.yaml": 'size: !!python/object/apply:os.system ["echo hi"]\n'}),
    case("pretrain r --config c.yaml", r"c\.yaml: not valid YAML/JSON.*python/name", {"c.yaml": "size: !!python/name:os.system\n"}),
    case("pretrain r --config c.yaml", r"unknown config key 'c\.yaml: sise'; did you mean 'size'\?", {"c.yaml": "sise: tiny\n"}),
    case("pretrain r --config c.yaml", r"unknown config key 'c\.yaml: 1'", {"c.yaml": "1: 2\n"}),
    case("pretrain r --config c.yaml", r"unknown config key 'c\.yaml: optim\.lrr'; did you mean 'lr'\?", {"c.yaml": "optim: {lrr: 1}\n"}),
    case("pretrain r --config c.yaml", r"c\.yaml: seq_len: expected an integer, got \[1, 2\]", {"c.yaml": "seq_len: [1, 2]\n"}),
    case("pretrain r --config c.yaml", r"c\.yaml: optim: expected a mapping, got int", {"c.yaml": "optim: 3\n"}),
    case("pretrain r --config c.yaml", r"c\.yaml: not valid YAML/JSON: nested too deeply", {"c.yaml": "[" * 5000 + "]" * 5000}),
    case("pretrain r --config c.json", r"c\.json: not valid YAML/JSON", {"c.json": '{"size": "tiny",'}),
    # data prepare
    case("data prepare --sources a.txt --vocab-size 3 --out d", r"vocab_size must be at least 8, got 3", {"a.txt": "hello\n"}),
    case("data prepare --sources a.txt --vocab-size abc --out d", r"vocab_size: expected an integer, got 'abc'", {"a.txt": "hello\n"}),
    case("data prepare --sources a.txt --val-fraction 1.5 --out d", r"val_fraction must be in \[0, 1\), got 1\.5", {"a.txt": "hello\n"}),
    case("data prepare --sources a.txt --val-fraction -0.1 --out d", r"val_fraction must be in \[0, 1\), got -0\.1", {"a.txt": "hello\n"}),
    case("data prepare --sources a.txt --doc-chars 10 --out d", r"doc_chars must be at least 64", {"a.txt": "hello\n"}),
    case("data prepare --sources a.txt --max-chars 0 --out d", r"max_chars must be positive", {"a.txt": "hello\n"}),
    case("data prepare --sources a.txt --name ../x --out d", r"name '\.\./x' must start with a letter or digit", {"a.txt": "hello\n"}),
    case("data prepare --sources a.txt --text-field '' --out d", r"text_field must not be empty", {"a.txt": "hello\n"}),
    case("data prepare --sources a.txt --weights 1,2 --out d", r"weights: 2 weights for 1 sources", {"a.txt": "hello\n"}),
    case("data prepare --sources a.txt --weights -1 --out d", r"weights must be finite and >= 0", {"a.txt": "hello\n"}),
    case("data prepare --sources a.txt --weights nan --out d", r"weights must be finite and >= 0.*nan", {"a.txt": "hello\n"}),
    case("data prepare --sources '' --out d", r"sources: give at least one source"),
    case("data prepare --sources a.txt --lowercase maybe --out d", r"lowercase: expected true or false, got 'maybe'", {"a.txt": "hello\n"}),
    case("data prepare --sources a.txt --seed 1.5 --out d", r"seed: expected an integer, got '1\.5'", {"a.txt": "hello\n"}),
    case("data prepare --sources a.txt --set vocab_sise=10 --out d", r"unknown config key 'vocab_sise'; did you mean 'vocab_size'\?", {"a.txt": "hello\n"}),
    case("data prepare --config c.yaml --out d", r"unknown config key 'c\.yaml: vocab'; did you mean 'vocab_size'\?", {"c.yaml": "vocab: 100\n"}),
    # plan (dry runs: nothing is written either way)
    case("plan --design isoflop --dry-run", r"the isoflop design needs --budget-flops or --budget-hours"),
    case("plan --budget-flops -1e14 --dry-run", r"budget_flops must be positive and finite, got -1"),
    case("plan --budget-flops inf --dry-run", r"budget_flops must be positive and finite, got inf"),
    case("plan --budget-flops nan --dry-run", r"budget_flops must be positive and finite, got nan"),
    case("plan --budget-hours -2 --dry-run", r"budget_hours must be positive and finite"),
    case("plan --budget-flops 3e14 --budget-ratio 1 --dry-run", r"budget_ratio and size_spread must exceed 1"),
    case("plan --budget-flops 3e14 --budget-ratio nan --dry-run", r"budget_ratio must be positive and finite, got nan"),
    case("plan --budget-flops 3e14 --size-spread 0.5 --dry-run", r"budget_ratio and size_spread must exceed 1"),
    case("plan --budget-flops 3e14 --holdout-factor inf --dry-run", r"holdout_factor must be positive and finite, got inf"),
    case("plan --budget-flops 3e14 --n-budgets 0 --dry-run", r"isoflop needs n_budgets >= 1"),
    case("plan --budget-flops 3e14 --n-budgets 100000 --dry-run", r"n_budgets 100000 .* beyond the floating-point range"),
    case("plan --budget-flops 3e14 --sizes-per-budget 1 --dry-run", r"sizes_per_budget >= 2"),
    case("plan --budget-flops 3e14 --holdout -1 --dry-run", r"holdout must be >= 0"),
    case("plan --budget-flops 3e14 --min-tokens -5 --dry-run", r"min_tokens must be at least 1, got -5"),
    case("plan --budget-flops 3e14 --aspect-ratio -1 --dry-run", r"aspect_ratio must be positive and finite, got -1"),
    case("plan --budget-flops 3e14 --prior-tokens-per-param 0 --dry-run", r"prior_tokens_per_param must be positive and finite"),
    case("plan --design ladder --n-min 2e5 --n-max 2e4 --dry-run", r"ladder needs 0 < n_min < n_max"),
    case("plan --design ladder --n-max inf --dry-run", r"n_max must be positive and finite, got inf"),
    case("plan --design ladder --tokens-per-param -10 --dry-run", r"tokens_per_param values must be positive and finite, got -10"),
    case("plan --design ladder --tokens-per-param '' --dry-run", r"the ladder design needs --tokens-per-param"),
    case("plan --design grid --dry-run", r"the grid design needs --sizes and --tokens"),
    case("plan --design grid --sizes -1e5,2e5 --tokens 1e6 --dry-run", r"sizes values must be positive and finite, got -1"),
    case("plan --design grid --sizes 1e5 --tokens abc --dry-run", r"tokens\[0\]: expected a number, got 'abc'"),
    case("plan --budget-flops 3e14 --flops-convention nosuch --dry-run", r"unknown FLOP convention 'nosuch'"),
    case("plan --budget-flops 3e14 --base.seq-len 4 --dry-run", r"seq_len must be at least 8, got 4"),
    case("plan --budget-flops 3e14 --base.optim.lr 0 --dry-run", r"lr must be positive, got 0"),
    case("plan --budget-flops 3e14 --set base.runtime.threads=-2 --dry-run", r"runtime\.threads must be >= 0"),
    # fit, predict, optimal flags
    case("fit {runs} --n params --d tokens --delta 0", r"--delta must be positive, got 0"),
    case("fit {runs} --n params --d tokens --delta -1e-3", r"--delta must be positive, got -0\.001"),
    case("fit {runs} --n params --d tokens --drop-highest -1", r"--drop-highest must be >= 0, got -1"),
    case("fit {runs} --n params --d tokens --bootstrap 1", r"--bootstrap must be 0 or at least 2, got 1"),
    case("fit {runs} --n params --d tokens --level 1.5", r"--level must be between 0 and 1"),
    case("fit {runs} --n params --d tokens --degree 4", r"--degree must be 2 or 3, got 4"),
    case("fit {runs} --n params --d tokens --form custom", r"--form custom needs --expression and --param"),
    case("fit {runs} --n params --d tokens --expression E", r"--expression/--param only apply to --form custom"),
    case("fit {runs} --n params --d tokens --form custom --expression 'E + A/N^alpha' --param E=0:5,A=1:10,alpha=0:1", r"law expression"),
    case("fit {runs} --n params --d tokens --form custom --expression '__import__(\"os\")' --param E=0:1", r"law expression|not allowed|unknown"),
    case("fit {runs} --n params --d tokens --form custom --expression 'E + A/N**alpha' --param E=5:1,A=1:10,alpha=0:1", r"parameter 'E': bounds \(5\.0, 1\.0\) must be finite with lo < hi"),
    case("fit {runs} --n params --d tokens --flops-convention nosuch", r"flops convention 'nosuch' is not understood"),
    case("fit {runs} --n params --d tokens --flops-convention chinchilla", r"needs each model's shape"),
    case(f"fit {{runs}} {FIT} --compute -1e20", r"compute budgets must be positive numbers"),
    case("fit {runs} --n params --d tokens --seed abc", r"seed: expected an integer, got 'abc'"),
    case("fit {runs} --n params --d tokens --set degre=3", r"unknown config key 'degre'; did you mean 'degree'\?"),
    case("fit {runs} --config c.yaml", r"unknown config key 'c\.yaml: lvel'; did you mean 'level'\?", {"c.yaml": "lvel: 0.9\n"}),
    case("predict {fit} --n -1e9 --d 1e10", r"--n: N must be positive and finite, got -1e\+09"),
    case("predict {fit} --n 1e9 --d -2.5E-3", r"--d: D must be positive and finite, got -0\.0025"),
    case("predict {fit} --n inf --d 1e10", r"--n: N must be positive and finite, got inf"),
    case("predict {fit} --n 1e9 --d 1e10 --level 5", r"--level must be between 0 and 1 \(e\.g\. 0\.95\), got 5"),
    case("predict {fit} --n 1e9 --d 1e10 --level 0", r"--level must be between 0 and 1"),
    case("predict {fit} --n 1e9 --d 1e10 --level nan", r"--level must be between 0 and 1"),
    case("predict {fit}", r"predict needs --n, --d and/or --c values"),
    case("predict {fit} --n 1e9,2e9,3e9 --d 1e10,2e10", r"--n, --d, --c need equal lengths"),
    case("predict {fit} --n abc --d 1e10", r"n\[0\]: expected a number, got 'abc'"),
    case("predict {fit} --c 1e20", r"the chinchilla law needs N, D; missing N, D"),
    case("predict {fit} --n 1e300 --d 1e300", r"values out of range: C = 6\*N\*D overflows at N=1e\+300, D=1e\+300"),
    case("predict {kaplan} --d 1e10", r"the kaplan_n law needs N; missing N"),
    case("optimal {fit}", r"optimal needs --compute C"),
    case("optimal {fit} --compute -1e20,1e21", r"--compute values must be positive"),
    case("optimal {fit} --compute 1e20 --level 5", r"--level must be between 0 and 1"),
    case("optimal {fit} --compute 1e20 --level -0.5", r"--level must be between 0 and 1 \(e\.g\. 0\.95\), got -0\.5"),
    case("optimal {kaplan} --compute 1e20", r"compute-optimal allocation needs a law in two of N, D, C"),
    # finetune, labelcurve, study: configs checked before any model is looked at
    case("finetune r --model {model} --task wiki-topics --epochs 0", r"epochs must be positive"),
    case("finetune r --model {model} --task wiki-topics --batch-size 0", r"batch_size >= 1"),
    case("finetune r --model {model} --task wiki-topics --train-fraction 1.5", r"train_fraction must be in \(0, 1\], got 1\.5"),
    case("finetune r --model {model} --task wiki-topics --evals-per-epoch 0", r"evals_per_epoch must be >= 1"),
    case("finetune r --model {model} --task wiki-topics --method.lora.r 0", r"lora\.r must be at least 1, got 0"),
    case("finetune r --model {model} --task wiki-topics --runtime.threads -1", r"runtime\.threads must be >= 0"),
    case("finetune r --model {model} --task wiki-topics --optim.lr -1e-4", r"lr must be positive"),
    case("finetune r --model {model} --task wiki-topics --task.dev-fraction 1.5", r"dev_fraction must be in \[0, 1\), got 1\.5"),
    case("finetune r --model {model} --task wiki-topics --task.max-examples 0", r"max_examples must be positive, got 0"),
    case("finetune r --model {model} --task wiki-topics --task.encoding nosuch", r"unknown text encoding 'nosuch'"),
    case("finetune r --model {model} --task wiki-topics --task.encoding rot13", r"unknown text encoding 'rot13'"),
    case("finetune r --model {model} --task wiki-topics --task.scheme nosuch", r"unknown tagging scheme 'nosuch'"),
    case("finetune r --model {model} --task wiki-topics --task.train-file t.conll", r"give either task or train_file, not both"),
    case("finetune r --model {model} --task wiki-topics --set task.encodng=latin-1", r"unknown config key 'task\.encodng'; did you mean 'encoding'\?"),
    case("finetune r --model {model} --config c.yaml", r"unknown config key 'c\.yaml: epoch'; did you mean 'epochs'\?", {"c.yaml": "epoch: 3\n"}),
    case("labelcurve lc --finetune.model {model} --task wiki-topics --fractions 0.5,2", r"fractions must be in \(0, 1\]"),
    case("labelcurve lc --finetune.model {model} --task wiki-topics --fractions 0.1,0.1,0.1", r"at least 3 distinct fractions"),
    case("labelcurve lc --finetune.model {model} --task wiki-topics --methods nosuch", r"unknown method\(s\) nosuch"),
    case("labelcurve lc --finetune.model {model} --task wiki-topics --methods ''", r"give at least one method"),
    case("labelcurve lc --finetune.model {model} --task wiki-topics --finetune.task.encoding nosuch", r"unknown text encoding 'nosuch'"),
    case("study run {study} --workers -1", r"workers and threads must be >= 0"),
    case("study run {study} --threads -1", r"workers and threads must be >= 0"),
    case("study fit {study} --bootstrap -1", r"bootstrap must be >= 0"),
    case("study finetune {study} --task wiki-topics --finetune.epochs 0", r"epochs must be positive"),
    case("study finetune {study} --task wiki-topics --seeds 0", r"seeds must be >= 1"),
    # sizes, demo
    case("sizes --params abc", r"unknown model size 'abc'"),
    case("sizes --params -1e6", r"unknown model size '-1e6'"),
    case("sizes --params 0", r"size target 0 is outside the dial's range"),
    case("sizes --params 1e30", r"size target 1e\+30 is outside the dial's range"),
    case("sizes --vocab-size -5", r"model\.vocab_size must be a positive integer, got -5"),
    case("sizes --seq-len 0", r"model\.max_seq_len must be a positive integer, got 0"),
    case("demo --preset nosuch", r"unknown preset 'nosuch'"),
]  # fmt: skip


class TestConfigsAndFlags:
    test_one_line = one_line_test(CONFIG_CASES)


# ====================================================================== tables

SAME = ["1e8,2e9,3.0"] * 10
ONE_GROUP = "\n".join(["model," + r.split(",", 1)[1] for r in VALID_CSV.splitlines()[1:]])
ONE_GROUP = "model,params,tokens,loss\n" + ONE_GROUP.replace("model,", "same,") + "\n"
TABLE_CASES = [
    case(f"fit nosuch.csv {FIT}", r"table file not found: nosuch\.csv"),
    case(f"fit t.csv {FIT}", r"table file not found: t\.csv", {"t.csv": None}, id="a directory"),
    case(f"fit t.csv {FIT}", r"t\.csv: the file is empty", {"t.csv": ""}),
    case(f"fit t.csv {FIT}", r"t\.csv: the file is empty", {"t.csv": "\n  \n\n"}, id="blank lines"),
    case(f"fit t.csv {FIT}", r"t\.csv: the table has no rows", {"t.csv": table()}),
    case(f"fit t.csv {FIT}", r"t\.csv: not a UTF-8 text file", {"t.csv": b"\x00\xff\xfe\x80binary"}, id="binary"),
    case(f"fit t.csv {FIT}", r"t\.csv: not a UTF-8 text file", {"t.csv": table("1e8,2e9,3.0", header="params,tok\xe9ns,loss").encode("latin-1")}, id="latin-1"),
    case(f"fit t.csv {FIT}", r"no column 'params' for N; did you mean 'param'\?", {"t.csv": table(*SAME, header="param,tokens,loss")}),
    case(f"fit t.csv {FIT}", r"no column 'loss' for loss", {"t.csv": table(*SAME, header="params,tokens,val")}),
    case(f"fit t.csv {FIT} --loss val_los", r"no column 'val_los' for loss; did you mean 'val_loss'\?", {"t.csv": table(*SAME, header="params,tokens,val_loss")}),
    case(f"fit t.tsv {FIT}", r"t\.tsv: no column 'params' for N", {"t.tsv": table(*SAME)}, id="TSV with commas"),
    case(f"fit t.csv {FIT}", r"t\.csv row 2, column 'params': 'abc' is not a number", {"t.csv": table("1e8,2e9,3", "abc,2e9,3")}),
    case(f"fit t.csv {FIT}", r"t\.csv row 1, column 'tokens': the value is empty", {"t.csv": table("1e8,,3")}),
    case(f"fit t.csv {FIT}", r"t\.csv row 1, column 'params': -1\.0 is not positive", {"t.csv": table("-1,2e9,3")}),
    case(f"fit t.csv {FIT}", r"t\.csv row 2, column 'loss': 0\.0 is not positive", {"t.csv": table("1e8,2e9,3", "1e8,2e9,0")}),
    case(f"fit t.csv {FIT}", r"t\.csv row 1, column 'loss': nan is not finite", {"t.csv": table("1e8,2e9,nan")}),
    case(f"fit t.csv {FIT}", r"t\.csv row 1, column 'tokens': inf is not finite", {"t.csv": table("1e8,inf,3")}),
    case(f"fit t.csv {FIT}", r"t\.csv row 1, column 'params': True is not a number|'true' is not a number", {"t.csv": table("true,2e9,3")}),
    case(f"fit t.csv {FIT}", r"t\.csv row 2: has 4 fields but the header has 3", {"t.csv": table("1e8,2e9,3", "1e8,2e9,3,4")}),
    case(f"fit t.csv {FIT}", r"column 'params' appears twice in the header", {"t.csv": table("1,2,3,4", header="params,tokens,params,loss")}),
    case(f"fit t.csv {FIT}", r"column 2 of the header has no name", {"t.csv": table("1,2,3", header="params,,loss")}),
    case(f"fit t.csv {FIT}", r"has 5 parameters but the table has only 1 point; it needs at least 6", {"t.csv": table("1e8,2e9,3.0")}),
    case(f"fit t.csv {FIT}", r"only 5 points; it needs at least 6", {"t.csv": table(*[f"{n}e8,{n}e9,3.{n}" for n in range(1, 6)])}),
    case(f"fit t.csv {FIT}", r"cannot identify the chinchilla law: too few distinct N/D values \(1 distinct params, 1 distinct tokens", {"t.csv": table(*SAME)}, id="10 identical rows"),
    case(f"fit t.csv {FIT}", r"cannot identify the chinchilla law.*1 distinct tokens", {"t.csv": table(*[f"{n}e8,1e9,{4 - n / 10}" for n in range(1, 8)])}, id="one D for all rows"),
    case(f"fit t.csv {FIT}", r"cannot identify the chinchilla law.*3 distinct points in 9 rows", {"t.csv": table(*[f"{n}e8,{n}e9,{4 - n / 10}" for n in (1, 2, 3)] * 3)}, id="3 runs x 3 seeds"),
    case("fit t.csv --n params --form kaplan_n", r"cannot identify the kaplan_n law", {"t.csv": table(*SAME)}),
    case("fit t.csv --n params --d tokens --form power_c", r"cannot identify the power_law law: too few distinct C values", {"t.csv": table(*SAME)}),
    case(f"fit t.csv {FIT} --c flops", r"t\.csv row 1: inconsistent units: flops = .*check that N is in parameters", {"t.csv": table("1e8,2e9,13.9,3.0", header="params,tokens,flops,loss")}, id="C in PF-days"),
    case(f"fit t.csv {FIT}", r"t\.csv row 1: values out of range: C = 6\*N\*D gives inf", {"t.csv": table("1e300,1e300,3.0", "2e300,1e300,2.9")}, id="N = D = 1e300"),
    case("fit t.csv --n params --c flops --grid small", r"values out of range: D = C/\(6\*N\) gives inf", {"t.csv": table("1e-300,1e300,3.0", header="params,flops,loss")}),
    case(f"fit t.csv {FIT} --c flops", r"values out of range: C = 6\*N\*D gives inf", {"t.csv": table("1e300,1e300,1e300,3.0", header="params,tokens,flops,loss")}),
    case(f"fit t.csv {FIT} --group model", r"t\.csv row 2, column 'model': the group is empty", {"t.csv": table("a,1e8,2e9,3", ",1e8,2e9,3", header="model,params,tokens,loss")}),
    case(f"fit t.csv {FIT} --weight w", r"row 1, column 'w': weight -1\.0 must be finite and non-negative", {"t.csv": table("1e8,2e9,3,-1", header="params,tokens,loss,w")}),
    case(f"fit t.csv {FIT} --weight w", r"column 'w': all weights are zero", {"t.csv": table("1e8,2e9,3,0", "2e8,2e9,3,0", header="params,tokens,loss,w")}),
    case(f"fit {{runs}} {FIT} --where model=zzz", r"no rows match model=zzz"),
    case(f"fit {{runs}} {FIT} --where model", r"row filter 'model' must look like COLUMN=VALUE"),
    case(f"fit {{runs}} {FIT} --where nosuch=1", r"no column 'nosuch' for a row filter"),
    case("fit {runs} --n params --flops-convention none --form power_c", r"the power_law law needs C, but the table has no C column"),
    case(f"fit {{runs}} {FIT} --drop-highest 12", r"cannot drop 12 of 12 points"),
    case(f"fit {{runs}} {FIT} --flops-convention 0nd", r"flops convention '0nd' is not understood"),
    case(f"fit {{runs}} {FIT} --where model=m2e+07", r"has 5 parameters but the table has only 3 points"),
    case(f"fit t.csv {FIT} --group model --bootstrap 10", r"t\.csv: cluster bootstrap needs at least 2 groups, found 1", {"t.csv": ONE_GROUP}),
    case("plot {fit} --table nosuch.csv", r"table file not found: nosuch\.csv"),
    case("plot {fit} --table t.csv", r"t\.csv: the file is empty", {"t.csv": ""}),
]  # fmt: skip


class TestTables:
    test_one_line = one_line_test(TABLE_CASES)


# ====================================================================== fit files

FIT_FILE_CASES = [
    case("optimal nosuch.json --compute 1e20", r"fit file not found: nosuch\.json"),
    case("optimal f.json --compute 1e20", r"fit file not found: f\.json", {"f.json": None}, id="a directory"),
    case("optimal f.json --compute 1e20", r"f\.json: not valid JSON", {"f.json": "{not json"}),
    case("optimal f.json --compute 1e20", r"f\.json: not valid JSON", {"f.json": ""}, id="empty fit file"),
    case("optimal f.json --compute 1e20", r"f\.json: not a text file", {"f.json": b"\x00\xff\xfe\x80"}, id="binary fit file"),
    case("optimal f.json --compute 1e20", r"f\.json: not valid JSON \(nested too deeply\)", {"f.json": "[" * 100000 + "]" * 100000}, id="deeply nested"),
    case("optimal f.json --compute 1e20", r"f\.json: not valid JSON", {"f.json": '{"form": "chinchilla", "n_points": ' + "1" * 5000 + "}"}, id="a 5000-digit number"),
    case("optimal f.json --compute 1e20", r"f\.json: not a scalelab fit \(no 'form' key\)", {"f.json": "[1, 2, 3]"}),
    case("optimal f.json --compute 1e20", r"f\.json: not a scalelab fit \(no 'form' key\)", {"f.json": '{"a": 1}'}),
    case("optimal f.json --compute 1e20", r"f\.json: unknown fit form 'nosuch'", {"f.json": fit_with(_set("form", "nosuch"))}),
    case("optimal f.json --compute 1e20", r"f\.json: unknown fit form 3", {"f.json": fit_with(_set("form", 3))}),
    case("optimal f.json --compute 1e20", r"f\.json: unknown fit form \['a'\]", {"f.json": fit_with(_set("form", ["a"]))}),
    case("optimal f.json --compute 1e20", r"f\.json: missing keys 'params', 'theta' of a chinchilla result", {"f.json": fit_with(_drop("theta", "params"))}),
    case("predict f.json --n 1e9 --d 1e10", r"f\.json: missing key 'diagnostics' of a chinchilla result", {"f.json": fit_with(_drop("diagnostics"))}),
    case("predict f.json --n 1e9 --d 1e10", r"f\.json: missing key 'diagnostics\.message' of a diagnostics result", {"f.json": fit_with(_drop("diagnostics.message"))}),
    case("predict f.json --n 1e9 --d 1e10", r"f\.json: key 'theta': expected a list, got 'abc'", {"f.json": fit_with(_set("theta", "abc"))}),
    case("predict f.json --n 1e9 --d 1e10", r"f\.json: key 'theta\[1\]': expected a number, got 'x'", {"f.json": fit_with(_set("theta", [1.0, "x", 0.5, 0.3, 0.3]))}),
    case("predict f.json --n 1e9 --d 1e10", r"f\.json: key 'theta': the chinchilla law has 5 parameters, not 2", {"f.json": fit_with(_set("theta", [1.0, 2.0]))}),
    case("predict f.json --n 1e9 --d 1e10", r"f\.json: key 'theta': every value must be finite", {"f.json": fit_with(_set("theta", [1.0, 2.0, "nan", 0.3, 0.3]))}),
    case("predict f.json --n 1e9 --d 1e10", r"f\.json: key 'theta_names': the chinchilla law's parameters are a, b, e, alpha, beta", {"f.json": fit_with(_set("theta_names", ["x", "y", "z", "u", "v"]))}),
    case("predict f.json --n 1e9 --d 1e10", r"f\.json: key 'params': missing 'E'", {"f.json": fit_with(_drop("params.E"))}),
    case("predict f.json --n 1e9 --d 1e10", r"f\.json: key 'params\.E': expected a number, got 'big'", {"f.json": fit_with(_set("params.E", "big"))}),
    case("predict f.json --n 1e9 --d 1e10", r"f\.json: key 'params': expected an object, got \[1, 2\]", {"f.json": fit_with(_set("params", [1, 2]))}),
    case("predict f.json --n 1e9 --d 1e10", r"f\.json: key 'diagnostics\.converged': expected true/false, got 'yes'", {"f.json": fit_with(_set("diagnostics.converged", "yes"))}),
    case("predict f.json --n 1e9 --d 1e10", r"f\.json: key 'diagnostics': expected an object, got \[1, 2\]", {"f.json": fit_with(_set("diagnostics", [1, 2]))}),
    case("predict f.json --n 1e9 --d 1e10", r"f\.json: key 'diagnostics\.n_starts': expected an integer, got 1\.5", {"f.json": fit_with(_set("diagnostics.n_starts", 1.5))}),
    case("predict f.json --n 1e9 --d 1e10", r"f\.json: key 'spec': expected an object, got 'abc'", {"f.json": fit_with(_set("spec", "abc"))}),
    case("predict f.json --n 1e9 --d 1e10", r"f\.json: key 'spec': the custom law's 'bounds' must map each parameter to \[lo, hi\]", {"f.json": fit_with(lambda d: d.update(form="custom", spec={"expression": "E + A/N**alpha", "bounds": "abc"}))}, id="bounds as a string"),
    case("predict f.json --n 1e9 --d 1e10", r"f\.json: key 'spec': the custom law's 'bounds'", {"f.json": fit_with(lambda d: d.update(form="custom", spec={"expression": "E + A/N**alpha", "bounds": {"E": [1]}}))}, id="bounds of one number"),
    case("predict f.json --n 1e9 --d 1e10", r"f\.json: key 'spec': .*expression", {"f.json": fit_with(lambda d: d.update(form="custom", spec={"expression": "", "bounds": {"E": [0, 1]}}))}, id="empty expression"),
    case("predict f.json --n 1e9 --d 1e10", r"f\.json: key 'theta_names': the power_law law's parameters are a, e, alpha", {"f.json": fit_with(lambda d: d.update(form="power_law", spec={"variable": "N"}))}, id="form changed to power_law"),
    case("predict f.json --n 1e9 --d 1e10", r"f\.json: key 'variables': the chinchilla law is in N, D", {"f.json": fit_with(_set("variables", ["N"]))}),
    case("predict f.json --n 1e9 --d 1e10", r"f\.json: key 'flops_per_nd': must be a positive number or null, got -6", {"f.json": fit_with(_set("flops_per_nd", -6))}),
    case("predict f.json --n 1e9 --d 1e10", r"f\.json: key 'flops_per_nd': expected a number, got 'six'", {"f.json": fit_with(_set("flops_per_nd", "six"))}),
    case("predict f.json --n 1e9 --d 1e10", r"f\.json: key 'ranges\.N': expected a list, got 'x'", {"f.json": fit_with(_set("ranges.N", "x"))}),
    case("predict f.json --n 1e9 --d 1e10", r"f\.json: key 'residuals': expected a list", {"f.json": fit_with(_set("residuals", 3))}),
    case("predict f.json --n 1e9 --d 1e10", r"f\.json: key 'bootstrap': expected an object, got 'abc'", {"f.json": fit_with(_set("bootstrap", "abc"))}),
    case("predict f.json --n 1e9 --d 1e10", r"f\.json: missing keys .*'bootstrap\.n'", {"f.json": fit_with(_set("bootstrap", {"form": "bootstrap"}))}),
    case("optimal f.json --compute 1e20", r"no finite compute-optimal allocation: alpha=-0\.1", {"f.json": fit_with(_set("params.alpha", -0.1))}),
    case("predict f.json --n 1e9 --d 1e10", r"f\.json is neither a fit JSON", {"f.json": "{not json"}),
    case("predict f.csv --n 1e9 --d 1e10", r"f\.csv is neither a fit JSON", {"f.csv": VALID_CSV}),
    case("plot f.json", r"f\.json: key 'table_spec': expected an object, got str", {"f.json": fit_with(_set("table_spec", "abc"))}),
    case("plot f.json", r"unknown config key 'f\.json: table_spec\.nosuch'", {"f.json": fit_with(_set("table_spec.nosuch", 1))}),
    case("plot f.json", r"table file not found: .*gone\.csv", {"f.json": fit_with(_set("table_spec.table", "/nonexistent/gone.csv"))}),
    case("plot f.json", r"f\.json: no table saved with the fit; pass --table TABLE\.csv", {"f.json": fit_with(_drop("table_spec"))}),
    case("plot f.json", r"f\.json: table_spec\.check_units: expected true or false", {"f.json": fit_with(_set("table_spec.check_units", "maybe"))}),
]  # fmt: skip


class TestFitFiles:
    test_one_line = one_line_test(FIT_FILE_CASES)


# ====================================================================== task files

FT = "finetune r --model {model} --task.train-file"
TWO = table(*[f"text {i},{'ab'[i % 2]}" for i in range(20)], header="text,label")
TASK_CASES = [
    case(f"{FT} nosuch.conll", r"file not found: nosuch\.conll"),
    case(f"{FT} t.csv", r"task 't': the training split has only the class 'a'; a classification task needs at least 2 classes", {"t.csv": table(*[f"text {i},a" for i in range(20)], header="text,label")}, id="one class"),
    case(f"{FT} t.jsonl", r"task 't': the training split has only the class '1'", {"t.jsonl": "".join(f'{{"text": "t{i}", "label": 1}}\n' for i in range(20))}, id="one class (JSONL)"),
    case(f"{FT} t.csv --task.dev-file d.csv", r"the dev split has labels never seen in training: 'c'", {"t.csv": TWO, "d.csv": "text,label\nx,c\n"}),
    case(f"{FT} t.csv --task.dev-file nosuch.csv", r"file not found: nosuch\.csv", {"t.csv": TWO}),
    case(f"{FT} t.csv", r"task 't': the dev split is empty", {"t.csv": "text,label\nhello,a\n"}),
    case(f"{FT} t.csv", r"t\.csv:1: no column 'text' in the header \(columns: body, label\)", {"t.csv": "body,label\nhello,a\n"}),
    case(f"{FT} t.csv --task.text-field body", r"t\.csv:1: no column 'body'", {"t.csv": TWO}),
    case(f"{FT} t.csv --task.label-field y", r"t\.csv:1: no column 'y'", {"t.csv": TWO}),
    case(f"{FT} t.csv", r"t\.csv:2: empty label", {"t.csv": "text,label\nhello,\nbye,b\n"}),
    case(f"{FT} t.csv", r"t\.csv:2: empty text", {"t.csv": "text,label\n,a\nbye,b\n"}),
    case(f"{FT} t.csv", r"t\.csv:2: expected 2 fields, found 3", {"t.csv": "text,label\nhello,a,extra\n"}),
    case(f"{FT} t.csv", r"t\.csv: no rows after the header", {"t.csv": "text,label\n"}),
    case(f"{FT} t.csv", r"t\.csv: empty file", {"t.csv": ""}),
    case(f"{FT} t.csv", r"t\.csv: not valid utf-8 at byte 2", {"t.csv": b"\x00\x01\xff\xfe\x00"}, id="binary CSV"),
    case(f"{FT} t.csv", r"t\.csv: not valid utf-8 at byte 14; pass the file's encoding", {"t.csv": b"text,label\ncaf\xe9,a\nbye,b\n"}, id="latin-1 CSV"),
    case(f"{FT} t.csv", r"t\.csv:2: expected 2 fields, found 1", {"t.csv": 'text,label\n"hello,a\nbye,b\n'}, id="unclosed quote"),
    case(f"{FT} t.csv --task.encoding nosuch", r"unknown text encoding 'nosuch'", {"t.csv": TWO}),
    case(f"{FT} t.jsonl", r"t\.jsonl:2: not valid JSON", {"t.jsonl": '{"text": "a", "label": "x"}\nnot json\n'}),
    case(f"{FT} t.jsonl", r"t\.jsonl:1: expected a JSON object, got list", {"t.jsonl": "[1, 2]\n"}),
    case(f"{FT} t.jsonl", r"t\.jsonl:1: no field 'text' \(fields: txt, label\)", {"t.jsonl": '{"txt": "a", "label": "x"}\n'}),
    case(f"{FT} t.jsonl", r"t\.jsonl:1: field 'text' must be non-empty text", {"t.jsonl": '{"text": "", "label": "x"}\n'}),
    case(f"{FT} t.jsonl", r"t\.jsonl:1: field 'text' must be non-empty text", {"t.jsonl": '{"text": 5, "label": "x"}\n'}, id="number as text"),
    case(f"{FT} t.jsonl", r"t\.jsonl:1: field 'label' must be text or a number, got None", {"t.jsonl": '{"text": "a", "label": null}\n'}),
    case(f"{FT} t.jsonl", r"t\.jsonl:1: field 'label' must be text or a number, got \[1\]", {"t.jsonl": '{"text": "a", "label": [1]}\n'}),
    case(f"{FT} t.jsonl", r"t\.jsonl: no examples", {"t.jsonl": "\n\n"}),
    case(f"{FT} t.jsonl", r"t\.jsonl: not valid utf-8", {"t.jsonl": b'{"text": "\xff"}\n'}, id="binary JSONL"),
    case(f"{FT} t.conll", r"t\.conll:2: expected 2 columns \(as on line 1\), found 1", {"t.conll": "EU B-ORG\nrejects\n"}),
    case(f"{FT} t.conll", r"t\.conll:2: invalid IOB2 tag 'X-FOO'", {"t.conll": "EU B-ORG\nrejects X-FOO\n"}),
    case(f"{FT} t.conll", r"t\.conll: no sentences found", {"t.conll": ""}),
    case(f"{FT} t.conll", r"t\.conll: not valid utf-8 at byte 1", {"t.conll": b"\x00\xff\xfe\x01"}, id="binary CoNLL"),
    case(f"{FT} t.conll --task.token-column 5", r"t\.conll:1: token_column=5 but lines have 2 columns", {"t.conll": "EU B-ORG\nrejects O\n"}),
    case(f"{FT} t.conll --task.label-column 0", r"t\.conll: token_column and label_column are the same column", {"t.conll": "EU B-ORG\nrejects O\n"}),
    case(f"{FT} t.conll --task.scheme nosuch", r"unknown tagging scheme 'nosuch'", {"t.conll": "EU B-ORG\n"}),
    case(f"{FT} t.conll --task.encoding rot13", r"unknown text encoding 'rot13'", {"t.conll": "EU B-ORG\n"}),
    case(f"{FT} t.xyz --task.kind classification", r"t\.xyz: cannot tell the format from the extension '\.xyz'", {"t.xyz": "text,label\na,x\n"}),
    case("finetune r --model {model} --task nosuch-task", r"unknown task 'nosuch-task': not a built-in task and no such file"),
    case("finetune r --model {model} --task wiki-topcs", r"unknown task 'wiki-topcs'.*did you mean 'wiki-topics'\?"),
    case("finetune r --model {model} --task wiki-topics --task.dev-fraction 0.6 --task.test-fraction 0.6", r"dev_fraction \+ test_fraction must leave some training data"),
    case("finetune r --model {model} --task twitter-ner --task.kind classification", r"built-in task 'twitter-ner' is ner, not classification"),
]  # fmt: skip


class TestTasks:
    test_one_line = one_line_test(TASK_CASES)


# ====================================================================== model directories

MODEL_DIR_CASES = [
    case("finetune r --model nosuch --task wiki-topics", r"model not found: nosuch"),
    case("finetune r --model m --task wiki-topics", r"m has no config\.json \(nor model/config\.json\)", {"m": None}, id="empty model dir"),
    case("finetune r --model m.txt --task wiki-topics", r"m\.txt has no config\.json", {"m.txt": "not a model\n"}, id="a file as the model"),
    case("finetune r --task wiki-topics", r"give the model to fine-tune: --model RUN_DIR or a HF checkpoint"),
    case("finetune r --model {model}", r"give a task: --task NAME \(a built-in\) or --task\.train-file FILE"),
    case("labelcurve lc --task wiki-topics", r"give the model to fine-tune"),
    case("labelcurve lc --finetune.model {model}", r"give a task"),
    case("evaluate nosuch", r"nosuch is not a finished `scalelab finetune` run"),
    case("evaluate r", r"r is not a finished `scalelab finetune` run", {"r": None}, id="evaluate an empty dir"),
    case("infer nosuch", r"nosuch is not a finished `scalelab finetune` run"),
    case("infer r", r"r is not a finished `scalelab finetune` run", {"r": None}, id="infer an empty dir"),
    case("pretrain r --size tiny --dataset nosuch", r"dataset not found: nosuch"),
    case("data info nosuch", r"dataset not found: nosuch"),
    case("data info ds", r"ds is not a scalelab dataset \(no manifest\.json\)", {"ds": None}),
    case("data info ds", r"ds/manifest\.json is unreadable", {"ds/manifest.json": '{"tokenizer": {"kind"'}),
    case("data info ds", r"ds/manifest\.json is not a scalelab dataset manifest", {"ds/manifest.json": "[]"}),
    case("data info ds", r"ds/manifest\.json is not a scalelab dataset manifest", {"ds/manifest.json": "{}"}),
    case("data prepare --sources nosuch.txt --out d", r"source 'nosuch\.txt': no such file or directory"),
    case("data prepare --sources src --out d", r"directory src holds no \*\.txt or \*\.md files", {"src": None}),
    case("data prepare --sources 'nosuch*.txt' --out d", r"the pattern 'nosuch\*\.txt' matches no files"),
    case("data prepare --sources shakespear --out d", r"not a built-in source.*did you mean 'shakespeare'\?"),
    case("data prepare --sources r.jsonl --out d", r"r\.jsonl:1: no field 'text' \(fields: x\)", {"r.jsonl": '{"x": 1}\n'}),
    case("data prepare --sources r.jsonl --out d", r"r\.jsonl:1: not valid JSON", {"r.jsonl": "not json\n"}),
    case("data prepare --sources b.txt --errors strict --out d", r"b\.txt: undecodable bytes at byte offset 2", {"b.txt": b"ab\xff\xfe"}),
]  # fmt: skip


class TestModelDirs:
    test_one_line = one_line_test(MODEL_DIR_CASES)


# ====================================================================== run and study directories


def study_with(old: str, new: str) -> Callable[[Path], str]:
    """The shared study's study.yaml with ``old`` replaced by ``new``."""

    def build(shared: Path) -> str:
        text = (shared / "study" / "study.yaml").read_text()
        assert old in text
        return text.replace(old, new, 1)

    return build


STUDY_DIR_CASES = [
    case("study status nosuch", r"nosuch is not a study \(no study\.yaml\); create one with `scalelab plan`"),
    case("study status s", r"s is not a study \(no study\.yaml\)", {"s": None}, id="an empty dir"),
    case("study status s", r"s is not a study", {"s": "a file, not a study\n"}, id="a file as the study"),
    case("study status s", r"s is not a study", {"s/rungs": None}, id="rungs but no study.yaml"),
    case("study status s", r"s/study\.yaml: not valid YAML", {"s/study.yaml": "plan: [\n"}),
    case("study status s", r"s/study\.yaml: not valid YAML.*python/object/apply", {"s/study.yaml": 'plan: !!python/object/apply:os.system ["echo hi"]\n'}),
    case("study status s", r"unknown config key 's/study\.yaml: plan\.n_budgetz'; did you mean 'n_budgets'\?", {"s/study.yaml": study_with("  n_budgets: 3", "  n_budgetz: 3")}),
    case("study status s", r"budget_ratio: expected a number, got 'abc'", {"s/study.yaml": study_with("budget_ratio: 3.0", "budget_ratio: abc")}),
    case("study status s", r"design: 'nosuch' is not one of isoflop, ladder, grid", {"s/study.yaml": study_with("  design: isoflop", "  design: nosuch")}),
    case("study status s", r"budget_flops must be positive and finite, got -", {"s/study.yaml": study_with("budget_flops: 1000000000000000.0", "budget_flops: -1.0")}),
    case("study status s", r"runtime\.threads must be >= 0", {"s/study.yaml": study_with("    threads: 0", "    threads: -3")}),
    case("study fit nosuch", r"nosuch is not a study"),
    case("study fit s", r"s/study\.yaml: not valid YAML", {"s/study.yaml": "plan: [\n"}),
    case("study run nosuch", r"nosuch is not a study"),
    case("study run s", r"s is not a study", {"s": None}, id="run an empty dir"),
    case("study finetune nosuch --task wiki-topics", r"nosuch is not a study"),
    case("report nosuch", r"nosuch is not a study"),
    case("report s", r"s is not a study", {"s": "a file\n"}, id="report on a file"),
    case("report s", r"s/study\.yaml: not valid YAML", {"s/study.yaml": "plan: [\n"}),
    case("pretrain r --size tiny", r"r/config\.yaml: not valid YAML/JSON", {"r/config.yaml": "lr: [\n"}),
    case("pretrain r --size tiny", r"r/config\.yaml: expected a mapping of config keys, got list", {"r/config.yaml": "- 1\n"}),
    case("pretrain r --size tiny", r"r/config\.yaml: not a text file", {"r/config.yaml": b"\x00\xff"}, id="binary config.yaml"),
    case("pretrain r --size tiny", r"unknown config key 'r/config\.yaml: sise'; did you mean 'size'\?", {"r/config.yaml": "sise: tiny\n"}),
    case("pretrain r --size tiny", r"r/config\.yaml: seq_len must be at least 8|seq_len must be at least 8", {"r/config.yaml": "seq_len: 4\n"}),
    case("finetune r --model {model} --task wiki-topics", r"r/config\.yaml: not valid YAML/JSON", {"r/config.yaml": "epochs: [\n"}),
    case("finetune r --model {model} --task wiki-topics", r"unknown config key 'r/config\.yaml: epoch'; did you mean 'epochs'\?", {"r/config.yaml": "epoch: 3\n"}),
    case("finetune r --model {model} --task wiki-topics", r"r/config\.yaml: expected a mapping of config keys, got str", {"r/config.yaml": "half-writ"}, id="half-written config.yaml"),
    case("study status s", r"s/study\.yaml: expected a mapping of config keys, got list", {"s/study.yaml": "- a\n- b\n"}, id="study.yaml a list"),
    case("study status s", r"s/study\.yaml: not a scalelab study plan \(no plan\)", {"s/study.yaml": "rungs: []\n"}, id="study.yaml without plan"),
    case("study status s", r"s/study\.yaml: not a text file", {"s/study.yaml": bytes(range(256))}, id="binary study.yaml"),
    case("study status s", r"s/study\.yaml: not a scalelab study plan \(no plan or rungs\)", {"s/study.yaml": "{}\n"}, id="empty study.yaml mapping"),
    case("labelcurve lc --finetune.model nowhere --task wiki-topics --fractions 0.1,0.5,1", r"model not found: nowhere", id="labelcurve missing model"),
    case("labelcurve lc --finetune.model {model} --task wiki-topics --fractions 0.1,0.5,1 --min-steps -1", r"min_steps must be >= 1", id="labelcurve negative min-steps"),
    case("labelcurve lc --finetune.model {model} --task wiki-topics --fractions 0.1,0.5,1 --workers -1", r"workers and threads >= 0", id="labelcurve negative workers"),
    case("labelcurve lc --finetune.model {model} --task wiki-topics --fractions 0.1,0.5,1 --target 2", r"target is a metric value in \(0, 1\)", id="labelcurve target out of range"),
    case("finetune r --model {model} --task wiki-topics --patience -1", r"patience must be >= 0", id="negative patience"),
    case("finetune r --model {model} --task wiki-topics --stride -3", r"stride must be >= 0", id="negative stride"),
    case("pretrain r --size nosuch", r"unknown model size 'nosuch'", id="pretrain unknown size before data prep"),
    case("plan --design isoflop --budget-flops 1e14 --dry-run --workers -1", r"argument --workers: must be >= 0", id="plan negative workers"),
    case("demo --workers -2", r"argument --workers: must be >= 0", id="demo negative workers"),
    case("nosuchcommand", r"invalid choice: 'nosuchcommand'", id="unknown command"),
    case("fit", r"the following arguments are required: TABLE\.csv", id="fit without a table"),
    case("fit {runs} --n params --d tokens --form nosuch", r"argument --form: invalid choice", id="fit form not a choice"),
    case("pretrain r --no-such-flag 3", r"unrecognized arguments: --no-such-flag 3", id="unknown flag"),
]  # fmt: skip


class TestRunAndStudyDirs:
    test_one_line = one_line_test(STUDY_DIR_CASES)
