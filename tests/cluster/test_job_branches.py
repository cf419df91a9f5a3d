"""``finish --branches`` and ``--octopus`` with 20 jobs (issue 20, item 3; datalad-slurm
0.2.8's options).

``--branches``: one branch ``slurm-job-branch-<id>`` per job, each one commit on the commit
finish started from, holding that job's files only; the current branch stays, and its
worktree without the jobs' files.  ``--octopus``: one merge of those commits into the current
branch, no branch left.  Every job's record reads back for ``reschedule``; ``git fsck
--strict`` and ``git annex fsck`` are clean; a finish killed at any moment is completed by the
next one, every job committed once.

Every scenario runs the ``datalad`` command line as root and as the unprivileged account
(``actor``) on the accounting cluster with the hook.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from datalad_slurm.jobs.registry import Registry
from tests.cluster.test_alt_dir import kill_swept
from tests.cluster.test_cli_answers import _git, _json
from tests.cluster.test_globs import _as_owner, _clean, _record
from tests.conftest import Actor, assert_fsck_clean

JOBS = 20
#: writes its output folder ($1)
WRITE = """#!/bin/sh
mkdir -p "$1"
echo "result of $1" > "$1/r.dat"
"""


def _submitted(actor: Actor, jobs: int = JOBS) -> tuple[Path, dict[int, str]]:
    """A dataset with ``jobs`` completed jobs (one ``schedule --jobs-from``), each writing
    out/<n>; job id -> its output."""
    ds = actor.dataset()
    actor.write(ds / "code" / "write.sh", WRITE)
    (ds / "code" / "write.sh").chmod(0o755)
    actor.ok("save", "--to-git", "-m", "script", "code", cwd=ds)
    lines = [
        json.dumps({"cmd": f"sbatch code/write.sh out/{n}", "outputs": [f"out/{n}"]})
        for n in range(jobs)
    ]
    actor.write(ds.parent / "jobs.jsonl", "\n".join(lines) + "\n")
    results = _json(actor.ok("-f", "json", "schedule", "--jobs-from", "../jobs.jsonl", cwd=ds))
    assert [r["status"] for r in results] == ["ok"] * jobs, results
    submitted = {r["slurm_job_id"]: r["outputs"][0] for r in results}
    actor.cluster.wait_done(list(submitted))
    return ds, submitted


def _finish(actor: Actor, ds: Path, *args: str) -> list[dict[str, Any]]:
    proc = actor.datalad("-f", "json", "finish", *args, cwd=ds)
    assert "Traceback" not in proc.stderr, proc.stderr
    return [r for r in _json(proc.stdout) if r.get("action") == "finish"]


def _job_files(job: int, output: str) -> list[str]:
    return sorted([f"{output}/r.dat", f"slurm-{job}.out", f"slurm-job-{job}.env.json"])


def _branches(ds: Path) -> dict[str, str]:
    """The job branches: name -> sha."""
    listing = _git(ds, "for-each-ref", "--format=%(refname:strip=2) %(objectname)", "refs/heads/")
    pairs = [line.split() for line in listing.splitlines()]
    return {name: sha for name, sha in pairs if name.startswith("slurm-job-branch-")}


def _check_job_commit(ds: Path, sha: str, base: str, job: int, output: str) -> None:
    """One commit on ``base`` that holds the job's files only and records it."""
    assert _git(ds, "rev-list", "--parents", "-n1", sha).split() == [sha, base]
    changed = _git(ds, "diff-tree", "-r", "--no-commit-id", "--name-only", sha).split()
    assert sorted(changed) == _job_files(job, output)
    record = _record(ds, sha)
    assert record["slurm_job_id"] == job and record["outputs"][0] == output
    assert record["cmd"] == f"sbatch code/write.sh {output}"


def _registry(ds: Path) -> dict[int, tuple[str, str | None]]:
    """Each job's state and commit (read-only: the dataset may be another account's)."""
    with Registry(str(ds / ".git/datalad-slurm/registry.sqlite"), read_only=True) as registry:
        rows = registry.jobs(states=("submitting", "open", "committing", "finished", "closed"))
    return {row.job_id or 0: (row.state, row.commit_sha) for row in rows}


def _reschedulable(actor: Actor, ds: Path, since: str, jobs: dict[int, str]) -> None:
    """Every job's record reads back: reschedule --report lists each one's command."""
    report = _json(actor.ok("-f", "json", "reschedule", "--since", since, "--report", cwd=ds))
    assert sorted(r["cmd"] for r in report) == sorted(
        f"sbatch code/write.sh {output}" for output in jobs.values()
    )
    assert sorted(o for r in report for o in r["outputs"]) == sorted(jobs.values())


def _annex_clean(actor: Actor, ds: Path) -> None:
    """git-annex finds every key of every branch here and whole (``fsck --all``)."""
    fsck = _as_owner(actor, ds, "git", "annex", "fsck", "--all", "--json")
    records = _json(fsck.stdout)
    assert fsck.returncode == 0 and records and all(r["success"] for r in records), fsck


def test_branches_one_per_job(actor: Actor) -> None:
    ds, jobs = _submitted(actor)
    base = _git(ds, "rev-parse", "HEAD").strip()
    first = min(jobs)
    # a branch of that name exists already: its job is refused and stays open
    _git(ds, "branch", f"slurm-job-branch-{first}")
    results = _finish(actor, ds, "--branches")
    refused = [r for r in results if r["status"] != "ok"]
    assert [(r["slurm_job_id"], r["status"]) for r in refused] == [(first, "error")], refused
    assert f"the branch slurm-job-branch-{first} exists already" in refused[0]["message"]
    done = [r for r in results if r["status"] == "ok"]
    assert sorted(r["slurm_job_id"] for r in done) == sorted(set(jobs) - {first})
    assert all(r["branch"] == f"slurm-job-branch-{r['slurm_job_id']}" for r in done)
    _git(ds, "branch", "-D", f"slurm-job-branch-{first}")
    (late,) = _finish(actor, ds, "--branches")
    assert (late["status"], late["slurm_job_id"]) == ("ok", first)

    # the current branch did not move, and its worktree holds none of the jobs' files
    assert _git(ds, "rev-parse", "HEAD").strip() == base
    assert _git(ds, "status", "--porcelain") == ""
    assert not (ds / "out").exists()
    branches = _branches(ds)
    assert sorted(branches) == sorted(f"slurm-job-branch-{job}" for job in jobs)
    for job, output in jobs.items():
        _check_job_commit(ds, branches[f"slurm-job-branch-{job}"], base, job, output)
    assert _registry(ds) == {job: ("finished", branches[f"slurm-job-branch-{job}"]) for job in jobs}
    _annex_clean(actor, ds)

    # git merge brings them back; the records read back through the merged history
    merged = _as_owner(actor, ds, "git", "merge", "-q", "--no-edit", *sorted(branches))
    assert merged.returncode == 0, merged
    assert all(
        (ds / output / "r.dat").read_text() == f"result of {output}\n" for output in jobs.values()
    )
    _reschedulable(actor, ds, base, jobs)
    # and one of them runs again
    again = _json(
        actor.ok("-f", "json", "reschedule", branches[f"slurm-job-branch-{first}"], cwd=ds)
    )
    assert [r["status"] for r in again] == ["ok"], again
    actor.cluster.wait_done([again[0]["slurm_job_id"]])
    assert [r["status"] for r in _finish(actor, ds)] == ["ok"]
    _clean(actor, ds)


def test_octopus_merges_every_job_at_once(actor: Actor) -> None:
    ds, jobs = _submitted(actor)
    base = _git(ds, "rev-parse", "HEAD").strip()
    results = _finish(actor, ds, "--octopus")
    assert [r["status"] for r in results] == ["ok"] * (JOBS + 1), results
    merge = results[-1]
    head = _git(ds, "rev-parse", "HEAD").strip()
    assert merge["commit"] == head and sorted(merge["merged"]) == sorted(jobs)
    parents = _git(ds, "rev-list", "--parents", "-n1", "HEAD").split()[1:]
    assert len(parents) == JOBS + 1 and parents[0] == base
    assert _git(ds, "log", "-1", "--format=%s").strip() == "Merge all branches from finished jobs"
    by_job = {r["slurm_job_id"]: r["commit"] for r in results[:-1]}
    assert parents[1:] == [by_job[job] for job in sorted(jobs)]  # in the drain's order
    for job, output in jobs.items():
        _check_job_commit(ds, by_job[job], base, job, output)
    # the merge holds every job's files, and nothing else changed; no branch is left
    changed = _git(ds, "diff", "--name-only", base, "HEAD").split()
    assert sorted(changed) == sorted(f for job, o in jobs.items() for f in _job_files(job, o))
    assert _branches(ds) == {}
    assert _git(ds, "status", "--porcelain") == ""
    assert all(
        (ds / output / "r.dat").read_text() == f"result of {output}\n" for output in jobs.values()
    )
    assert _registry(ds) == {job: ("finished", by_job[job]) for job in jobs}
    _reschedulable(actor, ds, base, jobs)
    _annex_clean(actor, ds)
    _clean(actor, ds)


# the subject is git (killed finishes); Slurm only runs the jobs: host and forky-jsoncli only
# (tests/conftest.py, AGNOSTIC_TIERS). --branches and --octopus themselves run in every tier.
@pytest.mark.slurm_agnostic
@pytest.mark.parametrize("mode", ["--branches", "--octopus"])
def test_a_finish_killed_midway_is_completed_once(actor: Actor, mode: str) -> None:
    """SIGKILL to the finish's process group at moments swept over its run (0.08 s apart)
    until one ends on its own; then every job is committed exactly once, where the mode puts
    it, the registry agrees, and nothing is left staged."""
    ds, jobs = _submitted(actor)
    base = _git(ds, "rev-parse", "HEAD").strip()
    kill_swept(actor, ds, ["finish", mode])
    # once more: what the last kill left is settled (recovery), nothing else to do
    settled = _finish(actor, ds, mode)
    assert all(r["status"] == "ok" for r in settled), settled
    records = _git(ds, "log", "--all", "--format=%H %s", "--grep=DATALAD SLURM RUN").splitlines()
    subjects = [line.split(" ", 1)[1] for line in records]
    assert sorted(subjects) == sorted(
        f"[DATALAD SLURM RUN] Slurm job {job}: Completed" for job in jobs
    ), "a job committed twice, or lost"
    shas = {
        int(s.split()[5].rstrip(":")): line.split()[0]
        for line, s in zip(records, subjects, strict=True)
    }
    for job, output in jobs.items():
        _check_job_commit(ds, shas[job], base, job, output)
    assert _registry(ds) == {job: ("finished", shas[job]) for job in jobs}
    if mode == "--branches":
        assert _git(ds, "rev-parse", "HEAD").strip() == base
        assert _branches(ds) == {f"slurm-job-branch-{job}": shas[job] for job in jobs}
        assert not (ds / "out").exists()
    else:
        assert _branches(ds) == {}
        assert sorted(_git(ds, "rev-list", "--parents", "-n1", "HEAD").split()[1:]) == sorted(
            [base, *shas.values()]
        )
    assert _git(ds, "status", "--porcelain") == ""
    _annex_clean(actor, ds)
    assert_fsck_clean(ds, actor.user)
