"""Datasets on a git-annex adjusted branch: one commit per job, where ``datalad save`` puts it.

``datalad save`` commits on the adjusted branch, then ``git annex sync`` moves the commit to
the corresponding branch (``master``/``main``) and rebuilds the adjusted branch on top of it:
the job's commit is not HEAD afterwards. finish must find it there, close the job, and never
commit it twice (issue 16, defect 4). The full comparison with ``datalad save`` is in
test_differential_save.py.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from datalad.api import Dataset, create
from datalad.support.annexrepo import AnnexRepo

from datalad_slurm.commit.message import registration_token
from datalad_slurm.jobs.job import Job
from datalad_slurm.jobs.statedir import open_registry
from datalad_slurm.slurm.state import JobState, JobStatus, TaskState
from tests.unit.conftest import git
from tests.unit.test_differential_save import (
    JOB_ID,
    corresponding_branch,
    finish_with,
    no_spool,
    register_job,
)

#: git and git-annex only: the host and forky-jsoncli tiers (tests/conftest.py, AGNOSTIC_TIERS);
#: no shared config: finish asks the (recording) backend alone
pytestmark = [pytest.mark.slurm_agnostic, pytest.mark.usefixtures(no_spool.__name__)]


@pytest.fixture
def adjusted(tmp_path: Path) -> Path:
    """A dataset with one annexed file, on ``adjusted/<its branch>(unlocked)``."""
    top = tmp_path / "ds"
    create(str(top), result_renderer="disabled")
    (top / "before.dat").write_text("before the job\n")
    Dataset(str(top)).save(message="before", result_renderer="disabled")
    branch = git(top, "symbolic-ref", "--short", "HEAD").strip()
    git(top, "annex", "adjust", "--unlock")
    assert git(top, "symbolic-ref", "--short", "HEAD").strip() == f"adjusted/{branch}(unlocked)"
    assert corresponding_branch(top) == branch
    return top


def _register(top: Path) -> Job:
    return register_job(top, ["out"])


def _finish(top: Path) -> list[dict[str, Any]]:
    task = TaskState(JOB_ID, None, JobState.COMPLETED, exit_code=0, work_dir=str(top))
    return finish_with(top, JobStatus(JOB_ID, {task.label: task}, backend="test"))


def _main(top: Path) -> str:
    """The corresponding branch (``master`` or ``main``), where save's commits go."""
    branch = corresponding_branch(top)
    assert branch is not None
    return branch


def _records(top: Path, ref: str) -> list[tuple[str, str | None]]:
    """(sha, token) of each commit of ``ref`` that records a job."""
    log = git(top, "log", "-z", "--format=%H %B", ref)
    found = []
    for entry in log.split("\0"):
        sha, _, body = entry.partition(" ")
        if "DATALAD SLURM RUN" in body:
            found.append((sha, registration_token(body)))
    return found


def _state(top: Path, job: Job) -> tuple[str, str | None]:
    with open_registry(str(top)) as registry:
        now = registry.get(job.id)
    return now.state, now.commit_sha


def _assert_committed_once(top: Path, job: Job) -> None:
    """One commit records the job, on master, below the adjusted branch's own commit; the job
    is closed with that commit; git-annex finds nothing wrong."""
    records = _records(top, _main(top))
    assert [token for _, token in records] == [job.token]
    assert _records(top, "HEAD") == records
    assert git(top, "rev-parse", "HEAD^").strip() == records[0][0]
    assert git(top, "log", "-1", "--format=%s", "HEAD").strip() == "git-annex adjusted branch"
    assert _state(top, job) == ("finished", records[0][0])
    fsck = git(top, "annex", "fsck", "--json")
    checked = [json.loads(line) for line in fsck.splitlines()]
    assert checked and all(item["success"] for item in checked), checked


def test_a_job_on_an_adjusted_branch_is_committed_once_and_closed(adjusted: Path) -> None:
    job = _register(adjusted)
    (adjusted / "out").mkdir()
    (adjusted / "out" / "result.dat").write_text("result\n")
    results = [r for r in _finish(adjusted) if r.get("action") == "finish"]
    assert [r["status"] for r in results] == ["ok"], results
    _assert_committed_once(adjusted, job)
    assert results[0]["commit"] == _records(adjusted, _main(adjusted))[0][0]
    assert git(adjusted, "ls-tree", _main(adjusted), "out/result.dat").startswith("120000")
    head = git(adjusted, "rev-parse", "HEAD").strip()
    assert _finish(adjusted) == []
    assert git(adjusted, "rev-parse", "HEAD").strip() == head


def test_a_finish_killed_before_the_adjusted_branch_was_synced_is_recovered(
    adjusted: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """save committed on the adjusted branch, and finish died before the sync: the next finish
    moves the commit to master as save would have, and closes the job with it."""
    job = _register(adjusted)
    (adjusted / "out").mkdir()
    (adjusted / "out" / "result.dat").write_text("result\n")

    def killed(*_args: object, **_kwargs: object) -> None:
        raise KeyboardInterrupt  # as SIGKILL would, right after save's commit

    monkeypatch.setattr(AnnexRepo, "localsync", killed)
    with pytest.raises(KeyboardInterrupt):
        _finish(adjusted)
    monkeypatch.undo()
    assert _state(adjusted, job)[0] == "committing"
    assert [token for _, token in _records(adjusted, "HEAD")] == [job.token]
    assert _records(adjusted, _main(adjusted)) == []

    assert _finish(adjusted) == []
    _assert_committed_once(adjusted, job)
    assert git(adjusted, "status", "--porcelain") == ""


def test_a_job_that_changed_nothing_is_recorded_on_master(
    adjusted: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """save finds nothing to commit: finish's own empty commit goes to master as save's would."""
    job = _register(adjusted)

    def nothing_to_save(*_args: object, **_kwargs: object) -> Iterator[dict[str, Any]]:
        yield from ()

    monkeypatch.setattr(Dataset, "save", nothing_to_save)
    results = [r for r in _finish(adjusted) if r.get("action") == "finish"]
    monkeypatch.undo()
    # the job wrote nothing: its record is committed, and its declared output is reported missing
    assert [r["status"] for r in results] == ["ok", "impossible"], results
    assert results[1]["path"] == str(adjusted / "out") and "does not exist" in results[1]["message"]
    _assert_committed_once(adjusted, job)
    sha = _records(adjusted, _main(adjusted))[0][0]
    assert git(adjusted, "diff", "--name-only", f"{sha}^", sha) == ""
