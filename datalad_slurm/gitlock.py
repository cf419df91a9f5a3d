"""Where a dataset keeps our state, and the one lock every git write takes.

The registry and the lock file live in the dataset's own git directory
(``git rev-parse --absolute-git-dir``, so linked worktrees get their own),
never in the worktree.
"""

from __future__ import annotations

import os
import subprocess

from filelock import FileLock, Timeout

from datalad_slurm.registry import REGISTRY_DIRNAME, Registry

__all__ = ["GitLockTimeout", "git_dir", "git_lock", "open_registry"]

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
