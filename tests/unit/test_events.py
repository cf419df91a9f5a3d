"""Combining spool events with backend answers (no Slurm)."""

from __future__ import annotations

from collections.abc import Sequence

from datalad_slurm.jobs.events import JobKey, match_events, needs_backend, resolve
from datalad_slurm.slurm.backend import TaskKey
from datalad_slurm.slurm.state import JobState, JobStatus, TaskState, Verdict
from datalad_slurm.spool import Event


class RecordingBackend:
    name = "recording"

    def __init__(
        self,
        answers: dict[int, JobStatus],
        accounted: dict[TaskKey, TaskState] | None = None,
    ) -> None:
        self.answers = answers
        #: what accounting says of the tasks' usage
        self.accounted = accounted or {}
        self.calls: list[list[int]] = []
        self.usage_calls: list[list[int]] = []

    def query(self, job_ids: Sequence[int]) -> dict[int, JobStatus]:
        self.calls.append(list(job_ids))
        return {j: self.answers[j] for j in job_ids if j in self.answers}

    def prefetch(self) -> None:
        pass

    def usage(self, job_ids: Sequence[int]) -> RecordedUsage:
        self.usage_calls.append(list(job_ids))
        return RecordedUsage({k: t for k, t in self.accounted.items() if k[0] in job_ids})


class RecordedUsage:
    def __init__(self, found: dict[TaskKey, TaskState]) -> None:
        self.found = found

    def result(self) -> dict[TaskKey, TaskState]:
        return self.found


def _status(job: int, *tasks: tuple[int | None, str]) -> JobStatus:
    status = JobStatus(job, backend="recording")
    for task_id, state in tasks:
        task = TaskState(job, task_id, JobState(state))
        status.tasks[task.label] = task
    return status


def test_events_settle_plain_jobs_without_asking_slurm() -> None:
    keys = [JobKey(1, "c"), JobKey(2, "c")]
    events = [
        Event(job_id=1, state="COMPLETED", cluster="c"),
        Event(job_id=2, state="TIMEOUT", cluster="c"),
    ]
    backend = RecordingBackend({})
    matched, unmatched = match_events(keys, events)
    result = resolve(keys, matched, backend)
    assert backend.calls == []
    assert result[keys[0]].verdict is Verdict.COMPLETED and result[keys[0]].backend == "spool"
    assert result[keys[1]].verdict is Verdict.FAILED
    assert unmatched == []


def test_backend_only_for_what_events_cannot_tell() -> None:
    keys = [JobKey(1), JobKey(5), JobKey(9)]
    events = [
        Event(job_id=1, state="COMPLETED"),
        Event(job_id=6, state="COMPLETED", array_job_id=5, array_task_id=0),
    ]
    backend = RecordingBackend(
        {
            5: _status(5, (0, "COMPLETED"), (1, "RUNNING")),
            9: _status(9, (None, "CANCELLED")),
        }
    )
    matched, _ = match_events(keys, events)
    result = resolve(keys, matched, backend)
    assert backend.calls == [[5, 9]]  # one call, for the array and the job without event
    assert result[JobKey(5)].verdict is Verdict.ACTIVE
    assert result[JobKey(9)].statuses() == "9: CANCELLED"


def test_a_requeued_job_overrides_its_old_event() -> None:
    keys = [JobKey(3)]
    matched, _ = match_events(keys, [Event(job_id=3, state="COMPLETED")])
    backend = RecordingBackend({3: _status(3, (None, "PENDING"))})
    assert needs_backend(_status(3, (None, "REQUEUED")))
    # an event that is terminal settles the job; the backend is not asked...
    assert resolve(keys, matched, backend)[keys[0]].verdict is Verdict.COMPLETED
    # ...unless the event itself says the job goes on
    matched, _ = match_events(keys, [Event(job_id=3, state="REQUEUED")])
    assert resolve(keys, matched, backend)[keys[0]].verdict is Verdict.ACTIVE


def test_events_of_other_clusters_and_jobs_are_left_alone() -> None:
    keys = [JobKey(1, "c")]
    events = [
        Event(job_id=1, state="COMPLETED", cluster="other"),
        Event(job_id=2, state="COMPLETED", cluster="c"),
    ]
    matched, unmatched = match_events(keys, events)
    assert matched == {} and len(unmatched) == 2


def test_an_event_that_could_not_ask_slurm_gives_way_to_the_backend() -> None:
    """The hook writes UNKNOWN when slurmctld did not answer it; finish asks Slurm itself."""
    keys = [JobKey(4, "c"), JobKey(8, "c")]
    events = [
        Event(job_id=4, state="UNKNOWN", cluster="c"),
        Event(job_id=8, state="UNKNOWN", cluster="c"),
    ]
    backend = RecordingBackend({4: _status(4, (None, "COMPLETED"))})  # 8: Slurm forgot it
    matched, _ = match_events(keys, events)
    result = resolve(keys, matched, backend)
    assert backend.calls == [[4, 8]]
    assert result[keys[0]].verdict is Verdict.COMPLETED
    assert result[keys[0]].backend == "spool + recording"
    # nobody knows: it stays unknown, never a success
    assert result[keys[1]].verdict is Verdict.UNKNOWN


def test_a_known_state_never_gives_way_to_an_unknown_one() -> None:
    keys = [JobKey(6)]
    matched, _ = match_events(keys, [Event(job_id=6, state="REQUEUED")])
    backend = RecordingBackend({6: _status(6, (None, "UNKNOWN"))})
    assert resolve(keys, matched, backend)[keys[0]].verdict is Verdict.ACTIVE
    # the requeued run ended since: Slurm's word replaces the event's
    backend = RecordingBackend({6: _status(6, (None, "COMPLETED"))})
    assert resolve(keys, matched, backend)[keys[0]].verdict is Verdict.COMPLETED


def test_a_cancelled_jobs_exit_code_from_pyslurm_is_taken_from_the_backend() -> None:
    """pyslurm reads a cancelled shell's 143 as 15: the backend's word replaces it; an exit
    code that the hook's environment settles (a job that ended by itself) is not asked about."""
    keys = [JobKey(1, "c"), JobKey(2, "c"), JobKey(3, "c"), JobKey(4, "c")]
    events = [
        Event(job_id=1, state="CANCELLED", exit_code=15, signal=0, resolved_by="pyslurm"),
        Event(job_id=2, state="FAILED", exit_code=3, signal=0, resolved_by="pyslurm"),
        Event(job_id=3, state="CANCELLED", exit_code=15, signal=0, resolved_by="scontrol"),
        Event(job_id=4, state="CANCELLED", exit_code=0, signal=15, resolved_by="pyslurm"),
    ]
    truth = JobStatus(1, backend="recording")
    truth.tasks["1"] = TaskState(1, None, JobState.CANCELLED, exit_code=143, signal=0)
    backend = RecordingBackend({1: truth})
    matched, _ = match_events(keys, events)
    result = resolve(keys, matched, backend)
    assert backend.calls == [[1]]
    assert (result[keys[0]].tasks["1"].exit_code, result[keys[0]].tasks["1"].signal) == (143, 0)
    assert not result[keys[0]].tasks["1"].exit_uncertain
    assert result[keys[1]].tasks["2"].exit_code == 3
    assert result[keys[2]].tasks["3"].exit_code == 15  # scontrol tells it as it is
    assert result[keys[3]].tasks["4"].signal == 15
    # without the backend's word (the job gone, no accounting) the event's stands
    result = resolve(keys[:1], matched, RecordingBackend({}))
    assert result[keys[0]].tasks["1"].exit_code == 15
    assert result[keys[0]].verdict is Verdict.FAILED
