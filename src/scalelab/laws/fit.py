"""The scaling-law stages behind ``scalelab fit / predict / optimal / plot``.

Each stage takes one typed config and returns its result plus the text it prints; the CLI
handlers in :mod:`scalelab.cli.laws` only turn flags into these configs.
"""

from __future__ import annotations

import dataclasses
import json
import math
import warnings
from pathlib import Path
from typing import Any, Literal, get_args

from scalelab.config import Config
from scalelab.errors import UserError

FormName = Literal[
    "chinchilla",
    "kaplan_n",
    "kaplan_d",
    "kaplan_c",
    "kaplan_nd",
    "power_n",
    "power_d",
    "power_c",
    "isoflop",
    "custom",
    "data_constrained",
]
FORMS: tuple[str, ...] = get_args(FormName)


@dataclasses.dataclass(kw_only=True)
class TableConfig(Config):
    """Where the runs are and which columns mean what."""

    table: Path
    """CSV (or TSV) file of runs, one row per run."""
    n: str | None = None
    """Column with the parameter count N."""
    d: str | None = None
    """Column with the training tokens D."""
    c: str | None = None
    """Column with the training FLOPs C."""
    loss: str = "loss"
    """Column with the loss (or the fitted quantity)."""
    u: str | None = None
    """Column with the unique training tokens U of each run, for --form data_constrained (found by name: unique_tokens, U, U_D, unique)."""
    group: str | None = None
    """Column of cluster labels (runs sharing a model resample together in the bootstrap)."""
    weight: str | None = None
    """Column of observation weights."""
    where: tuple[str, ...] = ()
    """Keep only rows with COLUMN=VALUE (repeatable, comma-separated)."""
    flops_convention: str = "6n_kaplan"
    """C = 6 N D convention used to derive a missing one of N, D, C: 6n_kaplan or 6n_total (C = 6 N D with the table's N), a factor such as 8nd, or none."""
    check_units: bool = True
    """Fail when C, N and D are all given but C is far from k N D (units mixed up)."""
    budget: str | None = None
    """IsoFLOP: column of nominal compute budgets (default: group runs by C; with no --n/--d/--c, a budget_flops or budget column is found by name)."""
    n_scale: float = 1.0
    """Multiply the N column by this (1e6 for a table in millions of parameters)."""
    d_scale: float = 1.0
    """Multiply the D column by this (1e9 for a table in billions of tokens)."""
    c_scale: float = 1.0
    """Multiply the C column (and the --budget column) by this (e.g. 1e18 for EFLOPs)."""
    skip_invalid: bool = False
    """Leave out rows whose loss is empty, NaN or inf (diverged runs) instead of failing."""

    def read_table(self) -> Any:
        """The table this config describes (named apart from ``Config.load``, the
        classmethod that reads a config file: ``fit --config FILE`` needs that one)."""
        from scalelab.laws.table import load_table

        table = load_table(
            self.table,
            n=self.n,
            d=self.d,
            c=self.c,
            loss=self.loss,
            u=self.u,
            group=self.group,
            weight=self.weight,
            extra=(self.budget,) if self.budget else (),
            where=list(self.where),
            flops_convention=self.flops_convention,
            check_units=self.check_units,
            n_scale=self.n_scale,
            d_scale=self.d_scale,
            c_scale=self.c_scale,
            skip_invalid=self.skip_invalid,
        )
        if self.budget and self.c_scale != 1 and table.extra[self.budget].dtype != object:
            extra = {**table.extra, self.budget: table.extra[self.budget] * self.c_scale}
            table = dataclasses.replace(table, extra=extra)
        return table

    def detected_budget(self) -> str | None:
        """IsoFLOP with no column named at all: a budget column found by name, if any."""
        if self.budget is not None or any(x is not None for x in (self.n, self.d, self.c)):
            return None
        from scalelab.laws.table_parse import BUDGET_CANDIDATES, find_by_name, read_header

        return find_by_name(read_header(self.table), BUDGET_CANDIDATES)

    def table_spec(self) -> dict[str, Any]:
        """The loading options, saved in the fit JSON so `scalelab plot` can reload the table."""
        names = [f.name for f in dataclasses.fields(TableConfig)]
        spec = {k: v for k, v in self.to_dict().items() if k in names}
        spec["table"] = str(Path(self.table).resolve())
        return spec


@dataclasses.dataclass(kw_only=True)
class FitConfig(TableConfig):
    """Options of ``scalelab fit``."""

    form: FormName = "chinchilla"
    """Law to fit: chinchilla, kaplan_n/d/c/nd, power_n/d/c (E + A x^-alpha), isoflop, custom, data_constrained (repeated data, Muennighoff et al. 2023; needs a U column)."""
    expression: str | None = None
    """custom form: expression over N, D, C and parameters, e.g. 'E + A/N**alpha'."""
    param: tuple[str, ...] = ()
    """custom form: parameter bounds NAME=LO:HI (repeatable, comma-separated)."""
    delta: float = 1e-3
    """Huber delta on log-residuals (Hoffmann et al. 2022 used 1e-3)."""
    drop_highest: int = 0
    """Drop this many highest-loss points first (Besiroglu et al. 2024 dropped 5)."""
    method: Literal["vpnls", "grid"] = "vpnls"
    """chinchilla: vpnls = variable projection over the exponent plane (fast, the same optimum as the grid); grid = L-BFGS from every start of --grid."""
    grid: Literal["hoffmann", "small"] = "hoffmann"
    """chinchilla with --method grid: start grid (hoffmann = the 4,500 starts of Hoffmann et al.; small = 243; small implies --method grid). data_constrained always starts from 243 x 3 R_D* values."""
    excess_params: bool = False
    """data_constrained: also discount parameters beyond the compute-optimal size for the unique data (R_N*, Muennighoff et al. 2023, eq. 6)."""
    degree: int = 2
    """isoflop: polynomial degree of each profile (2 or 3)."""
    bootstrap: int = 0
    """Bootstrap resamples for intervals (0: none; 1000 is typical)."""
    seed: int = 0
    """Bootstrap seed."""
    level: float = 0.95
    """Interval level."""
    compute: tuple[float, ...] = ()
    """Also report the compute-optimal allocation at these budgets (FLOPs)."""
    validation: Literal["none", "rolling"] = "none"
    """rolling (also --validate rolling): calibrated intervals -- resample whole compute levels and add the model-form error measured by rolling-origin extrapolation (fit on the smallest levels, predict the larger ones); prints the calibration table."""
    out: Path | None = None
    """Write the fit as JSON here."""

    def validate(self) -> None:
        if self.validation == "rolling" and self.form == "isoflop":
            raise UserError("--validate rolling needs a parametric law (not --form isoflop)")
        if self.form == "custom" and (not self.expression or not self.param):
            raise UserError(
                "--form custom needs --expression and --param NAME=LO:HI for each parameter"
            )
        if self.form != "custom" and (self.expression or self.param):
            raise UserError("--expression/--param only apply to --form custom")
        if self.excess_params and self.form != "data_constrained":
            raise UserError("--excess-params only applies to --form data_constrained")
        if not self.delta > 0:
            raise UserError(f"--delta must be positive, got {self.delta}")
        if self.drop_highest < 0:
            raise UserError(f"--drop-highest must be >= 0, got {self.drop_highest}")
        if self.bootstrap < 0 or self.bootstrap == 1:
            raise UserError(f"--bootstrap must be 0 or at least 2, got {self.bootstrap}")
        if not 0 < self.level < 1:
            raise UserError(f"--level must be between 0 and 1, got {self.level}")
        if self.degree not in (2, 3):
            raise UserError(f"--degree must be 2 or 3, got {self.degree}")


def run_fit(cfg: FitConfig) -> tuple[Any, str]:
    """Fit the configured law; save it (with its table spec) when ``out`` is set."""
    from scalelab.laws.fits import FitWarning
    from scalelab.laws.isoflop import IsoFLOPWarning

    if cfg.out is not None:
        from scalelab.utils.io import check_output_file

        check_output_file(cfg.out, "--out", example="fit.json")  # before the fit: it may take long
    cfg, table, notes = _read_for_fit(cfg)
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        fit = _fit_table(cfg, table)
        # The fits' own warnings are part of their summaries; show anything else.
        shown = (FitWarning, IsoFLOPWarning)
        notes += [str(w.message) for w in record if not issubclass(w.category, shown)]
    lines = [fit.summary()]
    lines.extend(f"  note: {c}" for c in notes)
    lines.extend(f"  warning: {w}" for w in _budget_units_warnings(fit))
    lines.extend(_bootstrap_lines(fit))
    if cfg.compute:
        lines.append(format_allocation(_allocation(fit, list(cfg.compute), cfg.level)))
    if cfg.out is not None:
        data = fit.to_dict()
        data["table_spec"] = cfg.table_spec()
        from scalelab.utils.io import atomic_write_json

        atomic_write_json(cfg.out, data)
        lines.append(f"wrote {cfg.out}")
    return fit, "\n".join(lines)


def _read_for_fit(cfg: FitConfig) -> tuple[FitConfig, Any, list[str]]:
    """The config (an IsoFLOP budget column found by name filled in), its table, and the
    notes to print about loading (columns found, rows skipped, units rescaled)."""
    import numpy as np

    found = cfg.detected_budget() if cfg.form == "isoflop" else None
    if found is not None:
        cfg = dataclasses.replace(cfg, budget=found)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # rows skipped: the table's notes say it
        table = cfg.read_table()
    notes = list(table.notes)
    if found is not None:
        vals = table.extra[found]
        if vals.dtype == object or not (np.isfinite(vals).all() and (vals > 0).all()):
            cfg = dataclasses.replace(cfg, budget=None)
            notes.append(f"column '{found}' does not hold positive numbers; runs grouped by C")
        else:
            notes.append(f"IsoFLOP budgets from column '{found}' (found by name; or --budget)")
    return cfg, table, notes


def _bootstrap_lines(fit: Any) -> list[str]:
    """The bootstrap's line, the calibration table (when calibrated) and the intervals of
    the allocation exponents."""
    b = getattr(fit, "bootstrap", None)
    if b is None:
        return []
    lines = [f"  bootstrap: {b.n_ok}/{b.n} resamples converged ({b.method}, {b.seconds:.1f} s)"]
    intervals = dict(b.intervals)
    cal = getattr(b, "calibration", None)
    if cal is not None:
        from scalelab.laws.calibration import calibrated_exponents

        lines.append("  " + cal.summary().replace("\n", "\n  "))
        intervals.update(calibrated_exponents(fit, level=b.level))
    label = " (calibrated: levels resampled, model-form spread added)" if cal is not None else ""
    for name in ("a", "b"):
        if name in intervals:
            iv = intervals[name]
            lines.append(
                f"  {name:>8} = {iv.estimate:.4f}   [{iv.lo:.4f}, {iv.hi:.4f}]{label if name == 'a' else ''}"
            )
    return lines


def _allocation(fit: Any, compute: list[float], level: float) -> Any:
    """The compute-optimal allocation, with calibrated intervals when the bootstrap is."""
    if getattr(getattr(fit, "bootstrap", None), "calibration", None) is not None:
        from scalelab.laws.calibration import calibrated_allocation

        return calibrated_allocation(fit, compute, level=level)
    return fit.optimal(compute, level=level)


def _fit_table(cfg: FitConfig, table: Any) -> Any:
    """The configured law fitted to ``table`` (with its bootstrap when one is asked for)."""
    from scalelab.laws.bootstrap import bootstrap
    from scalelab.laws.chinchilla import fit_chinchilla, hoffmann_grid, small_grid
    from scalelab.laws.constrained import fit_data_constrained
    from scalelab.laws.expr import parse_param_bounds
    from scalelab.laws.isoflop import fit_isoflop
    from scalelab.laws.powerlaw import fit_custom, fit_kaplan, fit_power_law

    if cfg.form == "isoflop":

        def refit(t: Any) -> Any:
            return fit_isoflop(t, degree=cfg.degree, budget=cfg.budget)

        fit: Any = refit(table)
        if cfg.bootstrap:
            boot = bootstrap(table, refit, n=cfg.bootstrap, seed=cfg.seed, level=cfg.level)
            fit = fit.with_bootstrap(boot)
        return fit
    kw = {"delta": cfg.delta, "drop_highest": cfg.drop_highest}
    if cfg.form == "chinchilla":
        if cfg.method == "grid" or cfg.grid == "small":
            grid = small_grid() if cfg.grid == "small" else hoffmann_grid()
            fit = fit_chinchilla(table, grid=grid, **kw)
        else:
            fit = fit_chinchilla(table, **kw)
    elif cfg.form.startswith("kaplan_"):
        fit = fit_kaplan(table, variable=cfg.form.split("_", 1)[1].upper(), **kw)
    elif cfg.form.startswith("power_"):
        fit = fit_power_law(table, variable=cfg.form[-1].upper(), **kw)
    elif cfg.form == "data_constrained":
        fit = fit_data_constrained(table, excess_params=cfg.excess_params, **kw)
    else:
        assert cfg.expression is not None
        fit = fit_custom(table, cfg.expression, parse_param_bounds(cfg.param), **kw)
    if cfg.validation == "rolling":
        from scalelab.laws.calibration import calibrated_bootstrap

        n = cfg.bootstrap or 1000
        boot = calibrated_bootstrap(table, fit, n=n, seed=cfg.seed, level=cfg.level)
        fit = fit.with_bootstrap(boot)
    elif cfg.bootstrap:
        boot = bootstrap(table, fit, n=cfg.bootstrap, seed=cfg.seed, level=cfg.level)
        fit = fit.with_bootstrap(boot)
    return fit


def _budget_units_warnings(fit: Any) -> list[str]:
    """IsoFLOP: the units warning of the allocation at the median budget fitted (a
    parametric law carries its own, in its diagnostics)."""
    used = sorted(p.budget for p in getattr(fit, "profiles", ()) if p.used)
    if not used:
        return []
    alloc = fit.optimal([used[len(used) // 2]])
    return [w.replace(" at C = ", " at the median budget C = ", 1) for w in alloc.warnings]


def format_allocation(alloc: Any) -> str:
    u = getattr(alloc, "unique_tokens", math.inf)
    capped = math.isfinite(u)
    head = f"  {'compute':>10} {'N_opt':>12} {'D_opt':>12} {'tokens/param':>13} {'loss':>8}"
    title = "compute-optimal allocation:"
    if capped:  # a data-constrained law under a cap on unique data (epochs = D_opt / U)
        title = f"compute-optimal allocation with {u:.4g} unique tokens (D > U repeats them):"
        head += f" {'epochs':>8}"
    lines = [title, head]
    for row in alloc.rows():
        line = (
            f"  {row['compute']:>10.3g} {row['n_opt']:>12.4g} {row['d_opt']:>12.4g} "
            f"{row['tokens_per_param']:>13.2f} {row['loss']:>8.4f}"
        ) + (f" {row['epochs']:>8.3g}" if capped else "")
        labels = (("n_opt", "N", ".3g"), ("d_opt", "D", ".3g"), ("tokens_per_param", "D/N", ".3g"), ("loss", "L", ".4f"))  # fmt: skip
        for key, label, fmt in labels:
            if f"{key}_lo" in row:
                line += f" {label} [{row[key + '_lo']:{fmt}}, {row[key + '_hi']:{fmt}}]"
        lines.append(line)
    lines.extend(f"  warning: {w}" for w in getattr(alloc, "warnings", ()))
    return "\n".join(lines)


def read_fit_json(path: Path) -> tuple[Any, dict[str, Any]]:
    """(result, raw JSON) of a saved fit, its shape checked: a missing key, a value of the
    wrong type or an inconsistent law is a UserError naming the file and the key."""
    import scalelab.laws.constrained  # noqa: F401 - registers the data_constrained fit
    from scalelab.laws.results import read_fit_file, result_from_dict

    raw = read_fit_file(path)
    fit = result_from_dict(raw, where=str(path))
    spec = raw.get("table_spec")
    if spec is not None and not isinstance(spec, dict):
        raise UserError(f"{path}: key 'table_spec': expected an object, got {type(spec).__name__}")
    return fit, raw


def is_fit_json(path: str | Path) -> bool:
    """Whether ``path`` is a JSON file holding a scalelab fit (has a 'form' key)."""
    p = Path(path)
    if not p.is_file() or p.suffix.lower() != ".json":
        return False
    try:
        raw = json.loads(p.read_text(encoding="utf-8"))
    except (ValueError, RecursionError, OSError):  # not JSON (UnicodeDecodeError included)
        return False
    return isinstance(raw, dict) and "form" in raw


@dataclasses.dataclass(kw_only=True)
class PredictConfig(Config):
    """Options of ``scalelab predict FIT.json``."""

    path: Path
    """A fit JSON written by `scalelab fit --out`."""
    n: tuple[float, ...] = ()
    """Parameter counts (comma-separated)."""
    d: tuple[float, ...] = ()
    """Token counts (comma-separated; broadcast against --n)."""
    c: tuple[float, ...] = ()
    """FLOPs (comma-separated), for laws in C."""
    u: tuple[float, ...] = ()
    """Unique training tokens (comma-separated), for data_constrained laws (default: no cap)."""
    level: float | None = None
    """Interval level (default: the bootstrap's)."""

    def validate(self) -> None:
        from scalelab.laws.results import check_level

        if not (self.n or self.d or self.c):
            raise UserError("predict needs --n, --d and/or --c values")
        for flag, values in (("n", self.n), ("d", self.d), ("c", self.c), ("u", self.u)):
            bad = [v for v in values if not (v > 0 and math.isfinite(v))]
            if bad:
                raise UserError(
                    f"--{flag}: {flag.upper()} must be positive and finite, got {bad[0]:g}"
                )
        if self.level is not None:
            check_level(self.level, "--level")


def run_predict(cfg: PredictConfig) -> tuple[dict[str, Any], str]:
    import numpy as np

    from scalelab.laws.bootstrap import prediction_intervals
    from scalelab.laws.fits import LawFit

    fit, _ = read_fit_json(cfg.path)
    if not isinstance(fit, LawFit):
        raise UserError(f"{cfg.path}: a {fit.kind} result has no loss law to predict with")
    kw = {k.upper(): np.asarray(v) for k, v in (("n", cfg.n), ("d", cfg.d), ("c", cfg.c)) if v}
    if cfg.u and "U" not in fit.variables:
        raise UserError(f"--u only applies to a data_constrained fit, not a {fit.form} one")
    if cfg.u:
        kw["U"] = np.asarray(cfg.u)
    try:
        shape = np.broadcast_shapes(*(a.shape for a in kw.values()))
    except ValueError:
        flags = "--n, --d, --c" + (", --u" if cfg.u else "")
        raise UserError(f"{flags} need equal lengths (or a single value)") from None
    kw = {k: np.broadcast_to(a, shape) for k, a in kw.items()}
    data = fit.inputs(**kw)
    if fit.bootstrap is not None and "U" not in kw:
        out = prediction_intervals(fit, level=cfg.level, **kw)
    else:
        out = {"estimate": fit.predict(**kw)}
    lines = [f"{fit.form}: {fit.formula}"]
    for i in range(out["estimate"].size):
        where = ", ".join(f"{v}={data[v][i]:.4g}" for v in data)
        line = f"  {where}: {out['estimate'][i]:.5f}"
        if "lo" in out:
            line += (
                f"  law [{out['lo'][i]:.5f}, {out['hi'][i]:.5f}]"
                f"  new run [{out['pred_lo'][i]:.5f}, {out['pred_hi'][i]:.5f}]"
            )
        lines.append(line)
    if fit.bootstrap is None:
        lines.append("  (no intervals: fit with --bootstrap N to get them)")
    elif "U" in kw:
        lines.append("  (no intervals with --u yet)")
    return out, "\n".join(lines)


@dataclasses.dataclass(kw_only=True)
class OptimalConfig(Config):
    """Options of ``scalelab optimal FIT.json --compute C``."""

    path: Path
    """A fit JSON written by `scalelab fit --out`."""
    compute: tuple[float, ...] = ()
    """Compute budgets in FLOPs (comma-separated)."""
    unique_tokens: float | None = None
    """data_constrained fits: only this many unique tokens exist (D may exceed them: repeated epochs)."""
    inference_tokens: float | None = None
    """Tokens the model will serve (Sardana et al. 2024): the model reaching the same loss as the compute-optimal one at --compute (or --target-loss) with the least training 6ND + inference 2N per token."""
    target_loss: tuple[float, ...] = ()
    """Target losses: with --compute, the smallest model reaching each within C (also the cheapest to serve); with only --inference-tokens, the cheapest model to train and serve."""
    level: float = 0.95
    """Interval level (intervals need a fit with a bootstrap)."""

    def validate(self) -> None:
        from scalelab.laws.results import check_level

        if not self.compute and not self.target_loss:
            raise UserError(
                "optimal needs --compute C (FLOPs; comma-separated for several) or --target-loss L"
            )
        for flag, values in (("compute", self.compute), ("target-loss", self.target_loss)):
            if any(not (v > 0 and math.isfinite(v)) for v in values):
                raise UserError(f"--{flag} values must be positive, got {list(values)}")
        if self.unique_tokens is not None and not (0 < self.unique_tokens < math.inf):
            raise UserError(f"--unique-tokens must be positive, got {self.unique_tokens:g}")
        if self.inference_tokens is not None and not (0 <= self.inference_tokens < math.inf):
            raise UserError(f"--inference-tokens must be >= 0, got {self.inference_tokens:g}")
        check_level(self.level, "--level")


def run_optimal(cfg: OptimalConfig) -> tuple[Any, str]:
    fit, _ = read_fit_json(cfg.path)
    if cfg.target_loss or cfg.inference_tokens is not None:
        from scalelab.laws.inference import optimal_report

        return optimal_report(
            fit,
            compute=cfg.compute,
            loss=cfg.target_loss,
            inference_tokens=cfg.inference_tokens,
            unique_tokens=cfg.unique_tokens,
        )
    if not hasattr(fit, "optimal"):
        raise UserError(f"{cfg.path}: a {fit.kind} result has no compute-optimal allocation")
    kw: dict[str, Any] = {"level": cfg.level}
    if cfg.unique_tokens is not None:
        if "U" not in getattr(fit, "variables", ()):
            raise UserError(
                f"{cfg.path}: --unique-tokens needs a data_constrained fit (scalelab fit "
                f"TABLE --form data_constrained), not a {getattr(fit, 'form', fit.kind)} one"
            )
        kw["unique_tokens"] = cfg.unique_tokens
    if "unique_tokens" in kw:
        alloc = fit.optimal(list(cfg.compute), **kw)
    else:
        alloc = _allocation(fit, list(cfg.compute), cfg.level)
    return alloc, format_allocation(alloc)


@dataclasses.dataclass(kw_only=True)
class PlotConfig(Config):
    """Options of ``scalelab plot FIT.json``."""

    path: Path
    """A fit JSON written by `scalelab fit --out`."""
    table: Path | None = None
    """The runs table (default: the one the fit was made from, as saved in the JSON)."""
    out: Path = Path("plots")
    """Directory for the figures (each as PNG and SVG)."""
    n_label: str | None = None
    """How the axes name N, e.g. "non-embedding N" (default: the table's column name)."""


def run_plot(cfg: PlotConfig) -> tuple[list[Path], str]:
    from scalelab.laws import plots
    from scalelab.laws.fits import LawFit
    from scalelab.laws.isoflop import EnvelopeFit, IsoFLOPFit

    fit, raw = read_fit_json(cfg.path)
    spec = dict(raw.get("table_spec") or {})
    if cfg.table is not None:
        spec["table"] = str(cfg.table)
    table = None
    if spec.get("table"):
        table = TableConfig.from_dict(spec, where=f"{cfg.path}: table_spec.").read_table()
    written: list[Path] = []
    out = Path(cfg.out)

    label = {"n_label": cfg.n_label}

    def save(fig: Any, name: str) -> None:
        png = plots.save_figure(fig, out / name)  # writes the SVG beside it
        written.extend((png, png.with_suffix(".svg")))

    if isinstance(fit, LawFit):
        if table is None:
            raise UserError(f"{cfg.path}: no table saved with the fit; pass --table TABLE.csv")
        save(plots.plot_loss_vs_n(table, fit, **label), "loss_vs_n.png")
        save(plots.plot_residuals(table, fit, **label), "residuals.png")
        if {"N", "D"} <= set(fit.variables) and fit.flops_per_nd is not None:
            save(plots.plot_optimal(fit, **label), "optimal.png")
    elif isinstance(fit, IsoFLOPFit):
        if table is None:
            raise UserError(f"{cfg.path}: no table saved with the fit; pass --table TABLE.csv")
        save(plots.plot_isoflop(table, fit, **label), "isoflop.png")
        save(plots.plot_optimal(fit, **label), "optimal.png")
    elif isinstance(fit, EnvelopeFit):
        save(plots.plot_optimal(fit, **label), "optimal.png")
    else:
        raise UserError(f"{cfg.path}: no plots for a {fit.kind} result")
    return written, "\n".join(f"wrote {p}" for p in written)
