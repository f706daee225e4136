"""A study on disk: its plan, its rungs' run directories and the results tables.

Layout::

    STUDY/study.yaml          the plan: PlanConfig, the rungs, planning facts (probe, vocab)
    STUDY/rungs/<id>/         one ordinary pretraining run directory per rung
    STUDY/results.csv         one row per rung, rebuilt from the rungs' summary.json files
    STUDY/curves.csv          one row per evaluation of a rung (its validation curve)
    STUDY/downstream.csv      one row per rung, fine-tuning task, method and split
    STUDY/fits/*.json         fitted laws (``scalelab study fit``)
    STUDY/report.html|.md     the report (``scalelab report``)

The tables are never scraped from logs: every number comes from a rung's ``summary.json``
(the curves from its ``metrics.jsonl`` evaluations, the fine-tuning metrics from the seed
runs' summaries). :data:`DATA_DICTIONARY` documents every column the three files hold.

In memory, :meth:`Study.result_rows` keeps the short keys the fits and the report read
(``N``, ``budget``, the JSON ``curve``, the downstream ``<task>__<method>/<split>_<metric>``
columns); the files take their names from :data:`FILE_NAMES` at one place,
:meth:`Study.results_records`.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from scalelab.config import read_config_file
from scalelab.errors import UserError
from scalelab.study.plan import PlanConfig, Rung, dataset_train_tokens
from scalelab.utils.io import atomic_write_text, read_json, read_jsonl

STUDY_FILE = "study.yaml"

# In-memory key of a result_rows() row -> its results.csv column, where they differ
# (scalelab 0.1 wrote the keys themselves: N, budget).
FILE_NAMES = {"N": "N_non_embedding", "budget": "budget_flops"}

# Columns of results.csv, in order; per-source validation losses follow as val_loss/<source>.
RESULT_COLUMNS = [
    "rung", "role", "status", "in_fit", "budget_flops", "budget_convention", "N_non_embedding",
    "N_total", "N_embedding", "D", "unique_tokens", "epochs", "C_6n_kaplan", "C_6n_total",
    "C_chinchilla", "final_val_loss", "best_val_loss", "n_layer", "d_model", "n_head", "d_ff",
    "lr", "batch_tokens", "seq_len", "wall_time_s", "tokens_per_s", "mfu", "step", "total_steps",
    "trunk",
]  # fmt: skip
# Columns of curves.csv (per-source losses follow as val_loss/<source>) and downstream.csv.
CURVE_COLUMNS = ["rung", "step", "tokens", "val_loss"]
DOWNSTREAM_COLUMNS = [
    "rung", "N_non_embedding", "task", "method", "split", "metric", "value", "std", "n_seeds",
]  # fmt: skip


@dataclass(frozen=True)
class Column:
    """One documented column of a study's tables (``<source>`` in a name: any source)."""

    name: str
    unit: str
    meaning: str


_LOSS = "nats/token"
_SOURCE_LOSS = Column("val_loss/<source>", _LOSS, "validation loss on one source of the corpus")
# Every column scalelab writes to results.csv, curves.csv and downstream.csv; nothing else
# is written (tests/test_study_results.py checks both ways).
DATA_DICTIONARY: dict[str, tuple[Column, ...]] = {
    "results.csv": (
        Column("rung", "id", "rung id (its run directory is `rungs/<rung>/`)"),
        Column("role", "fit, holdout, trunk", "fit: a point of the fits; holdout: predicted by them; trunk: the shared warmup-stable phase of a WSD ladder's branches (not a point)"),
        Column("status", "pending, running, interrupted, completed, failed", "where the rung stands"),
        Column("in_fit", "true, false", "the rung is a point of the saved Approach 3 fit (`fits/summary.json`); false for every rung before a fit; empty when an older fit does not tell"),
        Column("budget_flops", "FLOPs", "the compute level the rung belongs to, in `budget_convention` (isoflop designs; empty otherwise)"),
        Column("budget_convention", "6n_kaplan, 6n_total, chinchilla", "FLOP convention of `budget_flops` and of C in the study's fits (the plan's `flops_convention`)"),
        Column("N_non_embedding", "parameters", "non-embedding parameter count, the N of the fits (Kaplan et al. 2020)"),
        Column("N_total", "parameters", "every parameter: `N_embedding` + `N_non_embedding` + an untied output head"),
        Column("N_embedding", "parameters", "lookup tables: token embedding, learned positions (gpt2, bert), token types (bert)"),
        Column("D", "tokens", "training tokens: trained (completed rungs) or planned"),
        Column("unique_tokens", "tokens", "tokens of the training split of the sources sampled, the unique data U of the data-constrained law (Muennighoff et al. 2023; `scalelab fit --form data_constrained` finds this column); empty while the data is not prepared"),
        Column("epochs", "passes", "`D` / `unique_tokens`; rungs sample each window once per epoch (`sampling: epoch`; runs and studies from before scalelab 0.3.0 drew windows i.i.d., `iid`); above 1 only when the plan allowed it (`max_epochs`)"),
        Column("C_6n_kaplan", "FLOPs", "training compute 6 `N_non_embedding` D (Kaplan et al. 2020, Sec. 2.1)"),
        Column("C_6n_total", "FLOPs", "training compute 6 `N_total` D"),
        Column("C_chinchilla", "FLOPs", "training compute, full count of Hoffmann et al. 2022, App. F"),
        Column("final_val_loss", _LOSS, "mean cross-entropy on the validation tokens at the last evaluation (bert: masked-LM loss)"),
        Column("best_val_loss", _LOSS, "lowest validation loss of any evaluation"),
        Column("n_layer", "layers", "transformer blocks"),
        Column("d_model", "units", "hidden width"),
        Column("n_head", "heads", "attention heads"),
        Column("d_ff", "units", "feed-forward width"),
        Column("lr", "–", "peak learning rate"),
        Column("batch_tokens", "tokens per step", "tokens per optimizer step"),
        Column("seq_len", "tokens", "training sequence length"),
        Column("wall_time_s", "s", "training wall-clock time"),
        Column("tokens_per_s", "tokens/s", "training throughput"),
        Column("mfu", "fraction (0-1)", "model FLOPs utilisation: 6N + 12·L·H·Q·T FLOPs per token (PaLM, Chowdhery et al. 2022, App. B) times tokens/s over the device's dense bf16 peak (`summary.json`: `peak_flops`, its source); empty without a known peak (CPU: `--runtime.peak-flops`)"),
        Column("step", "steps", "optimizer steps done"),
        Column("total_steps", "steps", "optimizer steps planned"),
        Column("trunk", "id", "WSD ladders: the trunk rung whose stable-phase checkpoint this branch cooled down from (`cooldown` in the plan; Hägele et al. 2024); empty: trained from scratch"),
        _SOURCE_LOSS,
    ),
    "curves.csv": (
        Column("rung", "id", "rung id (`results.csv`'s `rung`)"),
        Column("step", "steps", "optimizer step of the evaluation"),
        Column("tokens", "tokens", "training tokens seen at the evaluation"),
        Column("val_loss", _LOSS, "validation loss, as `final_val_loss` (every evaluation with a finite loss)"),
        _SOURCE_LOSS,
    ),
    "downstream.csv": (
        Column("rung", "id", "rung id (`results.csv`'s `rung`) whose final checkpoint was fine-tuned"),
        Column("N_non_embedding", "parameters", "non-embedding parameter count of the rung"),
        Column("task", "name", "fine-tuning task (a task file: `<stem>-<path hash>`)"),
        Column("method", "name", "fine-tuning method (full, lora, ...); `downstream/<task>__<method>/` holds the runs"),
        Column("split", "dev, test", "evaluation split"),
        Column("metric", "accuracy, f1", "headline metric of the task"),
        Column("value", "fraction (0-1)", "the metric, mean over the completed seeds"),
        Column("std", "fraction (0-1)", "sample standard deviation over seeds (empty with one seed)"),
        Column("n_seeds", "runs", "completed fine-tuning seeds averaged"),
    ),
    "zeroshot.csv": (
        Column("rung", "id", "rung id (`results.csv`'s `rung`) whose final model was scored (`scalelab study eval`)"),
        Column("N_non_embedding", "parameters", "non-embedding parameter count of the rung"),
        Column("D", "tokens", "training tokens of the rung"),
        Column("task", "name", "zero-shot task: `builtin:continuation`, `builtin:wiki-topic`, or a JSONL file as `<stem>-<content hash>`"),
        Column("metric", "acc, acc_norm, bpb", "accuracy; accuracy with log-likelihood per character (lm-evaluation-harness `acc_norm`); the gold answer's bits per byte"),
        Column("value", "fraction (0-1), or bits per byte", "the metric over the task's examples"),
        Column("stderr", "as value", "standard error: binomial for accuracies, of the mean for bpb"),
    ),
}  # fmt: skip


def documented(table: str, column: str) -> bool:
    """Whether ``column`` of ``table`` (results.csv, ...) is in :data:`DATA_DICTIONARY`."""
    names = {c.name for c in DATA_DICTIONARY[table]}
    return column in names or (
        column.startswith("val_loss/") and "val_loss/<source>" in names and column != "val_loss/"
    )


def data_dictionary_markdown() -> str:
    """:data:`DATA_DICTIONARY` as markdown tables (the README's "Study tables")."""
    out = []
    for table, columns in DATA_DICTIONARY.items():
        out += [f"`STUDY/{table}`:", "", "| column | unit | meaning |", "|---|---|---|"]
        out += [f"| `{c.name}` | {c.unit} | {c.meaning} |" for c in columns]
        out.append("")
    return "\n".join(out)


#: Plan settings a study planned by scalelab 0.3 or earlier does not record: such a study
#: keeps i.i.d. sampling, is not checked for repetition, and matches a plan on the rest.
LEGACY_KEYS = ("base.sampling", "max_epochs")


@dataclass
class Study:
    """Handle on a study directory."""

    root: Path
    plan: PlanConfig
    rungs: list[Rung]
    facts: dict[str, Any]
    legacy: bool = False
    """Planned before ``base.sampling`` and ``max_epochs`` existed (see :data:`LEGACY_KEYS`)."""

    # ------------------------------------------------------------------ persistence
    @classmethod
    def create(
        cls, root: Path, plan: PlanConfig, rungs: list[Rung], facts: dict[str, Any]
    ) -> Study:
        root = Path(root)
        if (root / STUDY_FILE).is_file():
            existing = cls.load(root)
            if not existing.same_plan(plan):
                raise UserError(
                    f"{root} already holds a study with a different plan; choose another directory "
                    f"or run `scalelab study run {root}` to continue it"
                )
            return existing
        study = cls(root=root, plan=plan, rungs=rungs, facts=facts)
        study.save()
        return study

    @classmethod
    def load(cls, root: str | Path) -> Study:
        root = Path(root)
        path = root / STUDY_FILE
        if not path.is_file():
            raise UserError(
                f"{root} is not a study (no {STUDY_FILE}); create one with `scalelab plan`"
            )
        data = read_config_file(path)
        missing = [k for k in ("plan", "rungs") if k not in data]
        if missing or not isinstance(data["rungs"], list):
            what = f"no {' or '.join(missing)}" if missing else "rungs is not a list"
            raise UserError(f"{path}: not a scalelab study plan ({what})")
        plan_data, legacy = _with_legacy_sampling(data["plan"])
        plan = PlanConfig.from_dict(plan_data, where=f"{path}: plan.")
        try:
            rungs = [Rung.from_dict(r) for r in data["rungs"]]
        except (TypeError, KeyError) as exc:
            raise UserError(f"{path}: a rung is malformed ({exc})") from None
        facts = data.get("facts") or {}
        facts = facts if isinstance(facts, dict) else {}
        return cls(root=root, plan=plan, rungs=rungs, facts=facts, legacy=legacy)

    def same_plan(self, plan: PlanConfig) -> bool:
        """Whether ``plan`` is this study's plan (a legacy study: except :data:`LEGACY_KEYS`)."""
        mine, theirs = self.plan.to_dict(), plan.to_dict()
        for key in LEGACY_KEYS if self.legacy else ():
            *path, leaf = key.split(".")
            for node in (mine, theirs):
                for part in path:
                    node = node[part]
                node.pop(leaf, None)
        return mine == theirs

    def save(self) -> None:
        doc = {
            "plan": self.plan.to_dict(),
            "facts": self.facts,
            "rungs": [r.to_dict() for r in self.rungs],
        }
        header = "# scalelab study plan; `scalelab study run` trains it, `scalelab study status` shows it.\n"
        atomic_write_text(
            self.root / STUDY_FILE, header + yaml.safe_dump(doc, sort_keys=False, width=100)
        )

    # ------------------------------------------------------------------ rungs
    def rung_dir(self, rung: Rung) -> Path:
        return self.root / "rungs" / rung.id

    def rung(self, rung_id: str) -> Rung:
        """The rung with this id (a one-line error if the plan has none)."""
        for r in self.rungs:
            if r.id == rung_id:
                return r
        raise UserError(f"{self.root}: the plan has no rung {rung_id!r}")

    def rung_summary(self, rung: Rung) -> dict[str, Any] | None:
        path = self.rung_dir(rung) / "summary.json"
        if not path.is_file():
            return None
        try:
            summary = read_json(path)
        except (OSError, json.JSONDecodeError, UnicodeDecodeError):
            return None
        return summary if isinstance(summary, dict) else None  # a tampered file: not a summary

    def rung_status(self, rung: Rung) -> str:
        """pending, running/interrupted (resumable), completed or failed."""
        s = self.rung_summary(rung)
        if s is None:
            return "pending"
        if s.get("status") == "running" and not _locked(self.rung_dir(rung)):
            return "interrupted"  # killed hard: resumable from its last checkpoint
        return str(s.get("status", "pending"))

    def rung_progress(self, rung: Rung) -> tuple[str, float]:
        """``(status, fraction of its steps done)``, live for a running rung: its newest
        logged step in ``metrics.jsonl`` (its summary only moves at checkpoints)."""
        from scalelab.train.metrics_log import last_logged_step

        s = self.rung_summary(rung) or {}
        status = self.rung_status(rung)
        step, total = s.get("step"), s.get("total_steps")
        step = step if isinstance(step, int) else 0
        if status == "running":
            step = max(step, last_logged_step(self.rung_dir(rung)) or 0)
        if not isinstance(total, int):
            total = math.ceil(rung.tokens / rung.batch_tokens)
        return status, 1.0 if status == "completed" else min(1.0, step / max(1, total))

    def runner_lock(self) -> contextlib.AbstractContextManager[None]:
        """Held by ``study run`` while it trains (one runner per study; status and report
        only read, and need no lock)."""
        from scalelab.train.lock import dir_lock

        return dir_lock(
            self.root,
            f"{self.root} is being run by another `scalelab study run`",
            then=f"`scalelab study status {self.root}` shows its progress",
        )

    # ------------------------------------------------------------------ repetition
    def unique_tokens(self) -> int | None:
        """Training tokens of the sources the rungs sample (one dataset for all of them):
        from a rung's summary, else the plan's facts, else the prepared dataset's manifest."""
        summaries = [self.rung_summary(r) or {} for r in self.rungs]
        for s in summaries:
            if isinstance(s.get("unique_tokens"), int) and s["unique_tokens"] > 0:
                return s["unique_tokens"]
        if isinstance(self.facts.get("train_tokens"), int):
            return self.facts["train_tokens"]
        for path in [self.plan.base.dataset, *(s.get("dataset") for s in summaries)]:
            with contextlib.suppress(UserError, OSError, KeyError, TypeError, ValueError):
                if path and (unique := dataset_train_tokens(path)):
                    return unique
        return None

    def repetition_note(self) -> str | None:
        """What the report and the fit summary say about repeated data (None: nothing)."""
        from scalelab.study.policy import repetition_note

        unique = self.unique_tokens()
        limit = None if self.legacy else self.plan.max_epochs
        note = repetition_note(self.rungs, unique, limit) if unique else None
        if self.plan.base.sampling == "iid":
            iid = (
                "Training windows are drawn i.i.d. with replacement (sampling: iid, as scalelab "
                "did before 0.3.0), so even a rung under one epoch sees some windows twice."
            )
            note = f"{note} {iid}" if note else iid
        return note

    def check_repetition(self, dataset: str | Path) -> None:
        """Refuse (one-line UserError) a study with a rung above ``max_epochs`` epochs of the
        prepared ``dataset``: what ``study run`` checks once a plan made without the data has
        it. Legacy studies are not checked (they were planned before the rule)."""
        from scalelab.study.policy import repetition_error

        unique = None if self.legacy else dataset_train_tokens(dataset)
        error = unique and repetition_error(
            self.rungs, unique, self.plan.max_epochs, what=f"the study {self.root}"
        )
        if error:
            raise error

    # ------------------------------------------------------------------ results
    def result_rows(self) -> list[dict[str, Any]]:
        """One row per rung under the in-memory keys the fits and the report read (``N``,
        ``budget``, ``curve`` as JSON, the downstream columns); :meth:`results_records`
        has the file's names."""
        return self._result_rows(self._evals())

    def _result_rows(self, evals: dict[str, list[dict[str, Any]]]) -> list[dict[str, Any]]:
        from scalelab.study.downstream import downstream_columns

        downstream = downstream_columns(self)
        unique = self.unique_tokens()
        rows = []
        for rung in self.rungs:
            s = self.rung_summary(rung) or {}
            status = self.rung_status(rung)
            params = s.get("params") or rung.params
            flops = s.get("flops") if status == "completed" else None
            flops = flops or rung.flops
            shape = s.get("shape") or rung.shape
            row: dict[str, Any] = {
                "rung": rung.id,
                "role": rung.role,
                "status": status,
                "budget": rung.budget,
                "N": params["non_embedding"],
                "N_total": params["total"],
                "N_embedding": params["embedding"],
                "D": s.get("tokens") if status == "completed" else rung.tokens,
                "unique_tokens": s.get("unique_tokens") or unique,
                "C_6n_kaplan": flops.get("6n_kaplan"),
                "C_6n_total": flops.get("6n_total"),
                "C_chinchilla": flops.get("chinchilla"),
                "final_val_loss": s.get("final_val_loss"),
                "best_val_loss": s.get("best_val_loss"),
                **{k: shape.get(k) for k in ("n_layer", "d_model", "n_head", "d_ff")},
                "lr": rung.lr,
                "batch_tokens": rung.batch_tokens,
                "seq_len": self.plan.base.seq_len,
                "wall_time_s": s.get("wall_time_s"),
                "tokens_per_s": s.get("tokens_per_s"),
                "mfu": s.get("mfu") if status == "completed" else None,
                "step": s.get("step", 0),
                "total_steps": s.get("total_steps", math.ceil(rung.tokens / rung.batch_tokens)),
                "curve": json.dumps(_curve(evals[rung.id])),
                "trunk": rung.trunk,
            }
            if row["unique_tokens"] and row["D"]:
                row["epochs"] = row["D"] / row["unique_tokens"]
            for key, value in sorted((s.get("last_eval") or {}).items()):
                if _source_loss(key) and status == "completed":
                    row[key] = value
            row.update(downstream.get(rung.id, {}))
            rows.append(row)
        return rows

    def eval_records(self, rung: Rung) -> list[dict[str, Any]]:
        """The rung's evaluations in ``metrics.jsonl`` that have a finite ``val_loss``."""
        return [
            r
            for r in read_jsonl(self.rung_dir(rung) / "metrics.jsonl")
            if r.get("type") == "eval" and _finite(r.get("val_loss"))
        ]

    def _evals(self) -> dict[str, list[dict[str, Any]]]:
        return {rung.id: self.eval_records(rung) for rung in self.rungs}

    def curve(self, rung: Rung) -> list[list[float]]:
        """Validation loss at every evaluation: [[tokens, loss], ...] (Approach 1 uses these)."""
        return _curve(self.eval_records(rung))

    def fitted_rungs(self, rows: list[dict[str, Any]] | None = None) -> set[str] | None:
        """Ids of the rungs the saved Approach 3 fit used (``in_fit``): empty before a fit,
        None when an old fit summary does not tell."""
        return _fitted_rungs(self.root, self.result_rows() if rows is None else rows)

    def results_records(self, rows: list[dict[str, Any]] | None = None) -> list[dict[str, Any]]:
        """The rows of ``results.csv``: its columns (:data:`RESULT_COLUMNS`, then the
        ``val_loss/<source>`` ones), in order, with typed values (None: empty).

        The one place the in-memory keys become the file's names (:data:`FILE_NAMES`);
        ``in_fit`` comes from the saved fit, ``curve`` and the downstream columns are left
        to ``curves.csv`` and ``downstream.csv``.
        """
        rows = self.result_rows() if rows is None else rows
        used = self.fitted_rungs(rows)
        sources = sorted({k for r in rows for k in r if _source_loss(k)})
        out = []
        for r in rows:
            rec = {FILE_NAMES.get(k, k): v for k, v in r.items()}
            rec["in_fit"] = None if used is None else r["rung"] in used
            rec["budget_convention"] = self.plan.flops_convention
            out.append({c: rec.get(c) for c in RESULT_COLUMNS + sources})
        return out

    def curve_records(self) -> list[dict[str, Any]]:
        """The rows of ``curves.csv``: one per evaluation of every rung (rung, step, tokens,
        val_loss and the rung's ``val_loss/<source>`` losses)."""
        return _curve_records(self._evals())

    def downstream_records(self) -> list[dict[str, Any]]:
        """The rows of ``downstream.csv``: one per rung, task, method and split."""
        from scalelab.study.downstream import downstream_rows

        return downstream_rows(self)

    def write_results(self) -> Path:
        """Rewrite ``results.csv``, ``curves.csv`` and ``downstream.csv`` (each atomically;
        results.csv last); returns the path of results.csv."""
        evals = self._evals()
        records = self.results_records(self._result_rows(evals))
        curves = _curve_records(evals)
        atomic_write_text(self.root / "curves.csv", _csv_text(curves, CURVE_COLUMNS))
        downstream = _csv_text(self.downstream_records(), DOWNSTREAM_COLUMNS)
        atomic_write_text(self.root / "downstream.csv", downstream)
        path = self.root / "results.csv"
        atomic_write_text(path, _csv_text(records, RESULT_COLUMNS))
        return path

    # ------------------------------------------------------------------ notebooks
    def to_pandas(self) -> Any:
        """``results.csv`` as a pandas DataFrame (the file's columns; needs pandas)."""
        from scalelab.study.notebook import frame

        return frame(self.results_records(), RESULT_COLUMNS)

    def curves_to_pandas(self) -> Any:
        """``curves.csv`` as a pandas DataFrame, one row per evaluation (needs pandas)."""
        from scalelab.study.notebook import frame

        return frame(self.curve_records(), CURVE_COLUMNS)

    def downstream_to_pandas(self) -> Any:
        """``downstream.csv`` as a pandas DataFrame (needs pandas)."""
        from scalelab.study.notebook import frame

        return frame(self.downstream_records(), DOWNSTREAM_COLUMNS)

    def _repr_html_(self) -> str:
        from scalelab.study.notebook import study_html

        return study_html(self)


def _with_legacy_sampling(plan: Any) -> tuple[Any, bool]:
    """A study file's plan without ``base.sampling`` (before scalelab 0.3.0) as the
    i.i.d.-sampled plan it ran; ``(plan, whether it was such a plan)``."""
    from scalelab.train.pretrain import LEGACY_SAMPLING

    base = plan.get("base", {}) if isinstance(plan, dict) else None
    if not isinstance(base, dict) or "sampling" in base:
        return plan, False
    return {**plan, "base": {**base, "sampling": LEGACY_SAMPLING}}, True


def _finite(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _source_loss(key: str) -> bool:
    """``val_loss/<source>``: a per-source validation loss."""
    return key.startswith("val_loss/") and len(key) > len("val_loss/")


def _curve(evals: list[dict[str, Any]]) -> list[list[float]]:
    return [[int(r["tokens"]), float(r["val_loss"])] for r in evals]


def _curve_records(evals: dict[str, list[dict[str, Any]]]) -> list[dict[str, Any]]:
    """Long-format curves: one row per evaluation, in rung order (``evals``' order)."""
    out = []
    for rid, records in evals.items():
        for r in records:
            rec = {"rung": rid, "step": r.get("step"), "tokens": int(r["tokens"])}
            rec["val_loss"] = float(r["val_loss"])
            rec.update({k: v for k, v in sorted(r.items()) if _source_loss(k)})
            out.append(rec)
    return out


def _fitted_rungs(root: Path, rows: list[dict[str, Any]]) -> set[str] | None:
    """The rung ids of the saved Approach 3 fit (``fits/summary.json``): an empty set when
    there is no fit; None when the summary does not list them and they cannot be rebuilt."""
    path = root / "fits" / "summary.json"
    if not path.is_file():
        return set()
    try:
        summary = read_json(path)
    except (OSError, ValueError):
        return None
    chin = summary.get("chinchilla") if isinstance(summary, dict) else None
    if not isinstance(chin, dict):
        return None
    if isinstance(chin.get("rungs"), list):
        return {str(r) for r in chin["rungs"]}
    # A fit saved before the list was: rebuild its selection (study.fit) if its count agrees.
    loss, excluded = summary.get("loss", "final_val_loss"), set(chin.get("excluded") or ())
    used = {
        r["rung"]
        for r in rows
        if r["role"] == "fit" and r["status"] == "completed" and r.get(loss) is not None
    } - excluded
    return used if len(used) == summary.get("n_fit") else None


def _csv_text(records: list[dict[str, Any]], columns: list[str]) -> str:
    """``records`` as CSV: ``columns``, then any other key of theirs, sorted."""
    extra = sorted({k for r in records for k in r if k not in columns})
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=columns + extra, lineterminator="\n")
    writer.writeheader()
    for r in records:
        writer.writerow({k: _cell(r.get(k)) for k in columns + extra})
    return buf.getvalue()


def _cell(value: Any) -> Any:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return repr(value)
    return value


def _locked(run_dir: Path) -> bool:
    """True while a live process holds the run directory's lock (see train.loop)."""
    from scalelab.train.lock import is_locked

    return is_locked(run_dir)
