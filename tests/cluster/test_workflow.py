"""The seed README's workflow on the real local Slurm, end to end."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest

from datalad_slurm.commit.message import parse_message
from tests.conftest import (
    Cluster,
    call,
    git,
    only,
    schedule_ok,
    subjects,
    write_script,
)

SEED_KEYS = {
    "chain",
    "cmd",
    "commit_id",
    "dsid",
    "extra_inputs",
    "inputs",
    "outputs",
    "pwd",
    "slurm_job_id",
    "slurm_outputs",
}


def _model_script(ds: Any, name: str, fail: bool = False) -> str:
    return write_script(
        ds,
        f"submit_{name}.slurm",
        f"""
#SBATCH --output=models/{name}/slurm-%j.out
echo training {name}
echo model > models/{name}/model_0.model
{"exit 1" if fail else "exit 0"}
""",
    )


def _schedule(ds: Any, output: str, *cmd: str) -> int:
    return schedule_ok(ds, list(cmd), output)


def test_seed_workflow(slurm_any: Cluster, dataset: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    ds = dataset
    monkeypatch.chdir(ds.path)
    jobs = {}
    for name in ("gold", "silver", "copper"):
        jobs[name] = _schedule(ds, f"models/{name}/", "sbatch", _model_script(ds, name))
    jobs["bronze"] = _schedule(ds, "models/bronze", "sbatch", _model_script(ds, "bronze", True))
    array = write_script(
        ds,
        "submit_array_platinum.slurm",
        """
#SBATCH --array=0-2
#SBATCH --output=models/platinum/slurm-%A_%a.out
echo $SLURM_ARRAY_TASK_ID > models/platinum/model_$SLURM_ARRAY_TASK_ID.model
[ "$SLURM_ARRAY_TASK_ID" != 2 ]
""",
    )
    jobs["platinum"] = _schedule(ds, "models/platinum", "sbatch", array)

    listed = only(call(ds, "finish", list_open_jobs=True), "finish")
    assert sorted(r["slurm_job_id"] for r in listed) == sorted(jobs.values())
    assert all(r["slurm_job_status"] for r in listed)

    slurm_any.wait_done(list(jobs.values()))
    results = call(ds, "finish")
    finished = {r["slurm_job_id"]: r for r in only(results, "finish")}
    for name in ("gold", "silver", "copper"):
        assert finished[jobs[name]]["status"] == "ok"
    assert finished[jobs["bronze"]]["status"] == "impossible"
    assert f"Statuses: {jobs['bronze']}: FAILED" in finished[jobs["bronze"]]["message"]
    platinum = finished[jobs["platinum"]]
    assert platinum["status"] == "impossible"
    p = jobs["platinum"]
    assert f"Statuses: {p}_0: COMPLETED, {p}_1: COMPLETED, {p}_2: FAILED" in platinum["message"]

    log = subjects(ds)
    completed = [
        f"[DATALAD SLURM RUN] Slurm job {jobs[n]}: Completed" for n in ("copper", "silver", "gold")
    ]
    assert sorted(log[:3]) == sorted(completed)

    # one commit per job, holding exactly that job's files
    for name in ("gold", "silver", "copper"):
        job_id = jobs[name]
        sha = git(ds, "log", "-1", "--format=%H", f"--grep=Slurm job {job_id}:", "-F").strip()
        record = parse_message(git(ds, "log", "-1", "--format=%B", sha))
        data = record.to_json()
        assert set(data) >= SEED_KEYS
        assert data["commit_id"] is None and data["chain"] == [] and data["pwd"] == "."
        assert data["cmd"] == f"sbatch code/submit_{name}.slurm"
        assert data["dsid"] == ds.id
        assert data["slurm_job_id"] == job_id
        own = [f"models/{name}/slurm-{job_id}.out", f"models/{name}/slurm-job-{job_id}.env.json"]
        assert data["slurm_outputs"] == own
        assert data["outputs"] == [f"models/{name}", *own]
        assert data["slurm_exit_code"] == 0
        assert data["slurm_task_states"] == {str(job_id): "COMPLETED"}
        assert data["slurm_submitted_from"] and data["slurm_start_time"] and data["slurm_end_time"]
        changed = git(ds, "show", "--name-only", "--format=", sha).split()
        assert sorted(changed) == sorted([f"models/{name}/model_0.model", *own])
        env = json.loads(Path(ds.path, own[1]).read_text())
        assert env["slurm_job_id"] == job_id and env["state"] == "COMPLETED"

    # failed jobs stay open until closed; their files stay untracked
    assert sorted(
        r["slurm_job_id"] for r in only(call(ds, "finish", list_open_jobs=True), "finish")
    ) == sorted([jobs["bronze"], p])
    closed = only(call(ds, "finish", close_failed_jobs=True), "finish")
    assert {r["status"] for r in closed} == {"ok"}
    assert sorted(r["message"] for r in closed) == sorted(
        [
            f"Closing failed / cancelled jobs. Statuses: {jobs['bronze']}: FAILED",
            f"Closing failed / cancelled jobs. Statuses: {p}_0: COMPLETED, {p}_1: COMPLETED, "
            f"{p}_2: FAILED",
        ]
    )
    assert (
        only(call(ds, "finish", list_open_jobs=True), "finish")[0]["message"]
        == "there are no open jobs"
    )
    untracked = git(ds, "status", "--porcelain", "--untracked-files=all").split("\n")
    assert f"?? models/bronze/slurm-{jobs['bronze']}.out" in untracked
    assert f"?? models/platinum/slurm-{p}_2.out" in untracked
    # nothing else is left behind
    assert all(
        line.startswith("?? models/bronze/") or line.startswith("?? models/platinum/")
        for line in untracked
        if line
    )
    # the closed outputs are free again
    _schedule(ds, "models/bronze", "sbatch", "--hold", "code/submit_bronze.slurm")


def test_cli_rendering_matches_the_seed(slurm: Cluster, dataset: Any) -> None:
    ds = dataset
    script = write_script(ds, "ok.sh", "#SBATCH --output=out/slurm-%j.out\necho ok > out/r.txt\n")
    failing = write_script(ds, "bad.sh", "exit 2\n")
    Path(ds.path, "out").mkdir()
    Path(ds.path, "bad").mkdir()

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["datalad", *args], cwd=ds.path, capture_output=True, text=True)

    ok = cli("schedule", "-o", "out", "sbatch", script)
    assert ok.returncode == 0 and "schedule(ok)" in ok.stdout, ok
    job = int(ok.stdout.split("submitted Slurm job ")[1].split(",")[0])
    bad = cli("schedule", "-o", "bad", "sbatch", "--output=bad/slurm-%j.out", failing)
    bad_job = int(bad.stdout.split("submitted Slurm job ")[1].split(",")[0])
    slurm.wait_done([job, bad_job])
    listing = cli("finish", "--list-open-jobs")
    assert listing.returncode == 0
    lines = listing.stdout.splitlines()
    assert lines[0].strip() == "The following jobs are open:"
    assert lines[2].split() == ["slurm-job-id", "slurm-job-status", "elapsed", "tasks"]
    assert f"{job}" in lines[3] and "COMPLETED" in lines[3]
    assert f"{bad_job}" in lines[4] and "FAILED" in lines[4]
    as_json = cli("-f", "json", "finish", "--list-open-jobs")
    records = [json.loads(line) for line in as_json.stdout.splitlines()]
    assert {(r["slurm_job_id"], r["slurm_job_status"]) for r in records} == {
        (job, "COMPLETED"),
        (bad_job, "FAILED"),
    }
    assert all(r["backend"] for r in records)

    done = cli("finish")
    assert done.returncode != 0  # a failed job is an incomplete result
    assert f"add(ok): out/slurm-{job}.out (file)" in done.stdout
    assert f"add(ok): out/slurm-job-{job}.env.json (file)" in done.stdout
    assert "save(ok): . (dataset)" in done.stdout
    assert (
        f"finish(impossible): {ds.path} (dataset) [Slurm job(s) for job {bad_job} are not "
        f"complete. Statuses: {bad_job}: FAILED"
    ) in done.stdout
    assert "Traceback" not in done.stderr
    closed = cli("finish", "--close-failed-jobs")
    assert closed.returncode == 0
    assert f"[Closing failed / cancelled jobs. Statuses: {bad_job}: FAILED]" in closed.stdout
    assert subjects(ds)[0] == f"[DATALAD SLURM RUN] Slurm job {job}: Completed"
