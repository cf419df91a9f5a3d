from __future__ import annotations

import pytest

from datalad_slurm.slurm.state import JobState, JobStatus, TaskState, Verdict


@pytest.mark.parametrize(
    ("text", "state"),
    [
        ("COMPLETED", JobState.COMPLETED),
        ("completed", JobState.COMPLETED),
        ("CANCELLED by 0", JobState.CANCELLED),
        ("OUT_OF_ME+", JobState.OUT_OF_MEMORY),
        ("TIMEOUT", JobState.TIMEOUT),
        ("NODE_FAIL", JobState.NODE_FAIL),
        ("REQUEUED", JobState.REQUEUED),
        (["PENDING"], JobState.PENDING),
        # lists (data_parser v0.0.40+) read as Slurm's job_state_string() shows them
        (["COMPLETED", "REQUEUED"], JobState.REQUEUED),
        (["COMPLETED", "COMPLETING"], JobState.COMPLETING),
        (["CANCELLED", "COMPLETING"], JobState.COMPLETING),
        (["RUNNING", "CONFIGURING"], JobState.CONFIGURING),
        (["PENDING", "EXPEDITING"], JobState.EXPEDITING),
        (["RUNNING", "SIGNALING"], JobState.SIGNALING),
        (["COMPLETED", "STAGE_OUT"], JobState.STAGE_OUT),
        (["RUNNING", "RESIZING"], JobState.RESIZING),
        (["PENDING", "REQUEUE_HOLD"], JobState.REQUEUE_HOLD),
        (["COMPLETING", "COMPLETED"], JobState.COMPLETING),  # order does not matter
        (["COMPLETED", "LAUNCH_FAILED"], JobState.COMPLETED),  # a flag Slurm never shows
        (["RUNNING", "POWER_UP_NODE"], JobState.RUNNING),
        (["TIMEOUT", "UPDATE_DB"], JobState.TIMEOUT),
        ([], JobState.UNKNOWN),
        ("", JobState.UNKNOWN),
        (None, JobState.UNKNOWN),
        ("SOMETHING_NEW", JobState.UNKNOWN),
    ],
)
def test_parse(text: object, state: JobState) -> None:
    assert JobState.parse(text) is state  # type: ignore[arg-type]


ACTIVE = [
    "PENDING",
    "RUNNING",
    "REQUEUED",
    "SUSPENDED",
    "COMPLETING",
    "CONFIGURING",
    "EXPEDITING",
    "STAGE_OUT",
    "SIGNALING",
    "RESIZING",
]
FAILED = [
    "FAILED",
    "CANCELLED",
    "TIMEOUT",
    "OUT_OF_MEMORY",
    "NODE_FAIL",
    "BOOT_FAIL",
    "DEADLINE",
    "PREEMPTED",
]


@pytest.mark.parametrize("name", ACTIVE)
def test_active_states_are_never_failures(name: str) -> None:
    state = JobState(name)
    assert state.is_active and not state.is_terminal and not state.is_success
    assert _status(("COMPLETED", 0), (name, 1)).verdict is Verdict.ACTIVE


@pytest.mark.parametrize("name", FAILED)
def test_failed_states_never_pass_as_completed(name: str) -> None:
    state = JobState(name)
    assert state.is_terminal and not state.is_success
    assert _status(("COMPLETED", 0), (name, 1)).verdict is Verdict.FAILED
    assert _status((name, None)).verdict is Verdict.FAILED


def _status(*tasks: tuple[str, int | None]) -> JobStatus:
    status = JobStatus(5)
    for name, task_id in tasks:
        task = TaskState(5, task_id, JobState(name))
        status.tasks[task.label] = task
    return status


def test_verdicts_and_messages() -> None:
    assert JobStatus(5).verdict is Verdict.UNKNOWN
    assert _status(("UNKNOWN", None)).verdict is Verdict.UNKNOWN
    done = _status(("COMPLETED", 0), ("COMPLETED", 1), ("COMPLETED", 2))
    assert done.verdict is Verdict.COMPLETED
    assert done.summary_state == "COMPLETED"
    mixed = _status(("COMPLETED", 0), ("COMPLETED", 1), ("TIMEOUT", 2))
    assert mixed.statuses() == "5_0: COMPLETED, 5_1: COMPLETED, 5_2: TIMEOUT"
    assert mixed.summary_state == "TIMEOUT"
    assert _status(("FAILED", None)).statuses() == "5: FAILED"
    running = _status(("COMPLETED", 0), ("RUNNING", 1), ("PENDING", 2))
    assert running.summary_state == "RUNNING"
    assert dict(running.task_counts()) == {"COMPLETED": 1, "RUNNING": 1, "PENDING": 1}
