"""Exit codes of 128 and more, which pyslurm reads as 128 less: finding the tasks it may have
read short (:func:`short_by_128`) and putting the 128 back from raw wait statuses
(:func:`whole_exit_code`, :func:`restore_exit_codes`).

The raw statuses come from accounting through the old ``slurmdb_jobs``
(:func:`raw_statuses`) or, without accounting, from slurmctld's JSON (``squeue --json``);
:mod:`~datalad_slurm.slurm.pyslurmapi` decides which to ask.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterable, Mapping
from typing import Any

from datalad_slurm.slurm.backend import TaskKey
from datalad_slurm.slurm.pyslurmrecords import as_int
from datalad_slurm.slurm.state import ENDED_FROM_OUTSIDE, JobStatus, TaskState

#: raw wait statuses of a task: its exit code's and its derived exit code's
RawStatus = tuple[int | None, int | None]

#: Slurm's NO_VAL (0xfffffffe) and its kin: ids and statuses at or above are "not set"
_NOT_SET = 0xFFFFFFF0


def _wait_status(value: Any) -> int | None:
    """A raw wait status (16 bits), None where Slurm has none."""
    status = as_int(value)
    return status if status is not None and 0 <= status <= 0xFFFF else None


def raw_statuses(records: Iterable[Mapping[str, Any]]) -> dict[TaskKey, RawStatus]:
    """Raw statuses per task from the old ``slurmdb_jobs().get()`` records (``jobid``,
    ``array_job_id``, ``array_task_id``, ``exitcode``, ``derived_ec``; raw integers there,
    so array task 0 is 0)."""
    found: dict[TaskKey, RawStatus] = {}
    for record in records:
        job_id = as_int(record.get("jobid"))
        array_id = as_int(record.get("array_job_id"))
        task_id = as_int(record.get("array_task_id"))
        if not job_id:
            continue
        if array_id:
            if task_id is None or task_id >= _NOT_SET:
                continue  # the array's waiting rest: no status yet
            key: TaskKey = (array_id, task_id)
        else:
            key = (job_id, None)
        found[key] = (_wait_status(record.get("exitcode")), _wait_status(record.get("derived_ec")))
    return found


def whole_exit_code(reported: int | None, raw: int | None) -> int | None:
    """pyslurm's exit code with the 128 it took off put back, where the raw status shows it.

    Every pyslurm release reads an exit code with WEXITSTATUS and takes 128 off
    one of 128 or more (``_get_exit_code`` in ``pyslurm/utils/helpers.pyx``):
    130 reads as 2, 143 as 15, 128 as 0, so pyslurm's number alone cannot tell 2
    from 130.  A raw wait status of a normal exit whose code less 128 is the one
    reported gives the true code.  A signalled status changes nothing (pyslurm
    reports exit 0 and the signal then, nothing is lost), nor does a status that
    does not fit (another record of a reused job id).
    """
    if reported is None or raw is None or not os.WIFEXITED(raw):
        return reported
    code = os.WEXITSTATUS(raw)
    return code if code >= 128 and code - 128 == reported else reported


def tells(found: RawStatus | None, task: TaskState) -> bool:
    """Whether a raw status from accounting tells the task's exit code: a normal exit 128
    above pyslurm's code, or with pyslurm's code itself for a job that ended by itself (no
    status at all tells nothing either)."""
    if found is None or found[0] is None or not os.WIFEXITED(found[0]):
        return False
    if task.exit_code is None:
        return True
    code = os.WEXITSTATUS(found[0])
    return code == task.exit_code + 128 or (
        code == task.exit_code and task.state not in ENDED_FROM_OUTSIDE
    )


def short_by_128(task: TaskState) -> bool:
    """A task whose exit code pyslurm may have read 128 short: ended unsuccessfully, by no
    signal, with a code below 128 (a COMPLETED task's 0 is a true 0)."""
    return (
        task.state.is_terminal
        and not task.state.is_success
        and not task.signal
        and any(c is not None and c < 128 for c in (task.exit_code, task.derived_exit_code))
    )


def restore_exit_codes(statuses: dict[int, JobStatus], raw: Mapping[TaskKey, RawStatus]) -> None:
    """Replace the exit codes of tasks :func:`short_by_128` with their whole ones."""
    for status in statuses.values():
        for label, task in list(status.tasks.items()):
            found = raw.get((task.job_id, task.task_id))
            if found is None or not short_by_128(task):
                continue
            status.tasks[label] = dataclasses.replace(
                task,
                exit_code=whole_exit_code(task.exit_code, found[0]),
                derived_exit_code=whole_exit_code(task.derived_exit_code, found[1]),
            )
