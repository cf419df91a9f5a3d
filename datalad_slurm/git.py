"""Small git plumbing calls that DataLad's API does not offer cheaply."""

from __future__ import annotations

import subprocess


class GitError(RuntimeError):
    """A git command failed; the message carries git's own words."""


def run_git(cwd: str, *args: str, stdin: str | None = None, check: bool = True) -> str:
    proc = subprocess.run(
        ["git", *args], cwd=cwd, input=stdin, capture_output=True, text=True, check=False
    )
    if check and proc.returncode != 0:
        raise GitError(f"git {' '.join(args[:2])} failed in {cwd}: {proc.stderr.strip()}")
    return proc.stdout
