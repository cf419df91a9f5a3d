"""Mapping pyslurm's job records to task states, from records of real jobs (no pyslurm needed).

``fixtures/pyslurm-live.json`` (``pyslurm.Jobs.load()``) and ``pyslurm-db.json``
(``pyslurm.db.Jobs.load(JobFilter(ids=...))``) were recorded by
``tests/tools/record_pyslurm_fixtures.py`` from Slurm 26.05.5 with pyslurm 25.11.2 in
the pyslurm tier's chroot: one job per scenario, each with every record of that job.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from datalad_slurm.slurm.backend import merge_tasks, trusted_accounting
from datalad_slurm.slurm.pyslurmapi import (
    RECORD_FIELDS,
    accounting_tasks,
    live_tasks,
    slurm_config_path,
)
from datalad_slurm.slurm.state import JobState, JobStatus, Verdict

FIXTURES = Path(__file__).parent / "fixtures"


def _scenarios(name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((FIXTURES / name).read_text())
    return data


LIVE = _scenarios("pyslurm-live.json")
DB = _scenarios("pyslurm-db.json")


def _status(source: dict[str, Any], scenario: str, db: bool = False) -> JobStatus:
    job_id = source[scenario]["job_id"]
    records = source[scenario]["records"]
    tasks = accounting_tasks(records, {job_id}) if db else list(live_tasks(records, {job_id}))
    statuses: dict[int, JobStatus] = {}
    merge_tasks(statuses, tasks, "test")
    return statuses[job_id]


def _states(status: JobStatus) -> dict[str, str]:
    return {label: task.state.value for label, task in status.tasks.items()}


def test_fixtures_hold_every_field_the_backend_reads() -> None:
    for source in (LIVE, DB):
        for scenario in source.values():
            for record in scenario["records"]:
                assert set(record) == set(RECORD_FIELDS)


@pytest.mark.parametrize("db", [False, True], ids=["slurmctld", "accounting"])
@pytest.mark.parametrize(
    ("scenario", "state", "exit_code", "signal", "verdict"),
    [
        ("completed", "COMPLETED", 0, 0, Verdict.COMPLETED),
        ("failed_exit3", "FAILED", 3, 0, Verdict.FAILED),
        ("killed_signal9", "FAILED", 0, 9, Verdict.FAILED),
        ("cancelled_running", "CANCELLED", 0, None, Verdict.FAILED),
        ("cancelled_pending", "CANCELLED", 0, 0, Verdict.FAILED),
        ("timeout", "TIMEOUT", 0, None, Verdict.FAILED),
        ("running", "RUNNING", None, None, Verdict.ACTIVE),
        ("requeued", "PENDING", None, None, Verdict.ACTIVE),
    ],
)
def test_single_jobs(
    scenario: str, state: str, exit_code: int | None, signal: int | None, verdict: Verdict, db: bool
) -> None:
    status = _status(DB if db else LIVE, scenario, db)
    job_id = LIVE[scenario]["job_id"]
    task = status.tasks[str(job_id)]
    assert list(status.tasks) == [str(job_id)]
    assert task.state is JobState[state] and status.verdict is verdict
    assert task.exit_code == exit_code
    if signal is not None:
        assert task.signal == signal
    if task.state.is_terminal:
        assert task.end_time and task.end_time >= (task.start_time or 0)
    else:  # an active job's 0 exit code and time-limit end time are not facts yet
        assert task.exit_code is None and task.signal is None and task.end_time is None


def test_cancel_signal_from_slurmctld() -> None:
    # slurmctld knows the signal that ended a cancelled or timed-out job; accounting says 0
    assert _status(LIVE, "cancelled_running").tasks["5"].signal == 15
    assert _status(LIVE, "timeout").tasks["10"].signal == 15
    assert _status(LIVE, "timeout").tasks["10"].reason == "TimeLimit"


@pytest.mark.parametrize("db", [False, True], ids=["slurmctld", "accounting"])
def test_array_with_a_failed_task_and_task_0_read_as_none(db: bool) -> None:
    status = _status(DB if db else LIVE, "array_task2_fails", db)
    assert _states(status) == {
        "8_0": "COMPLETED",
        "8_1": "COMPLETED",
        "8_2": "FAILED",
        "8_3": "COMPLETED",
    }
    assert status.verdict is Verdict.FAILED
    assert status.tasks["8_2"].exit_code == 1
    # task 0 (array_task_id None in pyslurm) keeps its own log file
    assert status.tasks["8_0"].stdout == "/tmp/rec/arr-8_0.out"
    assert status.tasks["8_3"].stdout == "/tmp/rec/arr-8_3.out"


@pytest.mark.parametrize("db", [False, True], ids=["slurmctld", "accounting"])
def test_held_array_expands_its_waiting_tasks(db: bool) -> None:
    # slurmctld lists waiting tasks as "0-2", accounting as the bitmap "0x7"
    status = _status(DB if db else LIVE, "array_held", db)
    assert _states(status) == {"9_0": "PENDING", "9_1": "PENDING", "9_2": "PENDING"}
    assert status.verdict is Verdict.ACTIVE
    # pyslurm expands their log name with task id NO_VAL: not a path to report
    assert all(task.stdout is None for task in status.tasks.values())


def test_plain_job_logs_and_times() -> None:
    task = _status(LIVE, "completed").tasks["2"]
    assert task.stdout == "/tmp/rec/done-2.out" and task.work_dir == "/tmp/rec"
    assert task.cluster == "local7917" and task.submit_time and task.start_time
    assert task.reason is None  # pyslurm's "None" reason is no reason


def test_accounting_adds_only_what_slurmctld_lacks() -> None:
    live = {8: _status(LIVE, "array_task2_fails")}
    stale_running = [t for t in accounting_tasks(DB["running"]["records"], {11})]
    merge_tasks(live, trusted_accounting(live, stale_running), "db")
    assert 11 in live  # a job slurmctld did not answer for comes from accounting
    assert _states(live[8]) == _states(_status(LIVE, "array_task2_fails"))


def test_jobs_not_wanted_are_ignored() -> None:
    records = [r for s in LIVE.values() for r in s["records"]]
    assert {t.job_id for t in live_tasks(records, {2, 8})} == {2, 8}


def test_config_lookup(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    conf = tmp_path / "slurm.conf"
    monkeypatch.setenv("SLURM_CONF", str(conf))
    assert slurm_config_path() is None  # named but missing: pyslurm is not tried
    conf.write_text("ClusterName=x\n")
    assert slurm_config_path() == str(conf)


@pytest.mark.parametrize("state", [s for s in JobState if s is not JobState.UNKNOWN])
def test_every_slurm_state_maps_to_its_verdict(state: JobState) -> None:
    record = {**LIVE["completed"]["records"][0], "state": state.value}
    (task,) = live_tasks([record], {2})
    assert task.state is state
    expected = (
        Verdict.ACTIVE
        if state.is_active
        else Verdict.COMPLETED
        if state is JobState.COMPLETED
        else Verdict.FAILED
    )
    status = JobStatus(2, tasks={task.label: task})
    assert status.verdict is expected
    # an active task's exit code is not known yet; an ended one's is
    assert (task.exit_code is None) is state.is_active
