"""The package layout as rules: which package may import which, and how large code may grow.

The arrows point down only (README "Architecture"):
cli -> study -> {finetune, train, laws} -> {models, data} -> {config, errors, utils}.
A stage package never imports ``cli`` or ``study``; ``finetune`` never imports ``laws``;
``laws`` imports no torch; only ``cli`` knows argparse. These tests read the sources (every
``import`` statement, also those inside functions), so a lazy import cannot hide a loop.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "scalelab"
BASE = {"config", "errors", "utils", "__init__"}

# What each top-level part of scalelab may import (besides itself and BASE).
ALLOWED: dict[str, set[str]] = {
    "__init__": set(),
    "config": set(),
    "errors": set(),
    "utils": set(),
    "data": set(),
    "models": set(),
    "train": {"data", "models"},
    "laws": {"models"},
    "finetune": {"train", "models", "data"},
    "evals": {"models", "data", "train"},
    "study": {"finetune", "evals", "train", "laws", "models", "data"},
    "cli": {"study", "finetune", "evals", "train", "laws", "models", "data"},
    "__main__": {"cli"},
}
NO_TORCH = {"laws", "config", "errors", "cli"}
TORCH_LIBS = {"torch", "transformers", "peft", "safetensors", "accelerate"}
MAX_FUNCTION_LINES = 80
MAX_FILE_LINES = 600


def _modules() -> list[Path]:
    return sorted(SRC.rglob("*.py"))


def _part(path: Path) -> str:
    rel = path.relative_to(SRC)
    return rel.parts[0] if len(rel.parts) > 1 else rel.stem


def _imports(path: Path) -> list[tuple[int, str]]:
    """Every module ``path`` imports (absolute names), with its line."""
    tree = ast.parse(path.read_text(), filename=str(path))
    package = ".".join(("scalelab", *path.relative_to(SRC).parent.parts))
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out.extend((node.lineno, a.name) for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: resolve against this package
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                name = ".".join(base + ([node.module] if node.module else []))
            else:
                name = node.module or ""
            out.append((node.lineno, name))
    return out


def test_every_package_is_known_to_the_rules():
    parts = {_part(p) for p in _modules()}
    assert parts <= set(ALLOWED), f"add {parts - set(ALLOWED)} to ALLOWED"


def test_imports_point_down_only():
    bad = []
    for path in _modules():
        part = _part(path)
        allowed = ALLOWED[part] | BASE | {part}
        for line, name in _imports(path):
            bits = name.split(".")
            if bits[0] != "scalelab" or len(bits) == 1:
                continue
            if bits[1] not in allowed:
                bad.append(f"{path.relative_to(SRC)}:{line} imports {name}")
    assert not bad, "imports against the layout:\n" + "\n".join(bad)


def test_only_the_cli_knows_argparse_and_nothing_imports_the_cli():
    bad = []
    for path in _modules():
        part = _part(path)
        for line, name in _imports(path):
            if name == "argparse" and part != "cli":
                bad.append(f"{path.relative_to(SRC)}:{line} imports argparse")
            if name.startswith("scalelab.cli") and part not in ("cli", "__main__"):
                bad.append(f"{path.relative_to(SRC)}:{line} imports {name}")
    assert not bad, "\n".join(bad)


def test_laws_and_the_cli_do_not_import_torch():
    bad = [
        f"{path.relative_to(SRC)}:{line} imports {name}"
        for path in _modules()
        if _part(path) in NO_TORCH
        for line, name in _imports(path)
        if name.split(".")[0] in TORCH_LIBS
    ]
    assert not bad, "\n".join(bad)


def _long_functions(path: Path) -> list[str]:
    lines = path.read_text().splitlines()
    tree = ast.parse("\n".join(lines))
    out = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            continue
        length = node.end_lineno - node.lineno + 1
        if length <= MAX_FUNCTION_LINES:
            continue
        body = lines[node.lineno - 1 : node.end_lineno]
        # A long function must say why, in a comment starting "# Long:".
        if not any(line.strip().startswith("# Long:") for line in body):
            out.append(f"{path.relative_to(SRC)}:{node.lineno} {node.name} ({length} lines)")
    return out


def test_no_function_is_long_without_saying_why():
    long = [entry for path in _modules() for entry in _long_functions(path)]
    assert not long, f"functions over {MAX_FUNCTION_LINES} lines:\n" + "\n".join(long)


def test_no_file_is_over_the_limit():
    big = [
        f"{path.relative_to(SRC)} ({n} lines)"
        for path in _modules()
        if (n := len(path.read_text().splitlines())) > MAX_FILE_LINES
    ]
    assert not big, f"files over {MAX_FILE_LINES} lines:\n" + "\n".join(big)


@pytest.mark.parametrize(
    "old",
    ["scalelab/data/commands.py", "scalelab/report", "scalelab/finetune/labelcurve.py"],
)
def test_moved_modules_are_gone(old):
    assert not (SRC.parent / old).exists()
