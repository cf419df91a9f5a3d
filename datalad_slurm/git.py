"""Small git plumbing calls that DataLad's API does not offer cheaply."""

from __future__ import annotations

import subprocess

from datalad_slurm.errors import DataladSlurmError


class GitError(DataladSlurmError, RuntimeError):
    """A git command failed; the message carries git's own words."""


def run_git(cwd: str, *args: str, stdin: str | None = None, check: bool = True) -> str:
    """Git's output; read as bytes, so that any file name comes through.

    Names are bytes to git: one that is not UTF-8 (``b"caf\\xe9"``) arrives as the string
    ``os.fsdecode`` makes of it (undecodable bytes as surrogates), which ``os.fsencode`` and
    :func:`encode` turn back into the same bytes; ``stdin`` is encoded the same way.
    """
    proc = subprocess.run(
        ["git", *args],
        cwd=cwd,
        input=None if stdin is None else encode(stdin),
        capture_output=True,
        check=False,
    )
    if check and proc.returncode != 0:
        why = proc.stderr.decode("utf-8", "replace").strip()
        raise GitError(f"git {' '.join(args[:2])} failed in {cwd}: {why}")
    return proc.stdout.decode("utf-8", "surrogateescape")


def encode(text: str) -> bytes:
    """A name (or git's output) as the bytes git uses: undecodable bytes restored."""
    return text.encode("utf-8", "surrogateescape")


def is_utf8(name: str) -> bool:
    """Whether a name read from git was valid UTF-8 (DataLad cannot handle it otherwise)."""
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def shown(name: str) -> str:
    """A name fit for a message: bytes that are not UTF-8 written as ``\\xe9``."""
    return encode(name).decode("utf-8", "backslashreplace")


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
