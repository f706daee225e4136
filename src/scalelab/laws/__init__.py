"""Scaling-law fitting: Chinchilla Approaches 1-3, Kaplan forms, power laws, user forms,
bootstrap uncertainty, extrapolation checks, compute-optimal allocation, downstream fits.

Pure functions over a tidy :class:`RunTable` returning frozen, JSON-serialisable results::

    from scalelab.laws import load_table, fit_chinchilla, bootstrap

    table = load_table("runs.csv", n="params", d="tokens", loss="loss")
    fit = fit_chinchilla(table)
    fit = fit.with_bootstrap(bootstrap(table, fit, n=1000, seed=0))
    print(fit.summary())
    print(fit.optimal([1e21, 1e23]).rows())

Names are imported lazily (numpy and scipy load on first use, not with the package).
"""

from __future__ import annotations

from scalelab.utils.lazy import lazy_exports

_EXPORTS = {
    # tables
    "RunTable": "scalelab.laws.table",
    "load_table": "scalelab.laws.table",
    "table_from_arrays": "scalelab.laws.table",
    "flops_per_nd": "scalelab.laws.table",
    # parametric fits
    "LawFit": "scalelab.laws.fits",
    "Diagnostics": "scalelab.laws.fits",
    "FitWarning": "scalelab.laws.fits",
    "fit_form": "scalelab.laws.fits",
    "fit_kaplan": "scalelab.laws.powerlaw",
    "fit_power_law": "scalelab.laws.powerlaw",
    "fit_custom": "scalelab.laws.powerlaw",
    "compare_models": "scalelab.laws.compare",
    "ModelComparison": "scalelab.laws.compare",
    "ChinchillaFit": "scalelab.laws.chinchilla",
    "fit_chinchilla": "scalelab.laws.chinchilla",
    "chinchilla_loss": "scalelab.laws.chinchilla",
    "hoffmann_grid": "scalelab.laws.chinchilla",
    "small_grid": "scalelab.laws.chinchilla",
    "optimal_allocation": "scalelab.laws.chinchilla",
    "parse_expression": "scalelab.laws.expr",
    "make_form": "scalelab.laws.forms",
    # data-constrained and inference-aware laws
    "DataConstrainedFit": "scalelab.laws.constrained",
    "DataConstrainedForm": "scalelab.laws.constrained",
    "ConstrainedAllocation": "scalelab.laws.constrained",
    "fit_data_constrained": "scalelab.laws.constrained",
    "data_constrained_loss": "scalelab.laws.constrained",
    "effective_tokens": "scalelab.laws.constrained",
    "MUENNIGHOFF_2023": "scalelab.laws.constrained",
    "InferencePlan": "scalelab.laws.inference",
    "SmallestModel": "scalelab.laws.inference",
    "inference_optimal": "scalelab.laws.inference",
    "inference_optimal_at_compute": "scalelab.laws.inference",
    "smallest_model": "scalelab.laws.inference",
    # fine-tuning law (Zhang et al. 2024)
    "FinetuneLaw": "scalelab.laws.finetune_law",
    "FinetuneLawForm": "scalelab.laws.finetune_law",
    "fit_finetune_law": "scalelab.laws.finetune_law",
    "finetune_table": "scalelab.laws.finetune_law",
    # approaches 1 and 2
    "IsoFLOPFit": "scalelab.laws.isoflop",
    "IsoFLOPWarning": "scalelab.laws.isoflop",
    "EnvelopeFit": "scalelab.laws.isoflop",
    "fit_isoflop": "scalelab.laws.isoflop",
    "fit_envelope": "scalelab.laws.isoflop",
    # uncertainty and validation
    "BootstrapResult": "scalelab.laws.bootstrap",
    "bootstrap": "scalelab.laws.bootstrap",
    "prediction_intervals": "scalelab.laws.bootstrap",
    "Calibration": "scalelab.laws.calibration",
    "calibrated_bootstrap": "scalelab.laws.calibration",
    "calibrated_allocation": "scalelab.laws.calibration",
    "rolling_origin": "scalelab.laws.calibration",
    "compare_forms": "scalelab.laws.compare",
    "FormComparison": "scalelab.laws.compare",
    "ExtrapolationResult": "scalelab.laws.validation",
    "extrapolation_check": "scalelab.laws.validation",
    # downstream
    "fit_metric_power_law": "scalelab.laws.downstream",
    "fit_sigmoid": "scalelab.laws.downstream",
    "fit_ladder": "scalelab.laws.downstream",
    "predict_ladder": "scalelab.laws.downstream",
    "ladder_holdout": "scalelab.laws.downstream",
    "label_efficiency": "scalelab.laws.downstream",
    "LadderFit": "scalelab.laws.downstream",
    "LabelEfficiency": "scalelab.laws.downstream",
    "SigmoidFit": "scalelab.laws.downstream",
    # results and I/O
    "Allocation": "scalelab.laws.results",
    "Interval": "scalelab.laws.results",
    "save_fit": "scalelab.laws.results",
    "load_fit": "scalelab.laws.results",
}

__getattr__, __dir__, __all__ = lazy_exports(__name__, _EXPORTS)
