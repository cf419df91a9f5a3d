"""Where a job's stdout and stderr files go, for each of its array tasks, before it starts.

From what slurmctld says about a job right after its submission (``slurm/submitted.py``) or
what an sbatch call asks for (``slurm/sbatchargs.py``): the ``--output``/``--error`` names
with the fields that are known by then filled in as slurmstepd fills them (``%j``, ``%A``,
``%a``, ``%x``, ``%u``, ``%%``, zero-padding widths; a name with a backslash is taken
literally, without its backslashes).  A name with a field that is filled in only when a task
starts (``%N`` node, ``%n``, ``%t``, ``%s``, ``%r``, ``%S``, ``%b``, and ``%j``/``%J`` of an
array task, which gets its own job id then) is known only up to a folder: that folder is
given instead.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass

from datalad_slurm.slurm.backend import expand_array_spec

#: what Slurm prints for "no task id" (NO_VAL - 1): ``%a`` of a job that is not an array
NOT_AN_ARRAY_TASK = 4294967294
#: the widest zero-padding Slurm applies
_MAX_WIDTH = 10
_FIELD = re.compile(r"%(\d*)([A-Za-z%])")
#: what squeue prints for an unset log name
_UNSET = ("", "(null)", "N/A")


@dataclass(frozen=True)
class LogFile:
    """One task's stdout or stderr file (absolute), or the folder it will be in."""

    path: str
    #: False: the name has fields Slurm fills in when the task starts; ``path`` is its folder
    exact: bool
    #: the name as Slurm has it, for messages
    pattern: str
    #: the array task (None: not an array)
    task: int | None = None
    #: False: a name whose job id is not known yet (``schedule --dry-run``); ``path`` is its
    #: folder, which holds only this job's file of that name
    own_name: bool = True


@dataclass(frozen=True)
class Fields:
    """What the fields of a log name stand for (None: not known before the task starts)."""

    job_id: int | None
    array_job_id: int | None
    task_id: int | None
    job_name: str
    user: str


def expand(pattern: str, fields: Fields) -> str | None:
    """The name with every field filled in, or None when one is known only later."""
    if "\\" in pattern:
        return pattern.replace("\\", "")
    parts: list[str] = []
    start = 0
    for match in _FIELD.finditer(pattern):
        parts.append(pattern[start : match.start()])
        start = match.end()
        width, symbol = match.group(1), match.group(2)
        value = _value(symbol, fields)
        if value is None:
            return None
        if isinstance(value, int):
            value = str(value).zfill(min(int(width or 0), _MAX_WIDTH))
        parts.append(value)
    parts.append(pattern[start:])
    return "".join(parts)


def _value(symbol: str, fields: Fields) -> str | int | None:
    if symbol == "%":
        return "%"
    if symbol == "A":
        return fields.array_job_id if fields.array_job_id is not None else fields.job_id
    if symbol == "a":
        return NOT_AN_ARRAY_TASK if fields.task_id is None else fields.task_id
    if symbol in "jJ":
        # an array task gets its own job id when it starts (the last one keeps the array's)
        return fields.job_id if fields.task_id is None else None
    if symbol == "x":
        return fields.job_name
    if symbol == "u":
        return fields.user
    return None


def folder_before_unknown(pattern: str) -> str:
    """The folder of a name up to its first field that is not known yet."""
    cut = len(pattern)
    for match in _FIELD.finditer(pattern):
        if match.group(2) not in "%Aaux":
            cut = match.start()
            break
    return os.path.dirname(pattern[:cut]) or "."


def log_file(path: str, pattern: str, fields: Fields, task: int | None) -> LogFile:
    """One task's file of one (absolute) name."""
    name = expand(path, fields)
    if name is not None:
        return LogFile(os.path.normpath(name), True, pattern, task)
    folder = expand(folder_before_unknown(path), fields) or folder_before_unknown(path)
    return LogFile(os.path.normpath(folder), False, pattern, task)


def submitted_log_files(facts: Mapping[str, str], job_id: int) -> list[LogFile]:
    """Every array task's stdout and stderr file of a submitted job, from what squeue said
    (``stdout``, ``stderr``, ``work_dir``, ``array``, ``name``, ``user``).

    squeue shows an unset ``--error`` as ``(null)`` from 24.11 (stderr then goes to stdout's
    file), a relative default name from 26.05 (relative to the work dir), and in 22.05 the
    default name expanded with the job id, for an array too, where the tasks write
    ``slurm-%A_%a.out``.
    """
    work_dir = facts.get("work_dir") or "/"
    array = facts.get("array", "")
    tasks: list[int | None] = list(expand_array_spec(array)) if array not in _UNSET else [None]
    default = "slurm-%A_%a.out" if tasks != [None] else "slurm-%j.out"
    stdout = _given(facts.get("stdout"), work_dir, job_id, default)
    stderr = (
        _given(facts.get("stderr"), work_dir, job_id, default) if _set(facts, "stderr") else stdout
    )
    files: list[LogFile] = []
    for task in tasks:
        fields = Fields(
            job_id=job_id,
            array_job_id=job_id if task is not None else None,
            task_id=task,
            job_name=facts.get("name", ""),
            user=facts.get("user", ""),
        )
        for name in dict.fromkeys((stdout, stderr)):
            files.append(log_file(name, name, fields, task))
    return _unique(files)


def _set(facts: Mapping[str, str], key: str) -> bool:
    return (facts.get(key) or "").strip() not in _UNSET


def _given(name: str | None, work_dir: str, job_id: int, default: str) -> str:
    """A log name as an absolute pattern; the default where none is set."""
    name = (name or "").strip()
    if name in _UNSET:
        name = default
    path = os.path.join(work_dir, name)
    if path == os.path.join(work_dir, f"slurm-{job_id}.out"):
        # 22.05 prints the default name expanded; an array's tasks use the array's default
        path = os.path.join(work_dir, default)
    return path


def _unique(files: list[LogFile]) -> list[LogFile]:
    seen: dict[tuple[str, bool], LogFile] = {}
    for item in files:
        seen.setdefault((item.path, item.exact), item)
    return list(seen.values())


def requested_log_files(
    stdout: str, stderr: str, work_dir: str, array: str | None, job_name: str, user: str
) -> list[LogFile]:
    """Every array task's stdout and stderr file of a job not submitted yet
    (``schedule --dry-run``): its job id is not known, so a name that holds it is known only
    up to its folder, which holds no other job's file of that name."""
    tasks: list[int | None] = list(expand_array_spec(array)) if array else [None]
    files: list[LogFile] = []
    for task in tasks:
        fields = Fields(None, None, task, job_name, user)
        for name in dict.fromkeys((stdout, stderr)):
            path = os.path.join(work_dir, name)
            item = log_file(path, name, fields, task)
            if not item.exact and _only_job_id_unknown(path, task):
                item = LogFile(item.path, False, name, task, own_name=False)
            files.append(item)
    return _unique(files)


def _only_job_id_unknown(path: str, task: int | None) -> bool:
    """Whether the name would be known once the job id is (``%j``, ``%A``; ``%J`` outside an
    array)."""
    symbols = {m.group(2) for m in _FIELD.finditer(path)} - set("%aux")
    allowed = set("A") if task is not None else set("AjJ")
    return bool(symbols) and symbols <= allowed
