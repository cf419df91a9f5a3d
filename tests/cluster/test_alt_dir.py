"""``schedule --alt-dir``: the job runs in a scratch folder outside the dataset (issue 20,
item 3; datalad-slurm 0.2.8's option).

The scratch folder mirrors the dataset: the inputs are copied to their places there, the
submit command runs in the scratch folder's place of the directory it was given from, and
``finish`` brings the outputs and the logs Slurm wrote there back into the dataset, commits
them, and only then removes them from the scratch folder.  A failed job leaves its scratch
files as they are, also when it is closed; a finish killed while it copies them back never
loses the scratch copy before the commit exists.

Every scenario runs the ``datalad`` command line as root and as the unprivileged account
(``actor``) on the accounting cluster with the hook, and ends with git fsck and git annex fsck.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pytest

from tests.cluster.test_cli_answers import _git, _json
from tests.cluster.test_globs import _clean, _record
from tests.conftest import Actor

#: run from the dataset's root: reads the copied input, writes its output folder ($1)
MAKE = """#!/bin/sh
set -e
mkdir -p "$1/deep"
cat data/in.dat > "$1/result.txt"
pwd > "$1/deep/pwd.txt"
echo "log of $1"
"""

#: run from work/: its log goes to logs/ beside it, a folder the dataset has
SUB = """#!/bin/sh
#SBATCH -o logs/%j.log
mkdir -p res
pwd > res/where.txt
echo "log of the job in work"
"""

#: writes part of its output, then fails
FAIL = """#!/bin/sh
mkdir -p "$1"
echo partial > "$1/partial.txt"
echo "about to fail"
exit 3
"""

#: many files, so that a finish has something to copy back for a while
BIG = """#!/bin/sh
set -e
mkdir -p "$1"
i=0
while [ $i -lt 60 ]; do
    head -c 524288 /dev/urandom > "$1/part-$i.bin"
    i=$((i + 1))
done
"""


def _dataset(actor: Actor) -> tuple[Path, Path]:
    """A dataset with the scripts (in git), data/in.dat (annexed) and work/logs/, and an empty
    scratch folder beside it, both the account's own."""
    ds = actor.dataset()
    for name, text in (("make.sh", MAKE), ("fail.sh", FAIL), ("big.sh", BIG)):
        actor.write(ds / "code" / name, text)
        (ds / "code" / name).chmod(0o755)
    actor.write(ds / "work" / "sub.sh", SUB)
    (ds / "work" / "sub.sh").chmod(0o755)
    actor.write(ds / "work" / "logs" / ".keep", "")
    actor.ok("save", "--to-git", "-m", "scripts", "code", "work", cwd=ds)
    actor.write(ds / "data" / "in.dat", "the input\n")
    actor.ok("save", "-m", "data", "data", cwd=ds)
    assert (ds / "data" / "in.dat").is_symlink()  # annexed: the scratch copy has its content
    scratch = ds.parent / "scratch"
    scratch.mkdir()
    if actor.user is not None:
        os.chown(scratch, actor.user.pw_uid, actor.user.pw_gid)
    return ds, scratch


def _schedule(actor: Actor, cwd: Path, *args: str) -> dict[str, Any]:
    (result,) = _json(actor.ok("-f", "json", "schedule", *args, cwd=cwd))
    assert result["status"] == "ok", result
    return result


def _finish(actor: Actor, ds: Path, *args: str) -> list[dict[str, Any]]:
    proc = actor.datalad("-f", "json", "finish", *args, cwd=ds)
    assert "Traceback" not in proc.stderr, proc.stderr
    return [r for r in _json(proc.stdout) if r.get("action") == "finish"]


def _tree(folder: Path) -> dict[str, str]:
    """Every file below a folder: relative path -> sha256 of its content."""
    found = {}
    for path in sorted(folder.rglob("*")):
        if path.is_file():
            found[str(path.relative_to(folder))] = hashlib.sha256(path.read_bytes()).hexdigest()
    return found


def kill_swept(
    actor: Actor, ds: Path, args: Sequence[str], check: Callable[[int], None] | None = None
) -> int:
    """``datalad ARGS`` as the account, its whole process group SIGKILLed after 0.2 s, then
    0.28 s, ... (kills swept over its run, 0.08 s apart) until one run ends on its own;
    ``check(trial)`` after each kill.  How many were killed (at least 3: else the sweep
    missed the run)."""
    killed = 0
    for trial in range(100):
        proc = subprocess.Popen(
            actor.command(*args),
            cwd=ds,
            start_new_session=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        time.sleep(0.2 + 0.08 * trial)
        if proc.poll() is not None:
            break
        os.killpg(proc.pid, 9)
        proc.wait()
        killed += 1
        if check is not None:
            check(trial)
    assert killed >= 3, f"{args} ended before the kills could reach it ({killed} killed)"
    return killed


def _committed(ds: Path, rev: str = "HEAD") -> list[str]:
    return sorted(_git(ds, "diff-tree", "-r", "--no-commit-id", "--name-only", rev).split())


def test_a_job_runs_in_the_scratch_folder_and_its_outputs_come_back(actor: Actor) -> None:
    ds, scratch = _dataset(actor)
    root = os.path.realpath(scratch)
    base = _git(ds, "rev-parse", "HEAD").strip()
    first = _schedule(
        actor,
        ds,
        *("--alt-dir", str(scratch), "-i", "code/make.sh", "-i", "data/in.dat", "-o", "out/a"),
        *("sbatch", "code/make.sh", "out/a"),
    )
    assert first["alt_dir"] == root and f"scratch folder {root}" in first["message"]
    # from a subdirectory, with a relative --alt-dir: the job runs in the scratch's work/
    second = _schedule(
        actor, ds / "work", "-a", "../../scratch", "-i", "sub.sh", "-o", "res", "sbatch", "sub.sh"
    )
    jobs = [first["slurm_job_id"], second["slurm_job_id"]]
    assert second["logs"] == [f"work/logs/{jobs[1]}.log"]  # reserved where it is brought back
    # the inputs were copied to their places, an annexed one as its content
    assert (scratch / "data" / "in.dat").read_text() == "the input\n"
    assert not (scratch / "data" / "in.dat").is_symlink()
    assert (scratch / "work" / "sub.sh").read_text() == SUB
    actor.cluster.wait_done(jobs)
    # the jobs wrote into the scratch folder, not the dataset
    assert (scratch / "out" / "a" / "result.txt").read_text() == "the input\n"
    assert (scratch / "work" / "logs" / f"{jobs[1]}.log").exists()
    assert not (ds / "out").exists() and not (ds / "work" / "res").exists()

    results = _finish(actor, ds)
    assert [(r["status"], r["slurm_job_id"]) for r in results] == [("ok", j) for j in jobs]
    assert all(r["alt_dir"] == root for r in results)
    assert _git(ds, "rev-parse", "HEAD~2").strip() == base
    assert _committed(ds, "HEAD~1") == [
        "out/a/deep/pwd.txt",
        "out/a/result.txt",
        f"slurm-{jobs[0]}.out",
        f"slurm-job-{jobs[0]}.env.json",
    ]
    assert _committed(ds) == [
        f"work/logs/{jobs[1]}.log",
        f"work/logs/slurm-job-{jobs[1]}.env.json",
        "work/res/where.txt",
    ]
    assert (ds / "out" / "a" / "deep" / "pwd.txt").read_text() == f"{root}\n"
    assert (ds / "work" / "res" / "where.txt").read_text() == f"{root}/work\n"
    assert (ds / f"slurm-{jobs[0]}.out").read_text() == "log of out/a\n"
    record = _record(ds, "HEAD~1")
    assert record["slurm_alt_dir"] == root and record["pwd"] == "."
    assert record["inputs"] == ["code/make.sh", "data/in.dat"]
    assert record["outputs"][0] == "out/a"
    assert _record(ds)["pwd"] == "work" and _record(ds)["outputs"][0] == "work/res"
    # moved: gone from the scratch folder once committed; the input copies stay
    assert sorted(_tree(scratch)) == ["code/make.sh", "data/in.dat", "work/sub.sh"]
    assert _git(ds, "status", "--porcelain") == ""
    # the record reads back for reschedule
    (again,) = _json(actor.ok("-f", "json", "reschedule", "--report", "HEAD~1", cwd=ds))
    assert again["outputs"] == ["out/a"] and again["inputs"] == ["code/make.sh", "data/in.dat"]
    _clean(actor, ds)


# a failed job's scratch files left as they are; in every tier (issue 20 asks for it in each,
# and the job's failure is Slurm's answer, read by each tier's backend)
def test_a_failing_job_leaves_its_scratch_folder_intact(actor: Actor) -> None:
    ds, scratch = _dataset(actor)
    root = os.path.realpath(scratch)
    head = _git(ds, "rev-parse", "HEAD").strip()
    job = _schedule(
        actor,
        ds,
        *("-a", str(scratch), "-i", "code/fail.sh", "-o", "out/f", "sbatch", "code/fail.sh"),
        "out/f",
    )["slurm_job_id"]
    actor.cluster.wait_done([job])
    left = _tree(scratch)
    assert {"out/f/partial.txt", f"slurm-{job}.out"} <= set(left)

    (reported,) = _finish(actor, ds)
    assert reported["status"] == "impossible" and reported["slurm_job_id"] == job
    assert reported["alt_dir"] == root and f"scratch folder {root}" in reported["message"]
    assert _tree(scratch) == left, "a failed job's scratch files were touched"
    assert _git(ds, "rev-parse", "HEAD").strip() == head
    assert not (ds / "out").exists() and not (ds / f"slurm-{job}.out").exists()

    (closed,) = _finish(actor, ds, "--close-failed-jobs")
    assert closed["status"] == "ok" and f"scratch folder {root}" in closed["message"]
    assert closed["alt_dir"] == root
    assert _tree(scratch) == left, "closing a job touched its scratch files"
    assert _git(ds, "rev-parse", "HEAD").strip() == head
    assert _json(actor.ok("-f", "json", "finish", "--list-open-jobs", cwd=ds))[0]["message"] == (
        "there are no open jobs"
    )

    # the closed job's files are still there: a new job of that output is refused ...
    args = ["-a", str(scratch), "-i", "code/job.sh", "-o", "out/f", "sbatch", "code/job.sh"]
    for dry in ([], ["--dry-run"]):
        proc = actor.datalad("-f", "json", "schedule", *dry, *args, cwd=ds)
        (refused,) = _json(proc.stdout)
        assert proc.returncode != 0 and refused["status"] == "error", refused
        assert "holds files of the output(s) 'out/f' already" in refused["message"]
    # ... unless it is to use them: then finish brings them back as the new job's
    reused = _schedule(actor, ds, "--assume-ready", "outputs", *args)["slurm_job_id"]
    actor.cluster.wait_done([reused])
    assert [r["status"] for r in _finish(actor, ds)] == ["ok"]
    assert (ds / "out" / "f" / "partial.txt").read_text() == "partial\n"
    assert "out/f/partial.txt" in _committed(ds)
    assert not (scratch / "out" / "f").exists()
    assert (scratch / f"slurm-{job}.out").exists()  # the failed job's log: no job's output
    assert _git(ds, "status", "--porcelain") == ""
    _clean(actor, ds)


# the committer's crash safety, not Slurm (which only runs the job); host and forky-jsoncli
# only (tests/conftest.py, AGNOSTIC_TIERS)
@pytest.mark.slurm_agnostic
def test_a_finish_killed_while_it_brings_the_outputs_back_loses_nothing(actor: Actor) -> None:
    """SIGKILL to finish's process group at moments swept over its run (it copies 30 MiB back
    and commits them): until the job's commit exists the scratch copy is whole; the next finish
    commits the job once, with the scratch's content, and empties the scratch folder."""
    ds, scratch = _dataset(actor)
    job = _schedule(
        actor,
        ds,
        *("-a", str(scratch), "-i", "code/big.sh", "-o", "out/big", "sbatch", "code/big.sh"),
        "out/big",
    )["slurm_job_id"]
    actor.cluster.wait_done([job])
    made = {k: v for k, v in _tree(scratch).items() if k.startswith("out/") or k.endswith(".out")}
    assert len(made) == 61
    subject = f"[DATALAD SLURM RUN] Slurm job {job}: Completed"

    def whole_until_committed(trial: int) -> None:
        if not _git(ds, "log", "--format=%s", "--fixed-strings", f"--grep={subject}"):
            now = _tree(scratch)
            assert {k: now.get(k) for k in made} == made, f"trial {trial}: scratch copy damaged"

    kill_swept(actor, ds, ["finish"], whole_until_committed)
    results = _finish(actor, ds)
    assert all(r["status"] == "ok" for r in results), results
    assert _git(ds, "log", "--format=%s").splitlines().count(subject) == 1
    brought = {
        k: hashlib.sha256((ds / k).read_bytes()).hexdigest() for k in made if k.startswith("out/")
    }
    assert brought == {k: v for k, v in made.items() if k.startswith("out/")}
    assert not (scratch / "out" / "big").exists() and not (scratch / f"slurm-{job}.out").exists()
    assert _git(ds, "status", "--porcelain") == ""
    assert [p for p in ds.rglob(".*.datalad-slurm-tmp") if ".git" not in p.parts] == []
    _clean(actor, ds)
