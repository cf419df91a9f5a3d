"""commit_jobs' typed outcomes: keyed by registry row, and shown as the same result records."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from datalad_slurm.commit.outcomes import Committed, NotCommitted, Outcome, Reported, Warned
from datalad_slurm.jobs.job import Job
from datalad_slurm.jobs.registry import Registry
from datalad_slurm.slurm.state import JobState, JobStatus, TaskState
from datalad_slurm.usecases import finish as finishing


def _git(top: str, *args: str) -> str:
    return subprocess.run(
        ["git", *args], cwd=top, capture_output=True, text=True, check=True
    ).stdout.strip()


def _completed(job: Job, work_dir: str) -> tuple[Job, JobStatus]:
    assert job.job_id is not None
    task = TaskState(job.job_id, None, JobState.COMPLETED, exit_code=0, work_dir=work_dir)
    return job, JobStatus(job.job_id, {task.label: task}, backend="test")


def _submitted(registry: Registry, job_id: int, cluster: str | None, outputs: list[str]) -> Job:
    job = registry.reserve(
        cmd="sbatch job.sh", pwd=".", inputs=[], extra_inputs=[], outputs=outputs
    )
    return registry.mark_submitted(job, job_id, cluster)


def test_commit_jobs_says_what_became_of_each_row(tmp_path: Path) -> None:
    """Committed with the sha git has, not committed with why, a warning for the missing
    output: each keyed by the job's row, and each shown as the record finish always showed."""
    from datalad.api import create

    from datalad_slurm.commit.batch import commit_jobs
    from datalad_slurm.jobs.statedir import open_registry

    top = str(tmp_path / "ds")
    ds = create(top, annex=False, result_renderer="disabled")
    with open_registry(top) as registry:
        refused = _submitted(registry, 11, None, ["a"])
        done = _submitted(registry, 12, None, ["b", "nothing"])
        os.makedirs(os.path.join(top, "a"))
        with open(os.fsencode(top) + b"/a/caf\xe9.txt", "wb") as stream:
            stream.write(b"x\n")
        os.makedirs(os.path.join(top, "b"))
        Path(top, "b", "out.txt").write_text("y\n")
        batch = [_completed(registry.get(job.id), top) for job in (refused, done)]
        outcomes = list(commit_jobs(ds, registry, batch))

    head = _git(top, "rev-parse", "HEAD")
    [committed] = [o for o in outcomes if isinstance(o, Committed)]
    [not_committed] = [o for o in outcomes if isinstance(o, NotCommitted)]
    [warned] = [o for o in outcomes if isinstance(o, Warned)]
    assert (committed.row, committed.sha) == (done.id, head)
    assert not_committed.row == refused.id and "not valid UTF-8" in not_committed.why
    assert warned.row == done.id
    assert all(o.row is None for o in outcomes if isinstance(o, Reported))
    assert list(committed.result().items()) == [
        ("action", "finish"),
        ("status", "ok"),
        ("path", top),
        ("type", "dataset"),
        ("slurm_job_id", 12),
        ("message", f"Slurm job 12: Completed, committed as {head[:8]}"),
        ("commit", head),
        ("state", "COMPLETED"),
        ("backend", "test"),
        ("data_parser", None),
    ]
    assert list(warned.result().items()) == [
        ("action", "finish"),
        ("status", "impossible"),
        ("path", os.path.join(top, "nothing")),
        ("type", "file"),
        ("refds", top),
        ("slurm_job_id", 12),
        ("missing_output", "nothing"),
        (
            "message",
            "warning: Slurm job 12 declared the output 'nothing', which does not exist; the "
            "job was committed without it (as 'datalad run' does)",
        ),
    ]
    assert not_committed.result()["message"] == (
        f"job 11 could not be committed: {not_committed.why}; it stays open, fix the problem "
        "and run 'datalad finish' again"
    )
    assert not_committed.result()["status"] == "error"


class _Dataset:
    def __init__(self, path: Path) -> None:
        self.path = path


def test_finish_tells_two_clusters_jobs_of_one_id_apart_by_row(
    repo: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two jobs with id 7 (clusters a and b): each outcome reaches its own job by its row,
    where a result's ``slurm_job_id`` would name both."""
    registry = Registry.for_git_dir(str(repo / ".git"))
    first = _submitted(registry, 7, "a", ["out-a"])
    second = _submitted(registry, 7, "b", ["out-b"])

    def commit_jobs(
        ds: Any, reg: Registry, jobs: Any, message: Any, branches: Any, usage: Any
    ) -> Iterator[Outcome]:
        yield NotCommitted(str(repo), first, "first failed")
        yield Committed(str(repo), second, JobStatus(7, backend="test"), "1" * 40)

    monkeypatch.setattr(finishing, "commit_jobs", commit_jobs)
    status = JobStatus(7)
    results = list(
        finishing._commit_batch(
            _Dataset(repo), registry, [(first, status), (second, status)], None, None, None
        )
    )
    assert [(r["status"], r["cluster"]) for r in results] == [("error", "a"), ("ok", "b")]
