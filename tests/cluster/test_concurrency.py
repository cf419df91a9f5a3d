"""Concurrent schedule and finish runs in one dataset (DESIGN.md invariant 5)."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import Cluster, call, git, only, subjects, write_script

#: the subject is the registry's and git's locking; Slurm only runs the jobs: host and
#: forky-jsoncli only (tests/conftest.py, AGNOSTIC_TIERS)
pytestmark = pytest.mark.slurm_agnostic


def test_two_concurrent_schedules_on_one_output(slurm: Cluster, dataset: Any) -> None:
    write_script(dataset, "job.sh", "echo x\n")
    procs = [
        subprocess.Popen(
            ["datalad", "schedule", "-o", "shared/out", "sbatch", "--hold", "code/job.sh"],
            cwd=dataset.path,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(4)
    ]
    outcomes = [(p.wait(120), *p.communicate()) for p in procs]
    winners = [o for o in outcomes if o[0] == 0]
    losers = [o for o in outcomes if o[0] != 0]
    assert len(winners) == 1, outcomes
    assert all("output conflict" in o[1] for o in losers), losers
    assert all("Traceback" not in o[2] for o in outcomes)
    listed = only(call(dataset, "finish", list_open_jobs=True), "finish")
    assert len(listed) == 1
    slurm.scancel(listed[0]["slurm_job_id"])


def test_two_concurrent_finishes_commit_each_job_once(
    slurm: Cluster, dataset: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(dataset.path)
    script = write_script(dataset, "job.sh", "echo $1 > $1/r\n")
    jobs = []
    for n in range(12):
        out = f"out{n}"
        Path(dataset.path, out).mkdir()
        result = call(
            dataset, "schedule", f"sbatch -o {out}/slurm-%j.out {script} {out}", outputs=[out]
        )
        jobs.append(result[0]["slurm_job_id"])
    slurm.wait_done(jobs)
    procs = [
        subprocess.Popen(
            ["datalad", "finish"],
            cwd=dataset.path,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    # a schedule beside them must not disturb either
    Path(dataset.path, "late").mkdir()
    late = call(dataset, "schedule", f"sbatch --hold {script} late", outputs=["late"])
    outcomes = [(p.wait(300), *p.communicate()) for p in procs]
    for code, out, err in outcomes:
        assert code == 0, (out, err)
        assert "index.lock" not in out + err and "Traceback" not in err
    log = subjects(dataset)
    for job in jobs:
        assert log.count(f"[DATALAD SLURM RUN] Slurm job {job}: Completed") == 1
    # each commit holds only its own job's files
    for n, job in enumerate(jobs):
        sha = git(dataset, "log", "-1", "--format=%H", "-F", f"--grep=Slurm job {job}:").strip()
        files = git(dataset, "show", "--name-only", "--format=", sha).split()
        assert sorted(files) == sorted(
            [f"out{n}/r", f"out{n}/slurm-{job}.out", f"out{n}/slurm-job-{job}.env.json"]
        )
    assert git(dataset, "status", "--porcelain", "--untracked-files=no").strip() == ""
    slurm.scancel(late[0]["slurm_job_id"])
