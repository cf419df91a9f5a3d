"""Jobs that feed each other: which open jobs a submission waits for, and what that means for
``finish``.

An input of a new job that overlaps what an open job of the dataset holds (an output or a log
file; a glob by its fixed leading folder, as outputs are held) is that job's product: the new
job *depends* on it.  ``schedule`` then gives it ``--dependency=afterok:<those jobs>`` (joined
with the user's own, ``slurm/dependency.py``), the registry keeps the pairs, and ``finish``
commits a job only after every job it depends on (a dependant's row is always younger, so the
registry's order is already a dependency order; what can break it is a job held back, which
holds back its dependants too).  A dependant whose job failed never starts: Slurm leaves it
PENDING with reason ``DependencyNeverSatisfied`` (or cancels it, ``kill_invalid_depend``), and
so does every job that waits for it in turn; ``finish`` says so and ``--close-failed-jobs
--cancel`` ends them.
"""

from __future__ import annotations

import time
from collections.abc import Collection, Iterable, Mapping, MutableMapping, Sequence
from dataclasses import dataclass, field

from datalad_slurm.errors import DataladSlurmError
from datalad_slurm.globs import is_glob, reserved_path
from datalad_slurm.jobs.job import Job
from datalad_slurm.jobs.lifecycle import Phase
from datalad_slurm.jobs.registry import Registry
from datalad_slurm.jobs.schema import RegistryError
from datalad_slurm.slurm.dependency import (
    NEVER_SATISFIED,
    DependencyError,
    JobStanding,
    Standing,
    ask_standing,
)
from datalad_slurm.slurm.state import JobState, JobStatus, Verdict
from datalad_slurm.spool import STALE_INFLIGHT_SECONDS

#: a row still 'submitting' this long is an interrupted schedule (as finish counts it)
STALE_SUBMISSION_SECONDS = STALE_INFLIGHT_SECONDS


class DependencyRefusal(DataladSlurmError, RuntimeError):
    """The submission cannot be made to wait for what its inputs need; the message says why
    and what to do."""


@dataclass
class Plan:
    """What a new job waits for."""

    #: (row id, Slurm job id) of every open job whose product it reads: finish commits them
    #: first
    depends_on: list[tuple[int, int]] = field(default_factory=list)
    #: the Slurm job ids it gets ``afterok`` on (those still at work)
    after: list[int] = field(default_factory=list)
    #: why some of them need no Slurm dependency (for the result's message)
    notes: list[str] = field(default_factory=list)


def plan(
    found: Sequence[tuple[str, str, Job]],
    inputs: Sequence[str],
    cluster: str | None,
    held_here: Collection[int] = (),
    standings: MutableMapping[int, JobStanding | None] | None = None,
) -> Plan:
    """How a new job is to wait for the open jobs its inputs come from (``found``:
    :meth:`Registry.providers` of its inputs).

    ``held_here``: row ids of jobs this process submitted held and has not released yet
    (still at work by construction); ``standings``: what slurmctld said of jobs already asked
    about in this process (None: not listed), filled in here.  Raises DependencyRefusal.
    """
    if not found:
        return Plan()
    standings = {} if standings is None else standings
    by_row: dict[int, tuple[Job, list[str]]] = {}
    for wanted, held, provider in found:
        shown = f"{_input(wanted, inputs)} overlaps {held!r} of job {_name(provider)}"
        by_row.setdefault(provider.id, (provider, []))[1].append(shown)
    problems: list[str] = []
    to_ask: list[int] = []
    for provider, why in by_row.values():
        problem = _unusable(provider, cluster, why)
        if problem:
            problems.append(problem)
        elif provider.id not in held_here and provider.state != Phase.COMMITTING:
            assert provider.job_id is not None
            if provider.job_id not in standings:
                to_ask.append(provider.job_id)
    if problems:
        raise DependencyRefusal(_refusal(problems))
    if to_ask:
        try:
            answered = ask_standing(to_ask)
        except DependencyError as exc:
            raise DependencyRefusal(
                f"{exc}: the jobs its inputs come from cannot be checked; try again, or "
                "schedule with --no-auto-dependency to submit without waiting for them"
            ) from exc
        for job_id in to_ask:
            standings[job_id] = answered.get(job_id)
    result = Plan()
    for provider, why in by_row.values():
        assert provider.job_id is not None
        result.depends_on.append((provider.id, provider.job_id))
        if provider.id in held_here:
            result.after.append(provider.job_id)
            continue
        if provider.state == Phase.COMMITTING:
            result.notes.append(f"job {provider.job_id} is being committed")
            continue
        standing = standings.get(provider.job_id)
        if standing is None:
            problems.append(
                f"{'; '.join(why)}: job {provider.job_id} has ended and slurmctld no longer "
                "holds it, so nothing can wait for it (Slurm would refuse, or run the job at "
                "once); run 'datalad finish' to commit (or close) it first"
            )
        elif standing.standing is Standing.ACTIVE:
            result.after.append(provider.job_id)
        elif standing.standing is Standing.COMPLETED:
            result.notes.append(f"job {provider.job_id} completed already")
        elif standing.standing is Standing.NEVER:
            problems.append(
                f"{'; '.join(why)}: job {provider.job_id} will never start (Slurm: "
                f"{NEVER_SATISFIED}), so this one would not either; 'datalad finish' reports "
                "it, '--close-failed-jobs --cancel' ends it"
            )
        else:
            problems.append(
                f"{'; '.join(why)}: job {provider.job_id} ended {standing.states}, so this one "
                "would never start; 'datalad finish --close-failed-jobs' drops that job (or "
                "'--commit-failed-jobs' commits it), then schedule again"
            )
    if problems:
        raise DependencyRefusal(_refusal(problems))
    return result


def _unusable(provider: Job, cluster: str | None, why: Sequence[str]) -> str | None:
    """Why a job cannot be waited for at all, or None."""
    stale = time.time() - provider.submitted_at >= STALE_SUBMISSION_SECONDS
    where = "; ".join(why)
    if provider.job_id is None:
        if stale:
            return (
                f"{where}: that submission was interrupted before Slurm gave it a job id; "
                "'datalad finish --close-failed-jobs' frees its paths"
            )
        return (
            f"{where}: that submission is still in progress and has no Slurm job id yet to "
            "wait for; schedule this job once that 'datalad schedule' has returned"
        )
    if provider.state == Phase.SUBMITTING and stale:
        return (
            f"{where}: the schedule of job {provider.job_id} was interrupted and the job is "
            "held, never to start; 'datalad finish --close-failed-jobs' cancels it"
        )
    if cluster and provider.cluster and provider.cluster != cluster:
        return (
            f"{where}: job {provider.job_id} runs on cluster {provider.cluster!r}, and a job "
            f"on {cluster!r} cannot wait for it"
        )
    return None


def _refusal(problems: Sequence[str]) -> str:
    return (
        "its inputs are products of open jobs it cannot wait for: "
        + "; ".join(problems)
        + ". Or schedule with --no-auto-dependency to submit it without waiting"
    )


def _input(reserved: str, inputs: Sequence[str]) -> str:
    """An input as the user gave it (a glob by its pattern)."""
    globs = [i for i in inputs if is_glob(i) and reserved_path(i) == reserved]
    return f"input {globs[0]!r}" if globs else f"input {reserved!r}"


def _name(job: Job) -> str:
    return str(job.job_id) if job.job_id is not None else "(a submission in progress)"


# -- finish -------------------------------------------------------------------


def dependants(rows: Collection[int], jobs: Iterable[Job]) -> set[int]:
    """The row ids of the jobs that wait, directly or through others, for any of ``rows``
    (the jobs given in registry order, which is a dependency order)."""
    found: set[int] = set(rows)
    for job in jobs:
        if any(row in found for row, _ in job.depends_on):
            found.add(job.id)
    return found - set(rows)


def waiting_for(job: Job, done: Collection[int], open_rows: Collection[int]) -> list[int]:
    """The Slurm job ids of the jobs ``job`` depends on that are open and not in ``done``
    (committed before it in this drain): it must not be committed before them."""
    return [job_id for row, job_id in job.depends_on if row in open_rows and row not in done]


@dataclass(frozen=True)
class NeverStarts:
    """A dependant that will never start, and why."""

    #: why, for the message: Slurm's reason, and the job it waits for
    why: str
    #: whether Slurm still holds it pending (so that cancelling it means something)
    pending: bool


def never_starting(
    registry: Registry, jobs: Sequence[Job], statuses: Mapping[int, JobStatus]
) -> dict[int, NeverStarts]:
    """The open jobs (by row id) that will never start because a job they wait for failed:
    Slurm says so (pending with reason DependencyNeverSatisfied, or cancelled with it under
    ``kill_invalid_depend``), or they are pending on a job that will never start itself."""
    by_row = {job.id: job for job in jobs}
    found: dict[int, NeverStarts] = {}
    for job in jobs:  # registry order: what a job waits for comes before it
        status = statuses.get(job.id)
        if status is None or not job.depends_on:
            continue
        tasks = list(status.tasks.values())
        reasons = {t.reason for t in tasks}
        pending = bool(tasks) and all(t.state is JobState.PENDING for t in tasks)
        stuck = [by_row[row] for row, _ in job.depends_on if row in found and row in by_row]
        if NEVER_SATISFIED in reasons and (pending or status.verdict is Verdict.FAILED):
            found[job.id] = NeverStarts(
                f"Slurm says {NEVER_SATISFIED}: {_upstream(registry, job, statuses)}", pending
            )
        elif pending and stuck:
            names = ", ".join(str(j.job_id) for j in stuck)
            found[job.id] = NeverStarts(
                f"it waits for job {names}, which will never start either", pending
            )
    return found


def _upstream(registry: Registry, job: Job, statuses: Mapping[int, JobStatus]) -> str:
    """What became of the jobs it waits for, as far as the registry and this drain know."""
    parts = []
    for row, job_id in job.depends_on:
        status = statuses.get(row)
        if status is not None and status.verdict is not Verdict.ACTIVE:
            parts.append(f"job {job_id}, which ended {status.summary_state}")
            continue
        try:
            state: Phase | None = registry.get(row).state
        except RegistryError:
            state = None
        if state == Phase.CLOSED:
            parts.append(f"job {job_id}, which was closed")
        elif state != Phase.FINISHED and status is None:
            parts.append(f"job {job_id}, which is {state}")
    return "it waits for " + ("; ".join(parts) or "a job that did not complete")
