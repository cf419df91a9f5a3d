"""pyslurm's job records read into our states: ``pyslurm.Job`` (slurmctld) and ``pyslurm.db.Job``
(accounting) turned into plain dicts of the attributes used here (:func:`plain_record`), and
those into :class:`TaskState` with their resources (:func:`live_tasks`, :func:`accounting_tasks`).

The plain records make the mapping testable from recorded data without pyslurm
(tests/unit/fixtures, tests/tools/record_pyslurm_fixtures.py).  pyslurm reads array task 0 as
None and accounting's elapsed time 0 as None; both are read back here.
"""

from __future__ import annotations

import datetime
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

from datalad_slurm.slurm.backend import expand_log_path, expand_task_bitmap, keep_newest
from datalad_slurm.slurm.resources import Resources, text, tres_from_text, tres_text
from datalad_slurm.slurm.state import JobState, TaskState

#: attributes read from ``pyslurm.Job`` (slurmctld) and ``pyslurm.db.Job`` (accounting)
RECORD_FIELDS = (
    "id",
    "name",
    "user_name",
    "cluster",
    "array_id",
    "array_task_id",
    "array_tasks_waiting",
    "state",
    "state_reason",
    "exit_code",
    "exit_code_signal",
    "derived_exit_code",
    "derived_exit_code_signal",
    "submit_time",
    "start_time",
    "end_time",
    "working_directory",
    "standard_output",
    "standard_error",
    "batch_host",
)

#: what the job was given and used: read only for jobs that are not pending (10,000 pending jobs
#: of a listing need none), TRES as Slurm's strings (:func:`resources.tres_text`); ``stats.*``
#: (accounting: the steps' usage) and ``elapsed_time``/``nodelist`` are ``pyslurm.db.Job``'s,
#: ``run_time``/``allocated_nodes`` ``pyslurm.Job``'s
RESOURCE_FIELDS = (
    "run_time",
    "elapsed_time",
    "suspended_time",
    "allocated_nodes",
    "nodelist",
    "partition",
    "account",
    "qos",
    "requested_tres",
    "allocated_tres",
    "stats.total_cpu_time",
    "stats.resident_memory",
)


def attribute(owner: Any, path: str) -> Any:
    """``owner.a.b`` for path ``"a.b"``, None where any part is missing."""
    for name in path.split("."):
        owner = getattr(owner, name, None)
        if owner is None:
            return None
    return owner


def jobs_of(collection: Any) -> Iterator[Any]:
    """The job objects of a pyslurm collection (a list, a dict or a per-cluster map)."""
    values = collection.values() if hasattr(collection, "values") else collection
    for item in values:
        if isinstance(item, Mapping) or (hasattr(item, "values") and not hasattr(item, "state")):
            yield from jobs_of(item)
        else:
            yield item


def _plain_value(value: Any) -> Any:
    if isinstance(value, datetime.datetime):
        return int(value.timestamp())
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return str(value)


def plain_record(job: Any) -> dict[str, Any]:
    """The attributes this backend uses, as JSON-able values (None where pyslurm has none);
    the resource fields only for a job that is not pending."""
    record: dict[str, Any] = {}
    for field in RECORD_FIELDS:
        try:
            record[field] = _plain_value(getattr(job, field, None))
        except Exception:  # pyslurm computes some properties and may fail on odd records
            record[field] = None
    if JobState.parse(record.get("state")) is JobState.PENDING:
        return record
    for field in RESOURCE_FIELDS:
        try:
            value = attribute(job, field)
            record[field] = tres_text(value) if field.endswith("_tres") else _plain_value(value)
        except Exception:
            record[field] = None
    return record


def record_resources(record: Mapping[str, Any], source: str) -> Resources | None:
    """A plain record's figures (``source``: ``pyslurm`` or ``pyslurm.db``).

    pyslurm reads accounting's elapsed time 0 as None: for an ended job it is
    then its end less its start and the time it was suspended (0 if it never
    started).  Only ended and running jobs are read.  A usage figure
    0 is what accounting holds where Slurm gathered nothing: unknown, as from
    sacct (:func:`resources.from_sacct`).
    """
    if not any(field in record for field in RESOURCE_FIELDS):
        return None
    elapsed = as_int(record.get("elapsed_time"))
    if elapsed is None:
        elapsed = as_int(record.get("run_time"))
    start, end = as_int(record.get("start_time")), as_int(record.get("end_time"))
    if elapsed is None and start and end:
        elapsed = max(end - start - (as_int(record.get("suspended_time")) or 0), 0)
    elif elapsed is None and not start:
        elapsed = 0  # it never started (cancelled while pending), as sacct says
    rss = as_int(record.get("stats.resident_memory")) or None
    cpu = as_int(record.get("stats.total_cpu_time")) or None
    found = Resources(
        elapsed=elapsed,
        total_cpu=None if cpu is None else float(cpu),
        max_rss=rss,
        req_tres=tres_from_text(record.get("requested_tres")),
        alloc_tres=tres_from_text(record.get("allocated_tres")),
        nodes=text(record.get("allocated_nodes")) or text(record.get("nodelist")),
        partition=text(record.get("partition")),
        account=text(record.get("account")),
        qos=text(record.get("qos")),
        source=source,
    )
    return found if found.figures else None


def as_int(value: Any) -> int | None:
    if value is None or isinstance(value, bool):
        return None
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def _task_ids(record: Mapping[str, Any]) -> tuple[list[int | None], bool]:
    """The array task ids a record stands for ([None] for a plain job), and whether they wait.

    pyslurm reads array task 0 as None; a record of an array with no task id
    is either the not-yet-started rest (``array_tasks_waiting``) or task 0.
    """
    array_id = as_int(record.get("array_id"))
    if not array_id:
        return [None], False
    task_id = as_int(record.get("array_task_id"))
    if task_id is not None:
        return [task_id], False
    waiting = str(record.get("array_tasks_waiting") or "").strip()
    if waiting:
        # slurmctld gives a range ("1-3"), accounting a hex bitmap ("0x7")
        return list(expand_task_bitmap(waiting)), True
    return [0], False


def _task(
    record: Mapping[str, Any],
    job_id: int,
    task_id: int | None,
    waiting: bool = False,
    source: str = "pyslurm",
) -> TaskState:
    state = JobState.parse(record.get("state"))
    terminal = state.is_terminal
    owner = as_int(record.get("array_id")) or job_id
    work_dir = record.get("working_directory") or None
    # pyslurm expands the log names itself, for the waiting rest of an array with task
    # id NO_VAL: those tasks' logs are only known once they run
    logs = {
        key: None
        if waiting
        else expand_log_path(
            record.get(key),
            work_dir,
            job_id=job_id,
            array_job_id=owner if task_id is not None else None,
            task_id=task_id,
            job_name=record.get("name"),
            user=record.get("user_name"),
            node=record.get("batch_host"),
        )
        for key in ("standard_output", "standard_error")
    }
    return TaskState(
        job_id=owner,
        task_id=task_id,
        state=state,
        # while a job is active pyslurm shows 0 exit codes and its time limit as end time
        exit_code=as_int(record.get("exit_code")) if terminal else None,
        signal=as_int(record.get("exit_code_signal")) if terminal else None,
        derived_exit_code=as_int(record.get("derived_exit_code")) if terminal else None,
        start_time=as_int(record.get("start_time")) or None,
        end_time=(as_int(record.get("end_time")) or None) if terminal else None,
        submit_time=as_int(record.get("submit_time")) or None,
        stdout=logs["standard_output"],
        stderr=logs["standard_error"],
        work_dir=work_dir,
        cluster=record.get("cluster") or None,
        reason=_reason(record.get("state_reason")),
        # a running task's elapsed time is for the listing
        resources=record_resources(record, source)
        if terminal or state in (JobState.RUNNING, JobState.SUSPENDED)
        else None,
    )


def _reason(text: Any) -> str | None:
    return None if text in (None, "", "None") else str(text)


def _records_for(
    records: Iterable[Mapping[str, Any]], wanted: set[int], source: str = "pyslurm"
) -> Iterator[tuple[int, Iterator[TaskState]]]:
    """Per wanted record: its submit time and its tasks."""
    for record in records:
        job_id = as_int(record.get("id"))
        if job_id is None:
            continue
        owner = as_int(record.get("array_id")) or job_id
        if owner not in wanted:
            continue
        task_ids, waiting = _task_ids(record)
        submitted = as_int(record.get("submit_time")) or 0
        yield submitted, (_task(record, job_id, tid, waiting, source) for tid in task_ids)


def live_tasks(records: Iterable[Mapping[str, Any]], wanted: set[int]) -> Iterator[TaskState]:
    """Tasks of the wanted jobs from slurmctld's records (``pyslurm.Jobs``)."""
    for _, tasks in _records_for(records, wanted):
        yield from tasks


def accounting_tasks(records: Iterable[Mapping[str, Any]], wanted: set[int]) -> list[TaskState]:
    """Tasks of the wanted jobs from accounting (``pyslurm.db.Jobs``), the newest per task."""
    return keep_newest(
        (submitted, task)
        for submitted, tasks in _records_for(records, wanted, "pyslurm.db")
        for task in tasks
    )
