"""A job's Slurm log files are outputs of the job (issue 17, item 1).

Before: two open jobs with the same log name (``#SBATCH -o logs/run.log``) were both
accepted; the first job's log was committed into the annex, and the second wrote through the
annex link (as root into the annex object: ``git annex fsck`` failed; as a user it could not
open its log). Now a job is submitted held, its log files (every array task's) are reserved
beside its outputs, and a collision cancels it before it could start: nothing registered.

Every scenario runs the ``datalad`` command line as root and as the unprivileged account
(``actor``), on the accounting cluster with the hook installed.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import sqlite3
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

from tests.conftest import Actor

LOG_SCRIPT = """#!/bin/bash
#SBATCH -o logs/run.log
echo "job $SLURM_JOB_ID wrote this"
mkdir -p "$1" && echo "$SLURM_JOB_ID" > "$1/result"
"""


def _results(proc: subprocess.CompletedProcess[str]) -> list[dict[str, Any]]:
    assert "Traceback" not in proc.stderr + proc.stdout, proc.stderr
    return [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]


def _schedule(actor: Actor, ds: Path, *args: str) -> list[dict[str, Any]]:
    return _results(actor.datalad("-f", "json", "schedule", *args, cwd=ds))


def _as(actor: Actor, *command: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """A command as the actor (git-annex refuses a repository of another account)."""
    prefix = ["runuser", "-u", actor.user.pw_name, "--"] if actor.user else []
    identity = [f"GIT_{who}_{what}=T" for who in ("AUTHOR", "COMMITTER") for what in ("NAME",)]
    identity += [f"GIT_{who}_EMAIL=t@example.org" for who in ("AUTHOR", "COMMITTER")]
    return subprocess.run(
        [*prefix, "env", *identity, *command], cwd=cwd, capture_output=True, text=True
    )


def _git(ds: Path, *args: str) -> str:
    return subprocess.run(
        ["git", "-c", "safe.directory=*", *args], cwd=ds, capture_output=True, text=True, check=True
    ).stdout


def _dataset(actor: Actor) -> Path:
    """The actor's dataset with ``code/log.sh`` (logs to logs/run.log) and a ``logs`` folder."""
    ds = actor.dataset()
    actor.write(ds / "code" / "log.sh", LOG_SCRIPT)
    os.chmod(ds / "code" / "log.sh", 0o755)
    actor.ok("save", "-m", "log script", "--to-git", "code", cwd=ds)
    _folder(actor, ds / "logs")
    return ds


def _folder(actor: Actor, path: Path) -> None:
    path.mkdir(parents=True, exist_ok=True)
    if actor.user is not None:
        os.chown(path, actor.user.pw_uid, actor.user.pw_gid)


def _registry(ds: Path) -> tuple[dict[int, str], dict[str, int | None]]:
    """Rows (Slurm job id -> state) and reservations (path -> Slurm job id), read-only."""
    uri = f"file:{ds / '.git/datalad-slurm/registry.sqlite'}?mode=ro"
    with sqlite3.connect(uri, uri=True) as conn:
        rows = dict(conn.execute("SELECT job_id, state FROM jobs WHERE job_id IS NOT NULL"))
        held = dict(
            conn.execute("SELECT r.path, j.job_id FROM reservations r JOIN jobs j ON j.id = r.job")
        )
    return rows, held


def _refused(results: list[dict[str, Any]], *named: str) -> int:
    """The one result is an error naming everything in ``named``; the id of the job Slurm took
    and schedule cancelled."""
    assert [r["status"] for r in results] == ["error"], results
    for text in named:
        assert text in results[0]["message"], (text, results[0]["message"])
    assert "nothing was registered" in results[0]["message"]
    return int(results[0]["slurm_job_id"])


def _never_ran(actor: Actor, ds: Path, job: int) -> None:
    """Slurm cancelled the job before it had a node; the registry never heard of it."""
    shown = actor.cluster.run("scontrol", "show", "job", "-o", str(job)).stdout
    assert "JobState=CANCELLED" in shown, shown
    assert re.search(r"\bNodeList=(\(null\))?\s", shown) and "BatchHost=" not in shown, shown
    if actor.cluster.accounting:
        deadline = time.monotonic() + 30
        record = ""
        while time.monotonic() < deadline:
            record = actor.cluster.run(
                "sacct", "-n", "-X", "-P", "-o", "State,NodeList,Elapsed", "-j", str(job)
            ).stdout.strip()
            if record:
                break
            time.sleep(0.5)
        state, nodes, elapsed = record.split("|")
        assert state.startswith("CANCELLED") and nodes == "None assigned", record
        assert elapsed == "00:00:00", record
    assert job not in _registry(ds)[0]


def _fsck(actor: Actor, ds: Path) -> None:
    _git(ds, "fsck", "--strict")
    fsck = _as(actor, "git", "annex", "fsck", "--json", cwd=ds)
    records = [json.loads(line) for line in fsck.stdout.splitlines() if line.strip()]
    assert fsck.returncode == 0 and all(r["success"] for r in records), fsck


def _annexed_text(ds: Path, path: str) -> str:
    """The committed content of a file (annexed or not)."""
    assert path in _git(ds, "ls-files", "--", path).split("\n"), path
    return (ds / path).read_text()


def test_a_shared_log_name_is_refused_while_the_first_job_is_open(actor: Actor) -> None:
    ds = _dataset(actor)
    first = _schedule(actor, ds, "-o", "out/a", "sbatch", "code/log.sh", "out/a")
    assert [r["status"] for r in first] == ["ok"], first
    a = int(first[0]["slurm_job_id"])
    # the dry run says what the real schedule will say
    dry = _schedule(actor, ds, "--dry-run", "-o", "out/b", "sbatch", "code/log.sh", "out/b")
    assert [r["status"] for r in dry] == ["error"], dry
    assert f"open job {a}" in dry[0]["message"] and "'logs/run.log'" in dry[0]["message"]
    second = _schedule(actor, ds, "-o", "out/b", "sbatch", "code/log.sh", "out/b")
    b = _refused(second, "Slurm job ", f"open job {a}", "'logs/run.log'", "cancelled")
    _never_ran(actor, ds, b)
    assert not (ds / "out" / "b").exists()
    assert _registry(ds)[1] == {"out/a": a, "logs/run.log": a}
    assert first[0]["logs"] == ["logs/run.log"]
    actor.cluster.wait_done([a])
    actor.ok("finish", cwd=ds)
    assert _annexed_text(ds, "logs/run.log") == f"job {a} wrote this\n"
    # the committed log is a file git tracks: a job that would write into it is refused
    third = _schedule(actor, ds, "-o", "out/c", "sbatch", "code/log.sh", "out/c")
    c = _refused(third, "'logs/run.log'", "which git tracks", "cancelled")
    _never_ran(actor, ds, c)
    assert _annexed_text(ds, "logs/run.log") == f"job {a} wrote this\n"
    assert _registry(ds)[1] == {}
    _fsck(actor, ds)


def test_a_log_inside_another_open_jobs_output_is_refused(actor: Actor) -> None:
    ds = _dataset(actor)
    for folder in ("results", "shared"):
        _folder(actor, ds / folder)
    holder = actor.schedule(ds, "results", "sbatch", "-o", "results/%j.log", "code/job.sh")
    inside = _schedule(actor, ds, "-o", "other", "sbatch", "-o", "results/b.log", "code/job.sh")
    b = _refused(inside, f"an output of open job {holder}", "'results/b.log'")
    _never_ran(actor, ds, b)
    # the other way round: an output over an open job's log is an output conflict
    logger = actor.schedule(ds, "mine", "sbatch", "-o", "shared/c.log", "code/job.sh")
    over = _schedule(actor, ds, "-o", "shared", "sbatch", "code/job.sh")
    assert [r["status"] for r in over] == ["error"], over
    assert f"'shared/c.log' of open job {logger}" in over[0]["message"]
    # a --jobs-from file: the second of two lines with one log name is refused
    jobs = ds.parent / "jobs.jsonl"
    lines = [{"cmd": "sbatch -o batch.log code/job.sh", "outputs": [f"b{n}"]} for n in (1, 2)]
    actor.write(jobs, "".join(json.dumps(line) + "\n" for line in lines))
    batch = _results(actor.datalad("-f", "json", "schedule", "--jobs-from", str(jobs), cwd=ds))
    assert [r["status"] for r in batch] == ["ok", "error"], batch
    first = int(batch[0]["slurm_job_id"])
    assert f"open job {first}" in batch[1]["message"] and "'batch.log'" in batch[1]["message"]
    assert batch[1]["message"].startswith("job 2 (")
    _never_ran(actor, ds, int(batch[1]["slurm_job_id"]))
    rows = _registry(ds)[0]
    assert sorted(rows) == sorted([holder, logger, first]), rows
    actor.cluster.wait_done([holder, logger, first])
    finished = _results(actor.datalad("-f", "json", "finish", cwd=ds))
    done = {r["slurm_job_id"] for r in finished if r["action"] == "finish" and r["status"] == "ok"}
    assert done == {holder, logger, first}, finished
    assert _git(ds, "ls-files", "shared/c.log", "batch.log").split() == [
        "batch.log",
        "shared/c.log",
    ]
    _fsck(actor, ds)


def test_array_task_logs_are_reserved_each(actor: Actor) -> None:
    ds = _dataset(actor)
    for folder in ("alogs", "aerr"):
        _folder(actor, ds / folder)
    results = _schedule(
        actor,
        ds,
        "-o",
        "arr",
        "sbatch",
        "--array=0-2",
        "-o",
        "alogs/%A_%a.out",
        # an array task's %j is its own job id, given when it starts: the folder is reserved
        "-e",
        "aerr/%x-%j.err",
        "code/log.sh",
        "arr",
    )
    assert [r["status"] for r in results] == ["ok"], results
    array = int(results[0]["slurm_job_id"])
    names = [f"alogs/{array}_{task}.out" for task in range(3)]
    held = _registry(ds)[1]
    assert all(held.get(name) == array for name in [*names, "aerr"]), held
    assert results[0]["logs"] == sorted(["aerr", *names])
    task_log = _schedule(actor, ds, "-o", "x", "sbatch", "-o", names[1], "code/job.sh")
    _never_ran(actor, ds, _refused(task_log, f"open job {array}", repr(names[1])))
    err_log = _schedule(actor, ds, "-o", "y", "sbatch", "-o", "aerr/mine.err", "code/job.sh")
    _never_ran(actor, ds, _refused(err_log, f"open job {array}", "'aerr'"))
    actor.cluster.wait_done([array])
    actor.ok("finish", cwd=ds)
    committed = _git(ds, "show", "--name-only", "--format=", "HEAD").split()
    assert set(names) <= set(committed), committed
    assert len([p for p in committed if p.startswith("aerr/log.sh-")]) == 3, committed
    assert _registry(ds)[1] == {}
    _fsck(actor, ds)


def test_logs_outside_the_dataset_are_left_alone(actor: Actor) -> None:
    ds = _dataset(actor)
    outside = actor.folder()
    results = _schedule(
        actor,
        ds,
        "-o",
        "out",
        "sbatch",
        "-o",
        f"{outside}/%j.out",
        "-e",
        "logs/%j.err",
        "code/log.sh",
        "out",
    )
    assert [r["status"] for r in results] == ["ok"], results
    job = int(results[0]["slurm_job_id"])
    # only the log inside the dataset is reserved, beside the output
    assert _registry(ds)[1] == {"out": job, f"logs/{job}.err": job}
    actor.cluster.wait_done([job])
    assert (outside / f"{job}.out").read_text() == f"job {job} wrote this\n"
    actor.ok("finish", cwd=ds)
    assert (
        _git(ds, "log", "-1", "--format=%s") == f"[DATALAD SLURM RUN] Slurm job {job}: Completed\n"
    )
    committed = _git(ds, "ls-files", "out", "logs").split()
    assert f"logs/{job}.err" in committed and "out/result" in committed, committed
    _fsck(actor, ds)


def test_a_schedule_whose_registration_was_closed_meanwhile_cancels_its_job(
    actor: Actor,
) -> None:
    """sbatch answers after more than 10 minutes (slurmctld away), and meanwhile 'finish
    --close-failed-jobs' closed the registration: the schedule cancels the held job, which
    never runs, says so and names it; the outputs are free again."""
    ds = _dataset(actor)
    folder = actor.folder()
    waiting, gate = folder / "waiting", folder / "go"
    real = actor.run("sh", "-c", "command -v sbatch", cwd=ds).stdout.strip()
    slow = folder / "slow-sbatch"
    actor.write(
        slow,
        f"#!/bin/sh\ntouch {waiting}\n"
        f'while [ ! -e {gate} ]; do sleep 0.1; done\nexec {real} "$@"\n',
    )
    os.chmod(slow, 0o755)
    proc = subprocess.Popen(
        actor.command(
            "-f",
            "json",
            "schedule",
            "-o",
            "late",
            "sbatch",
            "code/job.sh",
            env={"DATALAD_SLURM_SBATCH": str(slow)},
        ),
        cwd=ds,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 120
        while not waiting.exists():
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "the schedule never ran sbatch"
            time.sleep(0.1)
        registry = ds / ".git/datalad-slurm/registry.sqlite"
        with contextlib.closing(sqlite3.connect(registry)) as conn, conn:
            conn.execute("UPDATE jobs SET submitted_at = submitted_at - 700 WHERE job_id IS NULL")
        closed = _results(actor.datalad("-f", "json", "finish", "--close-failed-jobs", cwd=ds))
        assert [(r["status"], r["message"][:40]) for r in closed] == [
            ("ok", "Closing interrupted submission of 'sbatc")
        ], closed
    finally:
        gate.touch()
        out, err = proc.communicate(timeout=300)
    assert proc.returncode != 0 and "Traceback" not in err, (out, err)
    [said] = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    assert (said["status"], said.get("cancelled")) == ("error", True), said
    job = int(said["slurm_job_id"])
    assert said["message"] == (
        "'datalad finish --close-failed-jobs' closed the registration of "
        f"Slurm job {job} while this schedule waited for Slurm (more than 10 minutes): "
        "schedule it again. It was cancelled before it could start; nothing was "
        "registered, the outputs are free again"
    ), said
    shown = actor.cluster.run("scontrol", "show", "job", "-o", str(job)).stdout
    assert "JobState=CANCELLED" in shown and "BatchHost=" not in shown, shown
    assert _registry(ds)[0][job] == "closed"
    again = _schedule(actor, ds, "-o", "late", "sbatch", "--hold", "code/job.sh")
    assert [r["status"] for r in again] == ["ok"], again
    actor.cluster.scancel(int(again[0]["slurm_job_id"]))


def test_a_held_job_stays_held_and_a_killed_schedule_leaves_it_held(actor: Actor) -> None:
    ds = _dataset(actor)
    asked = _schedule(actor, ds, "-o", "h1", "sbatch", "--hold", "-o", "h1.log", "code/job.sh")
    actor.write(ds / "code" / "held.sh", "#!/bin/sh\n#SBATCH --hold\n#SBATCH -o h2.log\ntrue\n")
    actor.ok("save", "-m", "held script", "--to-git", "code", cwd=ds)
    in_script = _schedule(actor, ds, "-o", "h2", "sbatch", "code/held.sh")
    jobs = []
    for results, log in ((asked, "h1.log"), (in_script, "h2.log")):
        assert [r["status"] for r in results] == ["ok"], results
        jobs.append(int(results[0]["slurm_job_id"]))
        assert "held, as asked" in results[0]["message"] and results[0]["logs"] == [log]
    # a schedule killed right after sbatch: the job stays held, it never runs unregistered
    noted = actor.folder() / "job-id"
    wrappers = set(Path(tempfile.gettempdir()).glob("datalad-slurm-sbatch-*"))
    killed = actor.datalad(
        "schedule", "-o", "k", f"sbatch --parsable code/job.sh > {noted}; kill -9 $PPID", cwd=ds
    )
    assert killed.returncode != 0, killed
    # the folder of the sbatch wrapper the killed schedule could not remove
    uid = actor.user.pw_uid if actor.user else os.getuid()
    for left in set(Path(tempfile.gettempdir()).glob("datalad-slurm-sbatch-*")) - wrappers:
        if left.stat().st_uid == uid:
            shutil.rmtree(left, ignore_errors=True)
    stray = int(noted.read_text().strip())
    time.sleep(3)  # long enough for an idle cluster to start and end it
    for job in [*jobs, stray]:
        shown = actor.cluster.run("scontrol", "show", "job", "-o", str(job)).stdout
        assert "JobState=PENDING" in shown and "Reason=JobHeldUser" in shown, shown
    # as if the schedule had died just after it recorded the job id: finish tells, then
    # --close-failed-jobs cancels the held job
    registry = ds / ".git/datalad-slurm/registry.sqlite"
    with contextlib.closing(sqlite3.connect(registry)) as conn, conn:
        conn.execute(
            "UPDATE jobs SET job_id = ?, submitted_at = submitted_at - 700 WHERE job_id IS NULL",
            (stray,),
        )
    report = _results(actor.datalad("-f", "json", "finish", cwd=ds))
    said = [r for r in report if r.get("slurm_job_id") == stray]
    assert [r["status"] for r in said] == ["impossible"], report
    assert "held and has not started" in said[0]["message"]
    closed = _results(actor.datalad("-f", "json", "finish", "--close-failed-jobs", cwd=ds))
    assert [r["status"] for r in closed if r.get("slurm_job_id") == stray] == ["ok"], closed
    shown = actor.cluster.run("scontrol", "show", "job", "-o", str(stray)).stdout
    assert "JobState=CANCELLED" in shown and "BatchHost=" not in shown, shown
    assert _registry(ds)[0][stray] == "closed"
    actor.cluster.scancel(*jobs)
