"""Fixtures of the unit tier (no Slurm)."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture
def spool(tmp_path: Path) -> Path:
    """An empty spool as an admin makes it: mode 1733, like /tmp without listing."""
    root = tmp_path / "spool"
    root.mkdir()
    root.chmod(0o1733)
    return root
