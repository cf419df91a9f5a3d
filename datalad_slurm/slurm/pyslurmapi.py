"""Backend over pyslurm: one ``pyslurm.Jobs.load()``, one ``pyslurm.db.Jobs.load()``.

``pyslurm.Jobs.load()`` returns every job slurmctld still holds, every array
task included.  Jobs it no longer holds, and arrays whose ended tasks may have
left it, are looked up in accounting with one
``pyslurm.db.Jobs.load(JobFilter(ids=...))``; without slurmdbd that raises
``RPCError`` at once and those jobs stay unknown, as with the JSON CLI.

pyslurm is imported lazily and only when a Slurm config can be found: importing
it initialises libslurm, which ends the interpreter when it finds no config.
pyslurm objects are first turned into plain dicts of the attributes used here
(:func:`plain_record`), so the mapping to :class:`TaskState` is testable from
recorded data without pyslurm.
"""

from __future__ import annotations

import datetime
import os
from collections.abc import Iterable, Iterator, Mapping, Sequence
from types import ModuleType
from typing import Any

from datalad_slurm.slurm.backend import (
    BackendError,
    expand_log_path,
    expand_task_bitmap,
    keep_newest,
    live_then_accounting,
)
from datalad_slurm.slurm.state import JobState, JobStatus, TaskState

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

#: where libslurm finds its config without SLURM_CONF (Debian; configless slurmd's cache)
DEFAULT_CONFIGS = ("/etc/slurm/slurm.conf", "/run/slurm/conf/slurm.conf")

INSTALL_HINT = (
    'install pyslurm matching your Slurm release: pip install "pyslurm==<Slurm major.minor>.*" '
    "(needs Slurm's headers and libslurm, e.g. Debian's libslurm-dev, gcc and Cython)"
)


def slurm_config_path() -> str | None:
    """The slurm.conf libslurm would read, or None when there is none."""
    named = os.environ.get("SLURM_CONF")
    if named:
        return named if os.path.isfile(named) else None
    return next((path for path in DEFAULT_CONFIGS if os.path.isfile(path)), None)


class _Api:
    """The imported pyslurm module, initialised for the config in use now."""

    module: ModuleType | None = None
    config: str | None = None

    @classmethod
    def get(cls) -> ModuleType:
        config = slurm_config_path()
        if config is None:
            raise BackendError(
                "pyslurm needs a Slurm config: set SLURM_CONF or install /etc/slurm/slurm.conf"
            )
        if cls.module is None:
            try:
                import pyslurm
            except (ImportError, OSError) as exc:  # not installed, or built for another Slurm
                raise BackendError(f"pyslurm cannot be imported ({exc}); {INSTALL_HINT}") from exc
            cls.module, cls.config = pyslurm, config
        elif config != cls.config:
            # libslurm reads its config once; another SLURM_CONF needs a fresh start (that
            # reaches the new slurmctld; slurmdbd stays the first accounting cluster's)
            cls.module.slurm_fini()
            cls.module.slurm_init(config)
            cls.config = config
        return cls.module


class PyslurmBackend:
    """Ask slurmctld and slurmdbd through pyslurm; one call each per query."""

    name = "pyslurm"

    def __init__(self) -> None:
        #: set after a query that needed accounting: whether slurmdbd answered
        self.accounting: bool | None = None

    @staticmethod
    def check() -> None:
        """Raise :class:`BackendError` when pyslurm cannot be imported or has no Slurm config."""
        _Api.get()

    def prefetch(self) -> None:
        """Nothing to start: one ``Jobs.load()`` RPC answers 10,000 jobs in a fraction of a
        second."""

    def query(self, job_ids: Sequence[int]) -> dict[int, JobStatus]:
        wanted = set(job_ids)
        if not wanted:
            return {}
        api = _Api.get()
        try:
            live = [plain_record(job) for job in _jobs_of(api.Jobs.load())]
        except Exception as exc:  # RPCError, or any other error of a mismatched pyslurm
            raise BackendError(
                f"pyslurm could not load the jobs from slurmctld: {exc}; is slurmctld up? "
                "Try again later"
            ) from exc
        return live_then_accounting(
            wanted,
            live_tasks(live, wanted),
            lambda rest: accounting_tasks(self._accounting(api, rest), wanted),
            self.name,
        )

    def _accounting(self, api: ModuleType, job_ids: list[int]) -> list[dict[str, Any]]:
        try:
            jobs = api.db.Jobs.load(api.db.JobFilter(ids=job_ids))
        except api.RPCError as exc:
            if _accounting_configured(api):
                raise BackendError(
                    f"slurmdbd did not answer pyslurm: {exc}; try again later"
                ) from exc
            # no accounting (accounting_storage/none): jobs that left slurmctld are unknown
            self.accounting = False
            return []
        except Exception as exc:
            raise BackendError(f"pyslurm could not read Slurm's accounting: {exc}") from exc
        self.accounting = True
        return [plain_record(job) for job in _jobs_of(jobs)]


def _accounting_configured(api: ModuleType) -> bool:
    """Whether slurmctld's config names an accounting storage (one RPC, asked only on errors)."""
    try:
        storage = api.slurmctld.Config.load().accounting_storage_type
    except Exception:
        return False
    return bool(storage) and "none" not in str(storage)


def _jobs_of(collection: Any) -> Iterator[Any]:
    """The job objects of a pyslurm collection (a list, a dict or a per-cluster map)."""
    values = collection.values() if hasattr(collection, "values") else collection
    for item in values:
        if isinstance(item, Mapping) or (hasattr(item, "values") and not hasattr(item, "state")):
            yield from _jobs_of(item)
        else:
            yield item


def _plain_value(value: Any) -> Any:
    if isinstance(value, datetime.datetime):
        return int(value.timestamp())
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return str(value)


def plain_record(job: Any) -> dict[str, Any]:
    """The attributes this backend uses, as JSON-able values (None where pyslurm has none)."""
    record: dict[str, Any] = {}
    for field in RECORD_FIELDS:
        try:
            record[field] = _plain_value(getattr(job, field, None))
        except Exception:  # pyslurm computes some properties and may fail on odd records
            record[field] = None
    return record


def _int(value: Any) -> int | None:
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
    array_id = _int(record.get("array_id"))
    if not array_id:
        return [None], False
    task_id = _int(record.get("array_task_id"))
    if task_id is not None:
        return [task_id], False
    waiting = str(record.get("array_tasks_waiting") or "").strip()
    if waiting:
        # slurmctld gives a range ("1-3"), accounting a hex bitmap ("0x7")
        return list(expand_task_bitmap(waiting)), True
    return [0], False


def _task(
    record: Mapping[str, Any], job_id: int, task_id: int | None, waiting: bool = False
) -> TaskState:
    state = JobState.parse(record.get("state"))
    terminal = state.is_terminal
    owner = _int(record.get("array_id")) or job_id
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
        exit_code=_int(record.get("exit_code")) if terminal else None,
        signal=_int(record.get("exit_code_signal")) if terminal else None,
        derived_exit_code=_int(record.get("derived_exit_code")) if terminal else None,
        start_time=_int(record.get("start_time")) or None,
        end_time=(_int(record.get("end_time")) or None) if terminal else None,
        submit_time=_int(record.get("submit_time")) or None,
        stdout=logs["standard_output"],
        stderr=logs["standard_error"],
        work_dir=work_dir,
        cluster=record.get("cluster") or None,
        reason=_reason(record.get("state_reason")),
    )


def _reason(text: Any) -> str | None:
    return None if text in (None, "", "None") else str(text)


def _records_for(
    records: Iterable[Mapping[str, Any]], wanted: set[int]
) -> Iterator[tuple[int, Iterator[TaskState]]]:
    """Per wanted record: its submit time and its tasks."""
    for record in records:
        job_id = _int(record.get("id"))
        if job_id is None:
            continue
        owner = _int(record.get("array_id")) or job_id
        if owner not in wanted:
            continue
        task_ids, waiting = _task_ids(record)
        submitted = _int(record.get("submit_time")) or 0
        yield submitted, (_task(record, job_id, tid, waiting) for tid in task_ids)


def live_tasks(records: Iterable[Mapping[str, Any]], wanted: set[int]) -> Iterator[TaskState]:
    """Tasks of the wanted jobs from slurmctld's records (``pyslurm.Jobs``)."""
    for _, tasks in _records_for(records, wanted):
        yield from tasks


def accounting_tasks(records: Iterable[Mapping[str, Any]], wanted: set[int]) -> list[TaskState]:
    """Tasks of the wanted jobs from accounting (``pyslurm.db.Jobs``), the newest per task."""
    return keep_newest(
        (submitted, task) for submitted, tasks in _records_for(records, wanted) for task in tasks
    )
