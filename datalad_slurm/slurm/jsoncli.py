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
"""

from __future__ import annotations

import json
import logging
import re
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import replace
from typing import Any

from datalad_slurm.slurm.backend import (
    BackendError,
    TaskKey,
    expand_array_spec,
    expand_log_path,
    expand_task_bitmap,
    keep_newest,
    live_then_accounting,
)
from datalad_slurm.slurm.jsonlayout import (
    ExitStatus,
    data_parser_version,
    dig,
    exit_status,
    log_name,
    number,
)
from datalad_slurm.slurm.resources import Resources, from_sacct, from_squeue
from datalad_slurm.slurm.state import JobState, JobStatus, TaskState

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
_PLAIN_JOB_ID = re.compile(r"^\d+$")
_LEADING_JOB_ID = re.compile(r"^(\d+)[_+]")
lgr = logging.getLogger("datalad.slurm.jsoncli")
_RELEASE = re.compile(r"(\d+)\.(\d+)")
#: states whose elapsed time grows: the listing asks for their full records
_TIMED = (JobState.RUNNING, JobState.SUSPENDED)


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
        self._squeue: _Call | None = None
        #: whether squeue has ``--only-job-state`` (asked once, when states_only)
        self._job_state: bool | None = None

    def prefetch(self) -> None:
        """Start ``squeue --json`` now, so that it runs while the caller reads its registry.

        With 10,000 jobs in slurmctld it takes seconds (it formats every job; 22.05 ignores
        ``-j``); the next :meth:`query` reads its answer.
        """
        if self._squeue is None:
            self._squeue = self._start_squeue()

    def _start_squeue(self) -> _Call:
        if self.states_only and self._has_job_state():
            return _Call(list(JOB_STATE_COMMAND))
        return _Call(list(SQUEUE_COMMAND))

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
        self, running: _Call, wanted: set[int], layouts: dict[str, str | None]
    ) -> list[TaskState]:
        """What slurmctld holds of the wanted jobs: from the full ``squeue --json``, or from
        ``--only-job-state`` and the full one for what that cannot tell."""
        answer = self._collect(running)
        layouts["squeue"] = data_parser_version(answer)
        if running.command != list(JOB_STATE_COMMAND):
            return list(_squeue_tasks(answer, wanted))
        tasks, unsettled = _job_state_tasks(answer, wanted)
        if unsettled:
            ids = sorted(unsettled)
            command = list(SQUEUE_COMMAND)
            if len(ids) <= SQUEUE_JOBS_MAX:
                command.append("--jobs=" + ",".join(map(str, ids)))
            detail = self._collect(_Call(command), unknown_job_ok=True)
            layouts["squeue"] = layouts["squeue"] or data_parser_version(detail)
            tasks += _squeue_tasks(detail, unsettled)
        return tasks

    def _accounted(
        self, rest: list[int], wanted: set[int], layouts: dict[str, str | None]
    ) -> Iterator[TaskState]:
        for chunk_start in range(0, len(rest), SACCT_CHUNK):
            accounted = self._sacct(rest[chunk_start : chunk_start + SACCT_CHUNK])
            if accounted is None:
                return
            layouts["sacct"] = data_parser_version(accounted)
            yield from _sacct_tasks(accounted, wanted)

    def usage(self, job_ids: Sequence[int]) -> SacctUsage:
        """Start ``sacct --json -j`` for these jobs in the background (chunked as the
        status query): what their steps used is only in accounting."""
        return SacctUsage(self, job_ids)

    def _sacct(self, job_ids: Sequence[int]) -> dict[str, Any] | None:
        command = ["sacct", "--json", "-j", ",".join(str(j) for j in job_ids)]
        try:
            answer = self._run(command)
        except BackendError as exc:
            if "accounting storage is disabled" in str(exc).lower():
                self.accounting = False
                return None
            raise
        self.accounting = True
        return answer

    def _run(self, command: list[str]) -> dict[str, Any]:
        return self._collect(_Call(command))

    def _collect(self, call: _Call, unknown_job_ok: bool = False) -> dict[str, Any]:
        """The JSON a Slurm command printed.  ``unknown_job_ok``: ``squeue --jobs=ID`` naming
        one job slurmctld does not hold fails; that is an empty answer."""
        command = call.command
        returncode, stdout, stderr = call.result(self.timeout)
        if returncode != 0 and unknown_job_ok and "invalid job id specified" in stderr.lower():
            return {"jobs": []}
        if returncode != 0:
            raise BackendError(
                f"'{' '.join(command[:2])}' failed (exit {returncode}): "
                f"{stderr.strip() or stdout.strip()}"
            )
        try:
            data = json.loads(stdout)
        except json.JSONDecodeError as exc:
            raise BackendError(f"'{' '.join(command[:2])}' printed no valid JSON: {exc}") from exc
        if not isinstance(data, dict):
            raise BackendError(f"'{' '.join(command[:2])}' printed JSON of an unexpected shape")
        # squeue answers a dead controller with exit 0 and an error list
        failures = [
            e
            for e in data.get("errors") or []
            if isinstance(e, Mapping) and e.get("error_number") != 9003
        ]
        if failures:
            details = "; ".join(str(e.get("description") or e.get("error")) for e in failures)
            raise BackendError(
                f"'{' '.join(command[:2])}' reported: {details}; is slurmctld up? Try again later"
            )
        return data


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
                _Call(["sacct", "--json", "-j", ",".join(map(str, ids[i : i + SACCT_CHUNK]))])
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
                answer = self.backend._collect(call)
            except BackendError as exc:
                if "accounting storage is disabled" in str(exc).lower():
                    self.backend.accounting = False
                else:
                    lgr.debug("no usage figures from accounting: %s", exc)
                continue
            self.backend.accounting = True
            for task in _sacct_tasks(answer, self.wanted):
                found[(task.job_id, task.task_id)] = task


def slurmctld_tasks(job_ids: Sequence[int], timeout: float = 60.0) -> list[TaskState]:
    """What slurmctld holds of these jobs, from one ``squeue --json`` (accounting is not asked)."""
    answer = JsonCliBackend(timeout)._collect(_Call(list(SQUEUE_COMMAND)))
    return list(_squeue_tasks(answer, set(job_ids)))


def slurm_release() -> tuple[int, int]:
    """(major, minor) of the Slurm client tools (``squeue --version``: ``slurm 24.11.5``);
    (0, 0) when that cannot be told."""
    try:
        answer = subprocess.run(
            ["squeue", "--version"],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=30,
        )
    except (OSError, subprocess.SubprocessError):
        return (0, 0)
    found = _RELEASE.search(answer.stdout)
    return (int(found.group(1)), int(found.group(2))) if found else (0, 0)


def describe_layouts(layouts: Mapping[str, str | None]) -> str | None:
    """``v0.0.42``, or ``squeue v0.0.42, sacct v0.0.41`` where the two differ."""
    known = {command: version for command, version in layouts.items() if version}
    if len(set(known.values())) <= 1:
        return next(iter(known.values()), None)
    return ", ".join(f"{command} {version}" for command, version in known.items())


class _Call:
    """A Slurm command running in the background, its output in unnamed files."""

    def __init__(self, command: list[str]) -> None:
        self.command = command
        self.started = time.monotonic()
        # files, not pipes: a pipe holds 64 KiB, and nobody reads it until the answer is wanted;
        # result() closes them
        self.stdout = tempfile.TemporaryFile()  # noqa: SIM115
        self.stderr = tempfile.TemporaryFile()  # noqa: SIM115
        self.proc: subprocess.Popen[bytes] | None = None
        self.error: BackendError | None = None
        try:
            self.proc = subprocess.Popen(
                command, stdin=subprocess.DEVNULL, stdout=self.stdout, stderr=self.stderr
            )
        except FileNotFoundError:
            self.error = BackendError(
                f"{command[0]} is not installed or not on PATH; install the Slurm client tools"
            )

    def result(self, timeout: float) -> tuple[int, str, str]:
        """(exit code, stdout, stderr); waits at most ``timeout`` seconds from the start."""
        try:
            if self.error is not None:
                raise self.error
            assert self.proc is not None
            try:
                self.proc.wait(max(0.0, timeout - (time.monotonic() - self.started)))
            except subprocess.TimeoutExpired as exc:
                self.proc.kill()
                self.proc.wait()
                raise BackendError(
                    f"'{' '.join(self.command[:2])}' did not answer within {timeout:.0f} s; "
                    "is slurmctld up? Try again later"
                ) from exc
            outputs = []
            for stream in (self.stdout, self.stderr):
                stream.seek(0)
                outputs.append(stream.read().decode("utf-8", "replace"))
            return self.proc.returncode, outputs[0], outputs[1]
        finally:
            self.stdout.close()
            self.stderr.close()


def _owner(job_id: int | None, array_job_id: int | None) -> int | None:
    return array_job_id if array_job_id else job_id


def _job_state_tasks(
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


def _squeue_tasks(answer: Mapping[str, Any], wanted: set[int]) -> Iterator[TaskState]:
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


def _sacct_tasks(answer: Mapping[str, Any], wanted: set[int]) -> Iterable[TaskState]:
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
