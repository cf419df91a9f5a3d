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


def git_ident(cwd: str, which: str) -> bytes:
    """``GIT_AUTHOR_IDENT`` or ``GIT_COMMITTER_IDENT`` as git would write it into a commit."""
    return run_git(cwd, "var", which).strip().encode("utf-8", "surrogateescape")


def fast_import(cwd: str, stream: bytes, *options: str) -> None:
    """Feed a stream to ``git fast-import`` (raw dates, ``done`` at the end)."""
    proc = subprocess.run(
        ["git", "fast-import", "--quiet", "--force", "--done", "--date-format=raw", *options],
        cwd=cwd,
        input=stream,
        capture_output=True,
        check=False,
    )
    if proc.returncode != 0:
        raise GitError(f"git fast-import failed in {cwd}: {proc.stderr.decode(errors='replace')}")
