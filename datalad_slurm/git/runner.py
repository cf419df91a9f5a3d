"""The one way we run git: :func:`run_git` (text) and :func:`git_bytes` (bytes in and out).

Both raise :class:`GitError`, which carries the command, git's exit code and its stderr.
Plumbing only: nothing here knows about jobs, records or annex.
"""

from __future__ import annotations

import subprocess

from datalad_slurm.errors import DataladSlurmError


class GitError(DataladSlurmError, RuntimeError):
    """A git command failed; the message carries git's own words.

    ``cmd`` is the command (None where the failure is not one command's exit, such as a
    missing object), ``code`` its exit code and ``stderr`` what it wrote there.
    """

    def __init__(
        self,
        message: str,
        *,
        cmd: list[str] | None = None,
        code: int | None = None,
        stderr: str = "",
        path: str | None = None,
        advice: str | None = None,
    ) -> None:
        super().__init__(message, path=path, advice=advice)
        self.cmd = cmd
        self.code = code
        self.stderr = stderr


def git_bytes(
    cwd: str, args: list[str], stdin: bytes | None = None, what: str | None = None
) -> bytes:
    """``git ARGS`` with ``stdin``; its stdout, or :class:`GitError` when it exits non-zero.

    ``what`` names the command in the message (default: ``git`` and its first two words).
    """
    cmd = ["git", *args]
    try:
        proc = subprocess.run(cmd, cwd=cwd, input=stdin, capture_output=True, check=False)
    except OSError as exc:  # the folder is gone, or git is
        raise GitError(
            f"{what or 'git ' + ' '.join(args[:2])} could not run in {cwd}: {exc.strerror or exc}",
            cmd=cmd,
            stderr=str(exc),
        ) from exc
    if proc.returncode != 0:
        why = proc.stderr.decode("utf-8", "replace").strip()
        raise GitError(
            f"{what or 'git ' + ' '.join(args[:2])} failed in {cwd}: {why}",
            cmd=cmd,
            code=proc.returncode,
            stderr=why,
        )
    return proc.stdout


def git_dir(dataset_path: str) -> str:
    """The absolute git directory of the repository at ``dataset_path``."""
    try:
        return git_bytes(dataset_path, ["rev-parse", "--absolute-git-dir"]).decode().strip()
    except GitError as exc:
        raise GitError(
            f"{dataset_path} is not a git repository ({exc.stderr})",
            cmd=exc.cmd,
            code=exc.code,
            stderr=exc.stderr,
            path=dataset_path,
            advice="run the command inside a DataLad dataset",
        ) from exc


def run_git(cwd: str, *args: str, stdin: str | None = None, check: bool = True) -> str:
    """Git's output; read as bytes, so that any file name comes through.

    Names are bytes to git: one that is not UTF-8 (``b"caf\\xe9"``) arrives as the string
    ``os.fsdecode`` makes of it (undecodable bytes as surrogates), which ``os.fsencode`` and
    :func:`encode` turn back into the same bytes; ``stdin`` is encoded the same way.
    """
    data = None if stdin is None else encode(stdin)
    if check:
        return git_bytes(cwd, list(args), data).decode("utf-8", "surrogateescape")
    proc = subprocess.run(["git", *args], cwd=cwd, input=data, capture_output=True, check=False)
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
    git_bytes(
        cwd,
        ["fast-import", "--quiet", "--force", "--done", "--date-format=raw", *options],
        stream,
        what="git fast-import",
    )
