"""A study on disk: its plan, its rungs' run directories and the results table.

Layout::

    STUDY/study.yaml          the plan: PlanConfig, the rungs, planning facts (probe, vocab)
    STUDY/rungs/<id>/         one ordinary pretraining run directory per rung
    STUDY/results.csv         one row per rung, rebuilt from the rungs' summary.json files
    STUDY/fits/*.json         fitted laws (``scalelab study fit``)
    STUDY/report.html|.md     the report (``scalelab report``)

``results.csv`` is never scraped from logs: every number comes from a rung's
``summary.json`` (and the validation curve from its ``metrics.jsonl`` evaluations).
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
from scalelab.study.plan import PlanConfig, Rung
from scalelab.utils.io import atomic_write_text, read_json, read_jsonl

STUDY_FILE = "study.yaml"

# Columns of results.csv, in order; per-source validation losses follow as val_loss/<source>.
RESULT_COLUMNS = [
    "rung", "role", "status", "budget", "N", "N_total", "N_embedding", "D", "C_6n_kaplan",
    "C_6n_total", "C_chinchilla", "final_val_loss", "best_val_loss", "n_layer", "d_model",
    "n_head", "d_ff", "lr", "batch_tokens", "seq_len", "wall_time_s", "tokens_per_s", "step",
    "total_steps", "curve",
]  # fmt: skip


@dataclass
class Study:
    """Handle on a study directory."""

    root: Path
    plan: PlanConfig
    rungs: list[Rung]
    facts: dict[str, Any]

    # ------------------------------------------------------------------ persistence
    @classmethod
    def create(
        cls, root: Path, plan: PlanConfig, rungs: list[Rung], facts: dict[str, Any]
    ) -> Study:
        root = Path(root)
        if (root / STUDY_FILE).is_file():
            existing = cls.load(root)
            if existing.plan.to_dict() != plan.to_dict():
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
        plan = PlanConfig.from_dict(data["plan"], where=f"{path}: plan.")
        try:
            rungs = [Rung.from_dict(r) for r in data["rungs"]]
        except (TypeError, KeyError) as exc:
            raise UserError(f"{path}: a rung is malformed ({exc})") from None
        facts = data.get("facts") or {}
        return cls(
            root=root, plan=plan, rungs=rungs, facts=facts if isinstance(facts, dict) else {}
        )

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

    # ------------------------------------------------------------------ results
    def result_rows(self) -> list[dict[str, Any]]:
        from scalelab.study.downstream import downstream_columns

        downstream = downstream_columns(self)
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
                "step": s.get("step", 0),
                "total_steps": s.get("total_steps", math.ceil(rung.tokens / rung.batch_tokens)),
                "curve": json.dumps(self.curve(rung)),
            }
            for key, value in sorted((s.get("last_eval") or {}).items()):
                if key.startswith("val_loss/") and status == "completed":
                    row[key] = value
            row.update(downstream.get(rung.id, {}))
            rows.append(row)
        return rows

    def curve(self, rung: Rung) -> list[list[float]]:
        """Validation loss at every evaluation: [[tokens, loss], ...] (Approach 1 uses these)."""
        path = self.rung_dir(rung) / "metrics.jsonl"
        return [
            [int(r["tokens"]), float(r["val_loss"])]
            for r in read_jsonl(path)
            if r.get("type") == "eval"
            and r.get("val_loss") is not None
            and math.isfinite(r["val_loss"])
        ]

    def write_results(self) -> Path:
        rows = self.result_rows()
        extra = sorted({k for r in rows for k in r if k not in RESULT_COLUMNS})
        columns = RESULT_COLUMNS[:-1] + extra + ["curve"]
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=columns, lineterminator="\n")
        writer.writeheader()
        for r in rows:
            writer.writerow({k: _cell(r.get(k)) for k in columns})
        path = self.root / "results.csv"
        atomic_write_text(path, buf.getvalue())
        return path


def _cell(value: Any) -> Any:
    if value is None:
        return ""
    if isinstance(value, float):
        return repr(value)
    return value


def _locked(run_dir: Path) -> bool:
    """True while a live process holds the run directory's lock (see train.loop)."""
    from scalelab.train.lock import is_locked

    return is_locked(run_dir)
