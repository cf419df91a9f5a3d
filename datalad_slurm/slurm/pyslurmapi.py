"""Backend over pyslurm: one ``pyslurm.Jobs.load()``, one ``pyslurm.db.Jobs.load()``.

``pyslurm.Jobs.load()`` returns every job slurmctld still holds, every array
task included.  Jobs it no longer holds, and arrays whose ended tasks may have
left it, are looked up in accounting with one
``pyslurm.db.Jobs.load(JobFilter(ids=...))``.  When that fails, slurmctld's
config decides: without accounting those jobs stay unknown, as with the JSON
CLI; with accounting, or where pyslurm cannot tell, the query fails with "try
again later" (a job must not look unknown only because slurmdbd was down).

pyslurm releases follow Slurm's (22.5 ... 25.11) and differ in what they have;
:class:`PyslurmApi` finds the parts used here in the installed one and names
what is missing.  pyslurm reads exit codes of 128 and more as 128 less
(:func:`whole_exit_code`); the raw wait status from accounting restores them, and
without accounting slurmctld's own JSON (``squeue --json``) does.

pyslurm is imported lazily and only when a Slurm config can be found: importing
it initialises libslurm, which ends the interpreter when it finds no config.
pyslurm objects are first turned into plain dicts of the attributes used here
(:func:`plain_record`), so the mapping to :class:`TaskState` is testable from
recorded data without pyslurm.
"""

from __future__ import annotations

import dataclasses
import datetime
import logging
import os
from collections.abc import Iterable, Iterator, Mapping, Sequence
from types import ModuleType
from typing import Any

from datalad_slurm.slurm.backend import (
    BackendError,
    TaskKey,
    expand_log_path,
    expand_task_bitmap,
    keep_newest,
    live_then_accounting,
)
from datalad_slurm.slurm.conf import slurm_conf_path
from datalad_slurm.slurm.jsoncli import slurmctld_tasks
from datalad_slurm.slurm.resources import Resources, text, tres_from_text, tres_text
from datalad_slurm.slurm.state import ENDED_FROM_OUTSIDE, JobState, JobStatus, TaskState

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

lgr = logging.getLogger("datalad.slurm.pyslurmapi")
#: raw wait statuses of a task: its exit code's and its derived exit code's
RawStatus = tuple[int | None, int | None]


INSTALL_HINT = (
    'install pyslurm matching your Slurm release: pip install "pyslurm==<Slurm major.minor>.*" '
    "(needs Slurm's headers and libslurm, e.g. Debian's libslurm-dev, gcc and Cython)"
)


class _Api:
    """The imported pyslurm module, initialised for the config in use now."""

    module: ModuleType | None = None
    config: str | None = None

    @classmethod
    def get(cls) -> ModuleType:
        config = slurm_conf_path()
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
            fini, init = (getattr(cls.module, name, None) for name in ("slurm_fini", "slurm_init"))
            if callable(fini) and callable(init):  # both in every pyslurm with the object API
                fini()
                init(config)
            cls.config = config
        return cls.module


#: what pyslurm's object API first shipped in (22.5.0, 22.5.1 and 23.2.0 have only the old one)
FIRST_OBJECT_API = "22.5.2 (for Slurm 22.05) or 23.2.1 (for Slurm 23.02 and later)"


def _attribute(owner: Any, path: str) -> Any:
    """``owner.a.b`` for path ``"a.b"``, None where any part is missing."""
    for name in path.split("."):
        owner = getattr(owner, name, None)
        if owner is None:
            return None
    return owner


class PyslurmApi:
    """The parts of pyslurm this backend uses, as the installed release has them.

    Verified against pyslurm's tags: ``Jobs.load``, ``Job.load``, ``db.Jobs.load``
    and ``RPCError`` exist from 22.5.2/23.2.1 on (22.5.0, 22.5.1 and 23.2.0 only
    have the old dict API); ``db.JobFilter`` from 22.5.3/23.2.2 on, before it
    ``db.JobSearchFilter`` (kept as an alias since); ``slurmctld.Config`` has
    ``accounting_storage_type`` from 25.5.0 on, the old ``pyslurm.config()``
    dict has it up to 24.11; the old ``slurmdb_jobs`` (raw wait statuses) is in
    every tag from 22.5.2 to 25.11.2.
    """

    def __init__(self, module: Any) -> None:
        self.module = module
        version = getattr(module, "__version__", None)
        self.version = str(version) if version else "(version unknown)"
        self.load_jobs: Any = _attribute(module, "Jobs.load")
        self.load_db_jobs: Any = _attribute(module, "db.Jobs.load")
        self.job_filter: Any = _attribute(module, "db.JobFilter") or _attribute(
            module, "db.JobSearchFilter"
        )
        error = getattr(module, "RPCError", None)
        self.rpc_error: type[Exception] = (
            error if isinstance(error, type) and issubclass(error, Exception) else _NoError
        )
        missing = [
            name
            for name, found in (
                ("pyslurm.Jobs.load", callable(self.load_jobs)),
                ("pyslurm.db.Jobs.load", callable(self.load_db_jobs)),
                ("pyslurm.db.JobFilter (or JobSearchFilter)", callable(self.job_filter)),
                ("pyslurm.RPCError", self.rpc_error is not _NoError),
            )
            if not found
        ]
        if missing:
            where = getattr(module, "__file__", None)
            raise BackendError(
                f"pyslurm {self.version}{f' ({where})' if where else ''} lacks "
                f"{', '.join(missing)}: the pyslurm backend needs pyslurm's object API, "
                f"from pyslurm {FIRST_OBJECT_API}; {INSTALL_HINT}, or set "
                "datalad.slurm.backend to jsoncli"
            )

    def accounting_configured(self) -> bool | None:
        """Whether slurmctld's config names an accounting storage; None: pyslurm cannot tell.

        One RPC, asked only after accounting failed.  A value of None or
        ``accounting_storage/none`` is a config without accounting; a missing
        attribute or a failing call tells nothing.
        """
        config = _attribute(self.module, "slurmctld.Config")
        try:
            if config is not None and hasattr(config, "accounting_storage_type"):
                storage = config.load().accounting_storage_type  # pyslurm >= 25.5.0
            elif callable(getattr(self.module, "config", None)):
                # pyslurm <= 24.11: the old API's config dict has it
                storage = self.module.config().get()["accounting_storage_type"]
            else:
                return None
        except Exception:
            return None
        return bool(storage) and "none" not in str(storage).lower()

    def raw_exit_statuses(
        self, job_ids: Sequence[int], clusters: Sequence[str] = ()
    ) -> dict[TaskKey, RawStatus]:
        """Accounting's raw wait statuses of these jobs' tasks, through the old
        ``slurmdb_jobs`` (the object API only has them reduced); empty where it fails."""
        legacy = getattr(self.module, "slurmdb_jobs", None)
        if not callable(legacy):
            return {}
        try:
            answer = legacy().get(jobids=list(job_ids), clusters=list(clusters))
        except Exception:
            return {}
        return raw_statuses(answer.values() if isinstance(answer, Mapping) else [])


class _NoError(Exception):
    """Stands for a missing ``pyslurm.RPCError`` (never raised)."""


class PyslurmBackend:
    """Ask slurmctld and slurmdbd through pyslurm; one call each per query."""

    name = "pyslurm"

    def __init__(self) -> None:
        #: set after a query that needed accounting: whether slurmdbd answered
        self.accounting: bool | None = None

    @staticmethod
    def check() -> None:
        """Raise :class:`BackendError` when pyslurm cannot be imported, has no Slurm config or
        lacks the API used here."""
        PyslurmApi(_Api.get())

    def prefetch(self) -> None:
        """Nothing to start: one ``Jobs.load()`` RPC answers 10,000 jobs in a fraction of a
        second."""

    def query(self, job_ids: Sequence[int]) -> dict[int, JobStatus]:
        wanted = set(job_ids)
        if not wanted:
            return {}
        api = PyslurmApi(_Api.get())
        try:
            live = [plain_record(job) for job in _jobs_of(api.load_jobs()) if _owner(job) in wanted]
        except Exception as exc:  # RPCError, or any other error of a mismatched pyslurm
            raise BackendError(
                f"pyslurm could not load the jobs from slurmctld: {exc}; is slurmctld up? "
                "Try again later"
            ) from exc
        statuses = live_then_accounting(
            wanted,
            live_tasks(live, wanted),
            lambda rest: accounting_tasks(self._accounting(api, rest), wanted),
            self.name,
        )
        self._restore_exit_codes(api, statuses)
        return statuses

    def _restore_exit_codes(self, api: PyslurmApi, statuses: dict[int, JobStatus]) -> None:
        """Put back the 128 pyslurm took off exit codes of tasks :func:`short_by_128`.

        Accounting's raw wait statuses come first, where slurmdbd answers pyslurm
        (asked once more, through the object API, when slurmctld alone answered
        the query: the old ``slurmdb_jobs`` does not check its connection).
        Jobs that accounting does not give, because there is none, it did not
        answer or it lags, take the whole codes from slurmctld's JSON (one
        ``squeue --json``), which has them for the jobs slurmctld still holds; so do
        jobs whose raw status in accounting tells neither pyslurm's code nor 128 more
        (a cancelled job's shell that exited 143 is in accounting as its signal).
        """
        suspects = [t for s in statuses.values() for t in s.tasks.values() if short_by_128(t)]
        if not suspects:
            return
        job_ids = sorted({t.job_id for t in suspects})
        raw: dict[TaskKey, RawStatus] = {}
        if self._accounting_answers(api, job_ids):
            clusters = sorted({t.cluster for t in suspects if t.cluster})
            raw = api.raw_exit_statuses(job_ids, clusters)
        # jobs accounting gives no raw status for, or one that tells nothing of the code
        unanswered = sorted(
            {t.job_id for t in suspects if not _tells(raw.get((t.job_id, t.task_id)), t)}
        )
        if unanswered:
            # slurmctld's word, where it still holds the job, replaces accounting's
            raw = {**raw, **_slurmctld_statuses(unanswered)}
        restore_exit_codes(statuses, raw)

    def usage(self, job_ids: Sequence[int]) -> DbUsage:
        """What these jobs' steps used, from ``pyslurm.db.Jobs.load``: one RPC, made when the
        answer is read (libslurm holds the interpreter while it waits)."""
        return DbUsage(self, job_ids)

    def _accounting_answers(self, api: PyslurmApi, job_ids: list[int]) -> bool:
        """Whether slurmdbd answers pyslurm: known from this query, else asked for these jobs."""
        if self.accounting is None:
            try:
                api.load_db_jobs(api.job_filter(ids=job_ids))
            except Exception:
                return False
            self.accounting = True
        return self.accounting

    def _accounting(self, api: PyslurmApi, job_ids: list[int]) -> list[dict[str, Any]]:
        try:
            jobs = api.load_db_jobs(api.job_filter(ids=job_ids))
        except api.rpc_error as exc:
            configured = api.accounting_configured()
            if configured is False:
                # no accounting (accounting_storage/none): jobs that left slurmctld are unknown
                self.accounting = False
                return []
            if configured is None:
                raise BackendError(
                    f"slurmdbd did not answer pyslurm ({exc}), and pyslurm {api.version} cannot "
                    "tell whether Slurm keeps accounting: the state of jobs slurmctld no longer "
                    "holds is not known now; try again later"
                ) from exc
            raise BackendError(f"slurmdbd did not answer pyslurm: {exc}; try again later") from exc
        except Exception as exc:
            raise BackendError(f"pyslurm could not read Slurm's accounting: {exc}") from exc
        self.accounting = True
        return [plain_record(job) for job in _jobs_of(jobs)]


class DbUsage:
    """A usage question to accounting through pyslurm, asked when its answer is read."""

    def __init__(self, backend: PyslurmBackend, job_ids: Sequence[int]) -> None:
        self.backend = backend
        self.job_ids = sorted(set(job_ids))

    def result(self) -> dict[TaskKey, TaskState]:
        if self.backend.accounting is False:
            return {}
        try:
            api = PyslurmApi(_Api.get())
            jobs = api.load_db_jobs(api.job_filter(ids=self.job_ids))
            records = [plain_record(job) for job in _jobs_of(jobs)]
        except Exception as exc:  # no accounting, slurmdbd down: the figures stay unknown
            lgr.debug("no usage figures from accounting: %s", exc)
            return {}
        return {
            (task.job_id, task.task_id): task
            for task in accounting_tasks(records, set(self.job_ids))
        }


def _owner(job: Any) -> int | None:
    """The id a job is registered by: its array's for an array task."""
    try:
        return _int(getattr(job, "array_id", None)) or _int(getattr(job, "id", None))
    except Exception:
        return None


def _slurmctld_statuses(job_ids: Sequence[int]) -> dict[TaskKey, RawStatus]:
    """Whole exit codes from slurmctld's JSON (``squeue --json``), where there is no accounting
    to ask: as wait statuses, for :func:`restore_exit_codes`.  Nothing where squeue fails."""
    try:
        tasks = slurmctld_tasks(job_ids)
    except BackendError:
        return {}
    return {
        (t.job_id, t.task_id): (None if t.exit_code is None else t.exit_code << 8, None)
        for t in tasks
    }


#: Slurm's NO_VAL (0xfffffffe) and its kin: ids and statuses at or above are "not set"
_NOT_SET = 0xFFFFFFF0


def _wait_status(value: Any) -> int | None:
    """A raw wait status (16 bits), None where Slurm has none."""
    status = _int(value)
    return status if status is not None and 0 <= status <= 0xFFFF else None


def raw_statuses(records: Iterable[Mapping[str, Any]]) -> dict[TaskKey, RawStatus]:
    """Raw statuses per task from the old ``slurmdb_jobs().get()`` records (``jobid``,
    ``array_job_id``, ``array_task_id``, ``exitcode``, ``derived_ec``; raw integers there,
    so array task 0 is 0)."""
    found: dict[TaskKey, RawStatus] = {}
    for record in records:
        job_id = _int(record.get("jobid"))
        array_id = _int(record.get("array_job_id"))
        task_id = _int(record.get("array_task_id"))
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


def _tells(found: RawStatus | None, task: TaskState) -> bool:
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
            value = _attribute(job, field)
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
    elapsed = _int(record.get("elapsed_time"))
    if elapsed is None:
        elapsed = _int(record.get("run_time"))
    start, end = _int(record.get("start_time")), _int(record.get("end_time"))
    if elapsed is None and start and end:
        elapsed = max(end - start - (_int(record.get("suspended_time")) or 0), 0)
    elif elapsed is None and not start:
        elapsed = 0  # it never started (cancelled while pending), as sacct says
    rss = _int(record.get("stats.resident_memory")) or None
    cpu = _int(record.get("stats.total_cpu_time")) or None
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
    record: Mapping[str, Any],
    job_id: int,
    task_id: int | None,
    waiting: bool = False,
    source: str = "pyslurm",
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
        job_id = _int(record.get("id"))
        if job_id is None:
            continue
        owner = _int(record.get("array_id")) or job_id
        if owner not in wanted:
            continue
        task_ids, waiting = _task_ids(record)
        submitted = _int(record.get("submit_time")) or 0
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
