"""Parsing real ``squeue --json`` / ``sacct --json`` output of Slurm 22.05.8 (recorded fixtures)."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest

from datalad_slurm.slurm.backend import BackendError, expand_task_bitmap, merge_tasks
from datalad_slurm.slurm.jsoncall import SlurmCall
from datalad_slurm.slurm.jsonrecords import sacct_tasks, squeue_tasks
from datalad_slurm.slurm.state import JobState, JobStatus

SAMPLES = Path(__file__).parent / "fixtures"


def _load(name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((SAMPLES / name).read_text())
    return data


def _statuses(tasks: Any) -> dict[int, JobStatus]:
    statuses: dict[int, JobStatus] = {}
    merge_tasks(statuses, tasks, "test")
    return statuses


def _states(status: JobStatus) -> dict[str, str]:
    return {label: task.state.value for label, task in status.tasks.items()}


@pytest.mark.parametrize("name", ["squeue-finished.json", "squeue-noacct-finished.json"])
def test_squeue_finished(name: str) -> None:
    statuses = _statuses(squeue_tasks(_load(name), {2, 3, 4, 5, 6}))
    assert _states(statuses[2]) == {"2": "COMPLETED"}
    assert _states(statuses[3]) == {f"3_{t}": "COMPLETED" for t in range(4)}
    assert _states(statuses[4]) == {"4": "CANCELLED"}
    failed = statuses[5].tasks["5"]
    assert failed.state is JobState.FAILED and failed.exit_code == 3 and failed.signal == 0
    cancelled = statuses[6].tasks["6"]
    assert cancelled.state is JobState.CANCELLED and cancelled.signal == 15
    # log names are expanded, array tasks with %A_%a
    work_dir = statuses[2].tasks["2"].work_dir
    assert work_dir in ("/tmp/sltest/s-acc", "/tmp/sltest/s-noacc")
    assert statuses[2].tasks["2"].stdout == f"{work_dir}/run-2.out"
    assert statuses[3].tasks["3_1"].stdout == f"{work_dir}/arr-3_1.out"
    assert statuses[2].tasks["2"].start_time and statuses[2].tasks["2"].end_time


def test_squeue_active_with_compressed_pending_array() -> None:
    statuses = _statuses(squeue_tasks(_load("squeue-active.json"), {2, 3, 4}))
    assert _states(statuses[2]) == {"2": "RUNNING"}
    assert _states(statuses[3]) == {
        "3_0": "RUNNING",
        "3_1": "PENDING",
        "3_2": "PENDING",
        "3_3": "PENDING",
    }
    assert statuses[2].tasks["2"].exit_code is None  # no exit code while active
    assert _states(statuses[4]) == {"4": "PENDING"}
    # logs are named for tasks that ended (they are committed), not for active ones
    assert all(t.stdout is None for s in statuses.values() for t in s.tasks.values())


def test_a_slurm_command_that_hangs_is_killed_at_the_timeout() -> None:
    started = time.monotonic()
    call = SlurmCall(["sleep", "30"])
    with pytest.raises(BackendError, match="did not answer within 1 s"):
        call.result(timeout=1.0)
    assert time.monotonic() - started < 10
    assert call.proc is not None and call.proc.returncode is not None  # ended, not left behind


def test_a_background_call_keeps_all_its_output() -> None:
    # more than a pipe holds, written before anyone reads: files, not pipes
    call = SlurmCall(
        ["python3", "-c", "print('x' * 1_000_000); import sys; print('e', file=sys.stderr)"]
    )
    time.sleep(0.5)
    code, out, err = call.result(timeout=30)
    assert (code, len(out), err) == (0, 1_000_001, "e\n")


def test_a_missing_command_fails_when_its_answer_is_wanted() -> None:
    call = SlurmCall(["squeue-that-does-not-exist", "--json"])  # no exception yet
    with pytest.raises(BackendError, match="not installed or not on PATH"):
        call.result(timeout=5)


def test_squeue_leaves_other_jobs_out() -> None:
    assert _statuses(squeue_tasks(_load("squeue-finished.json"), {999})) == {}


def test_sacct_finished() -> None:
    statuses = _statuses(sacct_tasks(_load("sacct-finished.json"), {2, 3, 4, 5, 6}))
    assert _states(statuses[2]) == {"2": "COMPLETED"}
    assert _states(statuses[3]) == {f"3_{t}": "COMPLETED" for t in range(4)}
    assert _states(statuses[4]) == {"4": "CANCELLED"}
    assert _states(statuses[5]) == {"5": "FAILED"}
    assert statuses[6].tasks["6"].signal == 15  # from the batch step
    assert statuses[2].tasks["2"].work_dir == "/tmp/sltest/s-acc"


def test_sacct_pending_array_bitmap() -> None:
    statuses = _statuses(sacct_tasks(_load("sacct-pending-array.json"), {21}))
    assert _states(statuses[21]) == {"21_0": "PENDING", "21_1": "PENDING", "21_2": "PENDING"}


def test_sacct_nothing_found() -> None:
    assert _statuses(sacct_tasks(_load("sacct-nothing-found.json"), {999999})) == {}


@pytest.mark.parametrize(("text", "ids"), [("0x7", [0, 1, 2]), ("0x14", [2, 4]), ("1-2", [1, 2])])
def test_expand_task_bitmap(text: str, ids: list[int]) -> None:
    assert expand_task_bitmap(text) == ids


def test_lagging_accounting_never_overrides_squeue() -> None:
    from datalad_slurm.slurm.backend import trusted_accounting
    from datalad_slurm.slurm.state import TaskState

    known = _statuses(squeue_tasks(_load("squeue-finished.json"), {3}))
    stale = [
        TaskState(3, None, JobState.RUNNING),  # young record without its array fields
        TaskState(3, 1, JobState.RUNNING),  # old state of a task squeue has
        TaskState(3, 7, JobState.COMPLETED),  # a task squeue no longer holds
        TaskState(8, None, JobState.COMPLETED),  # a job squeue does not know at all
    ]
    merge_tasks(known, trusted_accounting(known, stale), "sacct")
    assert _states(known[3]) == {**{f"3_{t}": "COMPLETED" for t in range(4)}, "3_7": "COMPLETED"}
    assert _states(known[8]) == {"8": "COMPLETED"}
