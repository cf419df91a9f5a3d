"""What a submission waits for, in schedule's words: how a job is to wait for the open jobs
whose products its inputs are (``jobs/pipelines.py`` decides; a submission of this run that
failed leaves nothing to wait for), the inputs that such jobs are still to write (neither
obtained nor required to exist), the refusal of waits that go through a scratch folder, and
what the job's result says it waits for.
"""

from __future__ import annotations

from collections.abc import Collection, MutableMapping, Sequence

from datalad_slurm.globs import reserved_path
from datalad_slurm.jobs.job import Job
from datalad_slurm.jobs.pipelines import DependencyRefusal, Plan, plan
from datalad_slurm.paths import lies_in, overlaps
from datalad_slurm.slurm.dependency import JobStanding
from datalad_slurm.usecases.request import ScheduleError, ScheduleRequest


def plan_waits(
    inputs: list[str],
    request: ScheduleRequest,
    products: list[tuple[str, str, Job]],
    *,
    failed: Sequence[tuple[str, list[str]]],
    cluster: str | None,
    held_here: Collection[int],
    standings: MutableMapping[int, JobStanding | None],
) -> Plan:
    """How the job is to wait for the open jobs whose products its inputs are
    (``products``: :meth:`Registry.providers`); ScheduleError when it cannot.  ``failed``: the
    outputs of the submissions of this run that failed, by their name; ``held_here`` and
    ``standings`` as :func:`plan` takes them."""
    if not request.auto_dependency or not inputs:
        return Plan()
    overlapping = [
        (earlier, i, o)
        for earlier, outputs in failed
        for i in inputs
        for o in outputs
        if overlaps(reserved_path(i), reserved_path(o))
    ]
    if overlapping:
        raise ScheduleError(
            "its inputs are outputs of earlier submissions of this run that failed ("
            + "; ".join(f"input {i!r} overlaps {o!r} of {n}" for n, i, o in overlapping)
            + "), so there is nothing to wait for; fix those and schedule it again, or "
            "give --no-auto-dependency"
        )
    try:
        return plan(products, inputs, cluster, held_here=held_here, standings=standings)
    except DependencyRefusal as exc:
        raise ScheduleError(str(exc)) from exc


def refuse_scratch_waits(
    scratch: str | None, request: ScheduleRequest, products: Sequence[tuple[str, str, Job]]
) -> None:
    """A job cannot wait for a product that goes through a scratch folder (``--alt-dir``):
    its own inputs are copied there at submission, and a provider that runs in one puts its
    outputs into the dataset only when ``finish`` commits it."""
    if not request.auto_dependency or not products:
        return
    providers = {job.id: job for _, _, job in products}
    if scratch:
        ids = id_list([job.job_id for job in providers.values() if job.job_id is not None])
        raise ScheduleError(
            f"its inputs are outputs of open job(s) {ids}, not committed yet, and a job run in "
            "a scratch folder (--alt-dir) gets copies of its inputs when it is submitted, so it "
            "cannot wait for them; run 'datalad finish' for those jobs first and schedule it "
            "then, or run it in the dataset (without --alt-dir)"
        )
    in_scratch = [job for job in providers.values() if job.alt_dir]
    if in_scratch:
        named = "; ".join(f"job {job.job_id} in {job.alt_dir}" for job in in_scratch)
        raise ScheduleError(
            f"its inputs are outputs of open jobs that run in a scratch folder ({named}): their "
            "outputs reach the dataset only when 'datalad finish' commits them, so it cannot "
            "wait for them; finish those jobs first and schedule it then"
        )


def not_made_yet(
    to_get: list[str], unmatched: list[str], held: Sequence[str]
) -> tuple[list[str], list[str]]:
    """The inputs to obtain and the globs that match nothing, without what open jobs are still
    to write (``held``: an input inside what one holds; a glob whose folder overlaps it): such
    an input need not exist yet, and there is nothing to obtain."""
    if not held:
        return to_get, unmatched
    return (
        [p for p in to_get if not any(lies_in(p, h) for h in held)],
        [g for g in unmatched if not any(overlaps(reserved_path(g), h) for h in held)],
    )


def waits_note(waits: Plan, dependency: str | None) -> str:
    """What the job waits for, for its result's message (with the whole ``--dependency``)."""
    if not waits.depends_on:
        return ""
    ids = [job_id for _, job_id in waits.depends_on]
    note = f", reads the outputs of open job(s) {id_list(ids)}"
    if waits.notes:
        note += f" ({'; '.join(waits.notes)})"
    if waits.after:
        whom = "them" if sorted(waits.after) == sorted(ids) else f"job(s) {id_list(waits.after)}"
        ours = "afterok:" + ":".join(map(str, waits.after))
        note += f", waits for {whom}: --dependency={dependency or ours}"
        if dependency and dependency != ours:
            note += " (its own joined with ours)"
    return note


def id_list(job_ids: Sequence[int]) -> str:
    """Job ids as messages list them."""
    return ", ".join(map(str, job_ids))
