"""Every subcommand's --help renders and shows an example; the CLI maps errors to one line."""

from __future__ import annotations

import pytest

from scalelab.cli import build_parser, main


def _commands():
    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    out = []
    for name, p in sub.choices.items():
        nested = [
            a for a in p._actions if getattr(a, "choices", None) and a.dest.endswith("_command")
        ]
        if nested:
            out += [[name, n] for n in nested[0].choices]
        else:
            out.append([name])
    return out


def test_all_commands_present():
    names = {c[0] for c in _commands()}
    assert names >= {"demo", "plan", "study", "report", "data", "pretrain", "fit", "predict", "optimal",
                     "plot", "finetune", "evaluate", "infer", "labelcurve", "sizes"}  # fmt: skip


@pytest.mark.parametrize("command", _commands(), ids=lambda c: " ".join(c))
def test_help_renders_with_an_example(command, capsys):
    with pytest.raises(SystemExit) as exc:
        main([*command, "--help"])
    assert exc.value.code == 0
    text = capsys.readouterr().out
    assert "example" in text and "scalelab" in text


def test_no_command_prints_help(capsys):
    assert main([]) == 0
    assert "COMMAND" in capsys.readouterr().out
