"""Fixtures of the unit tier (no Slurm)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest


@pytest.fixture
def spool(tmp_path: Path) -> Path:
    """An empty spool as an admin makes it: mode 1733, like /tmp without listing."""
    root = tmp_path / "spool"
    root.mkdir()
    root.chmod(0o1733)
    return root


def git(repo: Path, *args: str) -> str:
    return subprocess.run(
        ["git", *args], cwd=repo, capture_output=True, text=True, check=True
    ).stdout


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    """A plain git repository with an identity and one commit: files kept, gone, .gitignore."""
    path = tmp_path / "repo"
    path.mkdir()
    git(path, "init", "-q")
    git(path, "config", "user.name", "T")
    git(path, "config", "user.email", "t@example.org")
    (path / "kept").write_text("old\n")
    (path / "gone").write_text("bye\n")
    (path / ".gitignore").write_text("*.tmp\n")
    git(path, "add", ".")
    git(path, "commit", "-q", "-m", "base")
    return path
