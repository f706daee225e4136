"""Model FLOPs utilisation (MFU): achieved model FLOP/s over the device's peak.

MFU as defined by PaLM (Chowdhery et al. 2022, Appendix B): the FLOPs the model needs
per token, times the tokens processed per second, over the peak FLOP/s of the hardware.
Rematerialisation (activation checkpointing) does not count, so MFU compares runs
with different memory tricks honestly.

FLOPs per token, convention ``palm_6n_attn`` (PaLM, Appendix B): ``6 N + 12 L H Q T``
where N counts the parameters that take part in matmuls (non-embedding N plus the
output projection V x d, tied or not; the embedding lookup is no matmul), L layers,
H heads, Q head size and T the sequence length. The second term is attention's
QK^T and softmax @ V (2 x 2 T H Q forward per token per layer, backward = 2 x forward),
without a causal discount, as in the paper. We use this rather than the Chinchilla
Appendix-F count because it is the MFU convention of the literature (PaLM, nanoGPT's
``estimate_mfu``, Megatron), so scalelab's MFU can be compared with theirs.

Peaks are dense (no sparsity) bf16 tensor-core FLOP/s from NVIDIA's datasheets;
:func:`peak_flops` picks one by ``torch.cuda.get_device_name()``. A CPU has no peak
here: give one with ``--runtime.peak-flops``, otherwise the MFU is null with a note.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

CONVENTION = "palm_6n_attn"


@dataclass(frozen=True)
class Peak:
    """A device's dense bf16 peak FLOP/s and where the number comes from."""

    pattern: str
    """Regular expression matched (case-insensitively) against the device name."""
    flops: float
    source: str


# Most specific first: the first match wins. Datasheets quote bf16 "with sparsity";
# the dense number is half of that.
PEAKS: tuple[Peak, ...] = (
    Peak(r"\bH200\b.*\bNVL\b", 835e12, "NVIDIA H200 NVL datasheet: 1,671 TFLOPS sparse bf16"),
    Peak(r"\bH200\b", 989e12, "NVIDIA H200 Tensor Core GPU datasheet (SXM): 1,979 TFLOPS sparse"),
    Peak(r"\bGH200\b", 989e12, "NVIDIA GH200 Grace Hopper datasheet: 1,979 TFLOPS sparse bf16"),
    Peak(r"\bH100\b.*\bNVL\b", 835e12, "NVIDIA H100 NVL datasheet: 1,671 TFLOPS sparse bf16"),
    Peak(
        r"\bH100\b.*\bPCIe\b", 756e12, "NVIDIA H100 Tensor Core GPU datasheet (PCIe): 1,513 sparse"
    ),
    Peak(r"\bH100\b", 989e12, "NVIDIA H100 Tensor Core GPU datasheet (SXM): 1,979 TFLOPS sparse"),
    Peak(r"\bA100\b", 312e12, "NVIDIA A100 Tensor Core GPU datasheet: 312 TFLOPS dense bf16"),
    Peak(r"\bL40S\b", 362e12, "NVIDIA L40S datasheet: 362.05 TFLOPS dense bf16"),
    Peak(r"\bL4\b", 121e12, "NVIDIA L4 Tensor Core GPU datasheet: 242 TFLOPS sparse bf16"),
    Peak(r"\bA10\b", 125e12, "NVIDIA A10 Tensor Core GPU datasheet: 125 TFLOPS dense bf16"),
    Peak(
        r"\bRTX 4090\b",
        165.2e12,
        "NVIDIA Ada GPU architecture whitepaper: RTX 4090 bf16, fp32 accumulate, dense",
    ),
)
"""Dense bf16 peaks by device name. Not listed (so no MFU without --runtime.peak-flops):
the A10G (AWS publishes no bf16 tensor figure), V100 and T4 (no bf16 tensor cores)."""


def lookup_peak(device_name: str) -> Peak | None:
    """The table's entry for a device name such as ``"NVIDIA H100 80GB HBM3"``; None if absent."""
    for peak in PEAKS:
        if re.search(peak.pattern, device_name, flags=re.IGNORECASE):
            return peak
    return None


def device_name(device: str) -> str | None:
    """``torch.cuda.get_device_name`` of a ``cuda[:i]`` device; None for other devices."""
    if not str(device).startswith("cuda"):
        return None
    import torch

    if not torch.cuda.is_available():
        return None
    return torch.cuda.get_device_name(torch.device(device))


def peak_flops(device: str, override: float | None = None) -> tuple[float | None, str]:
    """``(peak FLOP/s of one device, its source)``: ``override`` if given, else the table."""
    if override:
        return float(override), "runtime.peak_flops"
    name = device_name(device)
    if name is None:
        return None, f"no peak known for device {device!r}; set --runtime.peak-flops"
    peak = lookup_peak(name)
    if peak is None:
        return None, f"{name!r} is not in scalelab's peak table; set --runtime.peak-flops"
    return peak.flops, f"{name}: {peak.source}"


def palm_flops_per_token(
    *, matmul_params: float, n_layer: int, n_head: int, head_dim: int, seq_len: int
) -> float:
    """Training FLOPs per token, PaLM Appendix B: ``6 N + 12 L H Q T``."""
    return 6.0 * matmul_params + 12.0 * n_layer * n_head * head_dim * seq_len


def model_flops_per_token(cfg: Any, seq_len: int) -> float:
    """:func:`palm_flops_per_token` of a :class:`~scalelab.models.config.ModelConfig`.

    N = non-embedding + head parameters + the tied output projection (V x d) when the
    head reuses the embedding: every parameter that a matmul reads.
    """
    from scalelab.models.accounting import param_counts

    counts = param_counts(cfg)
    tied_head = cfg.vocab_size * cfg.d_model if cfg.tie_embeddings else 0
    return palm_flops_per_token(
        matmul_params=counts.non_embedding + counts.head + tied_head,
        n_layer=cfg.n_layer,
        n_head=cfg.n_head,
        head_dim=cfg.head_dim,
        seq_len=seq_len,
    )


def mfu(
    flops_per_token: float, tokens: float, seconds: float, peak: float, world: int = 1
) -> float:
    """Achieved model FLOP/s (``tokens`` of all ``world`` devices in ``seconds``) over their
    total peak."""
    if seconds <= 0 or peak <= 0 or world < 1:
        raise ValueError("mfu needs positive seconds, peak and world")
    return flops_per_token * tokens / seconds / (peak * world)


def mfu_facts(
    summary: dict[str, Any], tokens: float, train_s: float, override: float | None
) -> dict[str, Any]:
    """The ``mfu*`` keys of ``summary.json``, from its ``world_size``, ``device`` and
    ``mfu_flops_per_token`` (put there by the stage; absent: no MFU keys at all).

    ``tokens`` (all ranks) and ``train_s`` are those of this session's optimizer steps
    (no evaluation or checkpoint writing; a resumed run is measured on its hardware now).
    """
    fpt = summary.get("mfu_flops_per_token")
    if not fpt:
        return {}
    peak, source = peak_flops(str(summary.get("device", "cpu")), override)
    out: dict[str, Any] = {
        "mfu": None,
        "mfu_convention": CONVENTION,
        "peak_flops": peak,
        "peak_flops_source": source,
        "model_flops_per_s": None,
    }
    world = int(summary.get("world_size") or 1)
    if train_s > 0 and tokens:
        out["model_flops_per_s"] = fpt * tokens / train_s
        if peak is not None:
            out["mfu"] = mfu(fpt, tokens, train_s, peak, world)
    if out["mfu"] is None:
        out["mfu_note"] = source if peak is None else "no training step timed yet"
    return out
