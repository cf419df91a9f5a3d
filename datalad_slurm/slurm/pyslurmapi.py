"""Backend over pyslurm: one ``pyslurm.Jobs.load()``, one ``pyslurm.db.Jobs.load()``.

``pyslurm.Jobs.load()`` returns every job slurmctld still holds, every array
task included.  Jobs it no longer holds, and arrays whose ended tasks may have
left it, are looked up in accounting with one
``pyslurm.db.Jobs.load(JobFilter(ids=...))``.  When that fails, slurmctld's
config decides: without accounting those jobs stay unknown, as with the JSON
CLI; with accounting, or where pyslurm cannot tell, the query fails with "try
again later" (a job must not look unknown only because slurmdbd was down).

This module owns the queries and the order of the questions.  Loading pyslurm and finding its
API is :mod:`~datalad_slurm.slurm.pyslurmload`'s; reading its records into our states
:mod:`~datalad_slurm.slurm.pyslurmrecords`'; pyslurm reads exit codes of 128 and more as 128
less, and :mod:`~datalad_slurm.slurm.pyslurmexit` puts the 128 back from the raw wait status
in accounting, or, without accounting, from slurmctld's own JSON (``squeue --json``).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from datalad_slurm.slurm.backend import BackendError, TaskKey, live_then_accounting
from datalad_slurm.slurm.jsoncli import slurmctld_tasks
from datalad_slurm.slurm.pyslurmexit import RawStatus, restore_exit_codes, short_by_128, tells
from datalad_slurm.slurm.pyslurmload import LoadedPyslurm, PyslurmApi
from datalad_slurm.slurm.pyslurmrecords import (
    accounting_tasks,
    as_int,
    jobs_of,
    live_tasks,
    plain_record,
)
from datalad_slurm.slurm.state import JobStatus, TaskState

lgr = logging.getLogger("datalad.slurm.pyslurmapi")


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
        PyslurmApi(LoadedPyslurm.get())

    def prefetch(self) -> None:
        """Nothing to start: one ``Jobs.load()`` RPC answers 10,000 jobs in a fraction of a
        second."""

    def query(self, job_ids: Sequence[int]) -> dict[int, JobStatus]:
        wanted = set(job_ids)
        if not wanted:
            return {}
        api = PyslurmApi(LoadedPyslurm.get())
        try:
            live = [plain_record(job) for job in jobs_of(api.load_jobs()) if _owner(job) in wanted]
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
            {t.job_id for t in suspects if not tells(raw.get((t.job_id, t.task_id)), t)}
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
        return [plain_record(job) for job in jobs_of(jobs)]


class DbUsage:
    """A usage question to accounting through pyslurm, asked when its answer is read."""

    def __init__(self, backend: PyslurmBackend, job_ids: Sequence[int]) -> None:
        self.backend = backend
        self.job_ids = sorted(set(job_ids))

    def result(self) -> dict[TaskKey, TaskState]:
        if self.backend.accounting is False:
            return {}
        try:
            api = PyslurmApi(LoadedPyslurm.get())
            jobs = api.load_db_jobs(api.job_filter(ids=self.job_ids))
            records = [plain_record(job) for job in jobs_of(jobs)]
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
        return as_int(getattr(job, "array_id", None)) or as_int(getattr(job, "id", None))
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
