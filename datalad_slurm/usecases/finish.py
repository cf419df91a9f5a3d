"""Finishing jobs: drain the spool, ask Slurm once about the rest, then commit, report or close.

Everything that writes to git happens under the dataset's git lock, and the
registry and the spool are read only after the lock is held, so two
``finish`` runs never handle the same job.  Events are removed only after
their job is committed or closed: a crash at any point loses nothing.  A
problem with one job becomes that job's result and never stops the others.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from datalad_slurm.commit.batch import commit_jobs, find_commits_with_tokens, recover
from datalad_slurm.commit.record import status_word
from datalad_slurm.errors import DataladSlurmError
from datalad_slurm.jobs import altdir
from datalad_slurm.jobs.events import JobKey, match_events, resolve
from datalad_slurm.jobs.job import Job
from datalad_slurm.jobs.lifecycle import HOLDING_STATES, Phase
from datalad_slurm.jobs.migration import take_over, waiting
from datalad_slurm.jobs.pipelines import NeverStarts, never_starting, waiting_for
from datalad_slurm.jobs.registry import Registry
from datalad_slurm.jobs.statedir import (
    GitLockTimeout,
    clear_interrupted_writes,
    git_lock,
    open_registry,
)
from datalad_slurm.results import FINISH, make_result
from datalad_slurm.settings import asks_usage, hook_uids, spool_config
from datalad_slurm.slurm.backend import Backend
from datalad_slurm.slurm.conf import has_accounting, min_job_age, shown_config
from datalad_slurm.slurm.holding import cancel
from datalad_slurm.slurm.select import choose_backend
from datalad_slurm.slurm.state import JobState, JobStatus, Verdict
from datalad_slurm.slurm.usage import Usage
from datalad_slurm.spool import (
    STALE_INFLIGHT_SECONDS,
    Event,
    Rejected,
    SpoolError,
    UserSpool,
)

lgr = logging.getLogger("datalad.slurm.finish")

ACTION = FINISH
#: a reservation still 'submitting' after this long was interrupted
STALE_SUBMISSION_SECONDS = STALE_INFLIGHT_SECONDS
#: events nobody claimed are removed after this long (other datasets had their chance)
STALE_EVENT_SECONDS = 30 * 24 * 3600.0


class FinishError(DataladSlurmError, RuntimeError):
    """A request finish cannot carry out; the message says what to do."""


@dataclass
class FinishRequest:
    job_id: int | None = None
    close_failed_jobs: bool = False
    commit_failed_jobs: bool = False
    message: str | None = None
    #: seconds to wait for another finish's lock; None: wait as long as it takes
    lock_timeout: float | None = None
    #: run by cron: a job's trouble is reported once, and again only when it changes
    cron: bool = False
    #: with close_failed_jobs: cancel in Slurm the jobs that will never start (a job they
    #: wait for failed) before closing them
    cancel: bool = False
    #: ``branches``: each job's commit on a branch of its own; ``octopus``: then merged
    branches: str | None = None


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


def _result(ds_path: str, status: str, message: str, **extra: Any) -> dict[str, Any]:
    return make_result(ACTION, status, ds_path, type="dataset", message=message, **extra)


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


def list_open_jobs(
    ds: Any, job_id: int | None = None, backend: Backend | None = None
) -> Iterator[dict[str, Any]]:
    """One result per open job with its state; no git lock, nothing written."""
    dataset_path = str(ds.path)
    backend = backend or choose_backend(states_only=True)
    with open_registry(dataset_path) as registry:
        if registry.has_jobs(job_id=job_id):
            backend.prefetch()  # Slurm answers while the registry and the spool are read
        jobs = registry.jobs(job_id=job_id)
    view = read_spool(ds)
    statuses = job_statuses(jobs, view.events, backend).statuses
    yield from waiting(ds)  # datalad-slurm 0.2.8's open jobs, until finish takes them over
    for job in jobs:
        if job.job_id is None:
            status = JobStatus(0, backend=backend.name)
            state = "SUBMITTING"
        else:
            status = statuses.get(job.id, JobStatus(job.job_id, backend=backend.name))
            state = status.summary_state
        yield _result(
            dataset_path,
            "ok",
            f"{job.job_id}: {state}",
            slurm_job_id=job.job_id,
            cluster=job.cluster,
            slurm_job_status=state,
            tasks={label: t.state.value for label, t in status.tasks.items()},
            task_counts=dict(status.task_counts()),
            elapsed=running_for(status),
            backend=status.backend or backend.name,
            data_parser=status.data_parser,
            outputs=job.outputs,
            list_open_jobs=True,
        )


def running_for(status: JobStatus) -> int | None:
    """How long the job's longest running task has run, in seconds (None: none runs, or
    Slurm did not say)."""
    times = [
        task.resources.elapsed
        for task in status.tasks.values()
        if task.state in (JobState.RUNNING, JobState.SUSPENDED)
        and task.resources is not None
        and task.resources.elapsed is not None
    ]
    return max(times) if times else None


def finish(
    ds: Any, request: FinishRequest, backend: Backend | None = None
) -> Iterator[dict[str, Any]]:
    """Commit every completed open job (or the one named) and report the rest."""
    dataset_path = str(ds.path)
    timeout = -1 if request.lock_timeout is None else request.lock_timeout
    lock = git_lock(dataset_path, timeout=timeout)
    try:
        lock.acquire()
    except GitLockTimeout:
        yield _result(
            dataset_path,
            "notneeded",
            f"another 'datalad finish' holds the lock of {dataset_path}; leaving it the work",
            locked=True,
        )
        return
    try:
        with open_registry(dataset_path) as registry:
            yield from _drain(ds, registry, request, backend)
    finally:
        lock.release()


def _drain(
    ds: Any, registry: Registry, request: FinishRequest, backend: Backend | None
) -> Iterator[dict[str, Any]]:
    dataset_path = str(ds.path)
    cleared = clear_interrupted_writes(dataset_path)
    if cleared:
        yield _result(
            dataset_path,
            "ok",
            f"removed {', '.join(cleared)} that an interrupted finish or schedule left in "
            f"{dataset_path}",
            cleared_locks=cleared,
        )
    recover(dataset_path, registry)
    yield from take_over(ds, registry)  # open jobs of datalad-slurm 0.2.8, once
    jobs = registry.jobs(states=(Phase.SUBMITTING, Phase.OPEN), job_id=request.job_id)
    if request.job_id is not None and not jobs:
        raise FinishError(_not_open(dataset_path, registry, request.job_id))
    view = read_spool(ds)
    if view.problem:
        yield _result(dataset_path, "impossible", view.problem)
    yield from _reject(dataset_path, view)
    _clean_inflight(view.spool)
    backend = backend or choose_backend()
    submitted = [j for j in jobs if j.job_id is not None]
    resolution = job_statuses(submitted, view.events, backend)
    if view.spool is None and view.problem is None:  # no hook: slurmctld alone may know
        _warn_if_slurm_forgets(resolution.statuses)
    # what the steps of the jobs to be committed used: accounting is asked now, and answers
    # while the committer stages their outputs
    usage = Usage.ask(
        backend if asks_usage(ds) else None,
        [s for s in resolution.statuses.values() if _to_be_committed(s, request)],
    )
    to_commit: list[tuple[Job, JobStatus]] = []
    # the commits' results come first, the other jobs' reports after them (as in 0.2.8)
    reports: list[dict[str, Any]] = []
    # jobs that wait for others (jobs/pipelines.py): those never to start, and which jobs are open
    # (a job is committed only after the open jobs it waits for)
    never = never_starting(registry, jobs, resolution.statuses)
    open_rows = (
        {j.id for j in registry.jobs(states=HOLDING_STATES)}
        if any(j.depends_on for j in jobs)
        else set()
    )
    to_commit_rows: set[int] = set()
    for job in jobs:
        if job.job_id is None:
            reports += _news_only(
                registry,
                job,
                "interrupted submission",
                list(_handle_interrupted_submission(dataset_path, registry, job, request)),
                request,
            )
            continue
        status = resolution.statuses.get(job.id, JobStatus(job.job_id, backend=backend.name))
        if _held_by_interrupted_schedule(job, status):
            reports += list(_handle_unreleased(dataset_path, registry, job, request))
            continue
        if job.id in never and not (request.commit_failed_jobs and not never[job.id].pending):
            reports += _news_only(
                registry,
                job,
                f"never starts: {never[job.id].why}",
                list(_handle_never_starting(dataset_path, registry, job, never[job.id], request)),
                request,
            )
            if job.state == Phase.CLOSED:
                open_rows.discard(job.id)
                _consume(view.spool, job, resolution.events.get(job.id, []))
            continue
        if _to_be_committed(status, request):
            upstream = waiting_for(job, to_commit_rows, open_rows)
            if upstream:
                reports.append(_waits_for_upstream(dataset_path, job, status, upstream))
                continue
            to_commit.append((job, status))
            to_commit_rows.add(job.id)
            continue
        try:
            reports += _news_only(
                registry,
                job,
                _trouble(status),
                list(_handle_job(ds, registry, job, status, request)),
                request,
            )
        except Exception as exc:  # one job's trouble must not stop the others
            registry.reopen(job)
            reports.append(
                _result(
                    dataset_path,
                    "error",
                    f"job {_job_name(job)} could not be finished: {exc}; it stays open",
                    slurm_job_id=job.job_id,
                    cluster=job.cluster,
                )
            )
        if job.state == Phase.CLOSED:
            open_rows.discard(job.id)
            _consume(view.spool, job, resolution.events.get(job.id, []))
    yield from _commit(ds, registry, to_commit, request.message, request.branches, usage)
    yield from reports
    for job, _ in to_commit:
        if job.state == Phase.FINISHED:
            _consume(view.spool, job, resolution.events.get(job.id, []))
    if request.job_id is None:
        _tidy(view.spool, registry, resolution.unmatched)


def _news_only(
    registry: Registry,
    job: Job,
    trouble: str | None,
    results: list[dict[str, Any]],
    request: FinishRequest,
) -> list[dict[str, Any]]:
    """With ``--cron``: a job's trouble is reported when first seen, and again only when it
    changed (other task states, or the job was active again in between); cron would mail the
    same failure every run otherwise.  ``trouble`` says what the job's state is (None: active).
    What was reported is kept in the job's registry row."""
    if not request.cron or job.state not in (Phase.OPEN, Phase.SUBMITTING):
        return results
    if not any(r.get("status") == "impossible" for r in results):
        if trouble is None and job.cron_reported is not None:
            registry.note_cron_reported(job, None)  # active again: its next end is news
        return results
    if job.cron_reported != trouble:
        registry.note_cron_reported(job, trouble)
        return results
    return [
        {
            **r,
            "status": "notneeded",
            "message": f"{r.get('message')} (reported before by 'datalad finish --cron'; "
            "unchanged since)",
            "already_reported": True,
        }
        if r.get("status") == "impossible"
        else r
        for r in results
    ]


def _trouble(status: JobStatus) -> str | None:
    """What cron remembers of a job that ended without success: its tasks' states and when the
    last one ended (a requeued job that fails again ends anew); None for an active job."""
    if status.verdict is Verdict.ACTIVE:
        return None
    ends = [t.end_time for t in status.tasks.values() if t.end_time is not None]
    return f"{status.statuses()}; ended {max(ends) if ends else '?'}"


def _not_open(dataset_path: str, registry: Registry, job_id: int) -> str:
    """Why ``finish JOBID`` has nothing to do: never registered, or finished or closed."""
    earlier = registry.jobs(states=(Phase.FINISHED, Phase.CLOSED), job_id=job_id)
    if earlier:
        last = earlier[-1]
        how = (
            f"was committed as {last.commit_sha[:8]}"
            if last.state == Phase.FINISHED and last.commit_sha
            else f"is {last.state}"
        )
        return (
            f"job {job_id} {how}: it is not an open job of the dataset at {dataset_path} any "
            "more; 'datalad finish --list-open-jobs' shows the open ones"
        )
    return (
        f"job {job_id} is not an open job of the dataset at {dataset_path}; "
        "'datalad finish --list-open-jobs' shows the open ones"
    )


def _to_be_committed(status: JobStatus, request: FinishRequest) -> bool:
    verdict = status.verdict
    return verdict is Verdict.COMPLETED or (
        verdict is Verdict.FAILED and request.commit_failed_jobs
    )


def _commit(
    ds: Any,
    registry: Registry,
    to_commit: Sequence[tuple[Job, JobStatus]],
    message: str | None,
    branches: str | None = None,
    usage: Usage | None = None,
) -> Iterator[dict[str, Any]]:
    """All completed jobs at once; trouble the committer did not foresee leaves them open.

    A job is its id *and* its cluster: the committer's results name the id
    only, so jobs that share an id (two clusters) go to it in separate batches.
    """
    for batch in _batches_of_distinct_ids(to_commit):
        yield from _commit_batch(ds, registry, batch, message, branches, usage)


def _batches_of_distinct_ids(
    to_commit: Sequence[tuple[Job, JobStatus]],
) -> list[list[tuple[Job, JobStatus]]]:
    """The jobs in as few batches as possible, no job id twice in one (almost always one);
    a job never in a batch before that of a job it waits for (batches commit in order)."""
    batches: list[list[tuple[Job, JobStatus]]] = []
    batch_of: dict[int, int] = {}
    for job, status in to_commit:
        first = max((batch_of[row] for row, _ in job.depends_on if row in batch_of), default=0)
        for index in range(first, len(batches)):
            if all(other.job_id != job.job_id for other, _ in batches[index]):
                batches[index].append((job, status))
                batch_of[job.id] = index
                break
        else:
            batches.append([(job, status)])
            batch_of[job.id] = len(batches) - 1
    return batches


def _commit_batch(
    ds: Any,
    registry: Registry,
    batch: Sequence[tuple[Job, JobStatus]],
    message: str | None,
    branches: str | None,
    usage: Usage | None,
) -> Iterator[dict[str, Any]]:
    by_id = {job.job_id: job for job, _ in batch}
    reported: set[int] = set()
    try:
        for result in commit_jobs(ds, registry, batch, message, branches, usage):
            job = by_id.get(result.get("slurm_job_id")) if result.get("action") == ACTION else None
            if job is not None:
                reported.add(job.id)
                result.setdefault("cluster", job.cluster)
            yield result
    except Exception as exc:
        left = [job for job, _ in batch if job.id not in reported]
        yield from _after_failed_commit(str(ds.path), registry, left, exc)


def _after_failed_commit(
    dataset_path: str, registry: Registry, jobs: Sequence[Job], exc: Exception
) -> Iterator[dict[str, Any]]:
    """The commit failed, perhaps after HEAD moved (the registry failed on a full disk): a
    job whose commit is in HEAD's history must never be reopened, or the next finish commits
    it twice.  The rows are settled by their tokens as after a crash (``committer.recover``);
    if the registry still fails they stay 'committing' for the next finish's recovery."""
    try:
        recover(dataset_path, registry)
        rows = {job.id: registry.get(job.id) for job in jobs}
        committed = {
            job.id: row.commit_sha
            for job in jobs
            if (row := rows[job.id]).state == "finished" and row.commit_sha
        }
        recorded = True
    except DataladSlurmError:
        found = find_commits_with_tokens(
            dataset_path, {job.token for job in jobs}, {job.submitted_from for job in jobs}
        )
        committed = {job.id: found[job.token] for job in jobs if job.token in found}
        recorded = False
    for job in jobs:
        sha = committed.get(job.id)
        if sha is None:
            message = (
                f"job {_job_name(job)} could not be committed: {exc}; it stays open, fix the "
                "problem and run 'datalad finish' again"
            )
        elif recorded:
            message = f"Slurm job {job.job_id} was committed as {sha[:8]}, then: {exc}"
        else:
            message = (
                f"Slurm job {job.job_id} was committed as {sha[:8]}, but the registry could "
                f"not record that: {exc}; the next 'datalad finish' records it (it is not "
                "committed twice)"
            )
        yield _result(
            dataset_path,
            "error",
            message,
            slurm_job_id=job.job_id,
            cluster=job.cluster,
            **({"commit": sha} if sha else {}),
        )


def _job_name(job: Job) -> str:
    """The job id, with its cluster where known (ids are per cluster)."""
    return f"{job.job_id} (cluster {job.cluster})" if job.cluster else str(job.job_id)


def _reject(dataset_path: str, view: SpoolView) -> Iterator[dict[str, Any]]:
    for rejected in view.rejected:
        if view.spool is not None:
            view.spool.set_aside(rejected.name)
        yield _result(
            dataset_path,
            "impossible",
            f"spool event {rejected.name} {rejected.reason}; it was not used and is kept as "
            f"{rejected.name}.rejected in {view.spool.path if view.spool else 'the spool'}",
            rejected_event=rejected.name,
        )


def _consume(spool: UserSpool | None, job: Job, events: Sequence[Event]) -> None:
    """The job is committed or closed: its events and registration can go."""
    if spool is None or job.job_id is None:
        return
    try:
        spool.remove_events([e.name for e in events])
        spool.unregister(job.cluster, job.job_id)
    except (OSError, SpoolError):
        pass  # _tidy removes them on a later run


def _clean_inflight(spool: UserSpool | None) -> None:
    """A ``schedule`` killed between sbatch and registration left its in-flight marker, which
    makes the hook report every job of the user; its row stays 'submitting' (reported below)."""
    if spool is None:
        return
    try:
        spool.clean_inflight(STALE_SUBMISSION_SECONDS)
    except (OSError, SpoolError):
        pass


def _tidy(spool: UserSpool | None, registry: Registry, unmatched: Sequence[Event]) -> None:
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


def _handle_job(
    ds: Any, registry: Registry, job: Job, status: JobStatus, request: FinishRequest
) -> Iterator[dict[str, Any]]:
    """Report a job that is not to be committed, or close it when asked to."""
    dataset_path = str(ds.path)
    verdict = status.verdict
    if verdict is Verdict.ACTIVE:
        if request.job_id is None:
            message = f"Slurm job {job.job_id} is still active. Statuses: {status.statuses()}"
        else:  # asked for by name: say so where a drain of all jobs stays quiet
            message = (
                f"Slurm job {job.job_id} is {status.summary_state} "
                f"(statuses: {status.statuses()}); it stays open: run "
                f"'datalad finish {job.job_id}' again once it has ended"
            )
        yield _result(
            dataset_path,
            "notneeded",
            message,
            slurm_job_id=job.job_id,
            cluster=job.cluster,
            state=status.summary_state,
            stays_open=True,
            asked_for=request.job_id is not None,
        )
        return
    if request.close_failed_jobs:
        registry.close_job(job)
        yield _result(
            dataset_path,
            "ok",
            f"Closing failed / cancelled jobs. Statuses: {status.statuses()}"
            + _scratch_note(job, "; remove them once you no longer need them"),
            slurm_job_id=job.job_id,
            cluster=job.cluster,
            state=status.summary_state,
            **_scratch_key(job),
        )
        return
    if verdict is Verdict.UNKNOWN:
        message = (
            f"Slurm does not know job {job.job_id} ({status.backend} had no record of it; "
            "without accounting, finished jobs leave slurmctld after MinJobAge). "
            "Check its outputs, then 'datalad finish --close-failed-jobs' to drop it"
        )
    else:
        message = (
            f"Slurm job(s) for job {job.job_id} are not complete. Statuses: {status.statuses()}. "
            f"'datalad finish --close-failed-jobs' drops it, "
            f"'--commit-failed-jobs' commits it as {status_word(status)!r}"
        )
    yield _result(
        dataset_path,
        "impossible",
        message + _scratch_note(job, ""),
        slurm_job_id=job.job_id,
        cluster=job.cluster,
        state=status.summary_state,
        **_scratch_key(job),
    )


def _waits_for_upstream(
    dataset_path: str, job: Job, status: JobStatus, upstream: Sequence[int]
) -> dict[str, Any]:
    """A completed job that waits for open jobs not committed in this drain: it is committed
    after them, never before."""
    names = ", ".join(map(str, upstream))
    return _result(
        dataset_path,
        "impossible",
        f"Slurm job {job.job_id} ended {status.summary_state}, but it read the outputs of job(s) "
        f"{names}, which are not committed yet: it is committed after them. Run "
        f"'datalad finish' for those (or close them: 'datalad finish --close-failed-jobs'), "
        "then again for this one",
        slurm_job_id=job.job_id,
        cluster=job.cluster,
        state=status.summary_state,
        waits_for=list(upstream),
    )


def _handle_never_starting(
    dataset_path: str,
    registry: Registry,
    job: Job,
    never: NeverStarts,
    request: FinishRequest,
) -> Iterator[dict[str, Any]]:
    """A job that waits for a job that failed: Slurm will never start it.  Reported, or
    closed (``--close-failed-jobs``), and cancelled in Slurm first with ``--cancel``."""
    name = f"Slurm job {job.job_id}"
    facts = {"slurm_job_id": job.job_id, "cluster": job.cluster, "never_starts": never.why}
    if not request.close_failed_jobs:
        what_to_do = (
            "'datalad finish --close-failed-jobs --cancel' cancels it in Slurm and closes it"
            if never.pending
            else "Slurm cancelled it; 'datalad finish --close-failed-jobs' closes it"
        )
        yield _result(
            dataset_path,
            "impossible",
            f"{name} will never start: {never.why}. {what_to_do}",
            state=JobState.PENDING.value if never.pending else JobState.CANCELLED.value,
            **facts,
        )
        return
    if never.pending and request.cancel:
        problem = cancel([job.job_id]) if job.job_id is not None else "no job id"
        if problem:
            yield _result(
                dataset_path,
                "error",
                f"{name}, which will never start ({never.why}), could not be cancelled "
                f"({problem}); it stays open",
                **facts,
            )
            return
        registry.close_job(job)
        yield _result(
            dataset_path,
            "ok",
            f"Cancelled and closed {name}, which would never start: {never.why}",
            cancelled=True,
            **facts,
        )
        return
    registry.close_job(job)
    left = (
        f"; it stays pending in Slurm, never to start: cancel it with 'scancel {job.job_id}' "
        "(or close such jobs with --cancel)"
        if never.pending
        else ""
    )
    yield _result(
        dataset_path,
        "ok",
        f"Closed {name}, which would never start: {never.why}{left}",
        cancelled=False,
        **facts,
    )


def _scratch_note(job: Job, advice: str) -> str:
    """Where a job run in a scratch folder (``--alt-dir``) left its files, untouched."""
    if not job.alt_dir:
        return ""
    ran = f", where it ran in {altdir.place(job.alt_dir, job.pwd)}" if job.pwd != "." else ""
    return (
        f". Its outputs and logs are left as they are in its scratch folder "
        f"{job.alt_dir}{ran}{advice}"
    )


def _scratch_key(job: Job) -> dict[str, str]:
    return {"alt_dir": job.alt_dir} if job.alt_dir else {}


def _held_by_interrupted_schedule(job: Job, status: JobStatus) -> bool:
    """A job submitted held whose schedule died before it reserved the job's logs and released
    it: the row is still 'submitting' and every task still pending."""
    return (
        job.state == Phase.SUBMITTING
        and time.time() - job.submitted_at >= STALE_SUBMISSION_SECONDS
        and bool(status.tasks)
        and all(t.state is JobState.PENDING for t in status.tasks.values())
    )


def _handle_unreleased(
    dataset_path: str, registry: Registry, job: Job, request: FinishRequest
) -> Iterator[dict[str, Any]]:
    what = f"Slurm job {job.job_id} ({job.cmd!r}, outputs {', '.join(job.outputs)})"
    status, message = (
        "impossible",
        (
            f"the schedule of {what} was interrupted before the job's log files were reserved; the "
            "job is held and has not started. 'datalad finish --close-failed-jobs' cancels it and "
            "releases the outputs; then schedule it again"
        ),
    )
    if request.close_failed_jobs:
        problem = cancel([job.job_id]) if job.job_id is not None else "no job id"
        if problem:
            status, message = "error", f"{what} could not be cancelled ({problem}); it stays open"
        else:
            registry.close_job(job)
            status, message = "ok", f"Cancelled and closed {what}: its schedule was interrupted"
    yield _result(dataset_path, status, message, slurm_job_id=job.job_id, cluster=job.cluster)


def _handle_interrupted_submission(
    dataset_path: str, registry: Registry, job: Job, request: FinishRequest
) -> Iterator[dict[str, Any]]:
    age = time.time() - job.submitted_at
    if age < STALE_SUBMISSION_SECONDS:
        return  # a schedule is probably running right now
    if request.close_failed_jobs:
        registry.close_job(job)
        yield _result(
            dataset_path,
            "ok",
            f"Closing interrupted submission of {job.cmd!r} (outputs {', '.join(job.outputs)})",
            slurm_job_id=None,
        )
        return
    yield _result(
        dataset_path,
        "impossible",
        f"the submission of {job.cmd!r} (outputs {', '.join(job.outputs)}) was interrupted "
        "before its job id was recorded; a job it submitted through sbatch is held and has not "
        "started ('squeue -t PD' lists it; cancel it with scancel). "
        "'datalad finish --close-failed-jobs' releases the outputs",
        slurm_job_id=None,
    )


def _warn_if_slurm_forgets(statuses: Mapping[int, JobStatus]) -> None:
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
