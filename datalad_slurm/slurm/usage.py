"""What the jobs' steps used (TotalCPU, MaxRSS), from accounting, for jobs settled without it.

The hook and slurmctld know what a job was given, never what its steps used:
only accounting does.  Jobs whose state came from the hook's events or from
slurmctld are asked about in ONE batched question (:meth:`Backend.usage`),
started before their commits are prepared and read when their records are
written; jobs accounting answered for already are not asked again.  A job
accounting does not know (yet, or at all) keeps the figures it has.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import replace

from datalad_slurm.slurm.backend import Backend, TaskKey, UsageAnswer
from datalad_slurm.slurm.resources import merge
from datalad_slurm.slurm.state import JobStatus, TaskState

lgr = logging.getLogger("datalad.slurm.usage")


def wants_usage(status: JobStatus) -> bool:
    """Whether a job has an ended task that accounting has not told about."""
    return any(
        task.state.is_terminal and not (task.resources and task.resources.from_accounting)
        for task in status.tasks.values()
    )


class Usage:
    """One batched usage question, and the merging of its answer into the jobs' tasks."""

    def __init__(self, answer: UsageAnswer | None) -> None:
        self._answer = answer
        self._found: Mapping[TaskKey, TaskState] | None = None

    @classmethod
    def ask(cls, backend: Backend | None, statuses: Iterable[JobStatus]) -> Usage:
        """Start the question for those of these jobs that want it (none: nothing is asked)."""
        job_ids: Sequence[int] = sorted({s.job_id for s in statuses if wants_usage(s)})
        if backend is None or not job_ids:
            return cls(None)
        return cls(backend.usage(job_ids))

    def added_to(self, status: JobStatus) -> JobStatus:
        """The job with accounting's figures added to its ended tasks (the figures it has
        fill accounting's gaps); the answer is awaited on first use."""
        if self._answer is None or not wants_usage(status):
            return status
        if self._found is None:
            started = time.monotonic()
            self._found = self._answer.result()
            lgr.debug(
                "accounting's usage answer: %d tasks, waited %.2f s for it",
                len(self._found),
                time.monotonic() - started,
            )
        tasks = {}
        for label, task in status.tasks.items():
            accounted = self._found.get((task.job_id, task.task_id))
            tasks[label] = (
                replace(task, resources=merge(accounted.resources, task.resources))
                if accounted is not None and _same_run(task, accounted)
                else task
            )
        return replace(status, tasks=tasks)


def _same_run(task: TaskState, accounted: TaskState) -> bool:
    """Whether accounting's record is of this very run: ended, on the task's cluster, started
    when it did (ids are reused after a reset; a requeued job runs more than once)."""
    if accounted.resources is None or not (task.state.is_terminal and accounted.state.is_terminal):
        return False
    if task.cluster and accounted.cluster and task.cluster != accounted.cluster:
        return False
    started = (task.start_time, accounted.start_time)
    return not (all(started) and started[0] != started[1])
