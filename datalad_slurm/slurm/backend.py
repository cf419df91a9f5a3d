"""The backend interface: one question, asked for many jobs at once.

"What is the state, exit code and log path of each task of these jobs?"
A backend answers for all requested jobs with a bounded number of calls to
Slurm (never one per job) and returns a :class:`JobStatus` per job id.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from typing import Protocol

from datalad_slurm.slurm.state import JobStatus, TaskState


class BackendError(RuntimeError):
    """Slurm could not be asked (not installed, controller down, ...)."""


class Backend(Protocol):
    name: str

    def query(self, job_ids: Sequence[int]) -> dict[int, JobStatus]:
        """Status of every given job id; ids Slurm does not know are left out."""
        ...


def merge_tasks(statuses: dict[int, JobStatus], tasks: Iterable[TaskState], backend: str) -> None:
    """Add tasks to their job's status, keeping an entry already present."""
    for task in tasks:
        status = statuses.setdefault(task.job_id, JobStatus(task.job_id, backend=backend))
        status.tasks.setdefault(task.label, task)


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
