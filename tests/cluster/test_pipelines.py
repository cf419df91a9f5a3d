"""Pipelines: dependencies derived from inputs (issue 20, items 1 and 4).

A job whose input an open job writes waits for it: ``schedule`` submits it with
``--dependency=afterok:<that job>`` (joined with a ``--dependency`` of the user's own),
``finish`` commits it only after that job, and a job whose job failed is reported, with
Slurm's reason, and closed (and cancelled with ``--cancel``), never committed. Before, the
second job of a chain started at once and read what was not written yet, the user had to
copy job ids by hand, and a dependant of a failed job sat PENDING without a word.

Every scenario runs the ``datalad`` command line as root and as the unprivileged account
(``actor``) on the accounting cluster with the hook installed, against real Slurm (22.05 in
the host tier, 24.11 and 26.05 in the chroot tiers).
"""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import time
from pathlib import Path
from typing import Any

from tests.conftest import Actor, assert_fsck_clean

#: stage.sh OUT EXIT [FILE...]: OUT/data.txt gets the files' lines and one line of its own
STAGE = """#!/bin/bash
set -e
out=$1; code=$2; shift 2
mkdir -p "$out"
cat "$@" /dev/null > "$out/data.txt"
echo "$out by job $SLURM_JOB_ID" >> "$out/data.txt"
sleep 2
exit "$code"
"""

#: the same, with a dependency of its own among its #SBATCH lines (filled in by the test)
OWN_DEPENDENCY = """#!/bin/bash
#SBATCH --dependency=afterany:{job}
exec code/stage.sh "$@"
"""


def _results(proc: subprocess.CompletedProcess[str]) -> list[dict[str, Any]]:
    assert "Traceback" not in proc.stderr + proc.stdout, proc.stderr
    return [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]


def _dataset(actor: Actor) -> Path:
    ds = actor.dataset()
    actor.write(ds / "code" / "stage.sh", STAGE)
    os.chmod(ds / "code" / "stage.sh", 0o755)
    actor.ok("save", "-m", "stage script", "--to-git", "code", cwd=ds)
    return ds


def _schedule(actor: Actor, ds: Path, *args: str) -> list[dict[str, Any]]:
    return _results(actor.datalad("-f", "json", "schedule", *args, cwd=ds))


def _submitted(actor: Actor, ds: Path, *args: str) -> dict[str, Any]:
    """A schedule that must succeed: its one result."""
    results = _schedule(actor, ds, *args)
    assert [r["status"] for r in results] == ["ok"], results
    return results[0]


def _finish(actor: Actor, ds: Path, *args: str) -> dict[int, dict[str, Any]]:
    """finish's own results, by Slurm job id (the commits' and the reports')."""
    results = _results(actor.datalad("-f", "json", "finish", *args, cwd=ds))
    return {r["slurm_job_id"]: r for r in results if r.get("action") == "finish"}


def _squeue(actor: Actor, job: int, field: str) -> str:
    """One field squeue shows for a job ('' if it does not list it)."""
    out = actor.cluster.run(
        "squeue", "-h", "-t", "all", "-j", str(job), "-O", f"{field}:0\x1f", check=False
    ).stdout
    return out.split("\x1f")[0].strip() if out else ""


def _waits_for(actor: Actor, job: int) -> set[str]:
    """The parts of a job's dependency as squeue shows them, their states dropped."""
    shown = _squeue(actor, job, "dependency")
    if shown in ("", "(null)"):
        return set()
    return {part.split("(")[0] for part in shown.replace("?", ",").split(",")}


def _wait_reason(actor: Actor, job: int, reason: str, timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if _squeue(actor, job, "reason") == reason:
            return
        time.sleep(0.5)
    raise AssertionError(
        f"job {job} never showed reason {reason} ({_squeue(actor, job, 'reason')})"
    )


def _records(ds: Path) -> list[dict[str, Any]]:
    """The run records on HEAD, oldest first."""
    log = subprocess.run(
        ["git", "-c", "safe.directory=*", "log", "--reverse", "--format=%B%x00"],
        cwd=ds,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    records = []
    for message in log.split("\0"):
        if "=== Do not change lines below ===" in message:
            block = message.split("=== Do not change lines below ===")[1]
            records.append(json.loads(block.split("^^^ Do not change lines above ^^^")[0]))
    return records


def _open_rows(ds: Path) -> dict[int, str]:
    uri = f"file:{ds / '.git/datalad-slurm/registry.sqlite'}?mode=ro"
    with sqlite3.connect(uri, uri=True) as conn:
        return dict(
            conn.execute(
                "SELECT job_id, state FROM jobs WHERE state IN ('submitting', 'open', 'committing')"
            )
        )


def _env(ds: Path, record: dict[str, Any]) -> dict[str, Any]:
    env = next(p for p in record["slurm_outputs"] if p.endswith(".env.json"))
    facts: dict[str, Any] = json.loads((ds / env).read_text())
    return facts


def _times(ds: Path, record: dict[str, Any]) -> tuple[int, int]:
    """(start, end) of a recorded job, from its env.json."""
    task = next(iter(_env(ds, record)["tasks"].values()))
    return int(task["start_time"]), int(task["end_time"])


def test_a_chain_whose_second_stage_fails(actor: Actor) -> None:
    """Three stages; stage 2 fails, so stage 3 never starts: reported with Slurm's reason,
    closed and cancelled by ``--close-failed-jobs --cancel``, never committed.  Beside it a
    stage 3 that Slurm cancels itself (``--kill-on-invalid-dep=yes``, what
    ``DependencyParameters=kill_invalid_depend`` does to all), and a stage 4 that waits for
    stage 3 (Slurm shows only 'Dependency' for it)."""
    ds = _dataset(actor)
    cluster = actor.cluster
    # stage 1 held by the user until everything is submitted: no stage ends too early
    one = _submitted(actor, ds, "-o", "s1", "sbatch", "--hold", "code/stage.sh", "s1", "0")
    a = int(one["slurm_job_id"])
    two = _submitted(
        actor, ds, "-i", "s1/data.txt", "-o", "s2", "sbatch", "code/stage.sh", "s2", "1",
        "s1/data.txt",
    )  # fmt: skip
    b = int(two["slurm_job_id"])
    assert two["depends_on"] == [a] and two["dependency"] == f"afterok:{a}", two
    assert f"reads the outputs of open job(s) {a}, waits for them: " in two["message"]
    assert f"--dependency=afterok:{a}" in two["message"]
    three = _submitted(
        actor, ds, "-i", "s2", "-o", "s3", "sbatch", "code/stage.sh", "s3", "0", "s2/data.txt"
    )
    c = int(three["slurm_job_id"])
    killed = _submitted(
        actor, ds, "-i", "s2/data.txt", "-o", "s3k",
        "sbatch", "--kill-on-invalid-dep=yes", "code/stage.sh", "s3k", "0", "s2/data.txt",
    )  # fmt: skip
    k = int(killed["slurm_job_id"])
    four = _submitted(
        actor, ds, "-i", "s3/*.txt", "-o", "s4", "sbatch", "code/stage.sh", "s4", "0",
        "s3/data.txt",
    )  # fmt: skip
    d = int(four["slurm_job_id"])
    assert _waits_for(actor, b) == {f"afterok:{a}"}
    assert _waits_for(actor, c) == {f"afterok:{b}"} == _waits_for(actor, k)
    assert _waits_for(actor, d) == {f"afterok:{c}"}
    cluster.run("scontrol", "release", str(a))
    cluster.wait_state(a, ["COMPLETED"], timeout=90)
    cluster.wait_state(b, ["FAILED"], timeout=90)
    _wait_reason(actor, c, "DependencyNeverSatisfied")
    cluster.wait_state(k, ["CANCELLED"], timeout=90)
    assert cluster.state(c) == "PENDING" and cluster.state(d) == "PENDING"

    reported = _finish(actor, ds)
    assert reported[a]["status"] == "ok" and "committed as" in reported[a]["message"]
    assert reported[b]["status"] == "impossible" and "FAILED" in reported[b]["message"]
    for job in (c, k, d):
        assert reported[job]["status"] == "impossible", reported[job]
        assert f"Slurm job {job} will never start" in reported[job]["message"]
    assert "DependencyNeverSatisfied" in reported[c]["message"]
    assert f"job {b}, which ended FAILED" in reported[c]["message"]
    assert "--close-failed-jobs --cancel" in reported[c]["message"]
    assert "Slurm cancelled it" in reported[k]["message"]
    assert f"job {c}, which will never start either" in reported[d]["message"]
    assert [r["slurm_job_id"] for r in _records(ds)] == [a]

    closed = _finish(actor, ds, "--close-failed-jobs", "--cancel")
    assert {job: r["status"] for job, r in closed.items()} == {b: "ok", c: "ok", k: "ok", d: "ok"}
    assert closed[c]["message"].startswith(f"Cancelled and closed Slurm job {c}")
    assert closed[d]["cancelled"] and closed[c]["cancelled"] and not closed[k]["cancelled"]
    for job in (c, d):
        cluster.wait_state(job, ["CANCELLED"], timeout=30)
    assert _open_rows(ds) == {}
    assert [r["slurm_job_id"] for r in _records(ds)] == [a]
    # never committed: the failed stage's files stay untracked, the later stages never ran
    assert not (ds / "s3").exists() and not (ds / "s4").exists() and not (ds / "s3k").exists()
    untracked = actor.ok("status", "--untracked", "all", cwd=ds)
    assert "s2/data.txt" in untracked
    assert_fsck_clean(ds, actor.user)


def test_a_diamond_is_committed_in_one_finish_in_dependency_order(actor: Actor) -> None:
    """Two jobs read what one writes, a fourth reads both: it waits for both, and one
    ``finish`` commits all four, every job after those it read from."""
    ds = _dataset(actor)
    cluster = actor.cluster
    top = _submitted(actor, ds, "-o", "top", "sbatch", "--hold", "code/stage.sh", "top", "0")
    a = int(top["slurm_job_id"])
    left = _submitted(
        actor, ds, "-i", "top/data.txt", "-o", "left", "sbatch", "code/stage.sh", "left", "0",
        "top/data.txt",
    )  # fmt: skip
    right = _submitted(
        actor, ds, "-i", "top", "-o", "right", "sbatch", "code/stage.sh", "right", "0",
        "top/data.txt",
    )  # fmt: skip
    b, c = int(left["slurm_job_id"]), int(right["slurm_job_id"])
    dry = _schedule(
        actor, ds, "--dry-run", "-i", "left", "-i", "right/*", "-o", "bottom",
        "sbatch", "code/stage.sh", "bottom", "0", "left/data.txt", "right/data.txt",
    )  # fmt: skip
    assert [r["status"] for r in dry] == ["ok"], dry
    assert f"wait for job {b}, job {c}" in dry[0]["message"], dry
    bottom = _submitted(
        actor, ds, "-i", "left", "-i", "right/*", "-o", "bottom",
        "sbatch", "code/stage.sh", "bottom", "0", "left/data.txt", "right/data.txt",
    )  # fmt: skip
    d = int(bottom["slurm_job_id"])
    assert bottom["depends_on"] == [b, c], bottom
    assert _waits_for(actor, d) == {f"afterok:{b}", f"afterok:{c}"}
    cluster.run("scontrol", "release", str(a))
    cluster.wait_done([a, b, c, d], timeout=120)
    # asked for alone, the bottom job is held back: what it read is not committed yet
    alone = _finish(actor, ds, str(d))
    assert alone[d]["status"] == "impossible" and alone[d]["waits_for"] == [b, c], alone
    assert "which are not committed yet: it is committed after them" in alone[d]["message"]
    assert _records(ds) == []

    finished = _finish(actor, ds)
    assert {job: r["status"] for job, r in finished.items()} == {j: "ok" for j in (a, b, c, d)}
    records = {r["slurm_job_id"]: r for r in _records(ds)}
    order = [r["slurm_job_id"] for r in _records(ds)]
    assert order[0] == a and order[-1] == d and set(order) == {a, b, c, d}, order
    assert records[b]["slurm_dependencies"] == [a] == records[c]["slurm_dependencies"]
    assert records[d]["slurm_dependencies"] == [b, c]
    assert records[d]["slurm_dependency"] == f"afterok:{b}:{c}"
    assert "slurm_dependencies" not in records[a]
    assert _env(ds, records[d])["depends_on"] == [b, c]
    # the bottom job read both branches, each of which had read the top
    lines = (ds / "bottom" / "data.txt").read_text().splitlines()
    assert lines == [
        f"top by job {a}",
        f"left by job {b}",
        f"top by job {a}",
        f"right by job {c}",
        f"bottom by job {d}",
    ]
    assert _times(ds, records[d])[0] >= max(_times(ds, records[b])[1], _times(ds, records[c])[1])
    assert _times(ds, records[b])[0] >= _times(ds, records[a])[1]
    assert_fsck_clean(ds, actor.user)


def test_a_users_own_dependency_is_joined_with_ours(actor: Actor) -> None:
    """The user's ``--dependency`` (on the command line, in an ``#SBATCH`` line) is kept and
    ours added: the job waits for both.  A ``?`` list cannot take ours and is refused, the
    job cancelled unstarted; ``--no-auto-dependency`` leaves the user's as it is."""
    ds = _dataset(actor)
    cluster = actor.cluster
    own = cluster.submit("--hold", "-o", "/dev/null", "--wrap", "true", cwd="/tmp")
    actor.write(ds / "code" / "own.sh", OWN_DEPENDENCY.format(job=own))
    os.chmod(ds / "code" / "own.sh", 0o755)
    actor.ok("save", "-m", "script with a dependency", "--to-git", "code", cwd=ds)
    first = _submitted(actor, ds, "-o", "p", "sbatch", "--hold", "code/stage.sh", "p", "0")
    a = int(first["slurm_job_id"])
    line = _submitted(
        actor, ds, "-i", "p", "-o", "q", "sbatch", f"--dependency=afterany:{own}",
        "code/stage.sh", "q", "0", "p/data.txt",
    )  # fmt: skip
    b = int(line["slurm_job_id"])
    assert line["dependency"] == f"afterany:{own},afterok:{a}", line
    assert "its own joined with ours" in line["message"]
    script = _submitted(
        actor, ds, "-i", "p/data.txt", "-o", "r", "sbatch", "code/own.sh", "r", "0", "p/data.txt"
    )
    c = int(script["slurm_job_id"])
    assert script["dependency"] == f"afterany:{own},afterok:{a}", script
    for job in (b, c):
        assert _waits_for(actor, job) == {f"afterany:{own}", f"afterok:{a}"}
    any_of = _schedule(
        actor, ds, "-i", "p", "-o", "s", "sbatch", f"--dependency=afterany:{own}?afterok:{own}",
        "code/stage.sh", "s", "0",
    )  # fmt: skip
    assert [r["status"] for r in any_of] == ["error"], any_of
    message = any_of[0]["message"]
    assert f"'afterany:{own}?afterok:{own}'" in message and f"afterok:{a}" in message, message
    assert "--no-auto-dependency" in message and "cancelled before it could start" in message
    cluster.wait_state(int(any_of[0]["slurm_job_id"]), ["CANCELLED"], timeout=30)
    plain = _submitted(
        actor, ds, "--no-auto-dependency", "-i", "p", "-o", "t", "sbatch",
        f"--dependency=afterany:{own}", "code/stage.sh", "t", "0",
    )  # fmt: skip
    e = int(plain["slurm_job_id"])
    assert plain["depends_on"] == [] and "dependency" not in plain, plain
    assert _waits_for(actor, e) == {f"afterany:{own}"}
    # the first job ends: b and c still wait for the user's job
    cluster.run("scontrol", "release", str(a))
    cluster.wait_state(a, ["COMPLETED"], timeout=90)
    # ours is met (Slurm drops a met part once it looks again), the user's is not
    deadline = time.monotonic() + 60
    while _waits_for(actor, b) != {f"afterany:{own}"} and time.monotonic() < deadline:
        time.sleep(0.5)
    assert _waits_for(actor, b) == {f"afterany:{own}"} == _waits_for(actor, c)
    assert cluster.state(b) == cluster.state(c) == cluster.state(e) == "PENDING"
    cluster.run("scontrol", "release", str(own))
    cluster.wait_done([own, b, c, e], timeout=120)
    finished = _finish(actor, ds)
    assert {job: r["status"] for job, r in finished.items()} == {j: "ok" for j in (a, b, c, e)}
    records = {r["slurm_job_id"]: r for r in _records(ds)}
    assert records[b]["slurm_dependency"] == f"afterany:{own},afterok:{a}"
    assert records[b]["slurm_dependencies"] == [a] == records[c]["slurm_dependencies"]
    assert "slurm_dependencies" not in records[e]
    assert_fsck_clean(ds, actor.user)


def test_reschedule_since_runs_a_chain_again_as_a_chain(actor: Actor) -> None:
    """``reschedule --since`` of a recorded chain: the new jobs wait for each other as the
    old ones did, and one ``finish`` commits them in that order."""
    ds = _dataset(actor)
    cluster = actor.cluster
    base = _head(ds)
    a = int(_submitted(actor, ds, "-o", "x", "sbatch", "code/stage.sh", "x", "0")["slurm_job_id"])
    b = int(
        _submitted(
            actor, ds, "-i", "x", "-o", "y", "sbatch", "code/stage.sh", "y", "0", "x/data.txt"
        )["slurm_job_id"]
    )
    c = int(
        _submitted(
            actor, ds, "-i", "y/data.txt", "-o", "z", "sbatch", "code/stage.sh", "z", "0",
            "y/data.txt",
        )["slurm_job_id"]
    )  # fmt: skip
    cluster.wait_done([a, b, c], timeout=120)
    first = _finish(actor, ds)
    assert {job: r["status"] for job, r in first.items()} == {a: "ok", b: "ok", c: "ok"}
    old = {r["slurm_job_id"]: r for r in _records(ds)}
    assert old[c]["slurm_dependencies"] == [b]

    again = _results(actor.datalad("-f", "json", "reschedule", "--since", base, cwd=ds))
    assert [r["status"] for r in again] == ["ok", "ok", "ok"], again
    a2, b2, c2 = (int(r["slurm_job_id"]) for r in again)
    assert again[0]["depends_on"] == []
    assert again[1]["depends_on"] == [a2] and again[2]["depends_on"] == [b2], again
    # c2 cannot have started: it waits for b2, which waits for a2 (2 s each)
    assert _waits_for(actor, c2) == {f"afterok:{b2}"}
    cluster.wait_done([a2, b2, c2], timeout=120)
    second = _finish(actor, ds)
    assert {job: r["status"] for job, r in second.items()} == {a2: "ok", b2: "ok", c2: "ok"}
    records = _records(ds)
    assert [r["slurm_job_id"] for r in records] == [a, b, c, a2, b2, c2]
    new = {r["slurm_job_id"]: r for r in records}
    assert new[b2]["slurm_dependencies"] == [a2] and new[c2]["slurm_dependencies"] == [b2]
    assert new[c2]["slurm_dependency"] == f"afterok:{b2}"
    assert _times(ds, new[b2])[0] >= _times(ds, new[a2])[1]
    assert _times(ds, new[c2])[0] >= _times(ds, new[b2])[1]
    assert (ds / "z" / "data.txt").read_text().splitlines() == [
        f"x by job {a2}",
        f"y by job {b2}",
        f"z by job {c2}",
    ]
    assert_fsck_clean(ds, actor.user)


def _head(ds: Path) -> str:
    return subprocess.run(
        ["git", "-c", "safe.directory=*", "rev-parse", "HEAD"],
        cwd=ds,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()


def test_a_jobs_file_line_waits_for_an_earlier_lines_job(actor: Actor) -> None:
    """``--jobs-from``: a later line reading an earlier line's outputs waits for its job
    (still held in the same batch); a line reading what a failed line would have written
    is refused; ``finish`` commits the lines' jobs in order."""
    ds = _dataset(actor)
    jobs = ds.parent / "jobs.jsonl"
    lines = [
        {"cmd": "sbatch --hold code/stage.sh j1 0", "outputs": ["j1"]},
        {
            "cmd": "sbatch code/stage.sh j2 0 j1/data.txt",
            "outputs": ["j2"],
            "inputs": ["j1/data.txt"],
        },
        # a glob that matches nothing until the job before it wrote
        {"cmd": "sbatch code/stage.sh j3 0 j2/data.txt", "outputs": "j3", "inputs": "j2/*.txt"},
        {"cmd": "false", "outputs": ["broken"]},
        {"cmd": "sbatch code/stage.sh j5 0", "outputs": ["j5"], "inputs": ["broken/data.txt"]},
    ]
    actor.write(jobs, "".join(json.dumps(line) + "\n" for line in lines))
    results = _results(actor.datalad("-f", "json", "schedule", "--jobs-from", str(jobs), cwd=ds))
    assert [r["status"] for r in results] == ["ok", "ok", "ok", "error", "error"], results
    a, b, c = (int(r["slurm_job_id"]) for r in results[:3])
    assert results[1]["depends_on"] == [a] and results[2]["depends_on"] == [b], results
    assert "'broken/data.txt' overlaps 'broken' of job 4" in results[4]["message"], results
    assert _waits_for(actor, b) == {f"afterok:{a}"} and _waits_for(actor, c) == {f"afterok:{b}"}
    assert sorted(_open_rows(ds)) == [a, b, c]
    actor.cluster.run("scontrol", "release", str(a))
    actor.cluster.wait_done([a, b, c], timeout=120)
    finished = _finish(actor, ds)
    assert {job: r["status"] for job, r in finished.items()} == {a: "ok", b: "ok", c: "ok"}
    assert [r["slurm_job_id"] for r in _records(ds)] == [a, b, c]
    assert (ds / "j3" / "data.txt").read_text().splitlines() == [
        f"j1 by job {a}",
        f"j2 by job {b}",
        f"j3 by job {c}",
    ]
    assert_fsck_clean(ds, actor.user)
