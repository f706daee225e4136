"""What scalelab 0.1 wrote and typed still works: saved configs, old flags, old imports.

``tests/data/*-0.1.yaml`` were written by scalelab 0.1.0's own ``Config.to_yaml`` (the
flat fine-tuning and method fields of that version).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from scalelab.cli.flags import add_config_arguments, config_from_args
from scalelab.finetune.finetune import FinetuneConfig
from scalelab.study.downstream import StudyFinetuneConfig
from scalelab.study.labelcurve import LabelCurveConfig

DATA = Path(__file__).parent / "data"


def test_a_0_1_finetune_config_loads_with_the_same_values():
    cfg = FinetuneConfig.load(DATA / "finetune-0.1.yaml")
    assert cfg.model == Path("/runs/r00") and cfg.seed == 2
    assert cfg.optim.lr == 1e-3 and cfg.peak_lr == 1e-3
    # The fine-tuning recipe of 0.1 (its fixed beta2, schedule, floor) is the section's default.
    o = cfg.optim
    assert (o.weight_decay, o.warmup_fraction, o.beta2, o.schedule, o.min_lr_ratio) == (
        0.01, 0.1, 0.999, "linear", 0.0,
    )  # fmt: skip
    assert cfg.method.method == "lora" and cfg.method.lora.r == 4 and cfg.method.lora.dropout == 0
    assert cfg.runtime.precision == "fp32" and not cfg.runtime.progress
    # Saved again in the new layout and read back: the same config (resume compares them).
    assert FinetuneConfig.from_dict(cfg.to_dict()) == cfg


def test_a_0_1_study_finetune_spec_loads_nested():
    spec = StudyFinetuneConfig.load(DATA / "study-finetune-spec-0.1.yaml")
    ft = spec.finetune
    assert spec.seeds == 2 and spec.key == "twitter-ner__adapter"
    assert ft.task.task == "twitter-ner" and ft.epochs == 2.0 and ft.optim.lr == 2e-3
    assert ft.method.adapter.reduction == 8 and ft.runtime.precision == "fp32"
    # What 0.1 left at its defaults keeps the study's defaults (not the class's).
    assert not ft.runtime.progress and not ft.runtime.tensorboard and ft.patience == 3


def _parse(cls, argv):
    parser = argparse.ArgumentParser()
    add_config_arguments(parser, cls)
    return config_from_args(cls, parser.parse_args(argv))


def test_old_flags_still_work_and_say_the_new_spelling(capsys):
    cfg = _parse(
        StudyFinetuneConfig,
        ["--task.task", "wiki-topics", "--lr", "0.02", "--epochs", "4", "--precision", "fp32",
         "--method.lora-r", "5", "--no-method.adapter-train-norms", "--method.method", "lora"],
    )  # fmt: skip
    ft = cfg.finetune
    assert ft.task.task == "wiki-topics" and ft.epochs == 4.0 and ft.method.method == "lora"
    assert ft.optim.lr == 0.02 and ft.runtime.precision == "fp32"
    assert ft.method.lora.r == 5 and ft.method.adapter.train_norms is False
    err = capsys.readouterr().err
    assert "--lr is deprecated; use --finetune.optim.lr" in err
    assert "--method.lora-r is deprecated; use --finetune.method.lora.r" in err
    curve = _parse(LabelCurveConfig, ["--model", "m", "--task.task", "wiki-topics"])
    assert curve.finetune.model == Path("m")
    assert "--model is deprecated; use --finetune.model" in capsys.readouterr().err


def test_new_flags_and_set_overrides():
    cfg = _parse(
        FinetuneConfig,
        ["--model", "m", "--task.task", "twitter-ner", "--optim.lr", "3e-4",
         "--method.prefix.num-virtual-tokens", "7", "--set", "weight_decay=0.05"],
    )  # fmt: skip
    assert cfg.optim.lr == 3e-4 and cfg.optim.weight_decay == 0.05
    assert cfg.method.prefix.num_virtual_tokens == 7 and cfg.method.prompt.num_virtual_tokens == 20


def test_one_spelling_of_flop_conventions():
    from scalelab.laws.table import flops_per_nd
    from scalelab.models.accounting import canonical_convention
    from scalelab.study.plan import PlanConfig

    assert canonical_convention("6nd") == "6n_kaplan" == canonical_convention("6N_Kaplan")
    assert PlanConfig(flops_convention="6nd", budget_flops=1e14).flops_convention == "6n_kaplan"
    assert flops_per_nd("6n_kaplan") == flops_per_nd("6nd") == flops_per_nd("6n_total") == 6.0
    assert flops_per_nd("8nd") == 8.0 and flops_per_nd("none") is None
    from scalelab.errors import UserError

    with pytest.raises(UserError, match="needs each model's shape"):
        flops_per_nd("chinchilla")


def test_old_import_paths():
    from scalelab.finetune.stage import FinetuneConfig as Old
    from scalelab.train.loop import OptimConfig, RuntimeConfig, TrainJob, run  # noqa: F401

    assert Old is FinetuneConfig
