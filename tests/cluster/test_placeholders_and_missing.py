"""What the user declares reaches the job and the commit (issue 17, items 3 and 6).

Placeholders: the same command, inputs and outputs go once through ``datalad run`` and once
through ``datalad schedule ... sbatch``; the job must receive exactly the argv that ``datalad
run`` gave its command (a path with spaces is one argument, ``{inputs[N]}`` is a whole path,
quote characters survive). Missing outputs: a declared output the job never wrote gives a
visible warning, in the default rendering and in ``-f json``, and the job is committed with
what exists.

Everything runs through the ``datalad`` command line, as root and as the unprivileged
``dlstest`` (the Slurm job then runs as that user too).
"""

from __future__ import annotations

import json
import os
import pwd
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import Cluster, python_as, unprivileged_user

#: datalad's command line, started by the interpreter python_as picks
DATALAD = "import sys; from datalad.cli.main import main; sys.argv[0] = 'datalad'; main()"

ARGV_SCRIPT = """#!/bin/sh
# every argument on its own line, into the file $ARGV_FILE names
: > "$ARGV_FILE"
for argument in "$@"; do printf '%s\\n' "$argument" >> "$ARGV_FILE"; done
mkdir -p "res/with space" "res/it's"
echo done > "res/with space/result.txt"
echo done > "res/it's/result.txt"
"""

INPUTS = ["data/in put.txt", 'data/say "hi".txt', "data/plain.txt"]
OUTPUTS = ["res/with space", "res/it's"]
COMMAND = "code/argv.sh {inputs} {inputs[1]} {outputs} {outputs[0]} {pwd} {dspath} {{literal}}"


class As:
    """Commands run as one user (root: None) in a folder that user owns."""

    def __init__(self, user: pwd.struct_passwd | None, top: Path, slurm: Cluster) -> None:
        self.user, self.top, self.slurm = user, top, slurm

    def run(
        self, *args: str, cwd: Path | None = None, env: dict[str, str] | None = None
    ) -> subprocess.CompletedProcess[str]:
        extra = [f"{k}={v}" for k, v in {"SLURM_CONF": self.slurm.conf, **(env or {})}.items()]
        prefix = python_as(self.user)
        # python_as ends with the interpreter: put our variables before it
        command = [*prefix[:-1], *extra, *args]
        return subprocess.run(
            command, cwd=cwd or self.top, capture_output=True, text=True, check=False
        )

    def datalad(
        self, *args: str, cwd: Path | None = None, env: dict[str, str] | None = None
    ) -> subprocess.CompletedProcess[str]:
        python = python_as(self.user)[-1]
        return self.run(python, "-c", DATALAD, *args, cwd=cwd, env=env)

    def ok(self, *args: str, cwd: Path | None = None) -> str:
        proc = self.run(*args, cwd=cwd)
        assert proc.returncode == 0, (args, proc.stdout, proc.stderr)
        return proc.stdout


@pytest.fixture(params=["root", "dlstest"])
def user_top(request: pytest.FixtureRequest, slurm: Cluster) -> Iterator[As]:
    user = unprivileged_user() if request.param == "dlstest" else None
    if request.param == "dlstest" and user is None:
        pytest.fail("the unprivileged scenario needs root (to become dlstest)")
    top = Path(tempfile.mkdtemp(prefix="dls-ph-test-"))
    top.chmod(0o755)
    if user is not None:
        os.chown(top, user.pw_uid, user.pw_gid)
    try:
        yield As(user, top, slurm)
    finally:
        subprocess.run(["chmod", "-R", "u+w", str(top)], check=False)
        shutil.rmtree(top, ignore_errors=True)


def _dataset(who: As) -> Path:
    ds = who.top / "ds"
    created = who.datalad("create", str(ds))
    assert created.returncode == 0, created.stderr
    (ds / "code").mkdir()
    script = ds / "code" / "argv.sh"
    script.write_text(ARGV_SCRIPT)
    script.chmod(0o755)
    (ds / "data").mkdir()
    for name in INPUTS:
        (ds / name).write_text(f"content of {name}\n")
    if who.user is not None:
        subprocess.run(["chown", "-R", f"{who.user.pw_uid}:{who.user.pw_gid}", str(ds)], check=True)
    saved = who.datalad("save", "-m", "script and data", cwd=ds)
    assert saved.returncode == 0, saved.stderr
    return ds


def _clean(who: As, ds: Path) -> None:
    """git fsck --strict and git annex fsck find nothing wrong, and nothing is left over."""
    who.ok("git", "fsck", "--strict", cwd=ds)
    fsck = who.run("git", "annex", "fsck", "--json", cwd=ds)
    records = [json.loads(line) for line in fsck.stdout.splitlines() if line.strip()]
    assert fsck.returncode == 0 and records and all(r["success"] for r in records), fsck


def _wait_for_open_jobs(who: As, ds: Path) -> list[int]:
    listed = who.datalad("-f", "json", "finish", "--list-open-jobs", cwd=ds)
    assert listed.returncode == 0, listed.stderr
    results = [json.loads(line) for line in listed.stdout.splitlines() if line]
    jobs = [r["slurm_job_id"] for r in results if "slurm_job_id" in r]
    who.slurm.wait_done(jobs)
    return jobs


def _io_args() -> list[str]:
    return [
        *[a for path in INPUTS for a in ("-i", path)],
        *[a for path in OUTPUTS for a in ("-o", path)],
    ]


def _last_record(who: As, ds: Path) -> dict[str, object]:
    body = who.ok("git", "log", "-1", "--format=%B", cwd=ds)
    return json.loads(body.split("=== Do not change lines below ===")[1].split("^^^")[0])


def test_the_job_gets_the_argv_datalad_run_gives(user_top: As) -> None:
    who = user_top
    ds = _dataset(who)
    run_argv, job_argv = who.top / "run-argv.txt", who.top / "job-argv.txt"

    ran = who.datalad("run", *_io_args(), f"sh {COMMAND}", cwd=ds, env={"ARGV_FILE": str(run_argv)})
    assert ran.returncode == 0, ran.stderr
    expected = run_argv.read_text().splitlines()
    # what datalad run gives, spelled out: every path one argument, [N] a whole path
    assert expected == [
        *INPUTS,
        'data/say "hi".txt',
        *OUTPUTS,
        "res/with space",
        str(ds),
        str(ds),
        "{literal}",
    ]

    scheduled = who.datalad(
        "-f",
        "json",
        "schedule",
        *_io_args(),
        f"sbatch {COMMAND}",
        cwd=ds,
        env={"ARGV_FILE": str(job_argv)},
    )
    assert scheduled.returncode == 0, (scheduled.stdout, scheduled.stderr)
    submitted = json.loads(scheduled.stdout.splitlines()[-1])
    assert submitted["cmd"] == f"sbatch {COMMAND}"
    (job,) = _wait_for_open_jobs(who, ds)
    assert job == submitted["slurm_job_id"]
    assert job_argv.read_text().splitlines() == expected

    finished = who.datalad("finish", cwd=ds)
    assert finished.returncode == 0, (finished.stdout, finished.stderr)
    # the record keeps the command unexpanded, as datalad run records cmd
    record = _last_record(who, ds)
    assert record["cmd"] == f"sbatch {COMMAND}"
    assert record["inputs"] == INPUTS
    commit = who.ok("git", "rev-parse", "HEAD", cwd=ds).strip()

    # reschedule reads the record and fills the placeholders the same way again
    job_argv.unlink()
    again = who.datalad("reschedule", commit, cwd=ds, env={"ARGV_FILE": str(job_argv)})
    assert again.returncode == 0, (again.stdout, again.stderr)
    _wait_for_open_jobs(who, ds)
    assert job_argv.read_text().splitlines() == expected
    finished = who.datalad("finish", cwd=ds)
    assert finished.returncode == 0, (finished.stdout, finished.stderr)
    assert _last_record(who, ds)["cmd"] == f"sbatch {COMMAND}"
    _clean(who, ds)


MISSING_SCRIPT = """#!/bin/sh
mkdir -p "present/$1"
echo written > "present/$1/result.txt"
"""


def test_a_missing_output_is_reported_and_the_rest_committed(user_top: As) -> None:
    who = user_top
    ds = _dataset(who)
    script = ds / "code" / "partial.sh"
    script.write_text(MISSING_SCRIPT)
    script.chmod(0o755)
    if who.user is not None:
        os.chown(script, who.user.pw_uid, who.user.pw_gid)
    assert who.datalad("save", "-m", "partial job", cwd=ds).returncode == 0

    jobs = {}
    for name in ("plain", "json"):
        scheduled = who.datalad(
            "-f",
            "json",
            "schedule",
            "-o",
            f"present/{name}",
            "-o",
            f"never/{name}",
            "-o",
            f"gone {name}.txt",
            "sbatch",
            "code/partial.sh",
            name,
            cwd=ds,
        )
        assert scheduled.returncode == 0, (scheduled.stdout, scheduled.stderr)
        jobs[name] = json.loads(scheduled.stdout.splitlines()[-1])["slurm_job_id"]
        who.slurm.wait_done([jobs[name]])

    # the default rendering: one visible line per missing output, naming job and path
    plain = who.datalad("finish", str(jobs["plain"]), cwd=ds)
    lines = (plain.stdout + plain.stderr).splitlines()
    for missing in ("never/plain", "gone plain.txt"):
        warned = [line for line in lines if "impossible" in line and repr(missing) in line]
        assert len(warned) == 1, lines
        assert f"Slurm job {jobs['plain']}" in warned[0] and "does not exist" in warned[0]
    assert any(f"Slurm job {jobs['plain']}: Completed, committed" in line for line in lines)
    assert plain.returncode != 0, "a missing output must not pass silently"

    # -f json: one record per missing output, with the job and the path
    as_json = who.datalad("-f", "json", "finish", str(jobs["json"]), cwd=ds)
    results = [json.loads(line) for line in as_json.stdout.splitlines() if line.startswith("{")]
    warnings = [r for r in results if r.get("missing_output")]
    assert sorted(r["missing_output"] for r in warnings) == ["gone json.txt", "never/json"]
    for warning in warnings:
        assert warning["status"] == "impossible" and warning["slurm_job_id"] == jobs["json"]
        assert warning["path"] == str(ds / warning["missing_output"])
        assert str(jobs["json"]) in warning["message"]
    committed = [r for r in results if r.get("action") == "finish" and r.get("commit")]
    assert [r["slurm_job_id"] for r in committed] == [jobs["json"]]

    # both jobs were committed with what exists, and are no longer open
    log = who.ok("git", "log", "--format=%s", cwd=ds).splitlines()
    for job in jobs.values():
        assert f"[DATALAD SLURM RUN] Slurm job {job}: Completed" in log
    tracked = who.ok("git", "ls-files", cwd=ds).splitlines()
    assert "present/plain/result.txt" in tracked and "present/json/result.txt" in tracked
    assert not [path for path in tracked if path.startswith(("never/", "gone "))]
    assert _wait_for_open_jobs(who, ds) == []
    _clean(who, ds)
