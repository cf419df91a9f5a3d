"""Dataset-relative path normalisation and the overlap rule for job outputs.

Every output a job claims is stored in one frame of reference: a POSIX path
relative to the dataset root, with ``.`` for the root itself.  Two claims
conflict when they are equal or one lies inside the other.
"""

from __future__ import annotations

import os
import posixpath
from collections.abc import Iterable, Iterator

from datalad_slurm.errors import DataladSlurmError


class PathOutsideDatasetError(DataladSlurmError, ValueError):
    """A path given by the user does not lie inside the dataset."""


def normalise(path: str, dataset_root: str, cwd: str | None = None) -> str:
    """Return ``path`` relative to ``dataset_root`` in canonical form.

    ``path`` may be relative to ``cwd`` (default: the current directory) or
    absolute, may contain ``.``, ``..`` and doubled slashes, and may reach the
    dataset through a symlinked root.  The last component is never resolved,
    because an annexed file is itself a symlink into ``.git/annex``.
    """
    if not path:
        raise ValueError("an empty path was given")
    base = cwd if cwd is not None else os.getcwd()
    absolute = os.path.normpath(os.path.join(base, path))
    relative = _relative_to_root(absolute, dataset_root)
    if relative is None:
        raise PathOutsideDatasetError(
            f"{path!r} is not inside the dataset at {dataset_root}; give a path inside the dataset"
        )
    if relative == ".git" or relative.startswith(".git/"):
        raise PathOutsideDatasetError(
            f"{path!r} lies inside the dataset's .git directory; outputs must be worktree paths"
        )
    return relative


def _relative_to_root(absolute: str, dataset_root: str) -> str | None:
    roots = [os.path.normpath(dataset_root), os.path.realpath(dataset_root)]
    candidates = [absolute]
    # the directory part may reach the dataset through a symlink
    parent, name = os.path.split(absolute)
    resolved = os.path.join(os.path.realpath(parent), name) if name else os.path.realpath(parent)
    if resolved != absolute:
        candidates.append(resolved)
    for candidate in candidates:
        for root in roots:
            if candidate == root:
                return "."
            if candidate.startswith(root.rstrip("/") + "/"):
                return posixpath.normpath(
                    candidate[len(root.rstrip("/")) + 1 :].replace(os.sep, "/")
                )
    return None


def ancestors(path: str) -> Iterator[str]:
    """Yield every proper ancestor of a normalised path, ``.`` included."""
    if path == ".":
        return
    parent = posixpath.dirname(path)
    while parent:
        yield parent
        parent = posixpath.dirname(parent)
    yield "."


def overlaps(first: str, second: str) -> bool:
    """True when two normalised paths are equal or one contains the other."""
    if first == second or "." in (first, second):
        return True
    return second.startswith(first + "/") or first.startswith(second + "/")


def collapse(paths: Iterable[str]) -> list[str]:
    """Sorted unique paths with those inside another given path dropped."""
    result: list[str] = []
    for path in sorted(set(paths), key=lambda p: (p.count("/"), p)):
        if not any(overlaps(kept, path) for kept in result):
            result.append(path)
    return sorted(result)


def relative_to_pwd(path: str, pwd: str) -> str:
    """Express a dataset-relative path relative to a dataset-relative directory."""
    return posixpath.relpath(path, pwd)


def lies_in(path: str, folder: str) -> bool:
    """True when a normalised path is ``folder`` or lies inside it."""
    return folder in (".", path) or path.startswith(folder + "/")
