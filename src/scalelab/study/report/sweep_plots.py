"""The learning-rate sweep in the study report: loss against lr per size with each
parabola's vertex, the fitted lr_opt(N) (or lr_opt(C)) law, and the rungs whose planned
learning rate sits at the policy's clip boundary (:mod:`scalelab.study.sweep`)."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from scalelab.study.policy import HyperPolicy
from scalelab.study.sweep import SweepCurve, SweepResult

_X_LABEL = {"N": "non-embedding N (parameters)", "C": "compute C = 6ND (FLOPs)"}


def _rung_x(rung: Any, basis: str) -> float:
    """A planned rung's x in the law's basis (``Rung`` objects or their dicts)."""
    get = rung.get if isinstance(rung, dict) else lambda k: getattr(rung, k)
    if basis == "N":
        return float(get("params")["non_embedding"])
    return float(get("flops")["6n_kaplan"])


def _draw_curve(ax: Any, c: SweepCurve, colour: Any) -> None:
    """One size: its measured losses, its parabola over the fitted window, its vertex
    (filled: interior, used by the law; hollow: edge, not used)."""
    ok = [(lr, v) for lr, v in zip(c.lrs, c.losses, strict=True) if v is not None]
    ax.plot([p[0] for p in ok], [p[1] for p in ok], "o-", color=colour, ms=4, lw=0.8,
            label=f"N = {c.N:,} ({c.status})")  # fmt: skip
    diverged = [lr for lr, v in zip(c.lrs, c.losses, strict=True) if v is None]
    if diverged and ok:
        top = max(p[1] for p in ok)
        ax.scatter(diverged, [top] * len(diverged), marker="x", color=colour, zorder=3)
    if c.parabola is not None and c.window is not None:
        a, b, k = c.parabola
        u = np.linspace(math.log(c.window[0]), math.log(c.window[1]), 60)
        ax.plot(np.exp(u), a * u**2 + b * u + k, "--", color=colour, lw=0.8)
    if c.lr_opt is not None and c.loss_opt is not None:
        face = colour if c.status == "interior" else "none"
        ax.scatter([c.lr_opt], [c.loss_opt], marker="D", s=36, facecolors=face,
                   edgecolors=colour, zorder=4)  # fmt: skip


def plot_sweep(
    result: SweepResult, rungs: list[Any] | None = None, policy: HyperPolicy | None = None
):
    """Two panels: loss against learning rate per size (parabola and vertex), and the
    vertices against N (or C) with the fitted law and its 95% interval on the exponent
    (lines pivoting at the sizes' geometric centre, where the law is best determined).
    With ``rungs`` (a study's plan) their learning rates are drawn on the second panel,
    those at a clip boundary of ``policy`` hollow."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(11.0, 4.4), layout="constrained")
    ax, law = fig.add_subplot(1, 2, 1), fig.add_subplot(1, 2, 2)
    colours = [f"C{i % 10}" for i in range(len(result.curves))]
    for c, colour in zip(result.curves, colours, strict=True):
        _draw_curve(ax, c, colour)
    ax.set_xscale("log")
    ax.set_xlabel("peak learning rate")
    ax.set_ylabel("final validation loss")
    ax.set_title("sweep: loss against learning rate (◆ vertex; hollow: not used)", fontsize=10)
    ax.legend(fontsize=8)

    basis = result.basis
    xs = [c.x(basis) for c in result.curves]
    span = list(xs)
    if rungs:
        span += [_rung_x(r, basis) for r in rungs]
    grid = np.geomspace(min(span) / 1.5, max(span) * 1.5, 80)
    law.plot(grid, result.coef * grid**result.exponent, color="k", lw=1.2,
             label=f"lr_opt = {result.coef:.3g}·{basis}^{result.exponent:.3f}")  # fmt: skip
    if result.exponent_interval is not None:
        centre = result.predict(result.x_centre)
        for p in result.exponent_interval:
            law.plot(grid, centre * (grid / result.x_centre) ** p, ":", color="k", lw=0.8)
        law.plot([], [], ":", color="k", lw=0.8, label="95% interval on the exponent")
    for c, colour in zip(result.curves, colours, strict=True):
        if c.lr_opt is not None:
            face = colour if c.status == "interior" else "none"
            law.scatter([c.x(basis)], [c.lr_opt], marker="D", s=36, facecolors=face,
                        edgecolors=colour, zorder=4)  # fmt: skip
    shown = [float(v) for v in result.coef * grid**result.exponent]
    shown += [c.lr_opt for c in result.curves if c.lr_opt is not None]
    if rungs:
        shown += _draw_rungs(law, rungs, basis, policy)
    # A wide interval (few sizes) would stretch the axis over decades: keep the data in view.
    law.set_ylim(min(shown) / 3, max(shown) * 3)
    law.set_xscale("log")
    law.set_yscale("log")
    law.set_xlabel(_X_LABEL.get(basis, basis))
    law.set_ylabel("learning rate")
    law.set_title("optimal learning rate against size", fontsize=10)
    law.legend(fontsize=8)
    return fig


def _draw_rungs(ax: Any, rungs: list[Any], basis: str, policy: HyperPolicy | None) -> list[float]:
    """The planned rungs' learning rates (hollow red: at a clip boundary); they are returned."""
    lr = [float(r["lr"] if isinstance(r, dict) else r.lr) for r in rungs]
    x = [_rung_x(r, basis) for r in rungs]
    clipped = [policy is not None and policy.at_clip(v) is not None for v in lr]
    inside = [(a, b) for a, b, c in zip(x, lr, clipped, strict=True) if not c]
    at = [(a, b) for a, b, c in zip(x, lr, clipped, strict=True) if c]
    if inside:
        ax.scatter(*zip(*inside, strict=True), marker="s", s=14, color="0.45", label="study rungs")
    if at:
        ax.scatter(*zip(*at, strict=True), marker="s", s=14, facecolors="none",
                   edgecolors="C3", label="study rungs at a clip boundary")  # fmt: skip
    return lr


def clip_flags(rungs: list[Any], policy: HyperPolicy) -> list[str]:
    """One line per rung whose planned learning rate sits at a boundary of the policy's
    ``lr_range`` (the rule asked for more, or less, than the clip allows): the rung, its
    lr, the boundary and the rule's unclipped value. ``rungs`` are ``Rung`` objects or
    their dicts (``id``, ``lr``, ``params``, ``flops``)."""
    out = []
    for r in rungs:
        get = r.get if isinstance(r, dict) else lambda k, r=r: getattr(r, k)
        lr = float(get("lr"))
        side = policy.at_clip(lr)
        if side is None:
            continue
        n = float(get("params")["non_embedding"])
        raw = policy.raw_learning_rate(float(get("flops")["6n_kaplan"]), n=n)
        word = "upper" if side == "high" else "lower"
        out.append(
            f"rung {get('id')}: lr {lr:.3g} is the policy's {word} clip (lr_range "
            f"{policy.lr_range[0]:g}..{policy.lr_range[1]:g}; the {policy.rule} rule gives "
            f"{raw:.3g})"
        )
    return out
