#!/usr/bin/env bash
# GPU check (issue 12): scalelab's decoder vs a nanoGPT-style reference (bf16 + torch.compile,
# tokens/s and MFU), a tiny study end to end on CUDA and a 1-process NCCL DDP step; one table.
# About 6 minutes on one H200 (hard limit 8). DRY=1 (or --dry) runs it on the CPU at tiny
# shapes, without compile, gloo instead of NCCL, in about a minute.
#
#   bash bench/gpu_check.sh
#   DRY=1 bash bench/gpu_check.sh
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-.venv/bin/python}"
[ -x "$PY" ] || PY=python
export OMP_WAIT_POLICY="${OMP_WAIT_POLICY:-PASSIVE}"
export PYTHONPATH="src${PYTHONPATH:+:$PYTHONPATH}"
ARGS=("$@")
if [ "${DRY:-0}" = "1" ]; then ARGS+=(--dry); fi
exec timeout 480 "$PY" bench/gpu_check.py all "${ARGS[@]}"
