"""Backend over Slurm's own JSON output: one ``squeue --json``, one ``sacct --json``.

``squeue --json`` lists every job slurmctld still holds (22.05 ignores
``-j``), so it is called once without filters.  Jobs it no longer holds, and
array tasks that already left it, are looked up with one ``sacct --json -j``
call when accounting is enabled.  Exit codes are taken from squeue where
possible: 22.05's ``sacct --json`` reports 0 for every non-zero normal exit.

A caller that needs only states (``finish --list-open-jobs``) says so with
``states_only``.  From Slurm 23.11 ``squeue --json --only-job-state`` answers
that in a few milliseconds (job id and state of every job, from slurmctld's
job-state cache), where the full ``squeue --json`` formats every job it holds
(24.11: 5 s and 78 MB for 10,000 jobs).  Its records name an array task by
the task's own job id in some layouts, never by its array job id, so arrays,
heterogeneous jobs and jobs it does not list are asked once more with the
full ``squeue --json --jobs=...`` (which formats only the jobs named from
24.05), then accounting as above.

This module owns the backend's queries.  The commands run as
:class:`~datalad_slurm.slurm.jsoncall.SlurmCall` (:mod:`~datalad_slurm.slurm.jsoncall`); their
records are read by :mod:`~datalad_slurm.slurm.jsonrecords`.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from datalad_slurm.slurm.backend import BackendError, TaskKey, live_then_accounting
from datalad_slurm.slurm.jsoncall import SlurmCall, collect, slurm_release
from datalad_slurm.slurm.jsonlayout import data_parser_version
from datalad_slurm.slurm.jsonrecords import job_state_tasks, sacct_tasks, squeue_tasks
from datalad_slurm.slurm.state import JobStatus, TaskState

#: how many ids go into one sacct call (command lines have limits)
SACCT_CHUNK = 5000
#: every job slurmctld holds, finished ones and those in hidden partitions included
SQUEUE_COMMAND = ("squeue", "--json", "--states=all", "--all")
#: job id and state of every job slurmctld holds (Slurm 23.11 and later)
JOB_STATE_COMMAND = ("squeue", "--json", "--only-job-state")
#: the first Slurm release whose squeue has ``--only-job-state``
JOB_STATE_SINCE = (23, 11)
#: at most this many ids go into one ``squeue --jobs=`` (an argument holds 128 KiB); more: no filter
SQUEUE_JOBS_MAX = 5000
lgr = logging.getLogger("datalad.slurm.jsoncli")


class JsonCliBackend:
    """Ask ``squeue --json`` and ``sacct --json``; one call each per query."""

    name = "squeue/sacct --json"

    def __init__(self, timeout: float = 60.0, *, states_only: bool = False) -> None:
        self.timeout = timeout
        #: the caller needs only each task's state (no exit codes, logs, times, reasons)
        self.states_only = states_only
        #: set after a query: whether sacct answered (accounting enabled)
        self.accounting: bool | None = None
        #: ``squeue --json`` started by :meth:`prefetch`, read by the next query
        self._squeue: SlurmCall | None = None
        #: whether squeue has ``--only-job-state`` (asked once, when states_only)
        self._job_state: bool | None = None

    def prefetch(self) -> None:
        """Start ``squeue --json`` now, so that it runs while the caller reads its registry.

        With 10,000 jobs in slurmctld it takes seconds (it formats every job; 22.05 ignores
        ``-j``); the next :meth:`query` reads its answer.
        """
        if self._squeue is None:
            self._squeue = self._start_squeue()

    def _start_squeue(self) -> SlurmCall:
        if self.states_only and self._has_job_state():
            return SlurmCall(list(JOB_STATE_COMMAND))
        return SlurmCall(list(SQUEUE_COMMAND))

    def _has_job_state(self) -> bool:
        """Whether this squeue has ``--only-job-state`` (from ``squeue --version``)."""
        if self._job_state is None:
            self._job_state = slurm_release() >= JOB_STATE_SINCE
        return self._job_state

    def query(self, job_ids: Sequence[int]) -> dict[int, JobStatus]:
        wanted = set(job_ids)
        if not wanted:
            return {}
        running, self._squeue = self._squeue or self._start_squeue(), None
        layouts: dict[str, str | None] = {}
        live = self._live(running, wanted, layouts)
        statuses = live_then_accounting(
            wanted,
            live,
            lambda rest: self._accounted(rest, wanted, layouts),
            self.name,
        )
        layout = describe_layouts(layouts)
        for status in statuses.values():
            status.data_parser = layout
        return statuses

    def _live(
        self, running: SlurmCall, wanted: set[int], layouts: dict[str, str | None]
    ) -> list[TaskState]:
        """What slurmctld holds of the wanted jobs: from the full ``squeue --json``, or from
        ``--only-job-state`` and the full one for what that cannot tell."""
        answer = collect(running, self.timeout)
        layouts["squeue"] = data_parser_version(answer)
        if running.command != list(JOB_STATE_COMMAND):
            return list(squeue_tasks(answer, wanted))
        tasks, unsettled = job_state_tasks(answer, wanted)
        if unsettled:
            ids = sorted(unsettled)
            command = list(SQUEUE_COMMAND)
            if len(ids) <= SQUEUE_JOBS_MAX:
                command.append("--jobs=" + ",".join(map(str, ids)))
            detail = collect(SlurmCall(command), self.timeout, unknown_job_ok=True)
            layouts["squeue"] = layouts["squeue"] or data_parser_version(detail)
            tasks += squeue_tasks(detail, unsettled)
        return tasks

    def _accounted(
        self, rest: list[int], wanted: set[int], layouts: dict[str, str | None]
    ) -> Iterator[TaskState]:
        for chunk_start in range(0, len(rest), SACCT_CHUNK):
            accounted = self._sacct(rest[chunk_start : chunk_start + SACCT_CHUNK])
            if accounted is None:
                return
            layouts["sacct"] = data_parser_version(accounted)
            yield from sacct_tasks(accounted, wanted)

    def usage(self, job_ids: Sequence[int]) -> SacctUsage:
        """Start ``sacct --json -j`` for these jobs in the background (chunked as the
        status query): what their steps used is only in accounting."""
        return SacctUsage(self, job_ids)

    def _sacct(self, job_ids: Sequence[int]) -> dict[str, Any] | None:
        command = ["sacct", "--json", "-j", ",".join(str(j) for j in job_ids)]
        try:
            answer = collect(SlurmCall(command), self.timeout)
        except BackendError as exc:
            if "accounting storage is disabled" in str(exc).lower():
                self.accounting = False
                return None
            raise
        self.accounting = True
        return answer


class SacctUsage:
    """``sacct --json -j`` running for a usage question; :meth:`result` has its answer.

    A thread waits for sacct and reads its JSON (~0.2 ms a job), so that the reading too
    happens while the caller stages files (waiting on git-annex, it leaves the
    interpreter free).
    """

    def __init__(self, backend: JsonCliBackend, job_ids: Sequence[int]) -> None:
        self.backend = backend
        self.wanted = set(job_ids)
        ids = sorted(self.wanted)
        self.calls = (
            []
            if backend.accounting is False  # sacct said so in this command already
            else [
                SlurmCall(["sacct", "--json", "-j", ",".join(map(str, ids[i : i + SACCT_CHUNK]))])
                for i in range(0, len(ids), SACCT_CHUNK)
            ]
        )
        self.found: dict[TaskKey, TaskState] = {}
        self.reader = threading.Thread(target=self._read, name="sacct-usage", daemon=True)
        self.reader.start()

    def result(self) -> dict[TaskKey, TaskState]:
        self.reader.join()
        return self.found

    def _read(self) -> None:
        try:
            self._read_calls()
        except Exception as exc:  # an odd answer costs the figures, never the finish
            lgr.debug("usage figures from accounting could not be read: %s", exc)

    def _read_calls(self) -> None:
        found = self.found
        for call in self.calls:
            try:
                answer = collect(call, self.backend.timeout)
            except BackendError as exc:
                if "accounting storage is disabled" in str(exc).lower():
                    self.backend.accounting = False
                else:
                    lgr.debug("no usage figures from accounting: %s", exc)
                continue
            self.backend.accounting = True
            for task in sacct_tasks(answer, self.wanted):
                found[(task.job_id, task.task_id)] = task


def slurmctld_tasks(job_ids: Sequence[int], timeout: float = 60.0) -> list[TaskState]:
    """What slurmctld holds of these jobs, from one ``squeue --json`` (accounting is not asked)."""
    answer = collect(SlurmCall(list(SQUEUE_COMMAND)), timeout)
    return list(squeue_tasks(answer, set(job_ids)))


def describe_layouts(layouts: Mapping[str, str | None]) -> str | None:
    """``v0.0.42``, or ``squeue v0.0.42, sacct v0.0.41`` where the two differ."""
    known = {command: version for command, version in layouts.items() if version}
    if len(set(known.values())) <= 1:
        return next(iter(known.values()), None)
    return ", ".join(f"{command} {version}" for command, version in known.items())
