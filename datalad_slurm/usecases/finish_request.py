"""What ``datalad finish`` is asked and how it answers: :class:`FinishRequest`,
:class:`FinishError`, and the one shape of its results (:func:`result`, :func:`job_name`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from datalad_slurm.errors import DataladSlurmError
from datalad_slurm.jobs.job import Job
from datalad_slurm.results import FINISH, make_result

ACTION = FINISH


class FinishError(DataladSlurmError, RuntimeError):
    """A request finish cannot carry out; the message says what to do."""


@dataclass
class FinishRequest:
    job_id: int | None = None
    close_failed_jobs: bool = False
    commit_failed_jobs: bool = False
    message: str | None = None
    #: seconds to wait for another finish's lock; None: wait as long as it takes
    lock_timeout: float | None = None
    #: run by cron: a job's trouble is reported once, and again only when it changes
    cron: bool = False
    #: with close_failed_jobs: cancel in Slurm the jobs that will never start (a job they
    #: wait for failed) before closing them
    cancel: bool = False
    #: ``branches``: each job's commit on a branch of its own; ``octopus``: then merged
    branches: str | None = None


def result(ds_path: str, status: str, message: str, **extra: Any) -> dict[str, Any]:
    return make_result(ACTION, status, ds_path, type="dataset", message=message, **extra)


def job_name(job: Job) -> str:
    """The job id, with its cluster where known (ids are per cluster)."""
    return f"{job.job_id} (cluster {job.cluster})" if job.cluster else str(job.job_id)
