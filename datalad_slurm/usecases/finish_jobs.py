"""Deciding, per open job that is not committed in this drain, what finish says or does.

It owns the reports of jobs still active, failed, unknown to Slurm or waiting for jobs not yet
committed (:func:`handle_job`, :func:`waits_for_upstream`), closing them when asked
(``--close-failed-jobs``): failed jobs, jobs that will never start (:func:`handle_never_starting`,
cancelled first with ``--cancel``), submissions interrupted before their job id was recorded
(:func:`handle_interrupted_submission`) or before their held job was released
(:func:`handle_unreleased`); which jobs are to be committed (:func:`to_be_committed`); and
``--cron``'s news-only reporting (:func:`news_only`, what is kept in ``cron_reported``).
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from typing import Any

from datalad_slurm.commit.record import status_word
from datalad_slurm.jobs import altdir
from datalad_slurm.jobs.job import Job
from datalad_slurm.jobs.lifecycle import Phase
from datalad_slurm.jobs.pipelines import NeverStarts
from datalad_slurm.jobs.registry import Registry
from datalad_slurm.slurm.holding import cancel
from datalad_slurm.slurm.state import JobState, JobStatus, Verdict
from datalad_slurm.spool import (
    STALE_INFLIGHT_SECONDS,
)
from datalad_slurm.usecases.finish_request import FinishRequest, result

#: a reservation still 'submitting' after this long was interrupted
STALE_SUBMISSION_SECONDS = STALE_INFLIGHT_SECONDS


def news_only(
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


def trouble(status: JobStatus) -> str | None:
    """What cron remembers of a job that ended without success: its tasks' states and when the
    last one ended (a requeued job that fails again ends anew); None for an active job."""
    if status.verdict is Verdict.ACTIVE:
        return None
    ends = [t.end_time for t in status.tasks.values() if t.end_time is not None]
    return f"{status.statuses()}; ended {max(ends) if ends else '?'}"


def not_open(dataset_path: str, registry: Registry, job_id: int) -> str:
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


def to_be_committed(status: JobStatus, request: FinishRequest) -> bool:
    verdict = status.verdict
    return verdict is Verdict.COMPLETED or (
        verdict is Verdict.FAILED and request.commit_failed_jobs
    )


def handle_job(
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
        yield result(
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
        yield result(
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
    yield result(
        dataset_path,
        "impossible",
        message + _scratch_note(job, ""),
        slurm_job_id=job.job_id,
        cluster=job.cluster,
        state=status.summary_state,
        **_scratch_key(job),
    )


def waits_for_upstream(
    dataset_path: str, job: Job, status: JobStatus, upstream: Sequence[int]
) -> dict[str, Any]:
    """A completed job that waits for open jobs not committed in this drain: it is committed
    after them, never before."""
    names = ", ".join(map(str, upstream))
    return result(
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


def handle_never_starting(
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
        yield result(
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
            yield result(
                dataset_path,
                "error",
                f"{name}, which will never start ({never.why}), could not be cancelled "
                f"({problem}); it stays open",
                **facts,
            )
            return
        registry.close_job(job)
        yield result(
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
    yield result(
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


def held_by_interrupted_schedule(job: Job, status: JobStatus) -> bool:
    """A job submitted held whose schedule died before it reserved the job's logs and released
    it: the row is still 'submitting' and every task still pending."""
    return (
        job.state == Phase.SUBMITTING
        and time.time() - job.submitted_at >= STALE_SUBMISSION_SECONDS
        and bool(status.tasks)
        and all(t.state is JobState.PENDING for t in status.tasks.values())
    )


def handle_unreleased(
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
    yield result(dataset_path, status, message, slurm_job_id=job.job_id, cluster=job.cluster)


def handle_interrupted_submission(
    dataset_path: str, registry: Registry, job: Job, request: FinishRequest
) -> Iterator[dict[str, Any]]:
    age = time.time() - job.submitted_at
    if age < STALE_SUBMISSION_SECONDS:
        return  # a schedule is probably running right now
    if request.close_failed_jobs:
        registry.close_job(job)
        yield result(
            dataset_path,
            "ok",
            f"Closing interrupted submission of {job.cmd!r} (outputs {', '.join(job.outputs)})",
            slurm_job_id=None,
        )
        return
    yield result(
        dataset_path,
        "impossible",
        f"the submission of {job.cmd!r} (outputs {', '.join(job.outputs)}) was interrupted "
        "before its job id was recorded; a job it submitted through sbatch is held and has not "
        "started ('squeue -t PD' lists it; cancel it with scancel). "
        "'datalad finish --close-failed-jobs' releases the outputs",
        slurm_job_id=None,
    )
