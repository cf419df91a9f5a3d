"""Taking over the open jobs of datalad-slurm 0.2.8 (issue 19, item 2).

datalad-slurm 0.2.8, installed from PyPI into a venv of its own (built once, kept under
/tmp), really schedules jobs on the local Slurm: one that completes, one submitted from a
subfolder, an array job with its logs in a folder of their own, a held one and a failing
one.  Our ``finish`` then takes them over from 0.2.8's registry (``.git/<dataset id>.db``),
commits the completed ones as ``[DATALAD SLURM RUN]`` records that ``reschedule`` reads,
reports the failed one, keeps the held one's outputs reserved, renames 0.2.8's file
unchanged, and takes nothing twice: not in a second run, and not when the file is back
under its old name (a run stopped before renaming it).

Everything runs through the command line, as root and as the unprivileged account.  Host
tier only: the chroot tiers would build 0.2.8's venv on every run.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import os
import shlex
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
from filelock import FileLock

from tests.conftest import Actor

pytestmark = pytest.mark.skipif(
    bool(os.environ.get("DATALAD_SLURM_TEST_CHROOT")),
    reason="host tier only: datalad-slurm 0.2.8 is installed from PyPI once per machine",
)

#: where datalad-slurm 0.2.8's venv is kept between runs (made by the first test that needs it)
VENV = Path(os.environ.get("DATALAD_SLURM_TEST_028_VENV", "/tmp/datalad-slurm-0.2.8-venv"))
OLD_VERSION = "0.2.8"
#: the interpreter of the venv: Debian's, which the unprivileged account may run too
BASE_PYTHON = "/usr/bin/python3"

_CLI = "import sys; from datalad.cli.main import main; sys.argv[0] = 'datalad'; main()"

WORK = """#!/bin/bash
# work.sh FOLDER TEXT EXIT: one file per array task into FOLDER, then exit EXIT
mkdir -p "$1"
echo "$2" > "$1/result-${SLURM_ARRAY_TASK_ID:-0}.txt"
exit "${3:-0}"
"""


def _versions(venv: Path) -> str:
    """The version of datalad-slurm in the venv ('' if there is none)."""
    if not (venv / "bin/python").exists():
        return ""
    # -I: neither PYTHONPATH nor the current folder (a checkout of ours) on the path
    probe = subprocess.run(
        [
            str(venv / "bin/python"),
            "-I",
            "-c",
            "import importlib.metadata as m; print(m.version('datalad-slurm'))",
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    return probe.stdout.strip() if probe.returncode == 0 else ""


@pytest.fixture(scope="session")
def old_venv() -> Path:
    """A venv with datalad-slurm 0.2.8 and the DataLad we run (0.2.8 does not name one)."""
    if _versions(VENV) == OLD_VERSION:
        return VENV
    with FileLock(f"{VENV}.lock"):
        if _versions(VENV) == OLD_VERSION:
            return VENV
        building = Path(f"{VENV}.building")
        shutil.rmtree(building, ignore_errors=True)
        subprocess.run([BASE_PYTHON, "-m", "venv", str(building)], check=True)
        datalad = importlib.metadata.version("datalad")
        install = subprocess.run(
            [
                str(building / "bin/python"),
                "-I",
                "-m",
                "pip",
                "install",
                "--quiet",
                f"datalad-slurm=={OLD_VERSION}",
                f"datalad=={datalad}",
            ],
            capture_output=True,
            text=True,
            timeout=1200,
            check=False,
        )
        assert install.returncode == 0, install.stderr[-3000:]
        shutil.rmtree(VENV, ignore_errors=True)
        # the venv's python finds its packages from its own place: a renamed venv works
        os.rename(building, VENV)
    assert _versions(VENV) == OLD_VERSION
    return VENV


def _env(actor: Actor, venv: Path | None) -> list[str]:
    home = actor.user.pw_dir if actor.user else os.environ.get("HOME", "/root")
    path = f"{venv}/bin:" if venv else ""
    return [
        f"PATH={path}/usr/sbin:/usr/bin:/sbin:/bin",
        f"HOME={home}",
        f"SLURM_CONF={actor.cluster.conf}",
        "GIT_AUTHOR_NAME=T",
        "GIT_AUTHOR_EMAIL=t@example.org",
        "GIT_COMMITTER_NAME=T",
        "GIT_COMMITTER_EMAIL=t@example.org",
    ]


def _as(actor: Actor, *command: str, cwd: Path, venv: Path | None = None) -> str:
    """A command as the account; it must succeed."""
    full = ["env", "-i", *_env(actor, venv), *command]
    if actor.user is not None:
        full = ["runuser", "-u", actor.user.pw_name, "--", *full]
    proc = subprocess.run(full, cwd=cwd, capture_output=True, text=True, stdin=subprocess.DEVNULL)
    assert proc.returncode == 0, (command, proc.stdout, proc.stderr)
    return proc.stdout


def _old(actor: Actor, venv: Path, cwd: Path, action: str, *args: str) -> dict[str, Any]:
    """``datalad ARGS`` of 0.2.8, as the account; its one result of ``action`` (ok)."""
    python = str(venv / "bin/python")
    out = _as(actor, python, "-I", "-c", _CLI, "-f", "json", *args, cwd=cwd, venv=venv)
    results = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    ran = [r for r in results if r.get("action") == action]
    assert [r["status"] for r in ran] == ["ok"], out
    return ran[0]


def _old_schedule(actor: Actor, venv: Path, cwd: Path, *args: str) -> int:
    """``datalad slurm-schedule ARGS`` of 0.2.8; the job id it submitted."""
    result = _old(actor, venv, cwd, "slurm-schedule", "slurm-schedule", *args)
    return int(result["slurm_run_info"]["slurm_job_id"])


def _json(out: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in out.splitlines() if line.startswith("{")]


def _finish(actor: Actor, ds: Path, *args: str) -> list[dict[str, Any]]:
    """``datalad -f json finish ARGS``; non-zero exits (a failed job) are expected."""
    proc = actor.datalad("-f", "json", "finish", *args, cwd=ds)
    assert "Traceback" not in proc.stderr, proc.stderr
    return _json(proc.stdout)


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _open_jobs(actor: Actor, ds: Path) -> list[int]:
    listed = _json(actor.ok("-f", "json", "finish", "--list-open-jobs", cwd=ds))
    return sorted(r["slurm_job_id"] for r in listed if r.get("list_open_jobs"))


def _committed(actor: Actor, ds: Path, job: int) -> tuple[str, list[str]]:
    """The commit of the job's record and the files it holds."""
    sha = _as(
        actor,
        "git",
        "log",
        "--format=%H",
        "--fixed-strings",
        f"--grep=[DATALAD SLURM RUN] Slurm job {job}: Completed",
        cwd=ds,
    ).split()
    assert len(sha) == 1, f"job {job}: {sha}"
    files = _as(actor, "git", "show", "--format=", "--name-only", sha[0], cwd=ds).split()
    return sha[0], sorted(files)


def test_jobs_scheduled_by_028_are_taken_over_once(actor: Actor, old_venv: Path) -> None:
    cluster = actor.cluster
    ds = actor.dataset()
    for folder in ("sub", "logs"):
        actor.write(ds / folder / ".keep", "")
    actor.write(ds / "code/work.sh", WORK)
    os.chmod(ds / "code/work.sh", 0o755)
    actor.ok("save", "-m", "work script", "--to-git", "code", "sub", "logs", cwd=ds)

    # -- datalad-slurm 0.2.8 schedules, for real
    def old_schedule(where: Path, line: str) -> int:
        return _old_schedule(actor, old_venv, where, *shlex.split(line))

    done = old_schedule(ds, "-o res/ok sbatch code/work.sh res/ok ok 0")
    in_sub = old_schedule(ds / "sub", "-o out -i ../code/work.sh sbatch ../code/work.sh out sub 0")
    array = old_schedule(
        ds, "-o res/arr sbatch --array=1-2 --output=logs/arr-%A_%a.out code/work.sh res/arr arr 0"
    )
    held = old_schedule(
        ds, "-o res/held -m 'held by 0.2.8' sbatch --hold code/work.sh res/held held 0"
    )
    failed = old_schedule(ds, "-o res/bad/ sbatch code/work.sh res/bad bad 3")
    # one job 0.2.8 also finishes itself: its record is in the history, not in its registry
    own = old_schedule(ds / "sub", "-o own sbatch ../code/work.sh own own 0")
    dsid = _as(
        actor, "git", "config", "-f", ".datalad/config", "datalad.dataset.id", cwd=ds
    ).strip()
    old_db = ds / ".git" / f"{dsid}.db"
    assert old_db.is_file(), sorted(os.listdir(ds / ".git"))
    try:
        cluster.wait_done([done, in_sub, array, failed, own])
        assert cluster.state(held) == "PENDING"
        cluster.wait_accounted([own])  # 0.2.8's slurm-finish asks sacct
        # (0.2.8's slurm-finish has no result of its own: its commit is datalad save's)
        _old(actor, old_venv, ds / "sub", "save", "slurm-finish", "--slurm-job-id", str(own))
        old_record = _as(actor, "git", "rev-parse", "HEAD", cwd=ds).strip()
        before = _digest(old_db)

        # -- the listing names 0.2.8's jobs and changes nothing
        listed = _json(actor.ok("-f", "json", "finish", "--list-open-jobs", cwd=ds))
        waiting = [r for r in listed if r.get("action") == "migrate"]
        assert [r["old_job_ids"] for r in waiting] == [[done, in_sub, array, held, failed]]
        assert _digest(old_db) == before

        # -- finish takes them over, commits the completed ones, reports the failed one
        first = _finish(actor, ds)
        taken = [r for r in first if r.get("action") == "migrate" and "slurm_job_id" in r]
        assert {r["slurm_job_id"]: r["status"] for r in taken} == {
            job: "ok" for job in (done, in_sub, array, held, failed)
        }, first
        assert {r["slurm_job_id"]: r["outputs"] for r in taken}[in_sub] == ["sub/out"]
        renamed = [r for r in first if r.get("action") == "migrate" and "renamed_to" in r]
        assert [r["renamed_to"] for r in renamed] == [f"{old_db}.imported"], first
        assert not old_db.exists()
        assert _digest(Path(f"{old_db}.imported")) == before, "0.2.8's registry was changed"
        by_job = {r.get("slurm_job_id"): r for r in first if r.get("action") == "finish"}
        assert {job: by_job[job]["status"] for job in (done, in_sub, array, failed)} == {
            done: "ok",
            in_sub: "ok",
            array: "ok",
            failed: "impossible",
        }, first
        assert "FAILED" in by_job[failed]["message"]
        _, files = _committed(actor, ds, done)
        assert files == sorted(
            ["res/ok/result-0.txt", f"slurm-{done}.out", f"slurm-job-{done}.env.json"]
        )
        sub_commit, files = _committed(actor, ds, in_sub)
        assert files == sorted(
            ["sub/out/result-0.txt", f"sub/slurm-{in_sub}.out", f"sub/slurm-job-{in_sub}.env.json"]
        )
        _, files = _committed(actor, ds, array)
        assert files == sorted(
            [
                "res/arr/result-1.txt",
                "res/arr/result-2.txt",
                f"logs/arr-{array}_1.out",
                f"logs/arr-{array}_2.out",
                f"logs/slurm-job-{array}.env.json",
            ]
        )
        # the held job is registered with the hook, as a job we submitted is
        registration = Path(cluster.spool, str(actor.user.pw_uid if actor.user else 0), "jobs")
        assert any(name.endswith(f".{held}") for name in os.listdir(registration))

        # -- their outputs stay reserved while they are open
        for output in ("res/held/inner", "res", "res/bad"):
            refused = actor.datalad("schedule", "-o", output, "sbatch", "code/work.sh", cwd=ds)
            assert refused.returncode != 0 and "Traceback" not in refused.stderr
            assert "open job" in refused.stdout + refused.stderr, refused

        # -- a second run takes nothing and leaves 0.2.8's file alone
        mtime = os.stat(f"{old_db}.imported").st_mtime_ns
        head = _as(actor, "git", "rev-parse", "HEAD", cwd=ds).strip()
        second = _finish(actor, ds)
        assert not [r for r in second if r.get("action") == "migrate"], second
        assert os.stat(f"{old_db}.imported").st_mtime_ns == mtime
        assert _as(actor, "git", "rev-parse", "HEAD", cwd=ds).strip() == head
        assert _open_jobs(actor, ds) == sorted([held, failed])

        # -- the file back under its old name (a run stopped before renaming it): nothing twice
        shutil.copy2(f"{old_db}.imported", old_db)
        if actor.user is not None:
            os.chown(old_db, actor.user.pw_uid, actor.user.pw_gid)
        third = _finish(actor, ds)
        migrated = [r for r in third if r.get("action") == "migrate"]
        assert [r.get("renamed_to") for r in migrated] == [f"{old_db}.imported.2"], third
        assert _open_jobs(actor, ds) == sorted([held, failed])

        # -- the held job runs and is committed like any other; the failed one is closed
        cluster.run("scontrol", "release", str(held))
        cluster.wait_done([held])
        last = _finish(actor, ds, "--close-failed-jobs")
        by_job = {r.get("slurm_job_id"): r for r in last if r.get("action") == "finish"}
        assert by_job[held]["status"] == "ok" and by_job[failed]["status"] == "ok", last
        held_commit, files = _committed(actor, ds, held)
        assert "res/held/result-0.txt" in files
        body = _as(actor, "git", "log", "-1", "--format=%B", held_commit, cwd=ds)
        assert "held by 0.2.8" in body
        assert _open_jobs(actor, ds) == []
    finally:
        cluster.scancel(held)

    # -- the records read back: reschedule would submit the same command from the same place
    for commit, cmd, outputs, inputs in [
        (sub_commit, "sbatch ../code/work.sh out sub 0", ["sub/out"], ["code/work.sh"]),
        (old_record, "sbatch ../code/work.sh own own 0", ["sub/own"], []),  # 0.2.8's own record
    ]:
        again = _json(actor.ok("-f", "json", "reschedule", "--report", commit, cwd=ds))
        assert [(r["cmd"], r["pwd"], r["outputs"], r["inputs"]) for r in again] == [
            (cmd, "sub", outputs, inputs)
        ], commit
    _as(actor, "git", "fsck", "--strict", "--no-dangling", cwd=ds)
    fsck = _as(actor, "git", "annex", "fsck", "--json", cwd=ds)
    checked = [json.loads(line) for line in fsck.splitlines() if line.strip()]
    assert checked and all(c["success"] for c in checked), fsck


def test_jobs_028_ran_in_its_alt_dir_are_brought_back(actor: Actor, old_venv: Path) -> None:
    """0.2.8's --alt-dir mirrors the dataset as ours does: finish takes such jobs over with
    their scratch folder, brings their outputs and logs back, commits them and empties it."""
    ds = actor.dataset()
    actor.write(ds / "sub" / ".keep", "")
    actor.write(ds / "code/work.sh", WORK)
    os.chmod(ds / "code/work.sh", 0o755)
    actor.ok("save", "-m", "work script", "--to-git", "code", "sub", cwd=ds)
    scratch = actor.folder()

    def old_schedule(where: Path, line: str) -> int:
        return _old_schedule(actor, old_venv, where, "--alt-dir", str(scratch), *shlex.split(line))

    top = old_schedule(ds, "-i code/work.sh -o res/alt sbatch code/work.sh res/alt alt 0")
    in_sub = old_schedule(ds / "sub", "-i ../code/work.sh -o out sbatch ../code/work.sh out sub 0")
    actor.cluster.wait_done([top, in_sub])
    # 0.2.8 ran them in its alt-dir: nothing in the dataset yet
    assert (scratch / "res/alt/result-0.txt").read_text() == "alt\n"
    assert (scratch / "sub/out/result-0.txt").read_text() == "sub\n"
    assert not (ds / "res").exists() and not (ds / "sub/out").exists()

    first = _finish(actor, ds)
    taken = {
        r["slurm_job_id"]: r for r in first if r.get("action") == "migrate" and "slurm_job_id" in r
    }
    assert {job: r["status"] for job, r in taken.items()} == {top: "ok", in_sub: "ok"}, first
    assert f"--alt-dir {os.path.realpath(scratch)}" in taken[top]["message"]
    by_job = {r.get("slurm_job_id"): r for r in first if r.get("action") == "finish"}
    assert {job: by_job[job]["status"] for job in (top, in_sub)} == {top: "ok", in_sub: "ok"}
    _, files = _committed(actor, ds, top)
    assert files == sorted(
        ["res/alt/result-0.txt", f"slurm-{top}.out", f"slurm-job-{top}.env.json"]
    )
    _, files = _committed(actor, ds, in_sub)
    assert files == sorted(
        ["sub/out/result-0.txt", f"sub/slurm-{in_sub}.out", f"sub/slurm-job-{in_sub}.env.json"]
    )
    assert (ds / "sub/out/result-0.txt").read_text() == "sub\n"
    # brought back: gone from the scratch folder (0.2.8's own env.json files stay there)
    for gone in ("res/alt", f"slurm-{top}.out", "sub/out", f"sub/slurm-{in_sub}.out"):
        assert not (scratch / gone).exists(), gone
    assert _open_jobs(actor, ds) == []
    assert _as(actor, "git", "status", "--porcelain", cwd=ds) == ""
    _as(actor, "git", "fsck", "--strict", "--no-dangling", cwd=ds)
    fsck = _as(actor, "git", "annex", "fsck", "--json", cwd=ds)
    checked = [json.loads(line) for line in fsck.splitlines() if line.strip()]
    assert checked and all(c["success"] for c in checked), fsck
