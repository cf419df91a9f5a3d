"""Turning finished jobs into commits: one commit per job, only its own files, many jobs at once.

All jobs of a drain are committed together (:mod:`datalad_slurm.commit.writer`):
their files are staged at once (fast annexing, one ``git annex add`` /
``git add``), then one pack of ours holds one commit per job with its
``[DATALAD SLURM RUN]`` record, and HEAD moves once.  Jobs whose paths lie in a subdataset, and
datasets on a git-annex adjusted branch, take the slower path of one
``datalad save`` per job, which knows how to record subdataset states, and on an adjusted
branch moves each commit to the corresponding branch (``git annex sync``): the job's commit is
then found below HEAD, not at it.

Registry rows go to ``committing`` before anything is staged and to
``finished`` after HEAD moved; a crash in between is repaired by
:func:`datalad_slurm.commit.recovery.recover`, which looks for the jobs' tokens in the
history, so no job is committed twice and none is dropped.  Callers hold the dataset's git lock.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Collection, Iterator, Sequence
from typing import Any

from datalad_slurm.commit import branches as jobbranches
from datalad_slurm.commit.outcomes import (
    Committed,
    NotCommitted,
    Outcome,
    Warned,
    missing_outputs,
    not_restored,
    saved,
)
from datalad_slurm.commit.record import PreparedCommit, plan_commit, write_record
from datalad_slurm.commit.saving import commit_with_save
from datalad_slurm.commit.scratch import bring_back, clear_scratch
from datalad_slurm.commit.staging import Owners, Progress, records_found, stage_apart, unfit
from datalad_slurm.commit.writer import (
    WorktreeChanges,
    advance_head,
    chunked,
    covering_paths,
    relock,
    run_auto_maintenance,
    staged_changes_from,
    unlocked_since,
    worktree_changes,
    write_commits,
)
from datalad_slurm.errors import DataladSlurmError
from datalad_slurm.git.runner import GitError, run_git, shown
from datalad_slurm.git.trees import Change
from datalad_slurm.globs import is_glob, reserved_path
from datalad_slurm.jobs.job import Job
from datalad_slurm.jobs.pipelines import dependants
from datalad_slurm.jobs.registry import Registry
from datalad_slurm.jobs.statedir import git_writes
from datalad_slurm.paths import overlaps
from datalad_slurm.slurm.state import JobStatus
from datalad_slurm.slurm.usage import Usage


def commit_jobs(
    ds: Any,
    registry: Registry,
    finished: Sequence[tuple[Job, JobStatus]],
    message: str | None = None,
    branches: str | None = None,
    usage: Usage | None = None,
) -> Iterator[Outcome]:
    """Commit each job with its record; one outcome per job (:mod:`datalad_slurm.commit.outcomes`:
    committed, or not and why), with the warnings and other results around them.

    A job that cannot be committed is :class:`NotCommitted` and stays open;
    the others are committed all the same, except the jobs that wait for it
    (``jobs/pipelines.py``: the jobs come in dependency order, and a job is never
    committed before one it waits for).  ``branches``: ``branches`` or ``octopus``
    (``finish --branches``/``--octopus``, :mod:`datalad_slurm.commit.branches`).
    ``usage``: accounting's answer about what the jobs used, asked before; the batch
    stages the jobs' outputs while it comes, and writes the records (env.json, message)
    after.
    """
    dataset_path = str(ds.path)
    prepared: list[PreparedCommit] = []
    try:
        gone = _deleted_under_globs(dataset_path, [job for job, _ in finished])
    except GitError as exc:
        for job, _ in finished:
            yield NotCommitted(dataset_path, job, str(exc))
        return
    failed: set[int] = set()
    for job, status in finished:
        upstream = _upstream_of(job, failed)
        if upstream:
            failed.add(job.id)
            yield NotCommitted(dataset_path, job, upstream)
            continue
        try:
            brought = bring_back(dataset_path, job, status)
            item = plan_commit(
                dataset_path, job, status, gone, brought.missing if brought else None
            )
        except DataladSlurmError as exc:  # the dataset moved,
            # its scratch folder (--alt-dir) is not there or could not be copied back
            failed.add(job.id)
            yield NotCommitted(dataset_path, job, str(exc))
            continue
        item.brought_back = brought.paths if brought else []
        prepared.append(item)
    if not prepared:
        return

    def record(item: PreparedCommit) -> str | None:
        """Write the job's env.json and message; why that failed, or None."""
        if usage is not None:
            item.status = usage.added_to(item.status)
        try:
            write_record(dataset_path, item, message)
        except DataladSlurmError as exc:
            return str(exc)
        return None

    head = _head(dataset_path)
    annex = _is_annex(ds)
    if head is None or (annex and ds.repo.is_managed_branch()):
        batch, one_by_one = [], prepared
    else:
        submodules = _submodule_paths(dataset_path)
        slow = {p.job.id for p in prepared if _touches_submodule(p.paths, submodules)}
        # a job that waits for one committed through datalad save goes that way too, after it
        slow |= dependants(slow, [p.job for p in prepared])
        batch = [p for p in prepared if p.job.id not in slow]
        one_by_one = [p for p in prepared if p.job.id in slow]
    if branches:
        for item in one_by_one:
            failed.add(item.job.id)
            yield NotCommitted(dataset_path, item.job, _NO_BRANCH)
        one_by_one = []
    with git_writes(dataset_path):
        if batch:
            assert head is not None
            # jobs that made a git repository go through datalad save, which registers it as
            # a subdataset
            later: list[PreparedCommit] = []
            yield from _commit_batch(
                dataset_path, registry, batch, head, annex, later, failed, record, branches
            )
            if branches:
                for item in later:
                    failed.add(item.job.id)
                    yield NotCommitted(dataset_path, item.job, _NO_BRANCH)
                later = []
            # in registry order again: the dependency order
            one_by_one = sorted([*one_by_one, *later], key=lambda p: p.job.id)
            # inside git_writes: if finish is killed meanwhile, the next run removes the
            # objects/maintenance.lock it leaves (a gc that detached is not in our process
            # group and ends on its own); datalad save's commits ran it for the others
            run_auto_maintenance(dataset_path)
        for item in one_by_one:
            upstream = _upstream_of(item.job, failed)
            if upstream:
                failed.add(item.job.id)
                yield NotCommitted(dataset_path, item.job, upstream)
                continue
            why = record(item)
            if why is not None:
                failed.add(item.job.id)
                yield NotCommitted(dataset_path, item.job, why)
                continue
            for outcome in commit_with_save(ds, registry, item):
                if isinstance(outcome, NotCommitted):
                    failed.add(item.job.id)
                yield outcome


def _upstream_of(job: Job, failed: Collection[int]) -> str | None:
    """Why a job is not committed when a job it waits for was not: None if none was not."""
    upstream = [job_id for row, job_id in job.depends_on if row in failed]
    if not upstream:
        return None
    return (
        f"it read the outputs of job(s) {', '.join(map(str, upstream))}, which could not be "
        "committed (see there), and is committed only after them"
    )


#: why a job that needs ``datalad save`` cannot go onto a branch of its own
_NO_BRANCH = (
    "with --branches or --octopus only jobs of this dataset's own files on a plain branch can "
    "be committed (this one's paths lie in a subdataset or make a git repository, or the "
    "dataset is on an adjusted branch); run 'datalad finish' without them for this job"
)


def _deleted_under_globs(dataset_path: str, jobs: Sequence[Job]) -> set[str]:
    """Tracked files gone from disk in the folders the jobs' output globs hold (one
    ``git ls-files -d`` for all; none without globs): a glob output covers files the job
    deleted, as ``datalad run`` commits them."""
    folders = covering_paths(reserved_path(o) for job in jobs for o in job.outputs if is_glob(o))
    found: set[str] = set()
    for chunk in chunked(folders) if folders else []:
        listing = run_git(dataset_path, "--literal-pathspecs", "ls-files", "-d", "-z", "--", *chunk)
        found.update(path for path in listing.split("\0") if path)
    return found


def _is_annex(ds: Any) -> bool:
    from datalad.support.annexrepo import AnnexRepo

    return isinstance(ds.repo, AnnexRepo)


def _head(dataset_path: str) -> str | None:
    out = run_git(dataset_path, "rev-parse", "--verify", "-q", "HEAD", check=False).strip()
    return out or None


def _submodule_paths(dataset_path: str) -> list[str]:
    if not os.path.exists(os.path.join(dataset_path, ".gitmodules")):
        return []
    out = run_git(
        dataset_path, "config", "-f", ".gitmodules", "--get-regexp", r"\.path$", check=False
    )
    return [line.split(" ", 1)[1] for line in out.splitlines() if " " in line]


def _touches_submodule(paths: Sequence[str], submodules: Sequence[str]) -> bool:
    return any(path == "" or overlaps(path, sub) for path in paths for sub in submodules)


def _commit_batch(
    dataset_path: str,
    registry: Registry,
    prepared: list[PreparedCommit],
    head: str,
    annex: bool,
    later: list[PreparedCommit],
    not_committed: set[int],
    record: Callable[[PreparedCommit], str | None],
    branches: str | None = None,
) -> Iterator[Outcome]:
    """Commit the jobs in one go; jobs that made a git repository are put in ``later``, and
    so are the jobs that wait for them.  The row ids of the jobs that are not committed are
    added to ``not_committed``.  ``branches``: each job on a branch of its own
    (``branches``), then merged (``octopus``).

    The jobs' own files are staged first, then ``record`` writes each job's env.json and
    message (what accounting says of its usage may arrive meanwhile), which are staged after.
    """
    if branches == "branches":
        free = yield from jobbranches.without_free_branch(dataset_path, prepared)
        not_committed.update(item.job.id for item in prepared if item not in free)
        prepared = free
    owners = Owners(prepared)
    records = {item.files.env_json for item in prepared}
    paths = sorted({path for item in prepared for path in item.paths})
    # git is asked about a few folders that cover every job's paths; what it finds there that
    # is no job's stays as it is
    pathspecs = covering_paths(paths)
    try:
        found = worktree_changes(dataset_path, pathspecs)
    except (GitError, OSError) as exc:
        for item in prepared:
            not_committed.add(item.job.id)
            yield NotCommitted(dataset_path, item.job, str(exc))
        return
    refused, nested = unfit(dataset_path, owners, found)
    for item in prepared:
        upstream = _upstream_of(item.job, refused)
        if item.job.id not in refused and upstream:
            refused[item.job.id] = upstream
    nested |= dependants(nested, [item.job for item in prepared]) - set(refused)
    later.extend(item for item in prepared if item.job.id in nested)
    for item in prepared:
        if item.job.id in refused:
            not_committed.add(item.job.id)
            yield NotCommitted(dataset_path, item.job, refused[item.job.id])
    prepared = [item for item in prepared if item.job.id not in refused.keys() | nested]
    if not prepared:
        return
    jobs = [item.job for item in prepared]
    registry.mark_committing_many(jobs)
    failed: dict[int, str] = {}
    progress = Progress(f"datalad-slurm-finish-{id(prepared)}", len(prepared))
    kept = {item.job.id for item in prepared}

    def ours(paths: Sequence[str]) -> list[str]:
        return [
            path
            for path in paths
            if (owner := owners.of(path)) and owner.job.id in kept and path not in records
        ]

    try:
        pending = WorktreeChanges(ours(found.to_add), ours(found.deleted), ours(found.untracked))
        progress.start(len(pending.to_add) + len(prepared))
        problems, failed = stage_apart(
            dataset_path, pending, owners, prepared, annex, progress.file_done
        )
        failed.update((item.job.id, why) for item in prepared if (why := record(item)) is not None)
        written = [item for item in prepared if item.job.id not in failed]
        envs = records_found(dataset_path, written)
        more, failed_too = stage_apart(
            dataset_path, envs, owners, written, annex, progress.file_done
        )
        problems += more
        failed.update(failed_too)
        staged = staged_changes_from(dataset_path, head, pathspecs)
        unlocked = ours(unlocked_since(staged, [*pending.to_add, *envs.to_add]))
        if annex and unlocked:
            problems += relock(dataset_path, unlocked)
            staged = staged_changes_from(dataset_path, head, pathspecs)
        for problem in problems:
            owner = owners.of(problem.path)
            if owner is not None:
                failed.setdefault(owner.job.id, f"{shown(problem.path)}: {problem.message}")
        for item in prepared:  # in dependency order: what a job waits for came before it
            upstream = _upstream_of(item.job, failed)
            if item.job.id not in failed and upstream:
                failed[item.job.id] = upstream
        by_job: dict[int, list[Change]] = {item.job.id: [] for item in prepared}
        for _old_mode, change in staged:
            owner = owners.of(change.path)
            if owner is not None and owner.job.id in by_job:
                by_job[owner.job.id].append(change)
        to_commit = [item for item in prepared if item.job.id not in failed]
        chain = [(item.message, by_job[item.job.id]) for item in to_commit]
        merge = None
        if branches is None:
            shas = write_commits(dataset_path, head, chain)
        else:
            shas, merge = jobbranches.write(dataset_path, head, chain, branches == "octopus")
        progress.commits_done()
        if branches == "branches":
            jobbranches.publish(
                dataset_path,
                [
                    (jobbranches.branch_of(item), sha)
                    for item, sha in zip(to_commit, shas, strict=True)
                ],
            )
        elif shas:
            advance_head(dataset_path, head, merge or shas[-1], "datalad-slurm: finish")
    except (GitError, OSError) as exc:
        registry.reopen_many(jobs)
        for job in jobs:
            not_committed.add(job.id)
            yield NotCommitted(dataset_path, job, str(exc))
        return
    finally:
        progress.end()
    warnings: list[Warned] = []
    if branches == "branches":
        # committed on their branches: their files leave this branch's index and worktree
        try:
            jobbranches.restore(
                dataset_path, [c.path for item in to_commit for c in by_job[item.job.id]]
            )
        except GitError as exc:
            warnings.append(not_restored(dataset_path, exc))
    for item in to_commit:
        warnings += clear_scratch(dataset_path, item.job, item.brought_back)
    registry.mark_finished_many(
        [(item.job, sha) for item, sha in zip(to_commit, shas, strict=True)]
    )
    registry.reopen_many([item.job for item in prepared if item.job.id in failed])
    for item, sha in zip(to_commit, shas, strict=True):
        yield from saved(dataset_path, by_job[item.job.id])
        branch = jobbranches.branch_of(item) if branches == "branches" else None
        yield Committed(dataset_path, item.job, item.status, sha, branch)
        yield from missing_outputs(dataset_path, item.job, item.missing_outputs)
    if merge:
        yield jobbranches.merge_result(dataset_path, merge, to_commit)
    yield from warnings
    for item in prepared:
        if item.job.id in failed:
            not_committed.add(item.job.id)
            yield NotCommitted(dataset_path, item.job, failed[item.job.id])
