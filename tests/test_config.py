from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path
from typing import Literal

import pytest

from scalelab.cli.flags import add_config_arguments, config_from_args
from scalelab.config import Config
from scalelab.errors import UserError


@dataclasses.dataclass(kw_only=True)
class Inner(Config):
    lr: float = 3e-4
    """Peak learning rate."""
    schedule: Literal["cosine", "wsd"] = "cosine"
    """Decay shape."""


@dataclasses.dataclass(kw_only=True)
class Outer(Config):
    name: str = "run"
    """Run name."""
    steps: int = 10
    """Optimizer steps."""
    sources: tuple[str, ...] = ("a", "b")
    """Text sources."""
    bf16: bool = True
    """Use bf16 autocast."""
    out: Path | None = None
    """Output directory."""
    train: Inner = dataclasses.field(default_factory=Inner)
    """Training options."""

    def validate(self) -> None:
        if self.steps <= 0:
            raise UserError(f"steps must be positive, got {self.steps}")


def test_roundtrip_yaml_and_docs(tmp_path):
    cfg = Outer(name="x", train=Inner(lr=1e-3))
    text = cfg.to_yaml(tmp_path / "c.yaml")
    assert "# Peak learning rate." in text
    back = Outer.load(tmp_path / "c.yaml")
    assert back == cfg
    assert Outer.field_docs()["steps"] == "Optimizer steps."


def test_overrides_coerce_and_validate():
    cfg = Outer().with_overrides(["train.lr=1e-3", "steps=1e3", "sources=x,y,z", "bf16=false"])
    assert cfg.train.lr == 1e-3 and cfg.steps == 1000
    assert cfg.sources == ("x", "y", "z") and cfg.bf16 is False
    with pytest.raises(UserError, match="did you mean 'steps'"):
        Outer().with_overrides(["step=3"])
    with pytest.raises(UserError, match="not one of"):
        Outer().with_overrides(["train.schedule=linear"])
    with pytest.raises(UserError, match="steps must be positive"):
        Outer().with_overrides(["steps=0"])
    with pytest.raises(UserError, match="expected an integer"):
        Outer().with_overrides(["steps=abc"])


def test_cli_flags_priority(tmp_path):
    Outer(steps=5, name="file").to_yaml(tmp_path / "c.yaml")
    parser = argparse.ArgumentParser()
    add_config_arguments(parser, Outer)
    args = parser.parse_args(
        [
            "--config",
            str(tmp_path / "c.yaml"),
            "--set",
            "steps=7",
            "--train.lr",
            "2e-3",
            "--no-bf16",
        ]
    )
    cfg = config_from_args(Outer, args)
    assert cfg.name == "file" and cfg.steps == 7 and cfg.train.lr == 2e-3 and cfg.bf16 is False
    cfg = config_from_args(Outer, parser.parse_args(["--steps", "3"]))
    assert cfg.steps == 3 and cfg.name == "run"
    assert cfg.hash() != Outer().hash()
