"""Slurm's JSON job records read into our states: ``squeue --json`` (:func:`squeue_tasks`),
``squeue --json --only-job-state`` (:func:`job_state_tasks`) and ``sacct --json``
(:func:`sacct_tasks`), in every layout from v0.0.38 (22.05) on; the fields of each layout are
read by :mod:`~datalad_slurm.slurm.jsonlayout`.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import replace
from typing import Any

from datalad_slurm.slurm.backend import (
    expand_array_spec,
    expand_log_path,
    expand_task_bitmap,
    keep_newest,
)
from datalad_slurm.slurm.jsonlayout import ExitStatus, dig, exit_status, log_name, number
from datalad_slurm.slurm.resources import Resources, from_sacct, from_squeue
from datalad_slurm.slurm.state import JobState, TaskState

_PLAIN_JOB_ID = re.compile(r"^\d+$")
_LEADING_JOB_ID = re.compile(r"^(\d+)[_+]")
#: states whose elapsed time grows: the listing asks for their full records
_TIMED = (JobState.RUNNING, JobState.SUSPENDED)


def _owner(job_id: int | None, array_job_id: int | None) -> int | None:
    return array_job_id if array_job_id else job_id


def job_state_tasks(
    answer: Mapping[str, Any], wanted: set[int]
) -> tuple[list[TaskState], set[int]]:
    """The wanted plain jobs in an ``squeue --json --only-job-state`` answer, and the wanted
    jobs it does not settle.

    Its records are ``{"job_id": "12", "state": [..]}``; an array task is ``"12_3"``, a
    heterogeneous component ``"12+1"``.  An array task that started is named by its own job
    id (v0.0.41 and later) or its array job id (v0.0.40), so arrays are never taken from it:
    a wanted job it shows as an array or a component is unsettled, and so is every wanted
    job it does not list when it shows an array task of a job not wanted (its array job may
    be wanted, the record that names that one gone).  Running and suspended jobs are
    unsettled too: their elapsed time is only in the full record.
    """
    cluster = dig(answer, "meta", "slurm", "cluster") or None
    tasks: list[TaskState] = []
    plain: set[int] = set()
    unsettled: set[int] = set()
    foreign_task = False
    #: a state as Slurm wrote it -> JobState (10,000 pending jobs share one)
    parsed: dict[tuple[str, ...] | str, JobState] = {}
    for record in answer.get("jobs") or []:
        name = str(record.get("job_id") if isinstance(record, Mapping) else "")
        if _PLAIN_JOB_ID.match(name):
            job_id = int(name)
            if job_id in wanted:
                plain.add(job_id)
                written = record.get("state")
                key = tuple(map(str, written)) if isinstance(written, list) else str(written)
                if key not in parsed:
                    parsed[key] = JobState.parse(written)
                tasks.append(
                    TaskState(job_id=job_id, task_id=None, state=parsed[key], cluster=cluster)
                )
            continue
        leading = _LEADING_JOB_ID.match(name)
        if leading and int(leading.group(1)) in wanted:
            unsettled.add(int(leading.group(1)))
        else:
            foreign_task = True
    unsettled -= plain
    if foreign_task:
        unsettled |= wanted - plain
    # a running job's elapsed time is only in its full record (the listing shows it)
    running = {t.job_id for t in tasks if t.state in _TIMED}
    return [t for t in tasks if t.job_id not in running], unsettled | running


def _phase(state: JobState) -> str:
    """How a state counts for a job's run time (:func:`resources.run_time`)."""
    if state is JobState.PENDING:
        return "pending"
    if state is JobState.SUSPENDED:
        return "suspended"
    return "running" if state is JobState.RUNNING else "ended"


def _squeue_resources(record: Mapping[str, Any], state: JobState, now: float) -> Resources | None:
    """An ended task's figures; a running one's elapsed time only (for the listing); none
    for a pending one (10,000 of them cost)."""
    if state.is_terminal:
        return from_squeue(record, "ended", now)
    if state in (JobState.RUNNING, JobState.SUSPENDED):
        return from_squeue(record, _phase(state), now)
    return None


def squeue_tasks(answer: Mapping[str, Any], wanted: set[int]) -> Iterator[TaskState]:
    now = time.time()
    for record in answer.get("jobs") or []:
        job_id = number(record.get("job_id"))
        array_job_id = number(record.get("array_job_id"))
        owner = _owner(job_id, array_job_id)
        if owner not in wanted or job_id is None or owner is None:
            continue
        pending_tasks = str(record.get("array_task_string") or "") if array_job_id else ""
        task_id = None
        if array_job_id and not pending_tasks:
            task_id = number(record.get("array_task_id"))
            if task_id is None:
                continue  # an array's bookkeeping record with no task behind it
        state = JobState.parse(record.get("job_state"))
        ended = (
            exit_status(record.get("exit_code")) if state.is_terminal else ExitStatus(None, None)
        )
        task = TaskState(
            job_id=owner,
            task_id=task_id,
            state=state,
            exit_code=ended.exit_code,
            signal=ended.signal,
            start_time=number(record.get("start_time")) or None,
            end_time=number(record.get("end_time")) or None,
            submit_time=number(record.get("submit_time")) or None,
            work_dir=record.get("current_working_directory") or None,
            cluster=record.get("cluster") or None,
            reason=record.get("state_reason") or None,
            resources=_squeue_resources(record, state, now),
        )
        if pending_tasks:
            # the not-yet-started rest of an array, compressed into one record
            for pending_id in expand_array_spec(pending_tasks):
                yield _with_logs(record, job_id, owner, replace(task, task_id=pending_id))
        else:
            yield _with_logs(record, job_id, owner, task)


def _with_logs(record: Mapping[str, Any], job_id: int, owner: int, task: TaskState) -> TaskState:
    """The task with its log files named, if it ended (only an ended task's logs are
    committed, and naming them for 10,000 pending jobs costs)."""
    if not task.state.is_terminal:
        return task
    names = {
        stream: log_path(
            record,
            stream,
            task.work_dir,
            job_id=job_id,
            array_job_id=owner if task.task_id is not None else None,
            task_id=task.task_id,
            job_name=record.get("name"),
            user=record.get("user_name") or record.get("user"),
            node=(record.get("batch_host") or record.get("nodes") or None),
        )
        for stream in ("stdout", "stderr")
    }
    return replace(task, stdout=names["stdout"], stderr=names["stderr"])


def log_path(
    record: Mapping[str, Any], stream: str, work_dir: str | None, **symbols: Any
) -> str | None:
    """A job's log file as an absolute path, in any layout (see :func:`log_name`)."""
    name, is_pattern = log_name(record, stream)
    return expand_log_path(name, work_dir, expand=is_pattern, **symbols)


def _accounted_exit(record: Mapping[str, Any], state: JobState) -> ExitStatus:
    """A job's exit from accounting.  Before 23.11 its exit code reads 0 for every normal
    exit, and a signal shows only on the step the signal ended."""
    ended = exit_status(record.get("exit_code"))
    if ended.exit_code is not None or ended.signal:
        return ended
    for step in record.get("steps") or []:
        from_step = exit_status(step.get("exit_code") if isinstance(step, Mapping) else None)
        if from_step.signal:
            return from_step
    return ExitStatus(0, 0) if state.is_success else ended


def sacct_tasks(answer: Mapping[str, Any], wanted: set[int]) -> Iterable[TaskState]:
    found: list[tuple[int, TaskState]] = []
    for record in answer.get("jobs") or []:
        job_id = number(record.get("job_id"))
        array_job_id = number(dig(record, "array", "job_id"))
        owner = _owner(job_id, array_job_id)
        if owner not in wanted or owner is None or job_id is None:
            continue
        state = JobState.parse(dig(record, "state", "current"))
        ended = _accounted_exit(record, state) if state.is_terminal else ExitStatus(None, None)
        submit = number(dig(record, "time", "submission")) or 0
        work_dir = record.get("working_directory") or None
        common = TaskState(
            job_id=owner,
            task_id=None,
            state=state,
            exit_code=ended.exit_code,
            signal=ended.signal,
            start_time=number(dig(record, "time", "start")) or None,
            end_time=number(dig(record, "time", "end")) or None,
            submit_time=submit or None,
            work_dir=work_dir,
            cluster=record.get("cluster") or None,
            reason=dig(record, "state", "reason") or None,
            resources=from_sacct(record) if state.is_terminal else None,
        )
        pending = str(dig(record, "array", "task") or "")
        task_id = number(dig(record, "array", "task_id")) if array_job_id else None
        if array_job_id and task_id is None and pending:
            task_ids: list[int | None] = list(expand_task_bitmap(pending))
        elif array_job_id and task_id is None:
            continue  # an array's bookkeeping record with no task behind it
        else:
            task_ids = [task_id]
        for tid in task_ids:
            task = replace(common, task_id=tid)
            if state.is_terminal:  # sacct names logs from 24.05 (v0.0.41)
                symbols = {
                    "job_id": job_id,
                    "array_job_id": owner if tid is not None else None,
                    "task_id": tid,
                    "job_name": record.get("name"),
                    "user": record.get("user"),
                    "node": record.get("nodes") or None,
                }
                task = replace(
                    task,
                    stdout=log_path(record, "stdout", work_dir, **symbols),
                    stderr=log_path(record, "stderr", work_dir, **symbols),
                )
            found.append((submit, task))
    return keep_newest(found)
