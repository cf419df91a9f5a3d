"""schedule against the real Slurm: conflicts, submit forms, failures, locations."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import Any

import pytest

from datalad_slurm.jobs.statedir import open_registry
from tests.conftest import Cluster, call, git, only, subjects, write_script


@pytest.fixture
def held(slurm: Cluster, dataset: Any, monkeypatch: pytest.MonkeyPatch) -> Any:
    """A dataset with one held job owning ``out/sub``."""
    monkeypatch.chdir(dataset.path)
    write_script(dataset, "job.sh", "echo x\n")
    Path(dataset.path, "out", "sub").mkdir(parents=True)
    results = call(dataset, "schedule", "sbatch --hold code/job.sh", outputs=["out/sub"])
    assert results[0]["status"] == "ok", results
    dataset.held_job = results[0]["slurm_job_id"]
    yield dataset
    slurm.scancel(dataset.held_job)


@pytest.mark.parametrize(
    "claim",
    [
        "out/sub",
        "./out/sub",
        "out//sub",
        "out/sub/",
        "out/x/../sub",
        "out",
        ".",
        "out/sub/deeper",
        "ABS",
        "LINK",
    ],
)
def test_every_conflict_form_is_refused(held: Any, claim: str, tmp_path: Path) -> None:
    ds = held
    if claim == "ABS":
        claim = os.path.join(ds.path, "out", "sub")
    elif claim == "LINK":
        link = tmp_path / "through-link"
        link.symlink_to(ds.path)
        claim = str(link / "out" / "sub" / "file")
    results = call(ds, "schedule", "sbatch --hold code/job.sh", outputs=["free", claim])
    assert [r["status"] for r in results] == ["error"], results
    message = results[0]["message"]
    assert "output conflict" in message and f"job {ds.held_job}" in message
    assert "'out/sub'" in message
    # nothing was submitted or reserved
    with open_registry(ds.path) as registry:
        assert [j.job_id for j in registry.jobs()] == [ds.held_job]


def test_conflict_from_a_subdirectory(held: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    ds = held
    monkeypatch.chdir(Path(ds.path, "out"))
    results = call(ds, "schedule", "sbatch --hold ../code/job.sh", outputs=["sub/file"])
    assert (
        results[0]["status"] == "error"
        and "'out/sub/file' overlaps 'out/sub'" in results[0]["message"]
    )
    ok = call(ds, "schedule", "sbatch --hold ../code/job.sh", outputs=["other"])
    assert ok[0]["status"] == "ok" and ok[0]["outputs"] == ["out/other"] and ok[0]["pwd"] == "out"
    subprocess.run(["scancel", str(ok[0]["slurm_job_id"])], check=True)


def test_parsable_and_cluster_suffix(
    slurm: Cluster, dataset: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(dataset.path)
    write_script(dataset, "job.sh", "#SBATCH -o out/%j.log\necho 1 > out/r\n")
    Path(dataset.path, "out").mkdir()
    results = call(dataset, "schedule", ["sbatch", "--parsable", "code/job.sh"], outputs=["out"])
    assert results[0]["status"] == "ok"
    job = results[0]["slurm_job_id"]
    slurm.wait_done([job])
    done = only(call(dataset, "finish"), "finish")
    assert done[0]["status"] == "ok"
    assert subjects(dataset)[0] == f"[DATALAD SLURM RUN] Slurm job {job}: Completed"


@pytest.mark.parametrize(
    ("cmd", "expected"),
    [
        ("sbatch code/missing.sh", "Unable to open file"),
        ("sbatch --partition=nosuchpartition code/job.sh", "invalid partition"),
        ("true", "printed no Slurm job id"),
    ],
)
def test_failing_submission_registers_nothing(
    slurm: Cluster, dataset: Any, cmd: str, expected: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(dataset.path)
    write_script(dataset, "job.sh", "echo\n")
    results = call(dataset, "schedule", cmd, outputs=["out"])
    assert [r["status"] for r in results] == ["error"]
    assert expected.lower() in results[0]["message"].lower()
    assert "nothing was registered" in results[0]["message"]
    with open_registry(dataset.path) as registry:
        assert registry.jobs() == []
    # the output is free again
    again = call(dataset, "schedule", "sbatch --hold code/job.sh", outputs=["out"])
    assert again[0]["status"] == "ok"
    slurm.scancel(again[0]["slurm_job_id"])


def test_missing_outputs_and_bad_paths(
    slurm: Cluster, dataset: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(dataset.path)
    none = call(dataset, "schedule", "sbatch code/job.sh")
    assert none[0]["status"] == "error" and "no outputs given" in none[0]["message"]
    outside = call(dataset, "schedule", "sbatch code/job.sh", outputs=["/tmp/elsewhere"])
    assert outside[0]["status"] == "error"
    assert "'/tmp/elsewhere' is not inside the dataset" in outside[0]["message"]
    cli = subprocess.run(
        ["datalad", "schedule", "-o", "/tmp/x", "sbatch", "code/job.sh"],
        cwd=dataset.path,
        capture_output=True,
        text=True,
    )
    assert cli.returncode != 0 and "Traceback" not in cli.stderr + cli.stdout


def test_outputs_in_subdirectory_and_inputs(
    slurm: Cluster, dataset: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from datalad.api import clone

    origin = dataset
    Path(origin.path, "data.txt").write_text("input data\n")
    write_script(origin, "sub.sh", "#SBATCH -o results/slurm-%j.out\ncat $1 > results/copy.txt\n")
    origin.save(path="data.txt", message="data", result_renderer="disabled")
    # a clone has the input's name but not its content: schedule must get it
    ds = clone(source=origin.path, path=str(tmp_path / "clone"), result_renderer="disabled")
    assert not Path(ds.path, "data.txt").exists()
    work = Path(ds.path, "analysis", "run1")
    (work / "results").mkdir(parents=True)
    monkeypatch.chdir(work)
    results = call(
        ds,
        "schedule",
        "sbatch ../../code/sub.sh {inputs}",
        outputs=["results"],
        inputs=["../../data.txt"],
    )
    assert results[0]["status"] == "ok", results
    assert results[0]["pwd"] == "analysis/run1"
    assert results[0]["outputs"] == ["analysis/run1/results"]
    assert Path(ds.path, "data.txt").read_text() == "input data\n"
    job = results[0]["slurm_job_id"]
    slurm.wait_done([job])
    done = only(call(ds, "finish"), "finish")
    assert done[0]["status"] == "ok", done
    files = git(ds, "show", "--name-only", "--format=", "HEAD").split()
    assert sorted(files) == sorted(
        [
            "analysis/run1/results/copy.txt",
            f"analysis/run1/results/slurm-{job}.out",
            f"analysis/run1/results/slurm-job-{job}.env.json",
        ]
    )
    message = git(ds, "log", "-1", "--format=%B")
    assert '"pwd": "analysis/run1"' in message and '"data.txt"' in message
    assert Path(ds.path, "analysis/run1/results/copy.txt").read_text() == "input data\n"


def test_outputs_in_a_subdataset(
    slurm: Cluster, dataset: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    ds = dataset
    sub = ds.create("sub", result_renderer="disabled")
    monkeypatch.chdir(ds.path)
    write_script(ds, "job.sh", "#SBATCH -o sub/out/slurm-%j.out\necho 1 > sub/out/r\n")
    Path(sub.path, "out").mkdir()
    results = call(ds, "schedule", "sbatch code/job.sh", outputs=["sub/out"])
    assert results[0]["status"] == "ok"
    job = results[0]["slurm_job_id"]
    conflict = call(ds, "schedule", "sbatch code/job.sh", outputs=["sub"])
    assert conflict[0]["status"] == "error"
    slurm.wait_done([job])
    done = only(call(ds, "finish"), "finish")
    assert done[0]["status"] == "ok", done
    assert subjects(ds)[0] == f"[DATALAD SLURM RUN] Slurm job {job}: Completed"
    assert (
        git(sub, "log", "-1", "--format=%s").strip()
        == f"[DATALAD SLURM RUN] Slurm job {job}: Completed"
    )
    assert sorted(git(sub, "ls-files", "out").split()) == sorted(
        ["out/r", f"out/slurm-{job}.out", f"out/slurm-job-{job}.env.json"]
    )
    assert git(ds, "status", "--porcelain").strip() == ""
    assert git(sub, "status", "--porcelain").strip() == ""


def test_dry_run_changes_nothing(
    slurm: Cluster, dataset: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(dataset.path)
    results = call(
        dataset, "schedule", "sbatch --wrap 'echo {outputs}'", outputs=["o"], dry_run=True
    )
    assert results[0]["status"] == "ok" and results[0]["cmd"] == "sbatch --wrap 'echo o'"
    with open_registry(dataset.path) as registry:
        assert registry.jobs() == []
