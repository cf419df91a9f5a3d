"""What the command line answers to job ids, dry runs, ``--since=`` and cron (issue 17).

Each scenario runs the ``datalad`` command line as root and as the unprivileged
account (``actor``), against the accounting cluster with the hook installed.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from tests.conftest import Actor


def _json(out: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in out.splitlines() if line.startswith("{")]


def _git(ds: Path, *args: str) -> str:
    """git as root in a dataset another account may own."""
    return subprocess.run(
        ["git", "-c", "safe.directory=*", *args], cwd=ds, capture_output=True, text=True, check=True
    ).stdout


def _registry_digest(ds: Path) -> str:
    return hashlib.sha256((ds / ".git/datalad-slurm/registry.sqlite").read_bytes()).hexdigest()


def _open_jobs(actor: Actor, ds: Path) -> dict[int, str]:
    listed = _json(actor.ok("-f", "json", "finish", "--list-open-jobs", cwd=ds))
    return {r["slurm_job_id"]: r["slurm_job_status"] for r in listed if r.get("list_open_jobs")}


# -- item 4: job ids ------------------------------------------------------------------------


@contextlib.contextmanager
def _held(actor: Actor, output: str, *options: str) -> Iterator[tuple[Path, int]]:
    """A new dataset of the account's with one held job owning ``output``; cancelled after."""
    ds = actor.dataset()
    job = actor.schedule(ds, output, "sbatch", "--hold", *options, "code/job.sh")
    try:
        yield ds, job
    finally:
        actor.cluster.scancel(job)


def test_array_task_spellings_name_the_array_job(actor: Actor) -> None:
    with _held(actor, "out", "--array=0-9") as (ds, job):
        # int() would read N_9 as job N9, and 1_0 as job 10
        for given, says in [
            (f"{job}_9", f"{job}_9 is task 9 of array job {job}"),
            ("1_0", "1_0 is task 0 of array job 1"),
            (f"{job}_[1-3]", f"{job}_[1-3] names tasks [1-3] of array job {job}"),
            (f"{job}+1", f"{job}+1 is component 1 of heterogeneous job {job}"),
            (f"{job}.batch", f"{job}.batch is step batch of job {job}"),
            ("abc", "'abc' is not a Slurm job id; give the number sbatch printed"),
        ]:
            proc = actor.datalad("finish", given, cwd=ds)
            assert proc.returncode != 0, (given, proc.stdout)
            assert "Traceback" not in proc.stderr + proc.stdout
            assert f"finish(error): {ds} (dataset) [{says}" in proc.stdout, (given, proc.stdout)
            if "_" in given:
                whole = given.split("_")[0]
                assert f"takes whole jobs: datalad finish {whole}]" in proc.stdout
            # the same as a JSON record, and for --list-open-jobs
            for extra in ([], ["--list-open-jobs"]):
                record = _json(actor.datalad("-f", "json", "finish", given, *extra, cwd=ds).stdout)
                assert [r["status"] for r in record] == ["error"], (given, record)
                assert record[0]["message"].startswith(says)
        assert _open_jobs(actor, ds) == {job: "PENDING"}


def test_a_pending_job_asked_for_by_id_says_so(actor: Actor) -> None:
    with _held(actor, "out") as (ds, job):
        shown = actor.ok("finish", str(job), cwd=ds)
        assert f"finish(notneeded): {ds} (dataset) [Slurm job {job} is PENDING" in shown
        assert f"it stays open: run 'datalad finish {job}' again once it has ended" in shown
        record = _json(actor.ok("-f", "json", "finish", str(job), cwd=ds))
        assert len(record) == 1 and record[0]["status"] == "notneeded"
        assert record[0]["state"] == "PENDING" and record[0]["stays_open"] is True
        assert record[0]["slurm_job_id"] == job
        # all jobs at once: still quiet about jobs that are merely running
        assert actor.ok("finish", cwd=ds) == ""
        assert _open_jobs(actor, ds) == {job: "PENDING"}


# -- item 5: --dry-run runs every check -------------------------------------------------------


def test_dry_run_refuses_what_schedule_refuses(actor: Actor) -> None:
    with _held(actor, "out/sub") as (ds, held):
        actor.write(ds / "kept.txt", "tracked\n")
        actor.ok("save", "-m", "kept", "kept.txt", cwd=ds)
        before = _registry_digest(ds)
        head = _git(ds, "rev-parse", "HEAD")
        dry = actor.datalad(
            "schedule",
            "--dry-run",
            "-o",
            "out/sub/x",
            "-i",
            "nope.txt",
            "sbatch",
            "code/job.sh",
            cwd=ds,
        )
        assert dry.returncode != 0 and "Traceback" not in dry.stderr + dry.stdout
        assert "dry run: 'sbatch code/job.sh' would be refused" in dry.stdout
        assert f"'out/sub/x' overlaps 'out/sub' of open job {held}" in dry.stdout
        assert "input(s) 'nope.txt' do not exist" in dry.stdout
        assert _registry_digest(ds) == before
        # the real thing refuses the same
        real = actor.datalad("schedule", "-o", "out/sub/x", "sbatch", "code/job.sh", cwd=ds)
        assert real.returncode != 0 and f"overlaps 'out/sub' of open job {held}" in real.stdout
        missing = actor.datalad(
            "schedule", "-o", "free", "-i", "nope.txt", "sbatch", "code/job.sh", cwd=ds
        )
        assert missing.returncode != 0 and "nope.txt" in missing.stdout
        before = _registry_digest(ds)
        # what passes says what it would do, and does none of it
        fine = _json(
            actor.ok(
                "-f",
                "json",
                "schedule",
                "--dry-run",
                "-o",
                "kept.txt",
                "-i",
                "code/job.sh",
                "sbatch",
                "code/job.sh",
                cwd=ds,
            )
        )
        assert [r["status"] for r in fine] == ["ok"] and fine[0]["dry_run"] is True
        assert fine[0]["would_unlock"] == ["kept.txt"]
        assert (ds / "kept.txt").is_symlink()  # not unlocked
        # two requests of one --jobs-from dry run meet each other as real ones would
        jobs = ds.parent / "jobs.jsonl"
        jobs.write_text(
            '{"cmd": "sbatch code/job.sh", "outputs": ["new"]}\n'
            '{"cmd": "sbatch code/job.sh", "outputs": ["new/deeper"]}\n'
        )
        many = _json(
            actor.datalad(
                "-f", "json", "schedule", "--dry-run", "--jobs-from", str(jobs), cwd=ds
            ).stdout
        )
        assert [r["status"] for r in many] == ["ok", "error"], many
        assert "'new/deeper' overlaps 'new'" in many[1]["message"]
        assert _registry_digest(ds) == before
        assert _open_jobs(actor, ds) == {held: "PENDING"}
        assert _git(ds, "rev-parse", "HEAD") == head


def test_dry_run_in_a_dataset_without_a_registry_creates_none(actor: Actor) -> None:
    ds = actor.dataset()
    out = actor.ok("schedule", "--dry-run", "-o", "out", "sbatch", "code/job.sh", cwd=ds)
    assert "would submit 'sbatch code/job.sh' from . with outputs ['out']" in out
    assert not (ds / ".git/datalad-slurm/registry.sqlite").exists()


# -- item 7: reschedule --since= ---------------------------------------------------------------


def test_reschedule_since_empty_takes_every_record_from_the_root(actor: Actor) -> None:
    ds = actor.dataset()
    first = actor.schedule(ds, "a", "sbatch", "-o", "a/%j.log", "code/job.sh")
    second = actor.schedule(ds, "b", "sbatch", "-o", "b/%j.log", "code/job.sh")
    actor.cluster.wait_done([first, second])
    actor.ok("finish", cwd=ds)
    # a job id where the record's commit belongs: the answer names the commit
    record = _git(ds, "log", "--format=%h", "--fixed-strings", f"--grep=Slurm job {first}:")
    for given in (str(first), f"{first}_0"):
        by_id = actor.datalad("reschedule", given, cwd=ds)
        assert by_id.returncode != 0 and "Traceback" not in by_id.stderr
        assert f"job {first}'s record is commit {record.strip()}" in by_id.stdout, by_id.stdout
    report = _json(actor.ok("-f", "json", "reschedule", "--since=", "--report", cwd=ds))
    assert [r["outputs"] for r in report] == [["a"], ["b"]], report
    assert all(r["status"] == "ok" for r in report)
    again = _json(actor.ok("-f", "json", "reschedule", "--since=", cwd=ds))
    jobs = [r["slurm_job_id"] for r in again if r.get("status") == "ok"]
    assert len(jobs) == 2 and not {first, second} & set(jobs), again
    actor.cluster.wait_done(jobs)
    actor.ok("finish", cwd=ds)
    log = _git(ds, "log", "--format=%s")
    for job in jobs:
        assert f"[DATALAD SLURM RUN] Slurm job {job}: Completed" in log


# -- item 8: cron reports news ---------------------------------------------------------------


def _cron(actor: Actor, ds: Path) -> subprocess.CompletedProcess[str]:
    proc = actor.datalad("finish", "--cron", cwd=ds)
    assert "Traceback" not in proc.stderr + proc.stdout
    return proc


def _wait_event_end(actor: Actor, job: int, after: int = 0, timeout: float = 60) -> int:
    """The end time of the job's newest event in the account's spool, once it is after ``after``."""
    uid = actor.user.pw_uid if actor.user else None
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        ends = [
            e.get("end_time") or 0
            for e in actor.cluster.events(uid)
            if e.get("job_id") == job and (e.get("end_time") or 0) > after
        ]
        if ends:
            return max(ends)
        time.sleep(0.2)
    raise AssertionError(f"no event for job {job} ending after {after}")


def test_cron_reports_a_failure_once_and_again_when_it_changes(actor: Actor) -> None:
    ds = actor.dataset()
    bad = actor.schedule(ds, "bad", "sbatch", "--requeue", "-o", "bad/%j.log", "code/job.sh", "3")
    actor.cluster.wait_done([bad])
    ended = _wait_event_end(actor, bad)
    first = _cron(actor, ds)
    assert first.returncode != 0 and f"Statuses: {bad}: FAILED" in first.stderr
    assert first.stdout == ""
    # the same failure again: nothing to say, nothing for cron to mail
    second = _cron(actor, ds)
    assert (second.returncode, second.stdout, second.stderr) == (0, "", "")
    # a finish by hand and the listing still show it
    manual = actor.datalad("finish", cwd=ds)
    assert manual.returncode != 0 and f"Statuses: {bad}: FAILED" in manual.stdout
    assert _open_jobs(actor, ds) == {bad: "FAILED"}
    # another job failing is news; the old one stays quiet
    other = actor.schedule(ds, "other", "sbatch", "-o", "other/%j.log", "code/job.sh", "4")
    actor.cluster.wait_done([other])
    _wait_event_end(actor, other)
    third = _cron(actor, ds)
    assert third.returncode != 0 and f"Statuses: {other}: FAILED" in third.stderr
    assert f"job {bad} " not in third.stderr
    # the job runs again and fails again: its state changed, so it is news once more
    time.sleep(1.1)  # a later end time
    actor.cluster.run("scontrol", "requeue", str(bad))
    actor.cluster.run("scontrol", "update", f"jobid={bad}", "starttime=now")
    actor.cluster.wait_state(bad, ["FAILED"])
    _wait_event_end(actor, bad, after=ended)
    fourth = _cron(actor, ds)
    assert fourth.returncode != 0 and f"Statuses: {bad}: FAILED" in fourth.stderr
    assert f"job {other} " not in fourth.stderr
    assert _cron(actor, ds).returncode == 0
    closed = actor.ok("finish", "--close-failed-jobs", cwd=ds)
    assert f"{bad}: FAILED" in closed and f"{other}: FAILED" in closed
