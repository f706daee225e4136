"""GPU check (issue 12): is scalelab using a GPU well? One table, about 6 minutes on an H200.

Parts (``all`` runs them in order and prints the table):

- ``throughput``: bf16 + torch.compile tokens/s and MFU of scalelab's decoder (gpt2 flavour)
  against the nanoGPT-style reference (``nanogpt_reference.py``, scalelab's own code) at a
  124M-class shape (12 layers, d 768, 12 heads, seq 1024, vocab 50304) and a small one,
  timing the trainer's own step (``train_step``); plus scalelab with activation
  checkpointing at the small shape. MFU: PaLM's 6N + 12LHQT over the dense bf16 peak of
  ``scalelab.train.mfu``'s table.
- ``study``: a tiny study end to end on the device (prepare a small corpus, ``scalelab
  plan`` two rungs, ``scalelab study run``), reporting each rung's summary MFU.
- ``ddp``: under ``torchrun --nproc_per_node 1``, a DistributedDataParallel step over NCCL.

``--dry`` (or ``DRY=1``) runs the same on the CPU at tiny shapes: no compile, gloo, so the
script itself is checked without a GPU (about a minute).

    bash bench/gpu_check.sh            # on a GPU machine
    DRY=1 bash bench/gpu_check.sh      # anywhere
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from nanogpt_reference import ReferenceGPT, reference_optimizer  # noqa: E402
from scalelab.models.build import build_model, maybe_compile  # noqa: E402
from scalelab.models.config import ModelConfig  # noqa: E402
from scalelab.train import mfu as mfu_mod  # noqa: E402
from scalelab.train.step import make_optimizer, train_step  # noqa: E402

# (name, n_layer, d_model, n_head, seq_len, vocab, micro-batch)
SHAPES = [("124M", 12, 768, 12, 1024, 50304, 16), ("small", 4, 256, 4, 512, 8192, 32)]
DRY_SHAPES = [("124M-dry", 2, 64, 2, 64, 512, 4), ("small-dry", 1, 32, 2, 32, 256, 4)]


def _device(dry: bool) -> torch.device:
    return torch.device("cpu" if dry else "cuda")


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def _reference_flops_per_token(model: ReferenceGPT, n_layer: int, d: int, t: int) -> float:
    """PaLM 6N + 12LHQT with N = the matrices a matmul reads (no position table)."""
    n = sum(p.numel() for p in model.parameters() if p.dim() == 2) - model.wpe.weight.numel()
    return 6.0 * n + 12.0 * n_layer * d * t


def _time(model, opt, batch, device, steps: int, warmup: int) -> float:
    """Median seconds of one ``train_step`` (bf16 autocast, clipping, fused AdamW)."""
    times = []
    for i in range(warmup + steps):
        _sync(device)
        t0 = time.perf_counter()
        train_step(model, [batch], opt, precision="bf16", grad_clip=1.0, device=device)
        _sync(device)
        if i >= warmup:
            times.append(time.perf_counter() - t0)
    return statistics.median(times)


def throughput(dry: bool) -> list[dict]:
    """Rows of (model, shape, tokens/s, MFU) for scalelab and the reference."""
    device, rows = _device(dry), []
    peak, source = mfu_mod.peak_flops(str(device))
    steps, warmup = (3, 1) if dry else (10, 3)
    for name, n_layer, d, h, t, v, b in DRY_SHAPES if dry else SHAPES:
        gen = torch.Generator().manual_seed(0)
        ids = torch.randint(0, v, (b, t + 1), generator=gen)
        batch = {
            "input_ids": ids[:, :-1].contiguous().to(device),
            "labels": ids[:, 1:].contiguous().to(device),
        }
        cfg = ModelConfig(arch="gpt2", n_layer=n_layer, d_model=d, n_head=h, vocab_size=v,
                          max_seq_len=t)  # fmt: skip
        variants = [("scalelab", False), ("reference", False)]
        if name.startswith("small"):
            variants.append(("scalelab+ckpt", True))
        for label, remat in variants:
            torch.manual_seed(0)
            if label == "reference":
                model = ReferenceGPT(n_layer=n_layer, d_model=d, n_head=h, vocab_size=v,
                                     seq_len=t).to(device)  # fmt: skip
                opt = reference_optimizer(model)
                fpt = _reference_flops_per_token(model, n_layer, d, t)
                run = model if dry else torch.compile(model)
            else:
                model = build_model(cfg).to(device)
                model.activation_checkpointing = remat
                opt = make_optimizer(model, lr=3e-4)
                fpt = mfu_mod.model_flops_per_token(cfg, t)
                run = model if dry else maybe_compile(model)
            sec = _time(run, opt, batch, device, steps, warmup)
            tps = b * t / sec
            rows.append({
                "part": "throughput", "what": f"{label} {name}", "tokens_per_s": tps,
                "mfu": fpt * tps / peak if peak else None,
                "note": ("bf16 eager (dry)" if dry else "bf16 compile") + f"; peak: {source}",
            })  # fmt: skip
            del model, opt, run
            if device.type == "cuda":
                torch.cuda.empty_cache()
    return rows


def study(dry: bool, root: Path) -> list[dict]:
    """A two-rung study on the device: plan, run; each rung's tokens/s and MFU."""
    from scalelab.cli import main
    from scalelab.data.prepare import DataConfig, prepare

    t0 = time.perf_counter()
    ds = prepare(
        DataConfig(sources=("shakespeare",), max_chars=100_000, vocab_size=512),
        root=root / "data",
    )
    out = root / "study"
    sizes, tokens = ("2e3,6e3", "6144") if dry else ("2e5,6e5", "262144")
    device = "cpu" if dry else "cuda"
    rc = main([
        "plan", "--design", "grid", "--sizes", sizes, "--tokens", tokens, "--holdout", "0",
        "--base.dataset", str(ds), "--base.seq-len", "64", "--base.eval-tokens", "2048",
        "--base.runtime.device", device, "--base.runtime.precision", "bf16",
        "--policy.rule", "fixed", "--policy.batch-tokens", "1024", "--policy.lr", "0.003",
        "--out", str(out),
    ])  # fmt: skip
    if rc == 0:
        rc = main(["study", "run", str(out), "--no-progress", "--workers", "1"])
    rows = []
    for summary in sorted(out.rglob("summary.json")):
        s = json.loads(summary.read_text())
        if s.get("kind") != "pretrain":
            continue
        rows.append({
            "part": "study", "what": f"rung N={s.get('N')}", "tokens_per_s": s.get("tokens_per_s"),
            "mfu": s.get("mfu"),
            "note": f"{s.get('status')} on {s.get('device')}; "
            + (s.get("peak_flops_source") or s.get("mfu_note") or ""),
        })  # fmt: skip
    rows.append({
        "part": "study", "what": f"plan + run ({len(rows)} rungs)", "tokens_per_s": None,
        "mfu": None, "note": f"exit {rc}, {time.perf_counter() - t0:.0f} s",
    })  # fmt: skip
    return rows


def ddp_worker(dry: bool, out: Path) -> None:
    """One DDP step under torchrun (NCCL on CUDA, gloo with --dry); rank 0 writes a row."""
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel as DDP

    backend = "gloo" if dry else "nccl"
    rank = int(os.environ["LOCAL_RANK"])
    device = torch.device("cpu") if dry else torch.device("cuda", rank)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    dist.init_process_group(backend)
    torch.manual_seed(0)
    cfg = ModelConfig(arch="llama", n_layer=2, d_model=64, n_head=2, vocab_size=512,
                      max_seq_len=64)  # fmt: skip
    model = build_model(cfg).to(device)
    ddp = DDP(model, device_ids=[rank] if device.type == "cuda" else None)
    opt = make_optimizer(model, lr=1e-3)
    ids = torch.randint(0, 512, (4, 65), generator=torch.Generator().manual_seed(1))
    batch = {
        "input_ids": ids[:, :-1].contiguous().to(device),
        "labels": ids[:, 1:].contiguous().to(device),
    }
    sec = _time(ddp, opt, batch, device, steps=3, warmup=1)
    check = torch.ones(1, device=device)
    dist.all_reduce(check)
    if dist.get_rank() == 0:
        row = {"part": "ddp", "what": f"DDP {backend} x{dist.get_world_size()}",
               "tokens_per_s": 4 * 64 / sec, "mfu": None,
               "note": f"all_reduce={check.item():.0f}, world={dist.get_world_size()}"}  # fmt: skip
        out.write_text(json.dumps(row))
    dist.destroy_process_group()


def ddp(dry: bool, root: Path) -> list[dict]:
    """Launch :func:`ddp_worker` with ``torchrun --standalone --nproc_per_node 1``."""
    out = root / "ddp.json"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "1",
           __file__, "ddp-worker", "--out", str(out)] + (["--dry"] if dry else [])  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    if proc.returncode != 0 or not out.is_file():
        tail = (proc.stdout + proc.stderr).strip().splitlines()[-3:]
        return [{"part": "ddp", "what": "DDP", "tokens_per_s": None, "mfu": None,
                 "note": f"FAILED (exit {proc.returncode}): {' | '.join(tail)}"}]  # fmt: skip
    return [json.loads(out.read_text())]


def table(rows: list[dict]) -> str:
    """The rows as one fixed-width table."""
    lines = [f"{'part':<11} {'what':<28} {'tokens/s':>12} {'MFU':>7}  note"]
    for r in rows:
        tps = f"{r['tokens_per_s']:,.0f}" if r.get("tokens_per_s") else "-"
        mfu = f"{r['mfu']:.1%}" if r.get("mfu") is not None else "-"
        lines.append(f"{r['part']:<11} {r['what']:<28} {tps:>12} {mfu:>7}  {r['note']}")
    return "\n".join(lines)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("part", nargs="?", default="all",
                   choices=["all", "throughput", "study", "ddp", "ddp-worker"])  # fmt: skip
    p.add_argument("--dry", action="store_true", default=os.environ.get("DRY") == "1")
    p.add_argument("--out", type=Path, default=None, help="ddp-worker: where to write its row")
    args = p.parse_args()
    if args.part == "ddp-worker":
        ddp_worker(args.dry, args.out)
        return 0
    if not args.dry and not torch.cuda.is_available():
        print("no CUDA device: run with --dry (or DRY=1) to check the script on the CPU")
        return 2
    rows: list[dict] = []
    with tempfile.TemporaryDirectory(prefix="scalelab-gpu-check-") as tmp:
        for part in ("throughput", "study", "ddp") if args.part == "all" else (args.part,):
            t0 = time.perf_counter()
            try:
                rows += {"throughput": throughput, "study": lambda d: study(d, Path(tmp)),
                         "ddp": lambda d: ddp(d, Path(tmp))}[part](args.dry)  # fmt: skip
            except Exception as exc:  # noqa: BLE001 - report the part as failed, keep going
                rows.append({"part": part, "what": "FAILED", "tokens_per_s": None, "mfu": None,
                             "note": f"{type(exc).__name__}: {exc}"[:200]})  # fmt: skip
            print(f"[{part}: {time.perf_counter() - t0:.0f} s]", file=sys.stderr, flush=True)
    device = "cpu (dry run)" if args.dry else torch.cuda.get_device_name()
    print(f"\nscalelab GPU check on {device}, torch {torch.__version__}\n{table(rows)}")
    return 1 if any("FAILED" in (r["what"] + r["note"]) for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
