"""What every tier's Slurm release must get right, checked against scontrol on the same jobs.

Each tier runs these on its own release (22.05, 24.11, 26.05) and backend: exit codes
and signals in env.json and the record equal what ``scontrol show job`` says; a job
that is still COMPLETING is never committed; the layout that answered is named.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import (
    Cluster,
    _use,
    call,
    finish_by_job,
    git,
    only,
    schedule_ok,
    spare_cluster,
    subjects,
    write_script,
)

#: (script body, how it ends): every way a batch script can end by itself or be ended
ENDINGS = {
    "ok": "exit 0",
    "exit3": "exit 3",
    "exit130": "exit 130",
    "killed": "kill -9 $$",
}


def _scontrol_exit(cluster: Cluster, job: int) -> tuple[str, int, int]:
    """(JobState, exit code, signal) as ``scontrol show job -o`` gives them."""
    line = cluster.run("scontrol", "show", "job", "-o", str(job)).stdout
    state = re.search(r"\bJobState=(\S+)", line)
    code = re.search(r"\bExitCode=(\d+):(\d+)", line)
    assert state and code, line
    return state.group(1), int(code.group(1)), int(code.group(2))


def _env_json(ds: Any, folder: str, job: int) -> dict[str, Any]:
    """The committed env.json (annexed or not: read from the work tree, which is clean)."""
    assert git(ds, "status", "--porcelain", "--untracked-files=no") == ""
    facts: dict[str, Any] = json.loads(
        Path(ds.path, folder, f"slurm-job-{job}.env.json").read_text()
    )
    return facts


def _record(ds: Any, commit: str) -> dict[str, Any]:
    message = git(ds, "log", "-1", "--format=%B", commit)
    body = message.split("=== Do not change lines below ===")[1]
    record: dict[str, Any] = json.loads(body.split("^^^ Do not change lines above ^^^")[0])
    return record


@pytest.mark.parametrize("spool", [False, True], ids=["backend", "hook"])
def test_exit_codes_and_signals_are_what_scontrol_says(
    any_cluster: Cluster, dataset: Any, monkeypatch: pytest.MonkeyPatch, spool: bool
) -> None:
    cluster = _use(any_cluster, monkeypatch, spool=spool)
    monkeypatch.chdir(dataset.path)
    jobs: dict[str, int] = {}
    for name, ending in ENDINGS.items():
        script = write_script(dataset, f"{name}.sh", f"#SBATCH -o out-{name}/%j.log\n{ending}\n")
        jobs[name] = schedule_ok(dataset, ["sbatch", script], output=f"out-{name}")
    slow = write_script(dataset, "slow.sh", "#SBATCH -o out-cancelled/%j.log\nsleep 300\n")
    jobs["cancelled"] = schedule_ok(dataset, ["sbatch", slow], output="out-cancelled")
    # a cancelled shell that exits 143 for sure (a plain one exits 143 or dies of signal 15, as
    # the race goes): pyslurm reads it as 15, and the hook's environment says 0:0
    trapping = write_script(
        dataset,
        "trapping.sh",
        "#SBATCH -o out-cancelled143/%j.log\ntrap 'exit 143' TERM\nsleep 300 &\nwait\n",
    )
    jobs["cancelled143"] = schedule_ok(dataset, ["sbatch", trapping], output="out-cancelled143")
    for name in ("cancelled", "cancelled143"):
        cluster.wait_state(jobs[name], ["RUNNING"])
        cluster.scancel(jobs[name])
    cluster.wait_done(list(jobs.values()))
    truth = {name: _scontrol_exit(cluster, job) for name, job in jobs.items()}
    assert truth["exit130"][1:] == (130, 0) and truth["killed"][2] == 9  # the scenarios hold
    assert truth["cancelled143"] == ("CANCELLED", 143, 0)

    done = finish_by_job(dataset, commit_failed_jobs=True)
    for name, job in jobs.items():
        assert done[job]["status"] == "ok", done[job]
        state, code, signal = truth[name]
        facts = _env_json(dataset, f"out-{name}", job)
        task = facts["tasks"][str(job)]
        assert (task["state"], task["exit_code"], task["signal"]) == (state, code, signal), name
        record = _record(dataset, done[job]["commit"])
        assert (record["slurm_state"], record["slurm_exit_code"]) == (state, code), name


def test_a_completing_job_is_never_committed_early(
    dataset: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """slurmd's Epilog keeps the job COMPLETING for a while: finish waits it out."""
    scratch = Path(tempfile.mkdtemp(prefix="dls-epilog-", dir="/tmp"))
    scratch.chmod(0o755)
    epilog = scratch / "slow-epilog"
    epilog.write_text("#!/bin/sh\nsleep 12\nexit 0\n")
    epilog.chmod(0o755)
    extra = scratch / "extra.conf"
    extra.write_text(f"Epilog={epilog}\n")
    with spare_cluster("--extra-conf", str(extra)) as cluster:
        _use(cluster, monkeypatch, spool=False)
        monkeypatch.chdir(dataset.path)
        script = write_script(dataset, "quick.sh", "#SBATCH -o out/%j.log\necho 1 > out/a\n")
        job = schedule_ok(dataset, ["sbatch", script])
        cluster.wait_state(job, ["COMPLETING"])
        before = subjects(dataset)
        listed = only(call(dataset, "finish", list_open_jobs=True), "finish")
        assert listed[0]["slurm_job_status"] == "COMPLETING"
        early = finish_by_job(dataset)
        assert cluster.state(job) == "COMPLETING", "the epilog ended before finish asked"
        assert early[job]["status"] == "notneeded" and "still active" in early[job]["message"]
        assert subjects(dataset) == before
        cluster.wait_done([job])
        assert finish_by_job(dataset)[job]["status"] == "ok"
        assert subjects(dataset)[0] == f"[DATALAD SLURM RUN] Slurm job {job}: Completed"


def test_the_json_layout_that_answered_is_named(
    slurm_any: Cluster, dataset: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(dataset.path)
    script = write_script(dataset, "ok.sh", "#SBATCH -o out/%j.log\necho 1 > out/a\n")
    job = schedule_ok(dataset, ["sbatch", script])
    meta = json.loads(slurm_any.run("squeue", "--json").stdout)["meta"]
    found = re.search(r"v\d+\.\d+\.\d+", json.dumps(meta))
    assert found, meta
    # the pyslurm backend reads no JSON: it names none
    reads_json = os.environ.get("DATALAD_SLURM_TEST_EXPECT_BACKEND") == "jsoncli"
    layout = found.group(0) if reads_json else None
    listed = only(call(dataset, "finish", list_open_jobs=True), "finish")
    assert listed[0]["data_parser"] == layout
    slurm_any.wait_done([job])
    done = finish_by_job(dataset)[job]
    assert done["data_parser"] == layout
    assert _env_json(dataset, "out", job)["data_parser"] == layout
