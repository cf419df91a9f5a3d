"""The reliability gaps of issue 16, each held by a test (no Slurm)."""

from __future__ import annotations

import os
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from datalad_slurm.commit.outcomes import NotCommitted
from datalad_slurm.jobs.events import JobKey, match_events, resolve
from datalad_slurm.jobs.job import Job
from datalad_slurm.jobs.registry import Registry
from datalad_slurm.slurm.state import JobState, JobStatus, TaskState, Verdict
from datalad_slurm.spool import Event, UserSpool, is_registered, write_event
from datalad_slurm.usecases import finish as finishing
from datalad_slurm.usecases import finish_gather, finish_jobs
from datalad_slurm.usecases.finish import finish
from datalad_slurm.usecases.finish_request import FinishRequest

from .conftest import git
from .test_events import RecordingBackend

UID = os.getuid()


class _Config:
    def get(self, key: str, default: Any = None) -> Any:
        return default


class FakeDataset:
    """What finish needs of a datalad Dataset, for a plain git repository."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.config = _Config()


@pytest.fixture
def configured(spool: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """DATALAD_SLURM_CONFIG naming ``spool``, with this account as the hook's."""
    import pwd

    config = tmp_path / "datalad-slurm.conf"
    config.write_text(f"spool = {spool}\nhook_user = {pwd.getpwuid(UID).pw_name}\nlog =\n")
    monkeypatch.setenv("DATALAD_SLURM_CONFIG", str(config))
    return spool


def _registry(repo: Path) -> Registry:
    return Registry.for_git_dir(str(repo / ".git"))


def _open_job(registry: Registry, job_id: int, cluster: str | None, output: str) -> Job:
    job = registry.reserve(
        cmd=f"sbatch {output}", pwd=".", inputs=[], extra_inputs=[], outputs=[output]
    )
    return registry.mark_submitted(job, job_id, cluster)


def _age_submission(registry: Registry, job: Job, seconds: float) -> None:
    conn = sqlite3.connect(registry.path)
    conn.execute("UPDATE jobs SET submitted_at = ? WHERE id = ?", (time.time() - seconds, job.id))
    conn.commit()
    conn.close()


# -- 1. arrays without accounting -------------------------------------------------------


def test_an_array_that_slurm_forgot_is_not_settled_by_some_tasks_events() -> None:
    """Tasks cancelled while pending run no hook: events of the others prove nothing."""
    keys = [JobKey(5, "c")]
    events = [
        Event(job_id=6, state="COMPLETED", cluster="c", array_job_id=5, array_task_id=0),
        Event(job_id=7, state="COMPLETED", cluster="c", array_job_id=5, array_task_id=1),
    ]
    matched, _ = match_events(keys, events)
    for answers in ({}, {5: JobStatus(5, backend="recording")}):
        status = resolve(keys, matched, RecordingBackend(answers))[keys[0]]
        assert status.verdict is not Verdict.COMPLETED, status.statuses()
        assert "UNKNOWN" in status.statuses()
    # with Slurm's word on every task the events do settle it
    answer = JobStatus(5, backend="recording")
    for task in (0, 1):
        answer.tasks[f"5_{task}"] = TaskState(5, task, JobState.COMPLETED)
    status = resolve(keys, matched, RecordingBackend({5: answer}))[keys[0]]
    assert status.verdict is Verdict.COMPLETED


def test_a_plain_job_is_still_settled_by_its_event_alone() -> None:
    keys = [JobKey(9, "c")]
    matched, _ = match_events(keys, [Event(job_id=9, state="COMPLETED", cluster="c")])
    assert resolve(keys, matched, RecordingBackend({}))[keys[0]].verdict is Verdict.COMPLETED


# -- 3. two clusters ---------------------------------------------------------------------


def test_the_backend_answer_for_one_cluster_is_not_taken_for_the_others() -> None:
    keys = [JobKey(7, "a"), JobKey(7, "b")]
    answer = JobStatus(7, backend="recording")
    answer.tasks["7"] = TaskState(7, None, JobState.COMPLETED, cluster="a")
    result = resolve(keys, {}, RecordingBackend({7: answer}))
    assert result[JobKey(7, "a")].verdict is Verdict.COMPLETED
    assert result[JobKey(7, "b")].verdict is Verdict.UNKNOWN


def test_a_commit_failure_reports_each_cluster_s_job(
    repo: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The same job id on two clusters: two jobs, both reopened and reported."""
    with _registry(repo) as registry:
        first = _open_job(registry, 7, "a", "out-a")
        second = _open_job(registry, 7, "b", "out-b")
        registry.mark_committing_many([first, second])

        def commit_jobs(
            ds: Any, reg: Registry, jobs: Any, message: Any, branches: Any = None, usage: Any = None
        ) -> Iterator[NotCommitted]:
            # cluster a's job gets its outcome (keyed by its row), then trouble
            for job, _ in jobs:
                if job.cluster == "a":
                    yield NotCommitted(str(repo), job, "first failed")
            raise RuntimeError("boom")

        monkeypatch.setattr(finishing, "commit_jobs", commit_jobs)
        status = JobStatus(7)
        results = list(
            finishing._commit(
                FakeDataset(repo), registry, [(first, status), (second, status)], None
            )
        )
        assert [r.get("cluster") for r in results] == ["a", "b"]
        assert "boom" in results[1]["message"]
        assert registry.get(second.id).state == "open"


# -- 4. forged events ----------------------------------------------------------------------


def test_an_event_for_another_uid_is_rejected(spool: Path) -> None:
    user = UserSpool(str(spool))
    user.register("c", 1)
    write_event(str(spool), UID, Event(job_id=1, state="COMPLETED", uid=UID), {UID})
    write_event(str(spool), UID, Event(job_id=1, state="COMPLETED", uid=UID + 1), {UID})
    events, rejected = user.read_events({UID})
    assert [e.uid for e in events] == [UID]
    [forged] = rejected
    assert f"uid {UID + 1}" in forged.reason


# -- 2. a killed schedule ------------------------------------------------------------------


def test_finish_recovers_from_a_schedule_killed_before_registering(
    repo: Path, configured: Path
) -> None:
    spool = UserSpool(str(configured))
    spool.begin_submission("killed")
    assert is_registered(str(configured), UID, "c", 999)  # every job of the user is reported
    with _registry(repo) as registry:
        job = registry.reserve(cmd="sbatch x", pwd=".", inputs=[], extra_inputs=[], outputs=["x"])
    marker = configured / str(UID) / "inflight" / "killed"
    ds = FakeDataset(repo)
    # a schedule that may still be running: neither reported nor cleaned
    assert list(finish(ds, FinishRequest(), RecordingBackend({}))) == []
    assert marker.exists()
    # ten minutes later: the marker goes, the row is reported, then released on request
    old = time.time() - finish_jobs.STALE_SUBMISSION_SECONDS - 60
    os.utime(marker, (old, old))
    with _registry(repo) as registry:
        _age_submission(registry, job, finish_jobs.STALE_SUBMISSION_SECONDS + 60)
    [report] = list(finish(ds, FinishRequest(), RecordingBackend({})))
    assert report["status"] == "impossible" and "interrupted" in report["message"]
    assert not marker.exists()
    assert not is_registered(str(configured), UID, "c", 999)
    with _registry(repo) as registry:
        assert registry.get(job.id).state == "submitting"
    [closed] = list(finish(ds, FinishRequest(close_failed_jobs=True), RecordingBackend({})))
    assert closed["status"] == "ok" and "Closing interrupted submission" in closed["message"]
    with _registry(repo) as registry:
        assert registry.get(job.id).state == "closed" and registry.reservations(job) == []


# -- 6. untested paths ---------------------------------------------------------------------


def test_lock_timeout_leaves_the_work_to_the_holder(repo: Path) -> None:
    from datalad_slurm.jobs.statedir import git_lock

    holder = git_lock(str(repo), timeout=-1)
    holder.acquire()
    try:
        started = time.monotonic()
        [result] = list(
            finish(FakeDataset(repo), FinishRequest(lock_timeout=0.3), RecordingBackend({}))
        )
        waited = time.monotonic() - started
    finally:
        holder.release()
    assert result["status"] == "notneeded" and result["locked"] is True
    assert 0.25 <= waited < 5
    assert (
        list(finish(FakeDataset(repo), FinishRequest(lock_timeout=0.3), RecordingBackend({}))) == []
    )


def test_events_nobody_claims_are_tidied_after_30_days(repo: Path, configured: Path) -> None:
    spool = UserSpool(str(configured))
    spool.register("c", 3)
    young = write_event(str(configured), UID, Event(job_id=3, state="COMPLETED", uid=UID), {UID})
    old = write_event(str(configured), UID, Event(job_id=4, state="COMPLETED", uid=UID), {UID})
    # age the second event by rewriting its written_at (as the hook's account: this one)
    path = configured / str(UID) / "events" / old
    text = path.read_text()
    stamp = time.time() - finish_gather.STALE_EVENT_SECONDS - 3600
    path.write_text(text.replace('"written_at": ', f'"written_at": {stamp}, "x_": '))
    assert [e.name for e in spool.read_events({UID})[0]] == sorted([young, old])
    assert list(finish(FakeDataset(repo), FinishRequest(), RecordingBackend({}))) == []
    assert [e.name for e in spool.read_events({UID})[0]] == [young]
    git(repo, "status")


def test_schedule_s_cleaning_leaves_a_running_schedule_s_marker(spool: Path) -> None:
    """``schedule`` calls ``clean_inflight()`` with its default age: only dead markers go."""
    user = UserSpool(str(spool))
    user.begin_submission("running")
    user.begin_submission("killed")
    killed = spool / str(UID) / "inflight" / "killed"
    old = time.time() - finish_jobs.STALE_SUBMISSION_SECONDS - 60
    os.utime(killed, (old, old))
    user.clean_inflight()
    assert sorted(os.listdir(spool / str(UID) / "inflight")) == ["running"]


def test_open_jobs_of_two_clusters_are_listed_apart(repo: Path, configured: Path) -> None:
    from datalad_slurm.usecases.finish_listing import list_open_jobs

    with _registry(repo) as registry:
        _open_job(registry, 7, "a", "out-a")
        _open_job(registry, 7, "b", "out-b")
    UserSpool(str(configured)).register("a", 7)
    write_event(
        str(configured), UID, Event(job_id=7, state="COMPLETED", cluster="a", uid=UID), {UID}
    )
    results = list(list_open_jobs(FakeDataset(repo), backend=RecordingBackend({})))
    assert [(r["cluster"], r["slurm_job_status"]) for r in results] == [
        ("a", "COMPLETED"),
        ("b", "UNKNOWN"),
    ]


def test_a_requeue_seen_by_the_hook_ends_with_the_newest_event() -> None:
    """The hook writes REQUEUED at the requeue and COMPLETED at the end: the newest settles."""
    keys = [JobKey(11, "c")]
    requeued = Event(job_id=11, state="REQUEUED", cluster="c", written_at=100.0)
    completed = Event(job_id=11, state="COMPLETED", cluster="c", written_at=200.0)
    backend = RecordingBackend({})
    matched, _ = match_events(keys, [completed, requeued])
    assert resolve(keys, matched, backend)[keys[0]].verdict is Verdict.COMPLETED
    assert backend.calls == []
    # only the requeue so far: Slurm is asked, and the job is not taken for failed
    matched, _ = match_events(keys, [requeued])
    pending = JobStatus(11, backend="recording")
    pending.tasks["11"] = TaskState(11, None, JobState.PENDING)
    status = resolve(keys, matched, RecordingBackend({11: pending}))[keys[0]]
    assert status.verdict is Verdict.ACTIVE


def test_events_of_a_job_finished_by_a_killed_drain_are_removed_later(
    repo: Path, configured: Path
) -> None:
    """finish was killed after the commit, before it removed the job's events: the next finish
    removes them and commits nothing again."""
    spool = UserSpool(str(configured))
    spool.register("c", 12)
    event = Event(job_id=12, state="COMPLETED", cluster="c", uid=UID)
    write_event(str(configured), UID, event, {UID})
    with _registry(repo) as registry:
        job = _open_job(registry, 12, "c", "out")
        registry.mark_committing_many([job])
        registry.mark_finished(job, "0" * 40)
    assert list(finish(FakeDataset(repo), FinishRequest(), RecordingBackend({}))) == []
    assert spool.read_events({UID}) == ([], [])
