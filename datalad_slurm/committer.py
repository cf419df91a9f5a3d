"""Turning finished jobs into commits: one commit per job, only its own files, many jobs at once.

All jobs of a drain are committed together (:mod:`datalad_slurm.commitwriter`):
their files are staged at once (fast annexing, one ``git annex add`` /
``git add``), then one pack of ours holds one commit per job with its
``[DATALAD SLURM RUN]`` record, and HEAD moves once.  Jobs whose paths lie in a subdataset, and
datasets on a git-annex adjusted branch, take the slower path of one
``datalad save`` per job, which knows how to record subdataset states, and on an adjusted
branch moves each commit to the corresponding branch (``git annex sync``): the job's commit is
then found below HEAD, not at it.

Registry rows go to ``committing`` before anything is staged and to
``finished`` after HEAD moved; a crash in between is repaired by
:func:`recover`, which looks for the jobs' tokens in the history, so no job
is committed twice and none is dropped.  Callers hold the dataset's git lock.
"""

from __future__ import annotations

import logging
import os
import posixpath
from collections.abc import Callable, Collection, Generator, Iterator, Sequence
from typing import Any

from datalad.log import log_progress

from datalad_slurm import altdir, jobbranches
from datalad_slurm.commitwriter import (
    WORK_REF,
    Change,
    StagingProblem,
    WorktreeChanges,
    advance_head,
    chunked,
    covering_paths,
    relock,
    run_auto_maintenance,
    stage,
    staged_changes_from,
    unlocked_since,
    worktree_changes,
    write_commits,
)
from datalad_slurm.errors import DataladSlurmError
from datalad_slurm.git import GitError, is_utf8, run_git, shown
from datalad_slurm.gitlock import git_writes
from datalad_slurm.globs import is_glob, reserved_path
from datalad_slurm.jobrecord import (
    PreparedCommit,
    plan_commit,
    scratch_logs,
    status_word,
    write_record,
)
from datalad_slurm.pipelines import dependants
from datalad_slurm.records import (
    REGISTRATION_KEY,
    RecordError,
    parse_message,
    registration_token,
)
from datalad_slurm.registry import Job, Registry
from datalad_slurm.slurm.state import JobStatus
from datalad_slurm.slurm.usage import Usage

lgr = logging.getLogger("datalad.slurm.committer")

ACTION = "finish"


def _result(dataset_path: str, job: Job, status: str, message: str, **extra: Any) -> dict[str, Any]:
    return {
        "action": ACTION,
        "status": status,
        "path": dataset_path,
        "type": "dataset",
        "slurm_job_id": job.job_id,
        "message": message,
        **extra,
    }


def _committed(
    dataset_path: str, prepared: PreparedCommit, sha: str, branch: str | None = None
) -> dict[str, Any]:
    status = prepared.status
    where = f" on branch {branch}" if branch else ""
    return _result(
        dataset_path,
        prepared.job,
        "ok",
        f"Slurm job {prepared.job.job_id}: {status_word(status)}, committed as {sha[:8]}{where}",
        commit=sha,
        state=status.summary_state,
        backend=status.backend,
        data_parser=status.data_parser,
        **({"branch": branch} if branch else {}),
        **({"alt_dir": prepared.job.alt_dir} if prepared.job.alt_dir else {}),
    )


def _missing(dataset_path: str, prepared: PreparedCommit) -> Iterator[dict[str, Any]]:
    """One warning per declared output the job did not leave (a glob: that matches nothing):
    what existed was committed."""
    job = prepared.job
    for output in prepared.missing_outputs:
        what = "a glob that matches nothing" if is_glob(output) else "which does not exist"
        yield {
            "action": ACTION,
            "status": "impossible",
            "path": os.path.join(dataset_path, output),
            "type": "file",
            "refds": dataset_path,
            "slurm_job_id": job.job_id,
            "missing_output": output,
            "message": (
                f"warning: Slurm job {job.job_id} declared the output {output!r}, {what}; "
                "the job was committed without it (as 'datalad run' does)"
            ),
        }


def _saved(dataset_path: str, changes: Sequence[Change]) -> Iterator[dict[str, Any]]:
    """What ``datalad save`` would have reported for one job's commit: its files, then itself."""
    for change in changes:
        yield {
            "action": "delete" if change.deleted else "add",
            "status": "ok",
            "path": os.path.join(dataset_path, change.path),
            "type": "file",
            "refds": dataset_path,
        }
    yield {
        "action": "save",
        "status": "ok",
        "path": dataset_path,
        "type": "dataset",
        "refds": dataset_path,
    }


def _not_committed(dataset_path: str, job: Job, why: str) -> dict[str, Any]:
    return _result(
        dataset_path,
        job,
        "error",
        f"job {job.job_id} could not be committed: {why}; it stays open, fix the problem and "
        "run 'datalad finish' again",
    )


def commit_jobs(
    ds: Any,
    registry: Registry,
    finished: Sequence[tuple[Job, JobStatus]],
    message: str | None = None,
    branches: str | None = None,
    usage: Usage | None = None,
) -> Iterator[dict[str, Any]]:
    """Commit each job with its record; one ``finish`` result per job.

    A job that cannot be committed gets an ``error`` result and stays open;
    the others are committed all the same, except the jobs that wait for it
    (``pipelines.py``: the jobs come in dependency order, and a job is never
    committed before one it waits for).  ``branches``: ``branches`` or ``octopus``
    (``finish --branches``/``--octopus``, :mod:`datalad_slurm.jobbranches`).
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
            yield _not_committed(dataset_path, job, str(exc))
        return
    failed: set[int] = set()
    for job, status in finished:
        upstream = _upstream_of(job, failed)
        if upstream:
            failed.add(job.id)
            yield _not_committed(dataset_path, job, upstream)
            continue
        try:
            brought = _bring_back(dataset_path, job, status)
            item = plan_commit(
                dataset_path, job, status, gone, brought.missing if brought else None
            )
        except DataladSlurmError as exc:  # the dataset moved,
            # its scratch folder (--alt-dir) is not there or could not be copied back
            failed.add(job.id)
            yield _not_committed(dataset_path, job, str(exc))
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
            yield _not_committed(dataset_path, item.job, _NO_BRANCH)
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
                    yield _not_committed(dataset_path, item.job, _NO_BRANCH)
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
                yield _not_committed(dataset_path, item.job, upstream)
                continue
            why = record(item)
            if why is not None:
                failed.add(item.job.id)
                yield _not_committed(dataset_path, item.job, why)
                continue
            for result in _commit_with_save(ds, registry, item):
                if result.get("status") == "error" and result.get("action") == ACTION:
                    failed.add(item.job.id)
                yield result


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


def _bring_back(dataset_path: str, job: Job, status: JobStatus) -> altdir.BroughtBack | None:
    """A job run in a scratch folder: its outputs and logs copied from there into the
    dataset (the scratch copy stays until the commit exists: :func:`_clear_scratch`)."""
    if not job.alt_dir:
        return None
    return altdir.bring_back(
        dataset_path, job.alt_dir, job.outputs, scratch_logs(dataset_path, job, status)
    )


def _clear_scratch(dataset_path: str, job: Job, paths: Sequence[str]) -> list[dict[str, Any]]:
    """The job is committed: what it brought back leaves its scratch folder; a warning for
    what could not be removed (the commit stands)."""
    if not job.alt_dir:
        return []
    problems = altdir.clear(job.alt_dir, paths)
    if not problems:
        return []
    return [
        _result(
            dataset_path,
            job,
            "impossible",
            f"warning: Slurm job {job.job_id} is committed, but its files could not all be "
            f"removed from the scratch folder {job.alt_dir}: {'; '.join(problems)}; remove "
            "them by hand",
            alt_dir=job.alt_dir,
        )
    ]


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
    return any(
        path == sub or path.startswith(sub + "/") or path in (".", "") or sub.startswith(path + "/")
        for path in paths
        for sub in submodules
    )


class _Owners:
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


class _Progress:
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


def _unfit(
    dataset_path: str, owners: _Owners, found: WorktreeChanges
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
            if _has_commit(os.path.join(dataset_path, path)):
                nested.add(owner.job.id)
            else:
                refused[owner.job.id] = (
                    f"{shown(path)} is a git repository without a commit, which datalad save "
                    "cannot register as a subdataset either; commit in it, or remove it"
                )
    nested -= set(refused)
    return refused, nested


def _has_commit(repository: str) -> bool:
    return bool(run_git(repository, "rev-parse", "--verify", "-q", "HEAD", check=False).strip())


def _stage_apart(
    dataset_path: str,
    pending: WorktreeChanges,
    owners: _Owners,
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
    problems, failed = _stage_apart(dataset_path, pending, owners, group[:half], annex, on_file)
    more, failed_too = _stage_apart(dataset_path, pending, owners, group[half:], annex, on_file)
    return problems + more, {**failed, **failed_too}


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
) -> Iterator[dict[str, Any]]:
    """Commit the jobs in one go; jobs that made a git repository are put in ``later``, and
    so are the jobs that wait for them.  The row ids of the jobs that are not committed are
    added to ``not_committed``.  ``branches``: each job on a branch of its own
    (``branches``), then merged (``octopus``).

    The jobs' own files are staged first, then ``record`` writes each job's env.json and
    message (what accounting says of its usage may arrive meanwhile), which are staged after.
    """
    if branches == "branches":
        free = yield from _without_free_branch(dataset_path, prepared)
        not_committed.update(item.job.id for item in prepared if item not in free)
        prepared = free
    owners = _Owners(prepared)
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
            yield _not_committed(dataset_path, item.job, str(exc))
        return
    refused, nested = _unfit(dataset_path, owners, found)
    for item in prepared:
        upstream = _upstream_of(item.job, refused)
        if item.job.id not in refused and upstream:
            refused[item.job.id] = upstream
    nested |= dependants(nested, [item.job for item in prepared]) - set(refused)
    later.extend(item for item in prepared if item.job.id in nested)
    for item in prepared:
        if item.job.id in refused:
            not_committed.add(item.job.id)
            yield _not_committed(dataset_path, item.job, refused[item.job.id])
    prepared = [item for item in prepared if item.job.id not in refused.keys() | nested]
    if not prepared:
        return
    jobs = [item.job for item in prepared]
    registry.mark_committing_many(jobs)
    failed: dict[int, str] = {}
    progress = _Progress(f"datalad-slurm-finish-{id(prepared)}", len(prepared))
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
        problems, failed = _stage_apart(
            dataset_path, pending, owners, prepared, annex, progress.file_done
        )
        failed.update((item.job.id, why) for item in prepared if (why := record(item)) is not None)
        written = [item for item in prepared if item.job.id not in failed]
        envs = _records_found(dataset_path, written)
        more, failed_too = _stage_apart(
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
                [(_branch(item), sha) for item, sha in zip(to_commit, shas, strict=True)],
            )
        elif shas:
            advance_head(dataset_path, head, merge or shas[-1], "datalad-slurm: finish")
    except (GitError, OSError) as exc:
        registry.reopen_many(jobs)
        for job in jobs:
            not_committed.add(job.id)
            yield _not_committed(dataset_path, job, str(exc))
        return
    finally:
        progress.end()
    warnings: list[dict[str, Any]] = []
    if branches == "branches":
        # committed on their branches: their files leave this branch's index and worktree
        try:
            jobbranches.restore(
                dataset_path, [c.path for item in to_commit for c in by_job[item.job.id]]
            )
        except GitError as exc:
            warnings.append(_restore_warning(dataset_path, exc))
    for item in to_commit:
        warnings += _clear_scratch(dataset_path, item.job, item.brought_back)
    registry.mark_finished_many(
        [(item.job, sha) for item, sha in zip(to_commit, shas, strict=True)]
    )
    registry.reopen_many([item.job for item in prepared if item.job.id in failed])
    for item, sha in zip(to_commit, shas, strict=True):
        yield from _saved(dataset_path, by_job[item.job.id])
        yield _committed(dataset_path, item, sha, _branch(item) if branches == "branches" else None)
        yield from _missing(dataset_path, item)
    if merge:
        yield _merged(dataset_path, merge, to_commit)
    yield from warnings
    for item in prepared:
        if item.job.id in failed:
            not_committed.add(item.job.id)
            yield _not_committed(dataset_path, item.job, failed[item.job.id])


def _records_found(dataset_path: str, prepared: Sequence[PreparedCommit]) -> WorktreeChanges:
    """The jobs' env.json files as git sees them now that they are written (new, or changed
    where an earlier finish of the same job id left one)."""
    wanted = {item.files.env_json for item in prepared}
    if not wanted:
        return WorktreeChanges([], [])
    found = worktree_changes(dataset_path, covering_paths(sorted(wanted)))
    return WorktreeChanges(
        [p for p in found.to_add if p in wanted], [], [p for p in found.untracked if p in wanted]
    )


def _branch(item: PreparedCommit) -> str:
    return jobbranches.branch_name(item.job.job_id)


def _without_free_branch(
    dataset_path: str, prepared: list[PreparedCommit]
) -> Generator[dict[str, Any], None, list[PreparedCommit]]:
    """``--branches``: a job whose branch exists already is refused (it stays open); the
    others."""
    taken = jobbranches.existing(dataset_path, [_branch(item) for item in prepared])
    for item in prepared:
        if _branch(item) in taken:
            yield _not_committed(
                dataset_path,
                item.job,
                f"the branch {_branch(item)} exists already (of an earlier job with this id?); "
                f"rename or delete it ('git branch -m {_branch(item)} NEW'), then finish the "
                "job again",
            )
    return [item for item in prepared if _branch(item) not in taken]


def _merged(dataset_path: str, sha: str, merged: Sequence[PreparedCommit]) -> dict[str, Any]:
    branch = run_git(dataset_path, "symbolic-ref", "-q", "--short", "HEAD", check=False).strip()
    return {
        "action": ACTION,
        "status": "ok",
        "path": dataset_path,
        "type": "dataset",
        "message": (
            f"merged the commits of {len(merged)} Slurm jobs into {branch or 'HEAD'} as "
            f"{sha[:8]} (one octopus merge)"
        ),
        "commit": sha,
        "merged": [item.job.job_id for item in merged],
    }


def _restore_warning(dataset_path: str, exc: Exception) -> dict[str, Any]:
    return {
        "action": ACTION,
        "status": "impossible",
        "path": dataset_path,
        "type": "dataset",
        "message": (
            f"warning: the jobs are committed on their branches, but their files could not be "
            f"taken out of the current branch's index and worktree ({exc}); 'git status' shows "
            "them: 'git restore --staged --worktree PATH' does it by hand"
        ),
    }


def _commit_with_save(
    ds: Any, registry: Registry, prepared: PreparedCommit
) -> Iterator[dict[str, Any]]:
    """One job through ``datalad save`` (subdatasets, adjusted branches); yields save's results."""
    dataset_path = str(ds.path)
    job = prepared.job
    try:
        found = worktree_changes(dataset_path, prepared.paths)
    except GitError as exc:
        yield _not_committed(dataset_path, job, str(exc))
        return
    undecodable = [path for path in [*found.to_add, *found.deleted] if not is_utf8(path)]
    if undecodable:
        yield _not_committed(dataset_path, job, f"{shown(undecodable[0])}: {NOT_UTF8}")
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
        or any(t == p or t.startswith(p.rstrip("/") + "/") for t in tracked if t)
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
        yield result
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
        yield _not_committed(
            dataset_path, job, "; ".join(failures) or "datalad save made no commit"
        )
        return
    warnings = _clear_scratch(dataset_path, job, prepared.brought_back)
    registry.mark_finished_many([(job, sha)])
    yield _committed(dataset_path, prepared, sha)
    yield from _missing(dataset_path, prepared)
    yield from warnings


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
        # a finish killed between save's commit on an adjusted branch and its sync left the
        # commit on the adjusted branch alone: the sync moves it where save would have
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
                altdir.clear(job.alt_dir, _brought_back(dataset_path, job, found[job.token]))
    registry.mark_finished_many(
        [(job, found[job.token]) for job in interrupted if job.token in found]
    )
    registry.reopen_many([job for job in interrupted if job.token not in found])
    return interrupted


def _brought_back(dataset_path: str, job: Job, sha: str) -> list[str]:
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
