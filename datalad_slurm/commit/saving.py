"""One job committed through ``datalad save``: jobs whose paths lie in a subdataset or that
made a git repository (save registers it), and datasets on an adjusted branch."""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

from datalad_slurm.commit.outcomes import (
    Committed,
    NotCommitted,
    Outcome,
    Reported,
    missing_outputs,
)
from datalad_slurm.commit.record import PreparedCommit
from datalad_slurm.commit.recovery import find_commits_with_tokens, sync_adjusted_branch
from datalad_slurm.commit.scratch import clear_scratch
from datalad_slurm.commit.staging import NOT_UTF8
from datalad_slurm.commit.writer import advance_head, worktree_changes, write_commits
from datalad_slurm.git.runner import GitError, is_utf8, run_git, shown
from datalad_slurm.jobs.registry import Registry
from datalad_slurm.paths import lies_in


def commit_with_save(ds: Any, registry: Registry, prepared: PreparedCommit) -> Iterator[Outcome]:
    """One job through ``datalad save`` (subdatasets, adjusted branches); save's results, then
    the job's outcome."""
    dataset_path = str(ds.path)
    job = prepared.job
    try:
        found = worktree_changes(dataset_path, prepared.paths)
    except GitError as exc:
        yield NotCommitted(dataset_path, job, str(exc))
        return
    undecodable = [path for path in [*found.to_add, *found.deleted] if not is_utf8(path)]
    if undecodable:
        yield NotCommitted(dataset_path, job, f"{shown(undecodable[0])}: {NOT_UTF8}")
        return
    tracked = set(
        run_git(dataset_path, "--literal-pathspecs", "ls-files", "-z", "--", *prepared.paths).split(
            "\0"
        )
    )
    paths = [
        os.path.join(dataset_path, p)
        for p in prepared.paths
        if os.path.lexists(os.path.join(dataset_path, p))
        or any(lies_in(t, p.rstrip("/")) for t in tracked if t)
    ]
    before = ds.repo.get_hexsha()
    registry.mark_committing_many([job])
    failures: list[str] = []
    for result in ds.save(
        path=paths,
        message=prepared.message,
        on_failure="ignore",
        return_type="generator",
        result_renderer="disabled",
    ):
        if result.get("status") in ("error", "impossible"):
            failures.append(f"{result.get('path')}: {result.get('message')}")
        yield Reported(result)
    after = ds.repo.get_hexsha()
    if after == before:
        # nothing changed on disk that git sees: still record the run
        empty = write_commits(dataset_path, before, [(prepared.message, [])])[0]
        advance_head(dataset_path, before, empty, "datalad-slurm: finish")
        # on an adjusted branch, as save does: the commit goes to the corresponding branch
        sync_adjusted_branch(ds.repo)
    # on an adjusted branch the commit is not HEAD: save's sync moved it to the corresponding
    # branch (``main``) and rebuilt the adjusted branch on top of it
    sha = find_commits_with_tokens(dataset_path, {job.token}, {before}).get(job.token)
    if sha is None:
        registry.reopen_many([job])
        yield NotCommitted(dataset_path, job, "; ".join(failures) or "datalad save made no commit")
        return
    warnings = clear_scratch(dataset_path, job, prepared.brought_back)
    registry.mark_finished_many([(job, sha)])
    yield Committed(dataset_path, job, prepared.status, sha)
    yield from missing_outputs(dataset_path, job, prepared.missing_outputs)
    yield from warnings
