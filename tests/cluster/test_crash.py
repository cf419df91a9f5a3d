"""finish killed (SIGKILL, its whole process group) at random moments, then run again
(DESIGN.md invariant 4, issue 5): every job committed exactly once, none lost, the registry
consistent, no stray lock.  Slow by design: 50 trials on 200 completed jobs (10 in each
chroot tier)."""

from __future__ import annotations

import json
import os
import random
import re
import shutil
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
from filelock import FileLock

from datalad_slurm.gitlock import git_dir, open_registry
from tests.conftest import Cluster, call, only, write_script

JOBS = 200
#: the crash safety under test is git's and the committer's, the same whichever backend asks Slurm:
#: the host tier runs the full 50 trials, each chroot tier (tests/chroot-tier) 10 more through its
#: own Slurm release and backend
TRIALS = 10 if os.environ.get("DATALAD_SLURM_TEST_CHROOT") == "1" else 50
SUBJECT = re.compile(r"^\[DATALAD SLURM RUN\] Slurm job (\d+): Completed$")


def _finish(path: Path, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["datalad", "finish"], cwd=path, capture_output=True, text=True, timeout=timeout
    )


def _git(path: Path, *args: str) -> str:
    return subprocess.run(
        ["git", *args], cwd=path, capture_output=True, text=True, check=True
    ).stdout


def _check(path: Path, jobs: dict[int, str], trial: str) -> None:
    """Each job once, with only its own files; registry, worktree and locks all settled."""
    log = _git(path, "log", "--format=%x00%H %s", "--name-only")
    commits: dict[int, list[str]] = {}
    shas: dict[int, str] = {}
    for entry in log.split("\0")[1:]:
        head, *files = [line for line in entry.splitlines() if line]
        sha, _, subject = head.partition(" ")
        match = SUBJECT.match(subject)
        if match:
            job = int(match.group(1))
            assert job not in commits, f"{trial}: job {job} committed twice"
            commits[job], shas[job] = files, sha
    assert sorted(commits) == sorted(jobs), f"{trial}: jobs lost: {set(jobs) - set(commits)}"
    for job, files in commits.items():
        folder = jobs[job]
        assert sorted(files) == sorted(
            [f"{folder}/r", f"{folder}/slurm-{job}.out", f"{folder}/slurm-job-{job}.env.json"]
        ), f"{trial}: job {job} commit holds {files}"
    with open_registry(str(path)) as registry:
        rows = registry.jobs(states=("submitting", "open", "committing", "finished", "closed"))
        assert {r.job_id: r.state for r in rows} == dict.fromkeys(jobs, "finished"), trial
        assert {r.job_id: r.commit_sha for r in rows} == shas, f"{trial}: registry vs history"
        assert all(registry.reservations(r) == [] for r in rows), trial
    status = _git(path, "status", "--porcelain")
    assert status.strip() == "", f"{trial}: left behind: {status[:500]}"
    _check_annex(path, trial)
    gitdir = Path(git_dir(str(path)))
    # git's lock files; our own lock file stays by design, and is checked to be free below
    ours = gitdir / "datalad-slurm" / "git.lock"
    stray = [str(p) for p in gitdir.rglob("*.lock") if p != ours]
    assert stray == [], f"{trial}: stray git locks {stray}"
    assert not (gitdir / "datalad-slurm" / "git-writes-in-progress").exists(), trial
    FileLock(str(gitdir / "datalad-slurm" / "git.lock"), timeout=0).acquire()


def _check_annex(path: Path, trial: str) -> None:
    """Every annexed output has its content here, and git-annex's location log says so."""
    uuid = _git(path, "config", "annex.uuid").strip()
    whereis = [
        json.loads(line)
        for line in _git(path, "annex", "whereis", "--json", "o").splitlines()
        if line.strip()
    ]
    assert len(whereis) >= JOBS, f"{trial}: only {len(whereis)} annexed files"
    for item in whereis:
        assert uuid in [w["uuid"] for w in item["whereis"]], f"{trial}: {item['file']} not here"
        assert (path / item["file"]).resolve().is_file(), f"{trial}: {item['file']} no content"


def test_finish_killed_at_random_moments(
    slurm: Cluster, dataset: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ds = dataset
    monkeypatch.chdir(ds.path)
    script = write_script(ds, "job.sh", 'echo "$1" > "$1/r"\n')
    specs = tmp_path / "jobs.jsonl"
    specs.write_text(
        "".join(
            json.dumps(
                {"cmd": f"sbatch -o o/{n}/slurm-%j.out {script} o/{n}", "outputs": [f"o/{n}"]}
            )
            + "\n"
            for n in range(JOBS)
        )
    )
    for n in range(JOBS):
        Path(ds.path, "o", str(n)).mkdir(parents=True)
    results = only(call(ds, "schedule", jobs_from=str(specs)), "schedule")
    assert [r["status"] for r in results] == ["ok"] * JOBS
    jobs = {r["slurm_job_id"]: r["outputs"][0] for r in results}
    slurm.wait_done(list(jobs), timeout=600)

    # the pristine state is restored at the same path before each trial (Slurm knows the
    # jobs' log paths there)
    path = Path(ds.path)
    pristine = tmp_path / "pristine"
    shutil.copytree(path, pristine, symlinks=True)
    started = time.monotonic()
    first = _finish(path)
    duration = time.monotonic() - started
    assert first.returncode == 0, first.stderr[-2000:]
    _check(path, jobs, "uninterrupted")

    seed = int(os.environ.get("DATALAD_SLURM_TEST_SEED", "20261127"))
    rng = random.Random(seed)
    killed_inside = 0
    for trial in range(TRIALS):
        shutil.rmtree(path)
        shutil.copytree(pristine, path, symlinks=True)
        delay = rng.uniform(0.0, duration)
        label = f"trial {trial} (seed {seed}, kill after {delay:.2f} s of {duration:.2f} s)"
        proc = subprocess.Popen(
            ["datalad", "finish"],
            cwd=path,
            start_new_session=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        time.sleep(delay)
        if proc.poll() is None:
            killed_inside += 1
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        again = _finish(path)
        assert again.returncode == 0, f"{label}: {again.stdout[-1500:]} {again.stderr[-1500:]}"
        assert "Traceback" not in again.stderr, label
        _check(path, jobs, label)
    # the trials must really have interrupted finish, not watched it end
    assert killed_inside >= TRIALS * 0.8, f"only {killed_inside} of {TRIALS} kills hit a run"
