"""A job run in a scratch folder (``--alt-dir``): its files brought into the dataset before
its commit, and cleared from the scratch folder once the commit exists."""

from __future__ import annotations

from collections.abc import Sequence

from datalad_slurm.commit.jobfiles import scratch_logs
from datalad_slurm.commit.outcomes import Warned, scratch_left
from datalad_slurm.jobs import altdir
from datalad_slurm.jobs.job import Job
from datalad_slurm.slurm.state import JobStatus


def bring_back(dataset_path: str, job: Job, status: JobStatus) -> altdir.BroughtBack | None:
    """A job run in a scratch folder: its outputs and logs copied from there into the
    dataset (the scratch copy stays until the commit exists: :func:`clear_scratch`)."""
    if not job.alt_dir:
        return None
    return altdir.bring_back(
        dataset_path, job.alt_dir, job.outputs, scratch_logs(dataset_path, job, status)
    )


def clear_scratch(dataset_path: str, job: Job, paths: Sequence[str]) -> list[Warned]:
    """The job is committed: what it brought back leaves its scratch folder; a warning for
    what could not be removed (the commit stands)."""
    if not job.alt_dir:
        return []
    problems = altdir.clear(job.alt_dir, paths)
    if not problems:
        return []
    return [scratch_left(dataset_path, job, problems)]
