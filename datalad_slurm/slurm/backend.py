"""The backend interface: one question, asked for many jobs at once.

"What is the state, exit code and log path of each task of these jobs?"
A backend answers for all requested jobs with a bounded number of calls to
Slurm (never one per job) and returns a :class:`JobStatus` per job id.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any, Protocol

from datalad_slurm.errors import DataladSlurmError
from datalad_slurm.slurm.state import JobStatus, TaskState


class BackendError(DataladSlurmError, RuntimeError):
    """Slurm could not be asked (not installed, controller down, ...)."""


#: a task as accounting keys it: (array) job id and task id (None for a plain job)
TaskKey = tuple[int, int | None]


class UsageAnswer(Protocol):
    def result(self) -> dict[TaskKey, TaskState]:
        """Accounting's tasks (with their figures) of the jobs asked; empty where accounting
        does not answer.  Never raises: a missing figure must not fail a finish."""
        ...


class Backend(Protocol):
    name: str

    def query(self, job_ids: Sequence[int]) -> dict[int, JobStatus]:
        """Status of every given job id; ids Slurm does not know are left out."""
        ...

    def prefetch(self) -> None:
        """Start asking Slurm in the background, for a query that is sure to follow soon."""
        ...

    def usage(self, job_ids: Sequence[int]) -> UsageAnswer:
        """Start asking accounting what these jobs used (one batched question); the answer
        is read later, so that the asking overlaps other work."""
        ...


def merge_tasks(statuses: dict[int, JobStatus], tasks: Iterable[TaskState], backend: str) -> None:
    """Add tasks to their job's status, keeping an entry already present."""
    for task in tasks:
        status = statuses.setdefault(task.job_id, JobStatus(task.job_id, backend=backend))
        status.tasks.setdefault(task.label, task)


def trusted_accounting(
    known: dict[int, JobStatus], tasks: Iterable[TaskState]
) -> Iterator[TaskState]:
    """Accounting tasks that may complete what slurmctld said.

    Accounting lags slurmctld: for a job slurmctld still holds, a young
    accounting record may lack its array fields or show an old state.  Only
    terminal array tasks slurmctld no longer has are added to such a job.
    """
    for task in tasks:
        if task.job_id not in known or (task.task_id is not None and task.state.is_terminal):
            yield task


def is_array_without_pending(status: JobStatus) -> bool:
    """An array all of whose known tasks ended: finished tasks may have left slurmctld."""
    tasks = list(status.tasks.values())
    return (
        bool(tasks)
        and any(t.task_id is not None for t in tasks)
        and all(t.state.is_terminal for t in tasks)
    )


def needs_accounting(statuses: dict[int, JobStatus], wanted: Iterable[int]) -> list[int]:
    """Jobs slurmctld did not answer for, and arrays whose ended tasks may have left it."""
    return sorted(
        j for j in set(wanted) if j not in statuses or is_array_without_pending(statuses[j])
    )


def live_then_accounting(
    wanted: Iterable[int],
    live: Iterable[TaskState],
    accounting: Callable[[list[int]], Iterable[TaskState]],
    backend: str,
) -> dict[int, JobStatus]:
    """Every backend's answer: slurmctld's tasks, then accounting for what it lacks.

    ``accounting`` is called at most once, with the ids slurmctld did not answer
    for and the arrays whose ended tasks may have left it; its tasks only add
    to what slurmctld said (:func:`trusted_accounting`).
    """
    statuses: dict[int, JobStatus] = {}
    merge_tasks(statuses, live, backend)
    rest = needs_accounting(statuses, wanted)
    if rest:
        merge_tasks(statuses, trusted_accounting(statuses, accounting(rest)), backend)
    for status in statuses.values():
        status.backend = backend
    return statuses


def keep_newest(found: Iterable[tuple[int, TaskState]]) -> list[TaskState]:
    """One task per (job, task id): the one submitted last (ids are reused after a reset)."""
    newest: dict[tuple[int, int | None], tuple[int, TaskState]] = {}
    for submitted, task in found:
        key = (task.job_id, task.task_id)
        if key not in newest or newest[key][0] <= submitted:
            newest[key] = (submitted, task)
    return [task for _, task in newest.values()]


_ARRAY_RANGE = re.compile(r"^(\d+)(?:-(\d+)(?::(\d+))?)?$")


def expand_array_spec(spec: str) -> list[int]:
    """Task ids of a Slurm array spec such as ``0-3,7,10-20:5%2``."""
    spec = spec.split("%", 1)[0].strip()
    ids: list[int] = []
    for part in filter(None, spec.split(",")):
        match = _ARRAY_RANGE.match(part.strip())
        if not match:
            raise ValueError(f"not a Slurm array spec: {spec!r}")
        first = int(match.group(1))
        last = int(match.group(2)) if match.group(2) else first
        step = int(match.group(3)) if match.group(3) else 1
        ids.extend(range(first, last + 1, step))
    return ids


def expand_task_bitmap(text: str) -> list[int]:
    """Task ids of sacct's pending-task bitmap (``"0x7"`` = 0, 1, 2) or of a range spec."""
    if text.lower().startswith("0x"):
        bits = int(text, 16)
        return [i for i in range(bits.bit_length()) if bits >> i & 1]
    return expand_array_spec(text)


_PATTERN = re.compile(r"%(\d*)([%AaJjNnsTtuUx])")


def expand_filename_pattern(
    pattern: str,
    *,
    job_id: int,
    array_job_id: int | None = None,
    task_id: int | None = None,
    job_name: str | None = None,
    user: str | None = None,
    node: str | None = None,
) -> str:
    """Expand the replacement symbols of sbatch's ``--output``/``--error`` names."""

    def replace(match: re.Match[str]) -> str:
        width, symbol = match.group(1), match.group(2)
        value: str | int
        if symbol == "%":
            return "%"
        if symbol == "A":
            value = array_job_id if array_job_id is not None else job_id
        elif symbol == "a":
            value = task_id if task_id is not None else 4294967294
        elif symbol in "jJ":
            value = job_id
        elif symbol == "x":
            value = job_name or ""
        elif symbol in "uU":
            value = user or ""
        elif symbol == "N":
            value = node or ""
        elif symbol in "nst":
            value = 0
        else:  # T: not expanded by Slurm in file names either
            return match.group(0)
        if isinstance(value, int) and width:
            return str(value).zfill(int(width))
        return str(value)

    return _PATTERN.sub(replace, pattern)


def expand_log_path(
    pattern: str | None, work_dir: str | None, *, expand: bool = True, **symbols: Any
) -> str | None:
    """A job's ``--output``/``--error`` pattern as a path: expanded (unless Slurm already
    did, ``expand=False``), relative to its work dir."""
    if not pattern:
        return None
    path = expand_filename_pattern(pattern, **symbols) if expand else pattern
    if work_dir and not path.startswith("/"):
        path = f"{work_dir.rstrip('/')}/{path}"
    return path
