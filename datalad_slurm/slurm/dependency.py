"""Slurm job dependencies: the ``--dependency`` syntax, combining a user's with ours, asking
whether the jobs to depend on can still be depended on, and giving a held job its dependency.

Facts (Slurm 22.05, 24.11 and 26.05 alike, from their sources and real clusters):

- ``afterok:1:2,afterany:3`` means all of them, ``afterok:1?afterany:3`` any of them; one
  ``--dependency`` uses one separator only.  A later ``--dependency`` replaces an earlier one
  (command line over ``#SBATCH`` lines); there is no ``SBATCH_DEPENDENCY`` variable.
- squeue (``-O dependency``, ``%E``) shows what is left of it, each part with its state:
  ``afterok:5(unfulfilled),after:4+1(unfulfilled)``, ``afterok:3(failed)``, ``singleton(..)``,
  ``afterok:7_*`` for a whole array; a fulfilled part is dropped, and an ``?`` list that is
  fulfilled is dropped whole; ``(null)`` for none.
- ``scontrol update JobId=N Dependency=...`` replaces a pending job's dependency; a held job
  stays held.
- ``afterok`` on a job slurmctld no longer holds (ended longer than MinJobAge ago): 22.05
  takes it as fulfilled (the job runs at once); 24.11 and 26.05 refuse it ("Job dependency
  problem").  So we only ever depend on jobs squeue still lists.
- A job whose ``afterok`` job failed stays PENDING with reason ``DependencyNeverSatisfied``;
  with ``DependencyParameters=kill_invalid_depend`` (or ``sbatch --kill-on-invalid-dep=yes``)
  it is CANCELLED instead, squeue keeping that reason (accounting says ``None``).
"""

from __future__ import annotations

import enum
import re
import subprocess
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from datalad_slurm.errors import DataladSlurmError
from datalad_slurm.slurm.state import JobState
from datalad_slurm.slurm.submitted import SEPARATOR, squeue_fields

#: the reason squeue, ``squeue --json`` (``state_reason``) and pyslurm give a job whose
#: dependency can never be satisfied
NEVER_SATISFIED = "DependencyNeverSatisfied"

#: a part's state as squeue appends it: ``afterok:5(unfulfilled)``
_STATE_SUFFIX = re.compile(r"\([a-z_ ]*\)$")
_AFTEROK = re.compile(r"^afterok:(\d+(?::\d+)*)$")


class DependencyError(DataladSlurmError, ValueError):
    """A dependency that cannot be combined or set; the message says why and what to do."""


@dataclass(frozen=True)
class Spec:
    """A ``--dependency`` value: its parts and whether any one of them is enough."""

    parts: tuple[str, ...] = ()
    any_of: bool = False

    def __str__(self) -> str:
        return ("?" if self.any_of else ",").join(self.parts)

    def __bool__(self) -> bool:
        return bool(self.parts)


def parse_spec(text: str | None) -> Spec:
    """A dependency as given to sbatch or as squeue shows it (states dropped)."""
    text = (text or "").strip()
    if not text or text == "(null)":
        return Spec()
    any_of = "?" in text
    if any_of and "," in text:
        raise DependencyError(
            f"the dependency {text!r} mixes ',' and '?', which Slurm does not accept"
        )
    parts = tuple(
        _STATE_SUFFIX.sub("", part.strip()) for part in text.split("?" if any_of else ",")
    )
    parts = tuple(part for part in parts if part)
    return Spec(parts, any_of and len(parts) > 1)


def afterok_ids(spec: Spec) -> set[int]:
    """The job ids the spec's ``afterok`` parts wait for (``afterok:5:6`` -> 5, 6)."""
    found: set[int] = set()
    for part in spec.parts:
        match = _AFTEROK.match(part)
        if match:
            found.update(int(j) for j in match.group(1).split(":"))
    return found


def combine(user: Spec, ours: Sequence[int]) -> Spec:
    """The user's dependency and ``afterok`` on ours, all of them to be met.

    A user's ``?`` list (any one of its parts) cannot be joined with ours: Slurm has one
    separator per dependency, and "(A or B) and C" has no spelling.  That is an error that
    says what to do, never a silent change of what the user meant.
    """
    wanted = [j for j in dict.fromkeys(ours) if j not in afterok_ids(user) or user.any_of]
    if not wanted:
        return user
    if user.any_of:
        raise DependencyError(
            f"the job's own --dependency {str(user)!r} lets any one of its parts start it ('?'), "
            f"and Slurm cannot add 'afterok:{':'.join(map(str, wanted))}' (which its inputs "
            "need) to such a list: one --dependency has one kind of separator. Write the "
            "dependency you mean with ',' only, or schedule with --no-auto-dependency and "
            "name the jobs yourself"
        )
    return Spec((*user.parts, "afterok:" + ":".join(map(str, wanted))))


class Standing(enum.Enum):
    """What a job to depend on is, as far as slurmctld says."""

    #: pending, running, ...: its dependants wait for it
    ACTIVE = "active"
    #: every task ended COMPLETED: nothing to wait for
    COMPLETED = "completed"
    #: ended otherwise: a dependant would never start
    FAILED = "failed"
    #: pending, but its own dependency can never be satisfied: it will never run
    NEVER = "never"


@dataclass(frozen=True)
class JobStanding:
    job_id: int
    standing: Standing
    #: the task states squeue showed, for messages (``FAILED``, ``2 COMPLETED, 1 FAILED``)
    states: str


_FIELDS = ("jobid", "arrayjobid", "state", "reason")


def ask_standing(job_ids: Iterable[int], timeout: float = 30.0) -> dict[int, JobStanding]:
    """What slurmctld says of each job (an array by its array job id); a job it does not
    hold (any more) is left out.  Raises DependencyError when squeue cannot be asked."""
    wanted = sorted(set(job_ids))
    if not wanted:
        return {}
    tasks: dict[int, list[tuple[JobState, str]]] = {}
    for line in _squeue(wanted, timeout):
        parts = line.split(SEPARATOR)
        if len(parts) != len(_FIELDS) + 1:
            continue
        values = dict(zip(_FIELDS, parts, strict=False))
        owner = values["arrayjobid"] if values["arrayjobid"].isdigit() else values["jobid"]
        if not owner.isdigit() or int(owner) not in wanted:
            continue
        tasks.setdefault(int(owner), []).append((JobState.parse(values["state"]), values["reason"]))
    return {job_id: _standing(job_id, found) for job_id, found in tasks.items()}


def _squeue(job_ids: Sequence[int], timeout: float) -> list[str]:
    """squeue's lines for these jobs.  A single id slurmctld does not know makes squeue fail
    ("Invalid job id specified"), several unknown ones make it list nothing: so a failure
    for many ids is asked again one by one."""
    try:
        proc = squeue_fields(job_ids, _FIELDS, timeout)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise DependencyError(
            f"squeue could not be asked about job(s) {_ids(job_ids)}: {exc}"
        ) from exc
    if proc.returncode == 0:
        return proc.stdout.splitlines()
    if "Invalid job id" in proc.stderr:
        if len(job_ids) == 1:
            return []
        return [line for job_id in job_ids for line in _squeue([job_id], timeout)]
    raise DependencyError(
        f"squeue failed for job(s) {_ids(job_ids)}: {proc.stderr.strip() or proc.returncode}"
    )


def _standing(job_id: int, tasks: Sequence[tuple[JobState, str]]) -> JobStanding:
    states = [state for state, _ in tasks]
    counts: dict[str, int] = {}
    for state in states:
        counts[state.value] = counts.get(state.value, 0) + 1
    shown = (
        next(iter(counts))
        if len(counts) == 1 and len(states) == 1
        else ", ".join(f"{n} {s}" for s, n in sorted(counts.items()))
    )
    if any(state is JobState.PENDING and reason == NEVER_SATISFIED for state, reason in tasks):
        standing = Standing.NEVER
    elif any(state.is_active for state in states):
        standing = Standing.ACTIVE
    elif all(state.is_success for state in states):
        standing = Standing.COMPLETED
    else:
        standing = Standing.FAILED
    return JobStanding(job_id, standing, shown)


def set_dependency(job_id: int, spec: Spec, timeout: float = 60.0) -> str | None:
    """Give a pending (held) job this dependency; what went wrong, if anything."""
    command = ["scontrol", "update", f"JobId={job_id}", f"Dependency={spec}"]
    try:
        proc = subprocess.run(command, capture_output=True, text=True, timeout=timeout, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return str(exc)
    if proc.returncode != 0:
        return proc.stderr.strip() or proc.stdout.strip() or f"exit code {proc.returncode}"
    return None


def _ids(job_ids: Iterable[int]) -> str:
    return ", ".join(map(str, job_ids))
