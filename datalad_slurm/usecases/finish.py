"""Finishing jobs: drain the spool, ask Slurm once about the rest, then commit, report or close.

Everything that writes to git happens under the dataset's git lock, and the
registry and the spool are read only after the lock is held, so two
``finish`` runs never handle the same job.  Events are removed only after
their job is committed or closed: a crash at any point loses nothing.  A
problem with one job becomes that job's result and never stops the others.

This module owns the drain from start to end (lock, recovery, the take-over of 0.2.8's jobs,
the decision per job) and handing the completed jobs to the committer in batches; what it
gathers is ``finish_gather.py``, what it says or does about a job not committed
``finish_jobs.py``, the request and its results ``finish_request.py``.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

from datalad_slurm.commit.batch import commit_jobs
from datalad_slurm.commit.recovery import find_commits_with_tokens, recover
from datalad_slurm.errors import DataladSlurmError
from datalad_slurm.jobs.job import Job
from datalad_slurm.jobs.lifecycle import HOLDING_STATES, Phase
from datalad_slurm.jobs.migration import take_over
from datalad_slurm.jobs.pipelines import never_starting, waiting_for
from datalad_slurm.jobs.registry import Registry
from datalad_slurm.jobs.statedir import (
    GitLockTimeout,
    clear_interrupted_writes,
    git_lock,
    open_registry,
)
from datalad_slurm.settings import asks_usage
from datalad_slurm.slurm.backend import Backend
from datalad_slurm.slurm.select import choose_backend
from datalad_slurm.slurm.state import JobStatus
from datalad_slurm.slurm.usage import Usage
from datalad_slurm.usecases.finish_gather import (
    clean_inflight,
    consume,
    job_statuses,
    read_spool,
    reject,
    tidy,
    warn_if_slurm_forgets,
)
from datalad_slurm.usecases.finish_jobs import (
    handle_interrupted_submission,
    handle_job,
    handle_never_starting,
    handle_unreleased,
    held_by_interrupted_schedule,
    news_only,
    not_open,
    to_be_committed,
    trouble,
    waits_for_upstream,
)

# under their old names: the code that consumes commit_jobs's results (_commit_batch,
# _after_failed_commit) is kept as it was while that interface changes
from datalad_slurm.usecases.finish_request import FinishError, FinishRequest
from datalad_slurm.usecases.finish_request import job_name as _job_name
from datalad_slurm.usecases.finish_request import result as _result


def finish(
    ds: Any, request: FinishRequest, backend: Backend | None = None
) -> Iterator[dict[str, Any]]:
    """Commit every completed open job (or the one named) and report the rest."""
    dataset_path = str(ds.path)
    timeout = -1 if request.lock_timeout is None else request.lock_timeout
    lock = git_lock(dataset_path, timeout=timeout)
    try:
        lock.acquire()
    except GitLockTimeout:
        yield _result(
            dataset_path,
            "notneeded",
            f"another 'datalad finish' holds the lock of {dataset_path}; leaving it the work",
            locked=True,
        )
        return
    try:
        with open_registry(dataset_path) as registry:
            yield from _drain(ds, registry, request, backend)
    finally:
        lock.release()


def _drain(
    ds: Any, registry: Registry, request: FinishRequest, backend: Backend | None
) -> Iterator[dict[str, Any]]:
    dataset_path = str(ds.path)
    cleared = clear_interrupted_writes(dataset_path)
    if cleared:
        yield _result(
            dataset_path,
            "ok",
            f"removed {', '.join(cleared)} that an interrupted finish or schedule left in "
            f"{dataset_path}",
            cleared_locks=cleared,
        )
    recover(dataset_path, registry)
    yield from take_over(ds, registry)  # open jobs of datalad-slurm 0.2.8, once
    jobs = registry.jobs(states=(Phase.SUBMITTING, Phase.OPEN), job_id=request.job_id)
    if request.job_id is not None and not jobs:
        raise FinishError(not_open(dataset_path, registry, request.job_id))
    view = read_spool(ds)
    if view.problem:
        yield _result(dataset_path, "impossible", view.problem)
    yield from reject(dataset_path, view)
    clean_inflight(view.spool)
    backend = backend or choose_backend()
    submitted = [j for j in jobs if j.job_id is not None]
    resolution = job_statuses(submitted, view.events, backend)
    if view.spool is None and view.problem is None:  # no hook: slurmctld alone may know
        warn_if_slurm_forgets(resolution.statuses)
    # what the steps of the jobs to be committed used: accounting is asked now, and answers
    # while the committer stages their outputs
    usage = Usage.ask(
        backend if asks_usage(ds) else None,
        [s for s in resolution.statuses.values() if to_be_committed(s, request)],
    )
    to_commit: list[tuple[Job, JobStatus]] = []
    # the commits' results come first, the other jobs' reports after them (as in 0.2.8)
    reports: list[dict[str, Any]] = []
    # jobs that wait for others (jobs/pipelines.py): those never to start, and which jobs are open
    # (a job is committed only after the open jobs it waits for)
    never = never_starting(registry, jobs, resolution.statuses)
    open_rows = (
        {j.id for j in registry.jobs(states=HOLDING_STATES)}
        if any(j.depends_on for j in jobs)
        else set()
    )
    to_commit_rows: set[int] = set()
    for job in jobs:
        if job.job_id is None:
            reports += news_only(
                registry,
                job,
                "interrupted submission",
                list(handle_interrupted_submission(dataset_path, registry, job, request)),
                request,
            )
            continue
        status = resolution.statuses.get(job.id, JobStatus(job.job_id, backend=backend.name))
        if held_by_interrupted_schedule(job, status):
            reports += list(handle_unreleased(dataset_path, registry, job, request))
            continue
        if job.id in never and not (request.commit_failed_jobs and not never[job.id].pending):
            reports += news_only(
                registry,
                job,
                f"never starts: {never[job.id].why}",
                list(handle_never_starting(dataset_path, registry, job, never[job.id], request)),
                request,
            )
            if job.state == Phase.CLOSED:
                open_rows.discard(job.id)
                consume(view.spool, job, resolution.events.get(job.id, []))
            continue
        if to_be_committed(status, request):
            upstream = waiting_for(job, to_commit_rows, open_rows)
            if upstream:
                reports.append(waits_for_upstream(dataset_path, job, status, upstream))
                continue
            to_commit.append((job, status))
            to_commit_rows.add(job.id)
            continue
        try:
            reports += news_only(
                registry,
                job,
                trouble(status),
                list(handle_job(ds, registry, job, status, request)),
                request,
            )
        except Exception as exc:  # one job's trouble must not stop the others
            registry.reopen(job)
            reports.append(
                _result(
                    dataset_path,
                    "error",
                    f"job {_job_name(job)} could not be finished: {exc}; it stays open",
                    slurm_job_id=job.job_id,
                    cluster=job.cluster,
                )
            )
        if job.state == Phase.CLOSED:
            open_rows.discard(job.id)
            consume(view.spool, job, resolution.events.get(job.id, []))
    yield from _commit(ds, registry, to_commit, request.message, request.branches, usage)
    yield from reports
    for job, _ in to_commit:
        if job.state == Phase.FINISHED:
            consume(view.spool, job, resolution.events.get(job.id, []))
    if request.job_id is None:
        tidy(view.spool, registry, resolution.unmatched)


def _commit(
    ds: Any,
    registry: Registry,
    to_commit: Sequence[tuple[Job, JobStatus]],
    message: str | None,
    branches: str | None = None,
    usage: Usage | None = None,
) -> Iterator[dict[str, Any]]:
    """All completed jobs at once; trouble the committer did not foresee leaves them open.

    A job is its id *and* its cluster: the committer's results name the id
    only, so jobs that share an id (two clusters) go to it in separate batches.
    """
    for batch in _batches_of_distinct_ids(to_commit):
        yield from _commit_batch(ds, registry, batch, message, branches, usage)


def _batches_of_distinct_ids(
    to_commit: Sequence[tuple[Job, JobStatus]],
) -> list[list[tuple[Job, JobStatus]]]:
    """The jobs in as few batches as possible, no job id twice in one (almost always one);
    a job never in a batch before that of a job it waits for (batches commit in order)."""
    batches: list[list[tuple[Job, JobStatus]]] = []
    batch_of: dict[int, int] = {}
    for job, status in to_commit:
        first = max((batch_of[row] for row, _ in job.depends_on if row in batch_of), default=0)
        for index in range(first, len(batches)):
            if all(other.job_id != job.job_id for other, _ in batches[index]):
                batches[index].append((job, status))
                batch_of[job.id] = index
                break
        else:
            batches.append([(job, status)])
            batch_of[job.id] = len(batches) - 1
    return batches


def _commit_batch(
    ds: Any,
    registry: Registry,
    batch: Sequence[tuple[Job, JobStatus]],
    message: str | None,
    branches: str | None,
    usage: Usage | None,
) -> Iterator[dict[str, Any]]:
    by_row = {job.id: job for job, _ in batch}
    reported: set[int] = set()
    try:
        for outcome in commit_jobs(ds, registry, batch, message, branches, usage):
            result = outcome.result()
            job = None if outcome.row is None else by_row.get(outcome.row)
            if job is not None:
                reported.add(job.id)
                result.setdefault("cluster", job.cluster)
            yield result
    except Exception as exc:
        left = [job for job, _ in batch if job.id not in reported]
        yield from _after_failed_commit(str(ds.path), registry, left, exc)


def _after_failed_commit(
    dataset_path: str, registry: Registry, jobs: Sequence[Job], exc: Exception
) -> Iterator[dict[str, Any]]:
    """The commit failed, perhaps after HEAD moved (the registry failed on a full disk): a
    job whose commit is in HEAD's history must never be reopened, or the next finish commits
    it twice.  The rows are settled by their tokens as after a crash (``commit/recovery.recover``);
    if the registry still fails they stay 'committing' for the next finish's recovery."""
    try:
        recover(dataset_path, registry)
        rows = {job.id: registry.get(job.id) for job in jobs}
        committed = {
            job.id: row.commit_sha
            for job in jobs
            if (row := rows[job.id]).state == "finished" and row.commit_sha
        }
        recorded = True
    except DataladSlurmError:
        found = find_commits_with_tokens(
            dataset_path, {job.token for job in jobs}, {job.submitted_from for job in jobs}
        )
        committed = {job.id: found[job.token] for job in jobs if job.token in found}
        recorded = False
    for job in jobs:
        sha = committed.get(job.id)
        if sha is None:
            message = (
                f"job {_job_name(job)} could not be committed: {exc}; it stays open, fix the "
                "problem and run 'datalad finish' again"
            )
        elif recorded:
            message = f"Slurm job {job.job_id} was committed as {sha[:8]}, then: {exc}"
        else:
            message = (
                f"Slurm job {job.job_id} was committed as {sha[:8]}, but the registry could "
                f"not record that: {exc}; the next 'datalad finish' records it (it is not "
                "committed twice)"
            )
        yield _result(
            dataset_path,
            "error",
            message,
            slurm_job_id=job.job_id,
            cluster=job.cluster,
            **({"commit": sha} if sha else {}),
        )
