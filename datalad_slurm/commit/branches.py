"""``finish --branches`` and ``--octopus``: each job's commit on a branch of its own
(datalad-slurm 0.2.8's options).

0.2.8 checked out a new branch ``slurm-job-branch-<id>`` from the branch it was on for each
job, saved the job there, and checked the old branch out again; ``--octopus`` then merged all
those branches into it with one ``git merge`` and deleted them.  The same outcome here,
without a checkout:

- every job's commit has HEAD (where ``finish`` started) as its parent and holds that job's
  changes only, its record as the message; one ``git fast-import`` writes them all (the pack
  writer writes chains only);
- ``--branches``: one ``git update-ref --stdin`` transaction creates the branches (all or
  none; a job whose branch exists already is refused before anything is staged).  HEAD stays
  where it is, so the jobs' files leave the index and the worktree again (``git restore
  --source=HEAD``), as 0.2.8's checkout of the old branch removed them; ``git merge
  slurm-job-branch-<id>`` brings them back;
- ``--octopus``: one merge commit whose parents are HEAD and the jobs' commits (in the
  drain's order) and whose tree holds every job's changes, so the index and worktree stay as
  staged; HEAD moves to it by compare-and-swap, and no branch is left, as 0.2.8 deleted its
  branches after the merge.  A single job's commit becomes HEAD itself, as ``git merge``
  fast-forwards.

Crash safety: until the branches (or HEAD) point at the commits nothing does, and the next
``finish`` finds no token and starts over.  Afterwards the tokens are found on the branches
(``commit/recovery.recover`` looks at :data:`BRANCH_GLOB` besides HEAD); :func:`settle` then takes
out of the index and worktree the files of such jobs that a killed run left staged.
"""

from __future__ import annotations

from collections.abc import Generator, Iterable, Sequence

from datalad_slurm.commit.outcomes import NotCommitted, Reported
from datalad_slurm.commit.record import PreparedCommit
from datalad_slurm.commit.writer import chunked, commit_command, import_commits
from datalad_slurm.git.runner import GitError, git_bytes, git_ident, run_git
from datalad_slurm.git.trees import Change
from datalad_slurm.results import FINISH, make_result

#: 0.2.8's names of the branches: this and the job id
BRANCH_PREFIX = "slurm-job-branch-"
#: the branches, for ``git log --branches=``
BRANCH_GLOB = f"{BRANCH_PREFIX}*"
#: the subject of the octopus merge (0.2.8's)
MERGE_SUBJECT = "Merge all branches from finished jobs"
#: the values of the branch mode
MODES = ("branches", "octopus")


def branch_name(job_id: int | None) -> str:
    return f"{BRANCH_PREFIX}{job_id}"


def existing(repo: str, names: Iterable[str]) -> set[str]:
    """Which of these branch names exist already (one ``git for-each-ref``)."""
    listed = run_git(
        repo, "for-each-ref", "--format=%(refname:strip=2)", f"refs/heads/{BRANCH_GLOB}"
    )
    return set(listed.split()) & set(names)


def write(
    repo: str, head: str, commits: Sequence[tuple[str, Sequence[Change]]], octopus: bool
) -> tuple[list[str], str | None]:
    """One commit per job on ``head`` (nothing points at them yet), and with ``octopus`` and
    more than one job the merge of them all; their shas and the merge's."""
    idents = (git_ident(repo, "GIT_AUTHOR_IDENT"), git_ident(repo, "GIT_COMMITTER_IDENT"))
    commands = [
        commit_command(number, message, changes, idents, parent=head)
        for number, (message, changes) in enumerate(commits, start=1)
    ]
    merge = octopus and len(commits) > 1
    if merge:
        everything = [change for _, changes in commits for change in changes]
        commands.append(
            commit_command(
                len(commits) + 1,
                merge_message(len(commits)),
                everything,
                idents,
                parent=head,
                merges=[f":{number}" for number in range(1, len(commits) + 1)],
            )
        )
    shas = import_commits(repo, commands)
    return (shas[:-1], shas[-1]) if merge else (shas, None)


def merge_message(jobs: int) -> str:
    return f"{MERGE_SUBJECT}\n\n{jobs} Slurm jobs, merged by 'datalad finish --octopus'\n"


def publish(repo: str, branches: Sequence[tuple[str, str]]) -> None:
    """Create the branches (name, sha) in one transaction: all of them, or (one exists
    already, another process made it meanwhile) none."""
    lines = "".join(f"create refs/heads/{name} {sha}\n" for name, sha in branches)
    run_git(repo, "update-ref", "-m", "datalad-slurm: finish --branches", "--stdin", stdin=lines)


def restore(repo: str, paths: Sequence[str]) -> None:
    """The index and worktree of these paths as HEAD has them (a path HEAD lacks is removed
    from both): the jobs' files, committed on their branches, leave the current branch's
    worktree, as a checkout of it would make them."""
    for chunk in chunked(sorted(set(paths))):
        run_git(
            repo,
            "--literal-pathspecs",
            "restore",
            "--source=HEAD",
            "--staged",
            "--worktree",
            "--",
            *chunk,
        )


def settle(repo: str, commits: Iterable[str]) -> None:
    """After a ``finish --branches`` that was killed: the files of these commits (found on a
    job branch, not in HEAD's history) that the index still holds as the commit has them are
    restored to HEAD, as the killed run would have done."""
    for sha in commits:
        if _in_head(repo, sha):
            continue
        changes = _changes(repo, sha)
        staged = _index_entries(repo, list(changes))
        as_committed = [path for path, entry in changes.items() if staged.get(path) == entry]
        if as_committed:
            restore(repo, as_committed)


def _in_head(repo: str, sha: str) -> bool:
    """Whether HEAD's history holds the commit (``git merge-base --is-ancestor``)."""
    try:
        git_bytes(repo, ["merge-base", "--is-ancestor", sha, "HEAD"])
    except GitError:  # exit 1: not an ancestor
        return False
    return True


def _changes(repo: str, sha: str) -> dict[str, tuple[str, str] | None]:
    """What a job's commit changed against its parent: path -> (mode, blob), None: removed."""
    raw = run_git(repo, "diff-tree", "-r", "-z", "--no-renames", "--no-commit-id", f"{sha}^", sha)
    fields = raw.split("\0")
    found: dict[str, tuple[str, str] | None] = {}
    for meta, path in zip(fields[0::2], fields[1::2], strict=False):
        if not meta:
            continue
        _old_mode, new_mode, _old_sha, new_sha, status = meta.lstrip(":").split(" ")
        found[path] = None if status == "D" else (new_mode, new_sha)
    return found


def _index_entries(repo: str, paths: Sequence[str]) -> dict[str, tuple[str, str] | None]:
    """The index's (mode, blob) of each path; a path it lacks maps to None."""
    found: dict[str, tuple[str, str] | None] = dict.fromkeys(paths)
    for chunk in chunked(paths):
        listing = run_git(repo, "--literal-pathspecs", "ls-files", "-s", "-z", "--", *chunk)
        for entry in listing.split("\0"):
            if entry:
                meta, path = entry.split("\t", 1)
                mode, blob, _stage = meta.split(" ")
                found[path] = (mode, blob)
    return found


# --- the step of a drain: free branches, the merge's result ----------------------------


def branch_of(item: PreparedCommit) -> str:
    return branch_name(item.job.job_id)


def without_free_branch(
    dataset_path: str, prepared: list[PreparedCommit]
) -> Generator[NotCommitted, None, list[PreparedCommit]]:
    """``--branches``: a job whose branch exists already is refused (it stays open); the
    others."""
    taken = existing(dataset_path, [branch_of(item) for item in prepared])
    for item in prepared:
        if branch_of(item) in taken:
            yield NotCommitted(
                dataset_path,
                item.job,
                f"the branch {branch_of(item)} exists already (of an earlier job with this id?); "
                f"rename or delete it ('git branch -m {branch_of(item)} NEW'), then finish the "
                "job again",
            )
    return [item for item in prepared if branch_of(item) not in taken]


def merge_result(dataset_path: str, sha: str, merged: Sequence[PreparedCommit]) -> Reported:
    """The result of the octopus merge."""
    branch = run_git(dataset_path, "symbolic-ref", "-q", "--short", "HEAD", check=False).strip()
    return Reported(
        make_result(
            FINISH,
            "ok",
            dataset_path,
            type="dataset",
            message=f"merged the commits of {len(merged)} Slurm jobs into {branch or 'HEAD'} as "
            f"{sha[:8]} (one octopus merge)",
            commit=sha,
            merged=[item.job.job_id for item in merged],
        )
    )
