"""``datalad finish --list-open-jobs``: one result per open job with Slurm's word on it; no
git lock taken, nothing written."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from datalad_slurm.jobs.migration import waiting
from datalad_slurm.jobs.statedir import (
    open_registry,
)
from datalad_slurm.slurm.backend import Backend
from datalad_slurm.slurm.select import choose_backend
from datalad_slurm.slurm.state import JobState, JobStatus
from datalad_slurm.usecases.finish_gather import job_statuses, read_spool
from datalad_slurm.usecases.finish_request import result


def list_open_jobs(
    ds: Any, job_id: int | None = None, backend: Backend | None = None
) -> Iterator[dict[str, Any]]:
    """One result per open job with its state; no git lock, nothing written."""
    dataset_path = str(ds.path)
    backend = backend or choose_backend(states_only=True)
    with open_registry(dataset_path) as registry:
        if registry.has_jobs(job_id=job_id):
            backend.prefetch()  # Slurm answers while the registry and the spool are read
        jobs = registry.jobs(job_id=job_id)
    view = read_spool(ds)
    statuses = job_statuses(jobs, view.events, backend).statuses
    yield from waiting(ds)  # datalad-slurm 0.2.8's open jobs, until finish takes them over
    for job in jobs:
        if job.job_id is None:
            status = JobStatus(0, backend=backend.name)
            state = "SUBMITTING"
        else:
            status = statuses.get(job.id, JobStatus(job.job_id, backend=backend.name))
            state = status.summary_state
        yield result(
            dataset_path,
            "ok",
            f"{job.job_id}: {state}",
            slurm_job_id=job.job_id,
            cluster=job.cluster,
            slurm_job_status=state,
            tasks={label: t.state.value for label, t in status.tasks.items()},
            task_counts=dict(status.task_counts()),
            elapsed=running_for(status),
            backend=status.backend or backend.name,
            data_parser=status.data_parser,
            outputs=job.outputs,
            list_open_jobs=True,
        )


def running_for(status: JobStatus) -> int | None:
    """How long the job's longest running task has run, in seconds (None: none runs, or
    Slurm did not say)."""
    times = [
        task.resources.elapsed
        for task in status.tasks.values()
        if task.state in (JobState.RUNNING, JobState.SUSPENDED)
        and task.resources is not None
        and task.resources.elapsed is not None
    ]
    return max(times) if times else None
