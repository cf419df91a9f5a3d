"""Backend over Slurm's own JSON output: one ``squeue --json``, one ``sacct --json``.

``squeue --json`` lists every job slurmctld still holds (22.05 ignores
``-j``), so it is called once without filters.  Jobs it no longer holds, and
array tasks that already left it, are looked up with one ``sacct --json -j``
call when accounting is enabled.  Exit codes are taken from squeue where
possible: 22.05's ``sacct --json`` reports 0 for every non-zero normal exit.
"""

from __future__ import annotations

import json
import subprocess
import tempfile
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import replace
from typing import Any

from datalad_slurm.slurm.backend import (
    BackendError,
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
from datalad_slurm.slurm.state import JobState, JobStatus, TaskState

#: how many ids go into one sacct call (command lines have limits)
SACCT_CHUNK = 5000
#: every job slurmctld holds, finished ones and those in hidden partitions included
SQUEUE_COMMAND = ("squeue", "--json", "--states=all", "--all")


class JsonCliBackend:
    """Ask ``squeue --json`` and ``sacct --json``; one call each per query."""

    name = "squeue/sacct --json"

    def __init__(self, timeout: float = 60.0) -> None:
        self.timeout = timeout
        #: set after a query: whether sacct answered (accounting enabled)
        self.accounting: bool | None = None
        #: ``squeue --json`` started by :meth:`prefetch`, read by the next query
        self._squeue: _Call | None = None

    def prefetch(self) -> None:
        """Start ``squeue --json`` now, so that it runs while the caller reads its registry.

        With 10,000 jobs in slurmctld it takes over a second (22.05 formats every job, and
        ignores ``-j``); the next :meth:`query` reads its answer.
        """
        if self._squeue is None:
            self._squeue = _Call(list(SQUEUE_COMMAND))

    def query(self, job_ids: Sequence[int]) -> dict[int, JobStatus]:
        wanted = set(job_ids)
        if not wanted:
            return {}
        running, self._squeue = self._squeue or _Call(list(SQUEUE_COMMAND)), None
        live = self._collect(running)
        layouts: dict[str, str | None] = {"squeue": data_parser_version(live)}
        statuses = live_then_accounting(
            wanted,
            _squeue_tasks(live, wanted),
            lambda rest: self._accounted(rest, wanted, layouts),
            self.name,
        )
        layout = describe_layouts(layouts)
        for status in statuses.values():
            status.data_parser = layout
        return statuses

    def _accounted(
        self, rest: list[int], wanted: set[int], layouts: dict[str, str | None]
    ) -> Iterator[TaskState]:
        for chunk_start in range(0, len(rest), SACCT_CHUNK):
            accounted = self._sacct(rest[chunk_start : chunk_start + SACCT_CHUNK])
            if accounted is None:
                return
            layouts["sacct"] = data_parser_version(accounted)
            yield from _sacct_tasks(accounted, wanted)

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

    def _collect(self, call: _Call) -> dict[str, Any]:
        command = call.command
        returncode, stdout, stderr = call.result(self.timeout)
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


def slurmctld_tasks(job_ids: Sequence[int], timeout: float = 60.0) -> list[TaskState]:
    """What slurmctld holds of these jobs, from one ``squeue --json`` (accounting is not asked)."""
    answer = JsonCliBackend(timeout)._collect(_Call(list(SQUEUE_COMMAND)))
    return list(_squeue_tasks(answer, set(job_ids)))


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


def _squeue_tasks(answer: Mapping[str, Any], wanted: set[int]) -> Iterator[TaskState]:
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
