"""Atomic writes: all or nothing, and ordinary permissions on what lands."""

from __future__ import annotations

import os
import stat

import pytest

from scalelab.utils.io import atomic_dir, atomic_write_text


def test_atomic_write_replaces_and_uses_umask_modes(tmp_path):
    path = tmp_path / "report.html"
    atomic_write_text(path, "one")
    atomic_write_text(path, "two")
    assert path.read_text() == "two"
    mask = os.umask(0o022)
    os.umask(mask)
    assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~mask  # not mkstemp's private 0600
    assert [p.name for p in tmp_path.iterdir()] == ["report.html"]  # no temporary left


def test_atomic_dir_all_or_nothing(tmp_path):
    target = tmp_path / "ckpt"
    with atomic_dir(target) as d:
        (d / "a").write_text("x")
    assert (target / "a").read_text() == "x"
    mask = os.umask(0o022)
    os.umask(mask)
    assert stat.S_IMODE(target.stat().st_mode) == 0o777 & ~mask
    with pytest.raises(RuntimeError), atomic_dir(target) as d:
        (d / "a").write_text("half")
        raise RuntimeError("crash")
    assert (target / "a").read_text() == "x"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt"]
