"""A finish killed at each step of ``--branches``, ``--octopus`` and ``--alt-dir``'s way back
(issue 20, item 3): the next finish completes the work, every job committed once, nothing
lost, nothing left staged, the scratch copy never gone before the commit exists.

A kill is a ``KeyboardInterrupt`` raised where the step would run (the drain's own cleanup
does not run past it, as after SIGKILL); the real drain runs on a real dataset, a recording
backend answers for Slurm.  The cluster tests (tests/cluster/test_job_branches.py,
test_alt_dir.py) kill real finishes at swept moments; these pin each window down.
"""

from __future__ import annotations

import json
import os
import signal
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pytest
from datalad.api import Dataset, create

from datalad_slurm.commit import batch as committer
from datalad_slurm.commit import branches as jobbranches
from datalad_slurm.commit import recovery
from datalad_slurm.commit.writer import WORK_REF
from datalad_slurm.jobs import altdir
from datalad_slurm.jobs.job import Job
from datalad_slurm.jobs.registry import Registry
from datalad_slurm.jobs.statedir import open_registry
from datalad_slurm.slurm.state import JobState, JobStatus, TaskState
from datalad_slurm.usecases.finish import finish
from datalad_slurm.usecases.finish_request import FinishRequest
from tests.unit.conftest import git
from tests.unit.test_differential_save import no_spool
from tests.unit.test_events import RecordingBackend

#: git and git-annex only: the host and forky-jsoncli tiers (tests/conftest.py, AGNOSTIC_TIERS)
pytestmark = [pytest.mark.slurm_agnostic, pytest.mark.usefixtures(no_spool.__name__)]

JOBS = (101, 102, 103)


@pytest.fixture
def top(tmp_path: Path) -> Path:
    path = tmp_path / "ds"
    create(str(path), result_renderer="disabled")
    return path


def _register(top: Path, alt_dir: str | None = None) -> list[Job]:
    """The jobs, open, each with its output ``out/<id>`` (written in ``alt_dir`` if given)."""
    head = git(top, "rev-parse", "HEAD").strip()
    jobs = []
    with open_registry(str(top)) as registry:
        for job_id in JOBS:
            job = registry.reserve(
                cmd=f"sbatch job.sh {job_id}",
                pwd=".",
                inputs=[],
                extra_inputs=[],
                outputs=[f"out/{job_id}"],
                submitted_from=head,
                alt_dir=alt_dir,
            )
            jobs.append(registry.mark_submitted(job, job_id, None))
    base = Path(alt_dir) if alt_dir else top
    for job_id in JOBS:
        (base / "out" / str(job_id)).mkdir(parents=True)
        (base / "out" / str(job_id) / "r.dat").write_text(f"result {job_id}\n")
        (base / f"slurm-{job_id}.out").write_text(f"log {job_id}\n")
    return jobs


def _finish(top: Path, branches: str | None = None) -> list[dict[str, Any]]:
    statuses = {}
    for job_id in JOBS:
        task = TaskState(job_id, None, JobState.COMPLETED, exit_code=0, work_dir=None)
        statuses[job_id] = JobStatus(job_id, {task.label: task}, backend="test")
    request = FinishRequest(branches=branches)
    return list(finish(Dataset(str(top)), request, RecordingBackend(statuses)))


def _killed_at(
    monkeypatch: pytest.MonkeyPatch, owner: object, name: str, after: int = 0
) -> Callable[[], int]:
    """``owner.name`` dies (as by SIGKILL) on its call number ``after + 1``; the calls made."""
    real = getattr(owner, name)
    calls = [0]

    def dying(*args: Any, **kwargs: Any) -> Any:
        calls[0] += 1
        if calls[0] > after:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(owner, name, dying)
    return lambda: calls[0]


def _states(top: Path) -> dict[int, tuple[str, str | None]]:
    with open_registry(str(top)) as registry:
        rows = registry.jobs(states=("open", "committing", "finished"))
    return {row.job_id or 0: (row.state, row.commit_sha) for row in rows}


def _records(top: Path, *revisions: str) -> dict[int, str]:
    """Job id -> the commit recording it, over these revisions; a job twice fails."""
    found: dict[int, str] = {}
    log = git(top, "log", "-z", "--format=%H %s", *revisions)
    for entry in log.split("\0"):
        sha, _, subject = entry.partition(" ")
        if subject.startswith("[DATALAD SLURM RUN]"):
            job = int(subject.split()[5].rstrip(":"))
            assert job not in found, f"job {job} committed twice"
            found[job] = sha
    return found


def _branches(top: Path) -> dict[str, str]:
    listing = git(top, "for-each-ref", "--format=%(refname:strip=2) %(objectname)", "refs/heads/")
    return {
        name: sha
        for name, sha in (line.split() for line in listing.splitlines())
        if name.startswith(jobbranches.BRANCH_PREFIX)
    }


def _files(top: Path, sha: str) -> list[str]:
    return sorted(git(top, "diff-tree", "-r", "--no-commit-id", "--name-only", sha).split())


def _assert_branches(top: Path, base: str) -> None:
    """Each job once, on its own branch on ``base``; HEAD and the worktree as before."""
    branches = _branches(top)
    assert sorted(branches) == [f"slurm-job-branch-{j}" for j in JOBS]
    records = _records(top, "--branches=slurm-job-branch-*")
    assert {f"slurm-job-branch-{j}": sha for j, sha in records.items()} == branches
    for job_id, sha in records.items():
        assert git(top, "rev-parse", f"{sha}^").strip() == base
        assert _files(top, sha) == [
            f"out/{job_id}/r.dat",
            f"slurm-{job_id}.out",
            f"slurm-job-{job_id}.env.json",
        ]
    assert _states(top) == {j: ("finished", sha) for j, sha in records.items()}
    assert git(top, "rev-parse", "HEAD").strip() == base
    assert git(top, "status", "--porcelain") == ""
    assert not (top / "out").exists()
    assert git(top, "for-each-ref", "refs/datalad-slurm/") == ""


@pytest.mark.parametrize(
    "where", [(jobbranches, "publish"), (jobbranches, "restore"), (committer, "clear_scratch")]
)
def test_branches_killed_at_each_step(
    top: Path, monkeypatch: pytest.MonkeyPatch, where: tuple[object, str]
) -> None:
    _register(top)
    base = git(top, "rev-parse", "HEAD").strip()
    made = _killed_at(monkeypatch, *where)
    with pytest.raises(KeyboardInterrupt):
        _finish(top, "branches")
    monkeypatch.undo()
    assert made() == 1
    assert {state for state, _ in _states(top).values()} == {"committing"}
    if where[1] == "publish":
        assert _branches(top) == {}  # nothing points at the commits: the next run starts over
    else:
        assert len(_branches(top)) == len(JOBS)
    staged = git(top, "diff", "--cached", "--name-only").split()
    # killed before the jobs' files left the current branch: still staged, settled next time
    assert bool(staged) == (where[1] != "clear_scratch")
    _finish(top, "branches")
    _assert_branches(top, base)


def _dies_holding(
    lock: str, real: Callable[..., Any], at: Callable[..., bool]
) -> Callable[..., Any]:
    """``real(repo, *args)``, but where ``at(*args)`` the process is SIGKILLed as while the git
    command it would run held ``lock`` (under .git): the lock file stays, as git leaves it."""

    def dying(repo: str, *args: Any, **kwargs: Any) -> Any:
        if at(*args):
            path = Path(repo, ".git", lock)
            path.parent.mkdir(parents=True, exist_ok=True)
            os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL))
            os.kill(os.getpid(), signal.SIGKILL)
        return real(repo, *args, **kwargs)

    return dying


def _finish_killed(top: Path, branches: str) -> None:
    """A finish in a process of its own, which a patched step SIGKILLs (nothing of ours runs
    after it, no ``finally`` either)."""
    pid = os.fork()
    if pid == 0:
        try:
            _finish(top, branches)
        finally:
            os._exit(3)
    _, status = os.waitpid(pid, 0)
    assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL, status


@pytest.mark.parametrize(
    "first, where, lock",
    [
        # the branches exist, the jobs' files still staged: the recovery's git restore
        ("restore", (jobbranches, "restore", lambda *args: True), "index.lock"),
        # no branch yet: the recovery's removal of fast-import's work ref
        (
            "publish",
            (
                recovery,
                "run_git",
                lambda *args: args[:2] == ("update-ref", "-d") and WORK_REF in args,
            ),
            "refs/datalad-slurm/finish.lock",
        ),
    ],
    ids=["settle", "work-ref"],
)
def test_a_recovery_killed_midway_is_completed(
    top: Path,
    monkeypatch: pytest.MonkeyPatch,
    first: str,
    where: tuple[object, str, Callable[..., bool]],
    lock: str,
) -> None:
    """A finish --branches killed while it recovers from an earlier kill, in the git command
    that holds a lock: the next finish removes the lock git left and completes the work.  The
    kill is a real SIGKILL (a ``KeyboardInterrupt`` would run the cleanup a kill skips); the
    cluster test that sweeps kills over real finishes (tests/cluster/test_job_branches.py) can
    hit this window, and every later finish then failed on the lock."""
    _register(top)
    base = git(top, "rev-parse", "HEAD").strip()
    _killed_at(monkeypatch, jobbranches, first)
    with pytest.raises(KeyboardInterrupt):
        _finish(top, "branches")
    monkeypatch.undo()
    owner, name, at = where
    monkeypatch.setattr(owner, name, _dies_holding(lock, getattr(owner, name), at))
    _finish_killed(top, "branches")
    monkeypatch.undo()
    assert (top / ".git" / lock).exists()
    assert {state for state, _ in _states(top).values()} == {"committing"}
    results = _finish(top, "branches")
    assert all(r["status"] == "ok" for r in results), [(r["status"], r["message"]) for r in results]
    assert [r["cleared_locks"] for r in results if "cleared_locks" in r] == [[lock]]
    _assert_branches(top, base)
    assert not (top / ".git" / lock).exists()


@pytest.mark.parametrize("where", [(committer, "advance_head"), (committer, "clear_scratch")])
def test_octopus_killed_at_each_step(
    top: Path, monkeypatch: pytest.MonkeyPatch, where: tuple[object, str]
) -> None:
    _register(top)
    base = git(top, "rev-parse", "HEAD").strip()
    _killed_at(monkeypatch, *where)
    with pytest.raises(KeyboardInterrupt):
        _finish(top, "octopus")
    monkeypatch.undo()
    moved = git(top, "rev-parse", "HEAD").strip() != base
    assert moved == (where[1] != "advance_head")
    _finish(top, "octopus")
    parents = git(top, "rev-list", "--parents", "-n1", "HEAD").split()[1:]
    records = _records(top, "HEAD")
    assert parents == [base, *(records[j] for j in JOBS)]
    assert _states(top) == {j: ("finished", sha) for j, sha in records.items()}
    assert _branches(top) == {} and git(top, "status", "--porcelain") == ""
    assert git(top, "for-each-ref", "refs/datalad-slurm/") == ""


def _scratch_files(scratch: Path) -> dict[str, str]:
    return {
        str(p.relative_to(scratch)): p.read_text()
        for p in sorted(scratch.rglob("*"))
        if p.is_file()
    }


@pytest.mark.parametrize(
    "where",
    [
        # in the middle of the copying back: the third file
        (altdir, "_copy_file", 2),
        # the commits are written, HEAD has not moved
        (committer, "advance_head", 0),
        # HEAD moved, the scratch folder is being emptied
        (altdir, "_remove", 1),
        # emptied, the registry not yet told
        (Registry, "mark_finished_many", 0),
    ],
)
def test_alt_dir_killed_at_each_step_never_loses_the_scratch_copy(
    top: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, where: Sequence[Any]
) -> None:
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    _register(top, str(scratch))
    before = _scratch_files(scratch)
    base = git(top, "rev-parse", "HEAD").strip()
    _killed_at(monkeypatch, where[0], where[1], where[2])
    with pytest.raises(KeyboardInterrupt):
        _finish(top)
    monkeypatch.undo()
    if git(top, "rev-parse", "HEAD").strip() == base:
        assert _scratch_files(scratch) == before, "the scratch copy went before the commit"
    _finish(top)
    records = _records(top, "HEAD")
    assert sorted(records) == list(JOBS)
    assert _states(top) == {j: ("finished", sha) for j, sha in records.items()}
    assert _scratch_files(scratch) == {}
    for job_id in JOBS:
        assert (top / "out" / str(job_id) / "r.dat").read_text() == f"result {job_id}\n"
        record = json.loads(
            git(top, "log", "-1", "--format=%B", records[job_id]).split("===\n")[1].split("^^^")[0]
        )
        assert record["slurm_alt_dir"] == str(scratch)
    assert git(top, "status", "--porcelain") == ""
    assert [p for p in top.rglob(f"*{altdir.TMP_SUFFIX}") if ".git" not in p.parts] == []
