"""Staging a batch of jobs' files: which job a path is (:class:`Owners`), the jobs the batch
must leave out (:func:`unfit`), staging a group and halving it when git fails
(:func:`stage_apart`), the written records found again (:func:`records_found`), and the
progress bar over it all (:class:`Progress`)."""

from __future__ import annotations

import logging
import os
import posixpath
from collections.abc import Callable, Sequence
from typing import Any

from datalad.log import log_progress

from datalad_slurm.commit.record import PreparedCommit
from datalad_slurm.commit.writer import (
    StagingProblem,
    WorktreeChanges,
    covering_paths,
    stage,
    worktree_changes,
)
from datalad_slurm.git.runner import GitError, is_utf8, run_git, shown

lgr = logging.getLogger("datalad.slurm.committer")


class Owners:
    """Which job a changed path belongs to: the job that declared it or one of its parents."""

    def __init__(self, prepared: Sequence[PreparedCommit]) -> None:
        self._by_path: dict[str, PreparedCommit] = {}
        for item in prepared:
            for path in item.paths:
                self._by_path.setdefault(path.rstrip("/") or ".", item)

    def of(self, path: str) -> PreparedCommit | None:
        candidate = path
        while True:
            owner = self._by_path.get(candidate or ".")
            if owner is not None or candidate in ("", "."):
                return owner
            candidate = posixpath.dirname(candidate)


class Progress:
    """DataLad's progress bar over a drain: one step per staged file, then the commits.

    Shown on a terminal only (``noninteractive_level`` keeps it out of logs otherwise).
    """

    def __init__(self, pid: str, jobs: int) -> None:
        self.pid, self.jobs, self.started = pid, jobs, False
        #: files staged but not yet shown; the bar moves in steps of ``step`` files (at most
        #: ~200 updates: each is a log record, 30,000 of them cost a second)
        self.unshown, self.step = 0, 1

    def _log(self, *args: Any, **kwargs: Any) -> None:
        log_progress(lgr.info, self.pid, *args, noninteractive_level=5, **kwargs)

    def start(self, files: int) -> None:
        self.started = True
        self.step = max(1, files // 200)
        self._log(
            "Committing %d Slurm jobs",
            self.jobs,
            label=f"Committing {self.jobs} Slurm jobs",
            total=files + self.jobs,
            unit=" steps",
        )

    def file_done(self) -> None:
        self.unshown += 1
        if self.unshown >= self.step:
            self._show_files()

    def _show_files(self) -> None:
        if self.unshown:
            self._log("Staged files", update=self.unshown, increment=True)
            self.unshown = 0

    def commits_done(self) -> None:
        self._show_files()
        self._log("Wrote the commits", update=self.jobs, increment=True)

    def end(self) -> None:
        if self.started:
            self._log("Committed %d Slurm jobs", self.jobs)


#: why a job whose changes include a name that is not UTF-8 is not committed
NOT_UTF8 = (
    "its name is not valid UTF-8, which datalad save cannot commit either (it reports 'File "
    "unknown to git'); rename it"
)


def unfit(
    dataset_path: str, owners: Owners, found: WorktreeChanges
) -> tuple[dict[int, str], set[int]]:
    """Jobs that the batch must leave out: those with a name that is not UTF-8 (and why), and
    those that made a git repository (for ``datalad save``, which registers it)."""
    refused: dict[int, str] = {}
    nested: set[int] = set()
    untracked = set(found.untracked)
    for path in [*found.to_add, *found.deleted]:
        owner = owners.of(path)
        if owner is None or owner.job.id in refused:
            continue
        if not is_utf8(path):
            refused[owner.job.id] = f"{shown(path)}: {NOT_UTF8}"
        elif path.endswith("/") and path in untracked:
            # git lists a repository inside the worktree as a folder: "path/"
            if has_commit(os.path.join(dataset_path, path)):
                nested.add(owner.job.id)
            else:
                refused[owner.job.id] = (
                    f"{shown(path)} is a git repository without a commit, which datalad save "
                    "cannot register as a subdataset either; commit in it, or remove it"
                )
    nested -= set(refused)
    return refused, nested


def has_commit(repository: str) -> bool:
    return bool(run_git(repository, "rev-parse", "--verify", "-q", "HEAD", check=False).strip())


def stage_apart(
    dataset_path: str,
    pending: WorktreeChanges,
    owners: Owners,
    group: Sequence[PreparedCommit],
    annex: bool,
    on_file: Callable[[], None],
) -> tuple[list[StagingProblem], dict[int, str]]:
    """Stage the changes of a group of jobs; if git fails, halve the group until the job(s)
    it fails for are found: one job's failure is that job's (a job's id, why), the others
    are staged all the same."""
    ids = {item.job.id for item in group}

    def mine(paths: Sequence[str]) -> list[str]:
        return [path for path in paths if (owner := owners.of(path)) and owner.job.id in ids]

    changes = WorktreeChanges(mine(pending.to_add), mine(pending.deleted), mine(pending.untracked))
    try:
        return stage(dataset_path, changes, annex, on_file), {}
    except (GitError, OSError) as exc:
        if len(group) == 1:
            return [], {group[0].job.id: f"its files could not be staged ({exc})"}
        lgr.debug("staging %d jobs at once failed, staging them apart: %s", len(group), exc)
    half = len(group) // 2
    problems, failed = stage_apart(dataset_path, pending, owners, group[:half], annex, on_file)
    more, failed_too = stage_apart(dataset_path, pending, owners, group[half:], annex, on_file)
    return problems + more, {**failed, **failed_too}


def records_found(dataset_path: str, prepared: Sequence[PreparedCommit]) -> WorktreeChanges:
    """The jobs' env.json files as git sees them now that they are written (new, or changed
    where an earlier finish of the same job id left one)."""
    wanted = {item.files.env_json for item in prepared}
    if not wanted:
        return WorktreeChanges([], [])
    found = worktree_changes(dataset_path, covering_paths(sorted(wanted)))
    return WorktreeChanges(
        [p for p in found.to_add if p in wanted], [], [p for p in found.untracked if p in wanted]
    )
