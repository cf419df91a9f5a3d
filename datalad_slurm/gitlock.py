"""Where a dataset keeps our state, and the one lock every git write takes.

The registry and the lock file live in the dataset's own git directory
(``git rev-parse --absolute-git-dir``, so linked worktrees get their own),
never in the worktree.
"""

from __future__ import annotations

import glob
import os
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager

from filelock import FileLock, Timeout

from datalad_slurm.packwriter import TMP_PACK_PREFIX
from datalad_slurm.registry import REGISTRY_DIRNAME, Registry

__all__ = [
    "GitLockTimeout",
    "clear_interrupted_writes",
    "git_dir",
    "git_lock",
    "git_writes",
    "open_registry",
]

GitLockTimeout = Timeout


def git_dir(dataset_path: str) -> str:
    proc = subprocess.run(
        ["git", "rev-parse", "--absolute-git-dir"],
        cwd=dataset_path,
        capture_output=True,
        text=True,
        check=False,
    )
    if proc.returncode != 0:
        raise RuntimeError(
            f"{dataset_path} is not a git repository ({proc.stderr.strip()}); "
            "run the command inside a DataLad dataset"
        )
    return proc.stdout.strip()


def state_dir(dataset_path: str) -> str:
    path = os.path.join(git_dir(dataset_path), REGISTRY_DIRNAME)
    os.makedirs(path, exist_ok=True)
    return path


def git_lock(dataset_path: str, timeout: float = -1) -> FileLock:
    """The dataset's write lock; ``timeout=-1`` waits for as long as it takes."""
    return FileLock(os.path.join(state_dir(dataset_path), "git.lock"), timeout=timeout)


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


@contextmanager
def git_writes(dataset_path: str) -> Iterator[None]:
    """Mark git writes in progress; only call while holding :func:`git_lock`.

    If the process is killed inside, the marker stays, and the next holder of the
    lock knows that git lock files newer than the marker were left by that
    crash (see :func:`clear_interrupted_writes`).
    """
    marker = os.path.join(state_dir(dataset_path), _MARKER)
    with open(marker, "w", encoding="ascii") as stream:
        stream.write(f"{os.getpid()}\n")
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
    # half-written packs of ours (packwriter.install_pack); git's own tmp_pack_* are git's
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
