"""reschedule: a recorded job submitted again, finished again, chain filled."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from datalad_slurm.commit.message import parse_message
from tests.conftest import Cluster, call, git, only, subjects, write_script


def test_reschedule_round_trip(
    slurm: Cluster, dataset: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    ds = dataset
    monkeypatch.chdir(ds.path)
    Path(ds.path, "in.txt").write_text("1\n")
    ds.save(path="in.txt", to_git=True, result_renderer="disabled")
    script = write_script(
        ds,
        "count.sh",
        """
#SBATCH -o out/slurm-%j.out
mkdir -p out
cat in.txt > out/count.txt
date +%s%N >> out/count.txt
""",
    )
    Path(ds.path, "out").mkdir()
    first = call(ds, "schedule", f"sbatch {script}", outputs=["out"], inputs=["in.txt"])
    job = first[0]["slurm_job_id"]
    slurm.wait_done([job])
    assert only(call(ds, "finish"), "finish")[0]["status"] == "ok"
    original = git(ds, "rev-parse", "HEAD").strip()

    report = call(ds, "reschedule", original, report=True)
    assert report[0]["status"] == "ok" and report[0]["outputs"] == ["out"]
    assert report[0]["chain"] == [original]
    assert git(ds, "rev-parse", "HEAD").strip() == original

    not_a_record = call(ds, "reschedule", "HEAD~1")
    assert not_a_record[0]["status"] == "error"
    assert "is not a [DATALAD SLURM RUN] record" in not_a_record[0]["message"]

    again = call(ds, "reschedule", original)
    assert again[0]["status"] == "ok", again
    new_job = again[0]["slurm_job_id"]
    assert new_job != job
    # while it is open, its outputs are reserved
    clash = call(ds, "schedule", f"sbatch {script}", outputs=["out/count.txt"])
    assert clash[0]["status"] == "error" and f"job {new_job}" in clash[0]["message"]
    slurm.wait_done([new_job])
    assert only(call(ds, "finish"), "finish")[0]["status"] == "ok"
    assert subjects(ds)[0] == f"[DATALAD SLURM RUN] Slurm job {new_job}: Completed"
    record = parse_message(git(ds, "log", "-1", "--format=%B"))
    assert record.chain == [original]
    assert record.cmd == f"sbatch {script}"
    assert record.declared_outputs == ["out"] and record.inputs == ["in.txt"]
    assert "out/count.txt" in git(ds, "show", "--name-only", "--format=", "HEAD").split()


def test_reschedule_since_and_0_2_8_records(
    slurm: Cluster, dataset: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    ds = dataset
    monkeypatch.chdir(ds.path)
    base = git(ds, "rev-parse", "HEAD").strip()
    write_script(ds, "w.sh", "#SBATCH -o /dev/null\necho 1 > $1\n")
    # a record as datalad-slurm 0.2.8 wrote it for a job submitted from "sub": outputs (its
    # logs among them) relative to the dataset root, inputs and slurm_outputs relative to pwd
    Path(ds.path, "sub").mkdir()
    old = f"""[DATALAD SLURM RUN] Slurm job 4242: Completed

=== Do not change lines below ===
{{
 "chain": [],
 "cmd": "sbatch ../code/w.sh res.txt",
 "commit_id": null,
 "dsid": "{ds.id}",
 "extra_inputs": [],
 "inputs": [],
 "outputs": [
  "sub/res.txt",
  "sub/slurm-job-4242.env.json"
 ],
 "pwd": "sub",
 "slurm_job_id": 4242,
 "slurm_outputs": [
  "slurm-job-4242.env.json"
 ]
}}
^^^ Do not change lines above ^^^
"""
    git(ds, "commit", "--allow-empty", "-q", "-m", old)
    git(ds, "commit", "--allow-empty", "-q", "-m", "unrelated")
    report = call(ds, "reschedule", since=base, report=True)
    assert [r["outputs"] for r in report] == [["sub/res.txt"]]
    results = call(ds, "reschedule", since=base)
    assert results[0]["status"] == "ok", results
    job = results[0]["slurm_job_id"]
    assert results[0]["pwd"] == "sub"
    slurm.wait_done([job])
    assert only(call(ds, "finish"), "finish")[0]["status"] == "ok"
    record = parse_message(git(ds, "log", "-1", "--format=%B"))
    assert record.declared_outputs == ["sub/res.txt"]
    assert len(record.chain) == 1
    assert Path(ds.path, "sub/res.txt").exists()


def test_reschedule_from_a_directory_that_is_gone(
    slurm: Cluster, dataset: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from datalad_slurm.jobs.statedir import open_registry

    ds = dataset
    monkeypatch.chdir(ds.path)
    record = (
        "[DATALAD SLURM RUN] Slurm job 77: Completed\n\n=== Do not change lines below ===\n"
        '{\n "cmd": "sbatch job.sh",\n "outputs": ["o"],\n "pwd": "gone",\n'
        ' "slurm_job_id": 77,\n "slurm_outputs": []\n}\n^^^ Do not change lines above ^^^\n'
    )
    git(ds, "commit", "--allow-empty", "-q", "-m", record)
    results = call(ds, "reschedule", "HEAD")
    assert [r["status"] for r in results] == ["error"]
    assert "does not exist" in results[0]["message"] and "gone" in results[0]["message"]
    with open_registry(ds.path) as registry:
        assert registry.jobs() == []
