"""Settling the jobs submitted held: each job's log files read from what slurmctld says
(mapped back from its scratch folder), refused where git tracks one; a job that waits for
others given its ``--dependency`` (the user's own joined with ``afterok`` on ours); the logs
reserved in one registry transaction, which opens the jobs; the refused ones cancelled
(they never ran) and forgotten; the accepted ones' facts kept, registered in the spool and
released at once; every job's result.  Once per schedule, once per chunk of ``--jobs-from``,
once per record of reschedule.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

from datalad_slurm.jobs import altdir
from datalad_slurm.jobs import logs as joblogs
from datalad_slurm.jobs.job import Job
from datalad_slurm.jobs.pipelines import Plan
from datalad_slurm.jobs.registry import Registry
from datalad_slurm.paths import lies_in
from datalad_slurm.slurm.dependency import DependencyError, combine, parse_spec, set_dependency
from datalad_slurm.slurm.holding import Noted, cancel, release
from datalad_slurm.slurm.logfiles import submitted_log_files
from datalad_slurm.slurm.submitted import HELD_REASONS, KEPT, facts_of_held
from datalad_slurm.spool import UserSpool
from datalad_slurm.usecases.request import ScheduleRequest
from datalad_slurm.usecases.scratch import log_folders
from datalad_slurm.usecases.submitcommand import spool_call
from datalad_slurm.usecases.waits import id_list, waits_note


@dataclass
class Held:
    """A job submitted held whose log files are still to be reserved."""

    job: Job
    request: ScheduleRequest
    #: its number in a ``--jobs-from`` file (None: a single schedule)
    number: int | None
    noted: Noted
    spool_note: str | None
    #: the result once it is registered (completed by settle)
    result: dict[str, Any]
    #: the open jobs it waits for (pipelines.plan)
    waits: Plan = field(default_factory=Plan)

    @property
    def name(self) -> str:
        return f"Slurm job {self.job.job_id}"


def settle_batch(
    batch: list[Held],
    registry: Registry,
    spool: UserSpool | None,
    dataset_path: str,
    note_failed: Callable[[ScheduleRequest, int | None], None],
) -> list[dict[str, Any]]:
    """Reserve the log files of the jobs submitted held, and release them; a job whose
    logs collide (with what an open job holds, or with a file git tracks) is cancelled
    before it ever ran and registers nothing (``note_failed`` hears of it).  One squeue, one
    registry transaction, one release for all of them; their results, in order."""
    facts, problem = facts_of_held([h.job.job_id for h in batch if h.job.job_id])
    claims: dict[int, list[joblogs.LogClaim]] = {}
    refused: dict[int, str] = {}
    for held in batch:
        job_facts = facts.get(held.job.job_id or 0)
        if job_facts is None and not held.noted.through_wrapper:
            # not held (sbatch by its full path): it may have ended and left slurmctld
            # already; registered as it is, its logs unknown
            claims[held.job.id] = []
            continue
        if job_facts is None:
            refused[held.job.id] = (
                f"Slurm did not say where {held.name} writes its logs "
                f"({problem or 'squeue does not list it'})"
            )
            continue
        files = submitted_log_files(job_facts, held.job.job_id or 0)
        if held.job.alt_dir:  # written in the scratch folder, brought back here by finish
            root = held.job.alt_dir
            files = [replace(f, path=altdir.to_dataset(f.path, root, dataset_path)) for f in files]
        claims[held.job.id] = joblogs.in_dataset(files, dataset_path)
    # a log inside the job's own output is no collision: schedule unlocked what git tracks
    foreign = {
        held.job.id: joblogs.outside(claims[held.job.id], held.job.outputs)
        for held in batch
        if held.job.id in claims
    }
    tracked = {
        (c.path, c.log.exact)
        for c in joblogs.tracked(dataset_path, [c for cs in foreign.values() for c in cs])
    }
    for held in batch:
        collided = [c for c in foreign.get(held.job.id, []) if (c.path, c.log.exact) in tracked]
        if collided:
            refused[held.job.id] = joblogs.tracked_message(held.name, collided)
    _set_dependencies(batch, facts, refused, registry)
    in_batch = {held.job.id for held in batch}
    refusals = registry.open_with_logs(
        [
            (held.job, joblogs.reserved(claims[held.job.id]))
            for held in batch
            if held.job.id not in refused
        ],
        waits_for={
            held.job.id: [row for row, _ in held.waits.depends_on if row in in_batch]
            for held in batch
        },
    )
    conflicts = refusals.conflicts
    for held in batch:
        if held.job.id in refusals.closed:
            refused[held.job.id] = (
                "'datalad finish --close-failed-jobs' closed the registration of "
                f"{held.name} while this schedule waited for Slurm (more than 10 minutes): "
                "schedule it again"
            )
        elif held.job.id in conflicts and not conflicts[held.job.id]:
            refused[held.job.id] = _upstream_refused(held, refused)
        elif held.job.id in conflicts:
            refused[held.job.id] = joblogs.conflict_message(
                held.name, conflicts[held.job.id], claims[held.job.id]
            )
    results = _refuse(
        [h for h in batch if h.job.id in refused], refused, registry, spool, note_failed
    )
    accepted = [h for h in batch if h.job.id not in refused]
    results.update(_register(accepted, facts, claims, registry, spool, dataset_path))
    return [results[held.job.id] for held in batch]


def _set_dependencies(
    batch: list[Held], facts: dict[int, dict[str, str]], refused: dict[int, str], registry: Registry
) -> None:
    """Give each held job that waits for others its ``--dependency``: the user's own, as
    slurmctld holds it (command line, ``#SBATCH`` lines, a script on standard input alike),
    joined with ``afterok`` on ours, set before the job is released.  A job that cannot
    get it, or that waits for a job refused here, is refused (``refused``, in place)."""
    specs: list[tuple[Job, str]] = []
    for held in batch:
        if held.job.id in refused:
            continue
        upstream = [row for row, _ in held.waits.depends_on if row in refused]
        if upstream:
            refused[held.job.id] = _upstream_refused(held, refused)
            continue
        if not held.waits.after:
            continue
        job_facts = facts.get(held.job.job_id or 0)
        if job_facts is None:
            refused[held.job.id] = (
                f"{held.name} could not be made to wait for job(s) "
                f"{id_list(held.waits.after)}: slurmctld does not list it (it was not "
                "submitted held and may have run already)"
            )
            continue
        try:
            spec = combine(parse_spec(job_facts.get("dependency")), held.waits.after)
        except DependencyError as exc:
            refused[held.job.id] = f"{held.name}: {exc}"
            continue
        problem = set_dependency(held.job.job_id or 0, spec)
        if problem:
            refused[held.job.id] = (
                f"{held.name} could not be made to wait for job(s) "
                f"{id_list(held.waits.after)} (scontrol update Dependency={spec}: {problem})"
            )
            continue
        held.result["dependency"] = str(spec)
        specs.append((held.job, str(spec)))
    if specs:
        registry.note_dependency_specs_many(specs)


def _refuse(
    refused: list[Held],
    why: dict[int, str],
    registry: Registry,
    spool: UserSpool | None,
    note_failed: Callable[[ScheduleRequest, int | None], None],
) -> dict[int, dict[str, Any]]:
    """Cancel the refused jobs (held: they never ran) and forget them; their results."""
    if not refused:
        return {}
    problem = cancel([held.job.job_id for held in refused if held.job.job_id is not None])
    results = {}
    for held in refused:
        spool_call(spool, "end_submission", held.job.token)
        registry.forget_submission(held.job)
        note_failed(held.request, held.number)
        if problem:
            outcome = (
                f"It could not be cancelled ({problem}): cancel it with 'scancel {held.job.job_id}'"
            )
            if held.noted.through_wrapper:
                outcome += "; it is held and cannot start unless released"
        elif held.noted.through_wrapper:
            outcome = "It was cancelled before it could start"
        else:
            outcome = (
                "It was cancelled, but it may have started first: the submit command did "
                "not run sbatch through PATH, so it was not submitted held"
            )
        message = (
            f"{why[held.job.id]}. {outcome}; nothing was registered, the outputs are free again"
        )
        if held.number is not None:
            message = f"job {held.number} ({held.request.cmd!r}): {message}"
        results[held.job.id] = {
            **held.result,
            "status": "error",
            "message": message,
            "cancelled": not problem,
        }
    return results


def _register(
    accepted: list[Held],
    facts: dict[int, dict[str, str]],
    claims: dict[int, list[joblogs.LogClaim]],
    registry: Registry,
    spool: UserSpool | None,
    dataset_path: str,
) -> dict[int, dict[str, Any]]:
    """The accepted jobs are open: keep their facts, register them in the spool, release
    them (all at once); their results."""
    if not accepted:
        return {}
    registry.note_submission_facts_many(
        [
            (held.job, {k: v for k, v in facts[held.job.job_id].items() if k in KEPT})
            for held in accepted
            if held.job.job_id in facts
        ]
    )
    for held in accepted:
        held.spool_note = held.spool_note or spool_call(
            spool, "register", held.job.cluster, held.job.job_id, held.job.token
        )
    # Slurm makes no folder for a log: the dataset's folders of the logs of jobs that run
    # in a scratch folder are made there too, before they are released
    folders_note = {
        held.job.id: log_folders(dataset_path, held.job, claims[held.job.id])
        for held in accepted
        if held.job.alt_dir
    }
    to_release = [
        held.job.job_id or 0
        for held in accepted
        if held.noted.through_wrapper
        and not held.noted.user_hold
        and facts.get(held.job.job_id or 0, {}).get("reason") in HELD_REASONS
    ]
    problem = release(to_release) if to_release else None
    results = {}
    for held in accepted:
        job_id = held.job.job_id
        logs = joblogs.reserved(claims[held.job.id])
        result = dict(held.result)
        outside = [p for p in logs if not any(lies_in(p, o) for o in result["outputs"])]
        if outside:
            result["message"] += f", log files {', '.join(outside)}"
        result["message"] += waits_note(held.waits, result.get("dependency"))
        notes = [held.spool_note] if held.spool_note else []
        if folders_note.get(held.job.id):
            notes.append(folders_note[held.job.id] or "")
        if held.noted.user_hold:
            notes.append(f"held, as asked: release it with 'scontrol release {job_id}'")
        elif job_id in to_release and problem:
            notes.append(
                f"it could not be released ({problem}): it is held until you run "
                f"'scontrol release {job_id}'"
            )
        if notes:
            result["message"] += f" ({'; '.join(notes)})"
        result["logs"] = logs
        result["held"] = bool(held.noted.user_hold or (job_id in to_release and problem))
        results[held.job.id] = result
    return results


def _upstream_refused(held: Held, refused: dict[int, str]) -> str:
    """Why a job that waits for a refused job of the same batch is refused too."""
    ids = [job_id for row, job_id in held.waits.depends_on if row in refused]
    return (
        f"{held.name} waits for job(s) {id_list(ids)}, which were refused (see there), so it "
        "could never start"
    )
