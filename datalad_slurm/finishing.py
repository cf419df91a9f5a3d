"""Finishing jobs: ask Slurm once about all open jobs, then commit, report or close each.

Everything that writes to git happens under the dataset's git lock, and the
registry is read only after the lock is held, so two ``finish`` runs never
handle the same job.  A problem with one job becomes that job's result and
never stops the others.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from datalad_slurm.committer import commit_job, recover, status_word
from datalad_slurm.gitlock import git_lock, open_registry
from datalad_slurm.registry import Job, Registry
from datalad_slurm.slurm.backend import Backend
from datalad_slurm.slurm.select import choose_backend
from datalad_slurm.slurm.state import JobStatus, Verdict

ACTION = "finish"
#: a reservation still 'submitting' after this long was interrupted
STALE_SUBMISSION_SECONDS = 600.0


class FinishError(RuntimeError):
    """A request finish cannot carry out; the message says what to do."""


@dataclass
class FinishRequest:
    job_id: int | None = None
    list_open_jobs: bool = False
    close_failed_jobs: bool = False
    commit_failed_jobs: bool = False
    message: str | None = None
    #: seconds to wait for another finish's lock; None: wait as long as it takes
    lock_timeout: float | None = None


def _result(ds_path: str, status: str, message: str, **extra: Any) -> dict[str, Any]:
    return {
        "action": ACTION,
        "status": status,
        "path": ds_path,
        "type": "dataset",
        "message": message,
        **extra,
    }


def query_statuses(backend: Backend, jobs: Sequence[Job]) -> dict[int, JobStatus]:
    ids = sorted({j.job_id for j in jobs if j.job_id is not None})
    return backend.query(ids) if ids else {}


def list_open_jobs(
    ds: Any, job_id: int | None = None, backend: Backend | None = None
) -> Iterator[dict[str, Any]]:
    """One result per open job with its state; no git lock, nothing written."""
    dataset_path = str(ds.path)
    with open_registry(dataset_path) as registry:
        jobs = registry.jobs(job_id=job_id)
    backend = backend or choose_backend()
    statuses = query_statuses(backend, jobs)
    for job in jobs:
        if job.job_id is None:
            yield _result(
                dataset_path,
                "ok",
                "submission in progress or interrupted",
                slurm_job_id=None,
                slurm_job_status="SUBMITTING",
                tasks={},
                backend=backend.name,
                outputs=job.outputs,
                list_open_jobs=True,
            )
            continue
        status = statuses.get(job.job_id, JobStatus(job.job_id, backend=backend.name))
        yield _result(
            dataset_path,
            "ok",
            f"{job.job_id}: {status.summary_state}",
            slurm_job_id=job.job_id,
            slurm_job_status=status.summary_state,
            tasks={label: t.state.value for label, t in status.tasks.items()},
            task_counts=dict(status.task_counts()),
            backend=backend.name,
            outputs=job.outputs,
            list_open_jobs=True,
        )


def finish(
    ds: Any, request: FinishRequest, backend: Backend | None = None
) -> Iterator[dict[str, Any]]:
    """Commit every completed open job (or the one named) and report the rest."""
    dataset_path = str(ds.path)
    lock = git_lock(
        dataset_path, timeout=-1 if request.lock_timeout is None else request.lock_timeout
    )
    with lock, open_registry(dataset_path) as registry:
        recover(dataset_path, registry)
        jobs = registry.jobs(states=("submitting", "open"), job_id=request.job_id)
        if request.job_id is not None and not jobs:
            raise FinishError(
                f"job {request.job_id} is not an open job of the dataset at {dataset_path}; "
                "'datalad finish --list-open-jobs' shows the open ones"
            )
        submitted = [j for j in jobs if j.job_id is not None]
        backend = backend or choose_backend()
        statuses = query_statuses(backend, submitted)
        for job in jobs:
            if job.job_id is None:
                yield from _handle_interrupted_submission(dataset_path, registry, job, request)
                continue
            status = statuses.get(job.job_id, JobStatus(job.job_id, backend=backend.name))
            try:
                yield from _handle_job(ds, registry, job, status, request)
            except Exception as exc:  # one job's trouble must not stop the others
                registry.reopen(job)
                yield _result(
                    dataset_path,
                    "error",
                    f"job {job.job_id} could not be finished: {exc}; it stays open",
                    slurm_job_id=job.job_id,
                )


def _handle_job(
    ds: Any, registry: Registry, job: Job, status: JobStatus, request: FinishRequest
) -> Iterator[dict[str, Any]]:
    dataset_path = str(ds.path)
    verdict = status.verdict
    if verdict is Verdict.COMPLETED:
        yield from commit_job(ds, registry, job, status, request.message)
        return
    if verdict is Verdict.ACTIVE:
        yield _result(
            dataset_path,
            "notneeded",
            f"Slurm job {job.job_id} is still active. Statuses: {status.statuses()}",
            slurm_job_id=job.job_id,
            state=status.summary_state,
        )
        return
    if verdict is Verdict.FAILED and request.commit_failed_jobs:
        yield from commit_job(ds, registry, job, status, request.message)
        return
    if request.close_failed_jobs:
        registry.mark_finished(job, None, state="closed")
        yield _result(
            dataset_path,
            "ok",
            f"Closing failed / cancelled jobs. Statuses: {status.statuses()}",
            slurm_job_id=job.job_id,
            state=status.summary_state,
        )
        return
    if verdict is Verdict.UNKNOWN:
        message = (
            f"Slurm does not know job {job.job_id} ({status.backend} had no record of it; "
            "without accounting, finished jobs leave slurmctld after MinJobAge). "
            "Check its outputs, then 'datalad finish --close-failed-jobs' to drop it"
        )
    else:
        message = (
            f"Slurm job(s) for job {job.job_id} are not complete. Statuses: {status.statuses()}. "
            f"'datalad finish --close-failed-jobs' drops it, "
            f"'--commit-failed-jobs' commits it as {status_word(status)!r}"
        )
    yield _result(
        dataset_path,
        "impossible",
        message,
        slurm_job_id=job.job_id,
        state=status.summary_state,
    )


def _handle_interrupted_submission(
    dataset_path: str, registry: Registry, job: Job, request: FinishRequest
) -> Iterator[dict[str, Any]]:
    age = time.time() - job.submitted_at
    if age < STALE_SUBMISSION_SECONDS:
        return  # a schedule is probably running right now
    if request.close_failed_jobs:
        registry.mark_finished(job, None, state="closed")
        yield _result(
            dataset_path,
            "ok",
            f"Closing interrupted submission of {job.cmd!r} (outputs {', '.join(job.outputs)})",
            slurm_job_id=None,
        )
        return
    yield _result(
        dataset_path,
        "impossible",
        f"the submission of {job.cmd!r} (outputs {', '.join(job.outputs)}) was interrupted "
        "before its job id was recorded; if a job was submitted, commit its outputs by hand. "
        "'datalad finish --close-failed-jobs' releases the outputs",
        slurm_job_id=None,
    )
