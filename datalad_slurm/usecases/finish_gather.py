"""Gathering what finish knows about the open jobs: the spool's events, one backend query
for the rest, and the spool's upkeep.

It owns reading the calling user's spool (:class:`SpoolView`; events a hook did not write are
set aside, :func:`reject`), matching events to jobs and asking the backend about the rest
(:func:`job_statuses`), removing what a committed or closed job consumed (:func:`consume`),
stale in-flight markers and events (:func:`clean_inflight`, :func:`tidy`), and the warning
when, without hook and accounting, slurmctld forgets jobs before finish sees them.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from datalad_slurm.jobs.events import JobKey, match_events, resolve
from datalad_slurm.jobs.job import Job
from datalad_slurm.jobs.lifecycle import Phase
from datalad_slurm.jobs.registry import Registry
from datalad_slurm.settings import hook_uids, spool_config
from datalad_slurm.slurm.backend import Backend
from datalad_slurm.slurm.conf import has_accounting, min_job_age, shown_config
from datalad_slurm.slurm.state import JobStatus, Verdict
from datalad_slurm.spool import (
    Event,
    Rejected,
    SpoolError,
    UserSpool,
)
from datalad_slurm.usecases.finish_jobs import STALE_SUBMISSION_SECONDS
from datalad_slurm.usecases.finish_request import result

lgr = logging.getLogger("datalad.slurm.finish")


#: events nobody claimed are removed after this long (other datasets had their chance)
STALE_EVENT_SECONDS = 30 * 24 * 3600.0


@dataclass
class SpoolView:
    """What the calling user's spool holds right now."""

    spool: UserSpool | None = None
    events: list[Event] = field(default_factory=list)
    rejected: list[Rejected] = field(default_factory=list)
    problem: str | None = None


def read_spool(ds: Any) -> SpoolView:
    try:
        config = spool_config(ds)
        if config is None:
            return SpoolView()
        spool = UserSpool(config.spool)
        events, rejected = spool.read_events(hook_uids(config))
    except (OSError, SpoolError) as exc:
        return SpoolView(problem=f"the spool could not be read ({exc}); asking Slurm instead")
    return SpoolView(spool, events, rejected)


@dataclass
class Resolution:
    """What the spool and Slurm say about the registered jobs, by registry row id."""

    statuses: dict[int, JobStatus]
    #: the events each job consumed, to be removed once it is committed or closed
    events: dict[int, list[Event]]
    #: events no open job claimed (other datasets', or already finished jobs')
    unmatched: list[Event]


def job_statuses(jobs: Sequence[Job], events: Sequence[Event], backend: Backend) -> Resolution:
    keys = {job.id: JobKey(job.job_id, job.cluster) for job in jobs if job.job_id is not None}
    matched, unmatched = match_events(keys.values(), events)
    resolved = resolve(list(keys.values()), matched, backend)
    return Resolution(
        statuses={row: resolved[key] for row, key in keys.items()},
        events={row: matched.get(key, []) for row, key in keys.items()},
        unmatched=unmatched,
    )


def reject(dataset_path: str, view: SpoolView) -> Iterator[dict[str, Any]]:
    for rejected in view.rejected:
        if view.spool is not None:
            view.spool.set_aside(rejected.name)
        yield result(
            dataset_path,
            "impossible",
            f"spool event {rejected.name} {rejected.reason}; it was not used and is kept as "
            f"{rejected.name}.rejected in {view.spool.path if view.spool else 'the spool'}",
            rejected_event=rejected.name,
        )


def consume(spool: UserSpool | None, job: Job, events: Sequence[Event]) -> None:
    """The job is committed or closed: its events and registration can go."""
    if spool is None or job.job_id is None:
        return
    try:
        spool.remove_events([e.name for e in events])
        spool.unregister(job.cluster, job.job_id)
    except (OSError, SpoolError):
        pass  # tidy removes them on a later run


def clean_inflight(spool: UserSpool | None) -> None:
    """A ``schedule`` killed between sbatch and registration left its in-flight marker, which
    makes the hook report every job of the user; its row stays 'submitting' (reported below)."""
    if spool is None:
        return
    try:
        spool.clean_inflight(STALE_SUBMISSION_SECONDS)
    except (OSError, SpoolError):
        pass


def tidy(spool: UserSpool | None, registry: Registry, unmatched: Sequence[Event]) -> None:
    """Remove events of jobs this dataset already finished, and very old unclaimed ones."""
    if spool is None:
        return
    done = {
        (job.job_id, job.cluster)
        for job in registry.jobs(states=(Phase.FINISHED, Phase.CLOSED))
        if job.job_id is not None
    }
    now = time.time()
    stale = [
        e.name
        for e in unmatched
        if (e.owner_job_id, e.cluster) in done
        or (e.owner_job_id, None) in done
        or now - e.written_at > STALE_EVENT_SECONDS
    ]
    try:
        spool.remove_events(stale)
    except (OSError, SpoolError):
        pass


def warn_if_slurm_forgets(statuses: Mapping[int, JobStatus]) -> None:
    """Without the hook's events and without accounting, only slurmctld knows how a job ended,
    and only for MinJobAge seconds after: warn when a job ended longer ago than that (finish
    runs too seldom: the next ones will be forgotten) or was forgotten already."""
    now = time.time()
    ended_ago: dict[int, float] = {}
    forgotten: list[int] = []
    for status in statuses.values():
        if status.verdict is Verdict.UNKNOWN:
            forgotten.append(status.job_id)
            continue
        ends = [t.end_time for t in status.tasks.values() if t.end_time is not None]
        if status.verdict is not Verdict.ACTIVE and ends:
            ended_ago[status.job_id] = now - max(ends)
    if not ended_ago and not forgotten:
        return
    shown = shown_config()  # one question to slurmctld, only when there is something to judge
    keeps = min_job_age(shown)
    if keeps is None or has_accounting(shown) is not False:
        return
    late = sorted(job for job, ago in ended_ago.items() if ago > keeps)
    if not late and not forgotten:
        return
    seen = []
    if late:
        ago = max(ended_ago[job] for job in late)
        seen.append(f"job(s) {_ids(late)} ended up to {ago:.0f} s before this finish")
    if forgotten:
        seen.append(f"Slurm had forgotten job(s) {_ids(forgotten)} already")
    lgr.warning(
        "%s. Without accounting and without datalad-slurm's Slurm hook, slurmctld forgets a "
        "finished job MinJobAge (%d s here) after it ended, and then nothing tells whether it "
        "completed: run 'datalad finish' more often than every %d s (a cron interval shorter "
        "than MinJobAge), or ask your admin for the hook (docs/admin.md) or accounting",
        "; ".join(seen),
        keeps,
        keeps,
    )


def _ids(jobs: Sequence[int]) -> str:
    return ", ".join(map(str, sorted(jobs)[:10])) + (", ..." if len(jobs) > 10 else "")
