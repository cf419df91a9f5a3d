"""Globs in inputs and outputs, as ``datalad run`` treats them (issue 17, item 2).

A glob output holds its fixed leading folder while its job is open, and ``finish`` commits
what it matches then; the record keeps the globs, or with ``--expand`` what they matched.
Each job runs beside a twin: the same globs through ``datalad run --explicit`` (and
``datalad rerun``) on a clone of the same dataset, whose record and commit ours must equal.

Every scenario runs the ``datalad`` command line as root and as the unprivileged account
(``actor``), on the accounting cluster with the hook installed.
"""

from __future__ import annotations

import json
import posixpath
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.cluster.test_cli_answers import _git, _json
from tests.conftest import Actor, run_as

#: the subject is globs in records and commits, against datalad run; Slurm only runs the jobs:
#: host and forky-jsoncli only (tests/conftest.py, AGNOSTIC_TIERS)
pytestmark = pytest.mark.slurm_agnostic

#: run from work/: writes its argv and its inputs into out/, one file out/ not matched, res/
GEN = """#!/bin/sh
mkdir -p ../out ../res
printf '%s\\n' "$@" > ../out/g1
cat ../data/*.txt > ../out/g2.txt
echo not declared > ../out/h1
echo result > ../res/r.txt
"""

INPUTS = ["../data/*.txt"]
OUTPUTS = ["../out/g*", "../res/*.txt", "../never/*.dat"]
#: what the record holds (dataset-relative), by --expand
RECORDED = {
    None: (["data/*.txt"], ["out/g*", "res/*.txt", "never/*.dat"]),
    "inputs": (["data/x.txt", "data/y.txt"], ["out/g*", "res/*.txt", "never/*.dat"]),
    "outputs": (["data/*.txt"], ["out/g1", "out/g2.txt", "res/r.txt", "never/*.dat"]),
    "both": (["data/x.txt", "data/y.txt"], ["out/g1", "out/g2.txt", "res/r.txt", "never/*.dat"]),
}


def _record(ds: Path, rev: str = "HEAD") -> dict[str, Any]:
    body = _git(ds, "log", "-1", "--format=%B", rev)
    block = body.split("=== Do not change lines below ===")[1].split("^^^ Do not change")[0]
    record: dict[str, Any] = json.loads(block)
    return record


def _dataset_relative(record: dict[str, Any], key: str) -> list[str]:
    """A record's paths relative to the dataset (ours are; datalad run's are relative to its
    pwd), a folder's trailing slash kept; our own files (logs, env.json) left out."""
    own = set(record.get("slurm_outputs", []))
    pwd = "." if "slurm_record_version" in record else record.get("pwd", ".")
    paths = []
    for path in record[key]:
        if path in own:
            continue
        normal = posixpath.normpath(posixpath.join(pwd, path))
        paths.append(normal + "/" if path.endswith("/") and normal != "." else normal)
    return paths


def _changes(ds: Path, record: dict[str, Any], rev: str = "HEAD") -> dict[str, str]:
    """What the commit changed, by path (A, M, D), without our own files."""
    own = set(record.get("slurm_outputs", []))
    listing = _git(ds, "diff-tree", "-r", "--no-commit-id", "--name-status", rev).splitlines()
    changes = dict(reversed(line.split("\t", 1)) for line in listing)
    return {path: status for path, status in changes.items() if path not in own}


def _as_owner(actor: Actor, ds: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """A command as the account that owns the dataset (git-annex writes into .git)."""
    return subprocess.run(
        [*run_as(actor.user), *args], cwd=ds, capture_output=True, text=True, check=False
    )


def _clean(actor: Actor, ds: Path) -> None:
    """git fsck --strict and git annex fsck (as the dataset's owner) find nothing wrong."""
    _git(ds, "fsck", "--strict")
    fsck = _as_owner(actor, ds, "git", "annex", "fsck", "--json")
    records = _json(fsck.stdout)
    assert fsck.returncode == 0 and records and all(r["success"] for r in records), fsck


def _twins(actor: Actor, script: str) -> tuple[Path, Path]:
    """Two clones of one dataset (code/gen.sh, data/x.txt and data/y.txt annexed, work/): ours
    and the twin for datalad run. Neither has the data's content yet."""
    top = actor.folder()
    origin = top / "origin"
    actor.ok("create", str(origin), cwd=top)
    actor.write(origin / "code" / "gen.sh", script)
    (origin / "code" / "gen.sh").chmod(0o755)
    actor.write(origin / "work" / ".keep", "")
    actor.ok("save", "--to-git", "-m", "code", "code", "work", cwd=origin)
    actor.write(origin / "data" / "x.txt", "x\n")
    actor.write(origin / "data" / "y.txt", "y\n")
    actor.ok("save", "-m", "data", "data", cwd=origin)
    ours, twin = top / "ours", top / "twin"
    for clone in (ours, twin):
        actor.ok("clone", str(origin), str(clone), cwd=top)
    return ours, twin


def _io(inputs: list[str], outputs: list[str]) -> list[str]:
    return [*[a for p in inputs for a in ("-i", p)], *[a for p in outputs for a in ("-o", p)]]


def _schedule(actor: Actor, ds: Path, *args: str, cwd: Path | None = None) -> int:
    out = actor.ok("-f", "json", "schedule", *args, cwd=cwd or ds)
    return int(_json(out)[-1]["slurm_job_id"])


def _finish(actor: Actor, ds: Path, job: int) -> list[dict[str, Any]]:
    actor.cluster.wait_done([job])
    proc = actor.datalad("-f", "json", "finish", cwd=ds)
    assert "Traceback" not in proc.stderr, proc.stderr
    return _json(proc.stdout)


@pytest.mark.parametrize("expand", [None, "inputs", "outputs", "both"])
def test_glob_job_records_and_commits_what_datalad_run_does(
    actor: Actor, expand: str | None
) -> None:
    ours, twin = _twins(actor, GEN)
    expanding = ["--expand", expand] if expand else []
    # one string, as datalad run takes it: each path one argument
    command = "../code/gen.sh {inputs} {outputs}"

    job = _schedule(
        actor, ours, *expanding, *_io(INPUTS, OUTPUTS), f"sbatch {command}", cwd=ours / "work"
    )
    # the input glob's matches were obtained for the job (the clone had no content)
    here = _as_owner(actor, ours, "git", "annex", "find", "--in=here", "data").stdout.split()
    assert here == ["data/x.txt", "data/y.txt"]
    results = _finish(actor, ours, job)
    actor.ok(
        "run", "--explicit", *expanding, *_io(INPUTS, OUTPUTS), f"sh {command}", cwd=twin / "work"
    )

    committed = [r for r in results if r.get("action") == "finish" and r.get("commit")]
    assert [r["slurm_job_id"] for r in committed] == [job], results
    assert _git(ours, "log", "-1", "--format=%s").startswith(f"[DATALAD SLURM RUN] Slurm job {job}")
    # the glob that matched nothing is reported like a missing output
    warnings = [r for r in results if r.get("missing_output")]
    assert [(w["status"], w["missing_output"]) for w in warnings] == [("impossible", "never/*.dat")]
    assert "matches nothing" in warnings[0]["message"] and str(job) in warnings[0]["message"]

    mine, theirs = _record(ours), _record(twin)
    expected_inputs, expected_outputs = RECORDED[expand]
    assert _dataset_relative(mine, "inputs") == expected_inputs
    assert _dataset_relative(mine, "outputs") == expected_outputs
    for key in ("inputs", "outputs"):
        assert _dataset_relative(mine, key) == _dataset_relative(theirs, key), key
    # the commit holds what the globs matched, as datalad run's: not out/h1, which no glob
    # matches, and besides it only the job's log and env.json
    assert (
        _changes(ours, mine)
        == _changes(twin, theirs)
        == {
            "out/g1": "A",
            "out/g2.txt": "A",
            "res/r.txt": "A",
        }
    )
    assert any(p.startswith("work/slurm-") for p in mine["slurm_outputs"])
    # the job got datalad run's argv ({outputs}: the glob, which matched nothing yet)
    assert (ours / "out" / "g1").read_text() == (twin / "out" / "g1").read_text()
    assert (ours / "out" / "g1").read_text().split() == [
        "../data/x.txt",
        "../data/y.txt",
        "../out/g*",
        "../res/*.txt",
        "../never/*.dat",
    ]
    assert (ours / "out" / "g2.txt").read_text() == "x\ny\n"
    assert "?? out/h1" in _git(ours, "status", "--porcelain", "--untracked-files=all")
    listed = _json(actor.ok("-f", "json", "finish", "--list-open-jobs", cwd=ours))
    assert not [r for r in listed if r.get("list_open_jobs")]
    _clean(actor, ours)


def test_an_open_glob_job_holds_its_folder(actor: Actor) -> None:
    ds = actor.dataset()
    (ds / "res").mkdir()
    [submitted] = _json(
        actor.ok(
            "-f", "json", "schedule", "-o", "out/g*", "sbatch", "--hold", "code/job.sh", cwd=ds
        )
    )
    held = submitted["slurm_job_id"]
    assert "(glob out/g* holds out until the job is finished)" in submitted["message"]
    plain = _schedule(actor, ds, "-o", "res/a.txt", "sbatch", "--hold", "code/job.sh")
    try:
        for wanted, owner, shown in [
            ("out/x", held, "'out' (held for the glob 'out/g*')"),
            ("out", held, "'out' (held for the glob 'out/g*')"),
            ("out/*/deep", held, "'out' (held for the glob 'out/*/deep')"),
            ("res/*.txt", plain, "'res' (held for the glob 'res/*.txt')"),
            ("*.txt", held, "'.' (held for the glob '*.txt')"),
        ]:
            for dry in ([], ["--dry-run"]):
                proc = actor.datalad(
                    "-f", "json", "schedule", *dry, "-o", wanted, "sbatch", "code/job.sh", cwd=ds
                )
                assert proc.returncode != 0 and "Traceback" not in proc.stderr, (wanted, proc)
                [result] = _json(proc.stdout)
                assert result["status"] == "error", (wanted, result)
                assert f"open job {owner}" in result["message"] and shown in result["message"]
        # a neighbour of the folder is free
        free = _schedule(actor, ds, "-o", "outer/g*", "sbatch", "--hold", "code/job.sh")
        listed = _json(actor.ok("-f", "json", "finish", "--list-open-jobs", cwd=ds))
        assert sorted(r["slurm_job_id"] for r in listed if r.get("list_open_jobs")) == sorted(
            [held, plain, free]
        )
    finally:
        for job in _json(actor.ok("-f", "json", "finish", "--list-open-jobs", cwd=ds)):
            if job.get("slurm_job_id"):
                actor.cluster.run("scontrol", "release", str(job["slurm_job_id"]))
    for job in (held, plain, free):
        actor.cluster.wait_done([job])
    finished = actor.datalad("-f", "json", "finish", cwd=ds)
    # each job ran code/job.sh, which writes nothing: every declared output is missing
    missing = sorted(r["missing_output"] for r in _json(finished.stdout) if r.get("missing_output"))
    assert missing == ["out/g*", "outer/g*", "res/a.txt"]
    # finished: the folder is free again
    [free_again] = _json(
        actor.ok("-f", "json", "schedule", "--dry-run", "-o", "out/x", "true", cwd=ds)
    )
    assert free_again["status"] == "ok"
    _clean(actor, ds)


def test_an_input_glob_without_a_match_refuses_the_schedule(actor: Actor) -> None:
    ds = actor.dataset()
    actor.write(ds / "data" / "a.csv", "a\n")
    actor.ok("save", "-m", "data", "data", cwd=ds)
    for dry in ([], ["--dry-run"]):
        proc = actor.datalad(
            "-f",
            "json",
            "schedule",
            *dry,
            "-i",
            "data/*.csv",
            "-i",
            "data/*.tsv",
            "-o",
            "out",
            "sbatch",
            "code/job.sh",
            cwd=ds,
        )
        assert proc.returncode != 0 and "Traceback" not in proc.stderr, proc
        [result] = _json(proc.stdout)
        assert result["status"] == "error"
        assert "input glob(s) 'data/*.tsv' match nothing in the dataset" in result["message"]
    # nothing was submitted or registered: the output is free
    listed = _json(actor.ok("-f", "json", "finish", "--list-open-jobs", cwd=ds))
    assert not [r for r in listed if r.get("list_open_jobs")]
    [dry] = _json(
        actor.ok(
            "-f",
            "json",
            "schedule",
            "--dry-run",
            "-i",
            "data/*.csv",
            "-o",
            "out",
            "sbatch",
            "code/job.sh",
            cwd=ds,
        )
    )
    assert dry["status"] == "ok" and dry["inputs"] == ["data/*.csv"]


EMPTY = """#!/bin/sh
mkdir -p out
echo "$1" > out/g1
"""


def test_a_glob_that_matches_nothing_is_reported_and_the_rest_committed(actor: Actor) -> None:
    ds = actor.dataset()
    actor.write(ds / "code" / "empty.sh", EMPTY)
    (ds / "code" / "empty.sh").chmod(0o755)
    actor.ok("save", "--to-git", "-m", "script", "code", cwd=ds)
    jobs = {}
    for rendering in ("plain", "json"):
        jobs[rendering] = _schedule(
            actor,
            ds,
            "-o",
            "out/g*",
            "-o",
            f"none-{rendering}/*.x",
            "sbatch",
            "code/empty.sh",
            rendering,
        )
        actor.cluster.wait_done([jobs[rendering]])
        # the second job rewrites the file: it runs after the first was finished
        if rendering == "plain":
            proc = actor.datalad("finish", cwd=ds)
            lines = (proc.stdout + proc.stderr).splitlines()
            warned = [line for line in lines if "impossible" in line and "none-plain/*.x" in line]
            assert len(warned) == 1, lines
            assert f"Slurm job {jobs['plain']}" in warned[0]
            assert "a glob that matches nothing" in warned[0]
            assert proc.returncode != 0, "a glob without a match must not pass silently"
            assert "Traceback" not in proc.stderr
    results = _json(actor.datalad("-f", "json", "finish", cwd=ds).stdout)
    [warning] = [r for r in results if r.get("missing_output")]
    assert warning["missing_output"] == "none-json/*.x"
    assert warning["status"] == "impossible" and warning["slurm_job_id"] == jobs["json"]
    assert warning["path"] == str(ds / "none-json/*.x")
    for rendering, job in jobs.items():
        [commit] = _git(ds, "log", "--format=%H", f"--grep=Slurm job {job}: Completed").split()
        record = _record(ds, commit)
        assert record["outputs"][:2] == ["out/g*", f"none-{rendering}/*.x"]
        changes = _changes(ds, record, commit)
        assert changes == {"out/g1": "A" if rendering == "plain" else "M"}
    _clean(actor, ds)


AGAIN = """#!/bin/sh
# first run: out/g1 and out/g2; again: out/g1 rewritten, out/g2 deleted, out/g3 new
mkdir -p out
if [ -e out/g2 ]; then
    rm out/g2
    echo second > out/g1
    echo new > out/g3
else
    echo first > out/g1
    echo first > out/g2
fi
echo untouched > out/h1
"""


def test_reschedule_runs_the_recorded_globs_as_rerun_does(actor: Actor) -> None:
    ours, twin = _twins(actor, AGAIN)
    first = _schedule(actor, ours, "-o", "out/g*", "sbatch", "code/gen.sh")
    _finish(actor, ours, first)
    first_commit = _git(ours, "rev-parse", "HEAD").strip()
    actor.ok("run", "--explicit", "-o", "out/g*", "sh code/gen.sh", cwd=twin)
    assert (
        _changes(ours, _record(ours))
        == _changes(twin, _record(twin))
        == {
            "out/g1": "A",
            "out/g2": "A",
        }
    )

    again = _json(actor.ok("-f", "json", "reschedule", first_commit, cwd=ours))
    [submitted] = [r for r in again if r.get("slurm_job_id")]
    assert submitted["outputs"] == ["out/g*"]
    # the matches of the glob were unlocked for the job, which rewrites out/g1
    assert not (ours / "out" / "g1").is_symlink()
    results = _finish(actor, ours, submitted["slurm_job_id"])
    assert [r["slurm_job_id"] for r in results if r.get("commit")] == [submitted["slurm_job_id"]]
    assert not [r for r in results if r.get("missing_output")]
    actor.ok("rerun", "--explicit", cwd=twin)

    mine, theirs = _record(ours), _record(twin)
    assert mine["chain"] == [first_commit]
    assert _dataset_relative(mine, "outputs") == _dataset_relative(theirs, "outputs") == ["out/g*"]
    assert (
        _changes(ours, mine)
        == _changes(twin, theirs)
        == {
            "out/g1": "M",
            "out/g2": "D",
            "out/g3": "A",
        }
    )
    assert (ours / "out" / "g1").read_text() == "second\n"
    # what the job left alone is committed locked again, as datalad save commits it
    assert (ours / "out" / "g1").is_symlink() and (ours / "out" / "g3").is_symlink()
    _clean(actor, ours)
