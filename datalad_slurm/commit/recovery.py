"""Finding jobs' commits by their tokens: settling the jobs an interrupted finish left in
``committing`` (:func:`recover`), and a commit looked for after ``datalad save``
(:func:`find_commits_with_tokens`); the adjusted branch's sync that save does after each
commit (:func:`sync_adjusted_branch`)."""

from __future__ import annotations

from typing import Any

from datalad_slurm.commit import branches as jobbranches
from datalad_slurm.commit.message import (
    REGISTRATION_KEY,
    RecordError,
    parse_message,
    registration_token,
)
from datalad_slurm.commit.writer import WORK_REF
from datalad_slurm.git.runner import GitError, run_git
from datalad_slurm.jobs import altdir
from datalad_slurm.jobs.job import Job
from datalad_slurm.jobs.registry import Registry
from datalad_slurm.jobs.statedir import git_writes


def sync_adjusted_branch(repo: Any) -> None:
    """On a git-annex adjusted branch, move its new commits to the corresponding branch and
    rebuild the adjusted branch on top (``git annex sync``, local only), as ``datalad save``
    does after each commit; elsewhere nothing."""
    from datalad.support.annexrepo import AnnexRepo

    if isinstance(repo, AnnexRepo):
        repo.localsync(managed_only=True)


def recover(dataset_path: str, registry: Registry) -> list[Job]:
    """Settle jobs left in ``committing`` by an interrupted finish, with one look at the history."""
    interrupted = registry.jobs(states=("committing",))
    if not interrupted:
        return []
    # git writes, as the commit's are: a kill among them (the work ref, the adjusted branch's
    # sync, the index) leaves git's lock files, which the next finish removes only when the
    # marker of a killed writer is there
    with git_writes(dataset_path):
        # a fast-import killed before its commits were placed leaves its work ref behind, which
        # would keep them (unused) reachable
        run_git(dataset_path, "update-ref", "-d", WORK_REF, check=False)
        # a finish killed between save's commit on an adjusted branch and its sync left the commit
        # on the adjusted branch alone: the sync moves it where save would have
        if _on_adjusted_branch(dataset_path):
            from datalad.support.annexrepo import AnnexRepo

            sync_adjusted_branch(AnnexRepo(dataset_path, create=False))
        found = find_commits_with_tokens(
            dataset_path,
            {job.token for job in interrupted},
            {job.submitted_from for job in interrupted},
        )
        # a finish --branches killed before it took the jobs' files out of the index
        jobbranches.settle(
            dataset_path, [found[job.token] for job in interrupted if job.token in found]
        )
        for job in interrupted:
            if job.token in found and job.alt_dir:
                # a finish killed before it emptied the scratch folder of a job it committed
                altdir.clear(job.alt_dir, brought_back(dataset_path, job, found[job.token]))
    registry.mark_finished_many(
        [(job, found[job.token]) for job in interrupted if job.token in found]
    )
    registry.reopen_many([job for job in interrupted if job.token not in found])
    return interrupted


def brought_back(dataset_path: str, job: Job, sha: str) -> list[str]:
    """What a committed job run in a scratch folder brought back: its declared outputs (a
    glob: its hits there) and its files (logs) as its record lists them."""
    try:
        record = parse_message(run_git(dataset_path, "log", "-1", "--format=%B", sha))
    except (GitError, RecordError):
        return list(job.outputs)
    return [*job.outputs, *record.slurm_outputs]


def _on_adjusted_branch(dataset_path: str) -> bool:
    """Is HEAD a git-annex adjusted branch (``adjusted/<branch>(<adjustment>)``, with the
    ``refs/basis/`` ref git-annex keeps for it)?"""
    branch = run_git(dataset_path, "symbolic-ref", "-q", "HEAD", check=False).strip()
    if not branch.startswith("refs/heads/adjusted/"):
        return False
    basis = "refs/basis/" + branch[len("refs/heads/") :]
    return bool(run_git(dataset_path, "rev-parse", "--verify", "-q", basis, check=False).strip())


def find_commits_with_tokens(
    dataset_path: str, tokens: set[str], since: set[str | None]
) -> dict[str, str]:
    """The commit that records each token, searched in HEAD's history after the ``since`` commits.

    Every job looked for was submitted from one of ``since``, and its commit was
    written later, so it cannot be reachable from any of them.
    """
    if None in since:
        excluded: list[str] = []
    else:
        excluded = ["--not", *sorted(s for s in since if s)]
    log = run_git(
        dataset_path,
        "log",
        "-z",
        "--format=%H %B",
        f"--grep={REGISTRATION_KEY}",
        "HEAD",
        # where finish --branches puts the jobs' commits
        f"--branches={jobbranches.BRANCH_GLOB}",
        *excluded,
        check=False,
    )
    found: dict[str, str] = {}
    for entry in log.split("\0"):
        sha, _, body = entry.partition(" ")
        token = registration_token(body)
        if token in tokens and token not in found:
            found[token] = sha
    return found
