"""Which files a finished job's commit holds, whatever the backend could tell."""

from __future__ import annotations

from pathlib import Path

from datalad_slurm.commit.jobfiles import find_job_files
from datalad_slurm.jobs.job import Job
from datalad_slurm.slurm.state import JobState, JobStatus, TaskState


def _job(facts: dict[str, str]) -> Job:
    return Job(
        id=1,
        token="t",
        job_id=42,
        cluster="c",
        state="open",
        cmd="sbatch x",
        pwd=".",
        inputs=[],
        extra_inputs=[],
        outputs=["out"],
        chain=[],
        message=None,
        dsid=None,
        submitted_from=None,
        submitted_at=0.0,
        submission_facts=facts,
    )


def _status(tasks: list[TaskState]) -> JobStatus:
    return JobStatus(42, {t.label: t for t in tasks}, backend="jsoncli")


def test_logs_named_at_submission_when_accounting_has_no_names(tmp_path: Path) -> None:
    """22.05's sacct has no log names: the patterns squeue gave at submission stand in."""
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "run-42-myjob-root.log").write_text("log\n")
    (tmp_path / "out" / "err-42.log").write_text("err\n")
    facts = {
        "stdout": f"{tmp_path}/out/run-%j-%x-%u.log",
        "stderr": f"{tmp_path}/out/err-%j.log",
        "name": "myjob",
        "user": "root",
    }
    task = TaskState(42, None, JobState.COMPLETED, work_dir=str(tmp_path))
    files = find_job_files(str(tmp_path), _job(facts), _status([task]))
    assert files.logs == ["out/run-42-myjob-root.log", "out/err-42.log"]
    assert files.env_json == "out/slurm-job-42.env.json"


def test_array_task_logs_from_the_submission_pattern(tmp_path: Path) -> None:
    for task_id in (0, 1):
        (tmp_path / f"a-42_{task_id}.out").write_text("x\n")
    facts = {"stdout": f"{tmp_path}/a-%A_%a.out"}
    tasks = [TaskState(42, t, JobState.COMPLETED, work_dir=str(tmp_path)) for t in (0, 1)]
    files = find_job_files(str(tmp_path), _job(facts), _status(tasks))
    assert files.logs == ["a-42_0.out", "a-42_1.out"]


def test_backend_names_win_and_annexed_logs_count(tmp_path: Path) -> None:
    """A log an interrupted finish already annexed is a symlink; it is still the job's log."""
    (tmp_path / ".git-annex-object").write_text("content\n")
    (tmp_path / "slurm-42.out").symlink_to(tmp_path / ".git-annex-object")
    task = TaskState(
        42,
        None,
        JobState.COMPLETED,
        stdout=str(tmp_path / "slurm-42.out"),
        work_dir=str(tmp_path),
    )
    files = find_job_files(str(tmp_path), _job({"stdout": "/elsewhere/%j"}), _status([task]))
    assert files.logs == ["slurm-42.out"]
    assert files.env_json == "slurm-job-42.env.json"


def test_no_log_anywhere_puts_env_json_in_pwd(tmp_path: Path) -> None:
    task = TaskState(42, None, JobState.COMPLETED, work_dir=str(tmp_path))
    files = find_job_files(str(tmp_path), _job({}), _status([task]))
    assert files.logs == [] and files.env_json == "slurm-job-42.env.json"
