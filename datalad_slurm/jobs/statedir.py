"""Where a dataset keeps our state, and the one lock every git write takes.

The registry and the lock file live in the dataset's own git directory
(``git rev-parse --absolute-git-dir``, so linked worktrees get their own),
never in the worktree.
"""

from __future__ import annotations

import contextlib
import glob
import os
from collections.abc import Iterator

from filelock import FileLock, Timeout

from datalad_slurm.errors import DataladSlurmError, os_advice
from datalad_slurm.git.pack import TMP_PACK_PREFIX
from datalad_slurm.git.runner import git_dir
from datalad_slurm.jobs.registry import Registry
from datalad_slurm.jobs.schema import REGISTRY_DIRNAME

__all__ = [
    "GitLockError",
    "GitLockTimeout",
    "clear_interrupted_writes",
    "git_lock",
    "git_writes",
    "open_registry",
]

GitLockTimeout = Timeout


class GitLockError(DataladSlurmError, RuntimeError):
    """Our state folder in the git directory, or the lock in it, cannot be used."""


def state_dir(dataset_path: str) -> str:
    """``<git dir>/datalad-slurm``, made if missing; it must be writable (lock, registry)."""
    path = os.path.join(git_dir(dataset_path), REGISTRY_DIRNAME)
    try:
        os.makedirs(path, exist_ok=True)
        writable = os.access(path, os.W_OK | os.X_OK)
    except OSError as exc:
        raise _not_writable(path, exc.strerror or str(exc)) from exc
    if not writable:
        raise _not_writable(path, "permission denied")
    return path


def _not_writable(path: str, why: str) -> GitLockError:
    return GitLockError(
        f"datalad-slurm cannot write {path}, where it keeps its state ({why})",
        path=path,
        advice="the dataset's .git folder must be writable for you: fix its permissions "
        "(or free space on its disk), or run the command as the dataset's owner",
    )


def git_lock(dataset_path: str, timeout: float = -1) -> FileLock:
    """The dataset's write lock; ``timeout=-1`` waits for as long as it takes."""
    path = os.path.join(state_dir(dataset_path), "git.lock")
    try:  # the folder is writable; a lock file there must be too, or the lock raises
        if os.path.lexists(path):
            os.close(os.open(path, os.O_RDWR))
    except OSError as exc:
        raise _not_writable(path, exc.strerror or str(exc)) from exc
    return FileLock(path, timeout=timeout)


def open_registry(dataset_path: str) -> Registry:
    return Registry.for_git_dir(git_dir(dataset_path))


#: git's own lock files that a killed git process can leave behind (relative to the git dir)
_GIT_LOCK_FILES = (
    "index.lock",
    "HEAD.lock",
    "packed-refs.lock",
    "annex/index.lock",
    # git maintenance run --auto, after the batch commits (a gc in the foreground may also
    # write the commit-graph)
    "objects/maintenance.lock",
    "objects/info/commit-graph.lock",
)
_MARKER = "git-writes-in-progress"


@contextlib.contextmanager
def git_writes(dataset_path: str) -> Iterator[None]:
    """Mark git writes in progress; only call while holding :func:`git_lock`.

    If the process is killed inside, the marker stays, and the next holder of the
    lock knows that git lock files newer than the marker were left by that
    crash (see :func:`clear_interrupted_writes`).
    """
    marker = os.path.join(state_dir(dataset_path), _MARKER)
    try:
        with open(marker, "w", encoding="ascii") as stream:
            stream.write(f"{os.getpid()}\n")
    except OSError as exc:  # a full disk; a marker left here would stand for a killed writer
        with contextlib.suppress(OSError):
            os.unlink(marker)
        raise GitLockError(
            f"datalad-slurm cannot write {marker} ({exc.strerror or exc})",
            path=marker,
            advice=os_advice(exc, os.path.dirname(marker)),
        ) from exc
    try:
        yield
    finally:  # any way out but a kill: git's own locks were released by git
        os.unlink(marker)


def clear_interrupted_writes(dataset_path: str) -> list[str]:
    """Remove git lock files that a killed writer left; returns what was removed.

    Only call while holding :func:`git_lock`.  A marker left by
    :func:`git_writes` means its writer died (it held this lock, which died
    with it); lock files created after the marker are that writer's.
    """
    gitdir = git_dir(dataset_path)
    marker = os.path.join(gitdir, REGISTRY_DIRNAME, _MARKER)
    try:
        since = os.stat(marker).st_mtime
    except FileNotFoundError:
        return []
    removed = []
    candidates = [os.path.join(gitdir, name) for name in _GIT_LOCK_FILES]
    for folder, _dirs, files in os.walk(os.path.join(gitdir, "refs")):
        candidates += [os.path.join(folder, f) for f in files if f.endswith(".lock")]
    # half-written packs of ours (git/pack.install_pack); git's own tmp_pack_* are git's
    candidates += glob.glob(os.path.join(gitdir, "objects", "pack", f"{TMP_PACK_PREFIX}*"))
    for path in candidates:
        try:
            if os.lstat(path).st_mtime >= since - 1:
                os.unlink(path)
                removed.append(os.path.relpath(path, gitdir))
        except FileNotFoundError:
            continue
    os.unlink(marker)
    return removed
