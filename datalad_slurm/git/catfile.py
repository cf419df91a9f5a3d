"""Reading objects through ``git cat-file --batch``: one object at a time from a process kept
open (:class:`ObjectReader`, for the tree editor, which learns what to read next from what it
read), or many named up front in one run (:func:`read_objects`).

Both read git's answer the same way (:func:`_header`): ``<sha> <type> <size>``, the content and
a newline, or ``<name> missing`` for an object that is not there.
"""

from __future__ import annotations

import subprocess
from collections.abc import Sequence

from datalad_slurm.git.runner import GitError, git_bytes


def _header(line: bytes) -> tuple[bytes, int] | None:
    """(type, size) from an answer's first line; None for a missing object."""
    parts = line.split()
    if len(parts) != 3:
        return None
    return parts[1], int(parts[2])


class ObjectReader:
    """Objects of the repository through one long-running ``git cat-file --batch``."""

    def __init__(self, repo: str) -> None:
        self.repo = repo
        self.proc: subprocess.Popen[bytes] | None = None

    def read(self, sha: str) -> tuple[bytes, bytes]:
        """(type, content) of an object."""
        if self.proc is None:
            self.proc = subprocess.Popen(
                ["git", "cat-file", "--batch"],
                cwd=self.repo,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
            )
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(sha.encode() + b"\n")
        self.proc.stdin.flush()
        found = _header(self.proc.stdout.readline())
        if found is None:
            raise GitError(f"object {sha} is missing from {self.repo}")
        kind, size = found
        content = self.proc.stdout.read(size + 1)[:size]
        return kind, content

    def close(self) -> None:
        if self.proc is not None:
            assert self.proc.stdin is not None
            self.proc.stdin.close()
            self.proc.wait()
            self.proc = None


def read_objects(repo: str, names: Sequence[str]) -> dict[str, bytes]:
    """The content of each object named (``<rev>:<path>`` or a sha) that exists, in one run."""
    if not names:
        return {}
    data = git_bytes(repo, ["cat-file", "--batch"], "".join(f"{n}\n" for n in names).encode())
    contents: dict[str, bytes] = {}
    position = 0
    for name in names:
        end = data.index(b"\n", position)
        found = _header(data[position:end])
        position = end + 1
        if found is not None:
            size = found[1]
            contents[name] = data[position : position + size]
            position += size + 1
    return contents
