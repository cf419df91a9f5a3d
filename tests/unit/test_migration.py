"""Reading datalad-slurm 0.2.8's registry and taking its jobs over (no Slurm needed).

The rows are those a real 0.2.8 wrote on the local Slurm (tests/cluster/test_migrate_028.py
makes them afresh): a job from the root, one from a subfolder (inputs and logs relative to
it, outputs to the root), an array with logs in a folder, and 0.2.8's table layout.
"""

from __future__ import annotations

import json
import os
import pwd
import shutil
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from datalad_slurm.commit.jobfiles import find_job_files
from datalad_slurm.jobs.migration import IMPORTED_LOGS, take_over, waiting
from datalad_slurm.jobs.oldregistry import (
    MigrationError,
    adopted,
    old_registries,
    read_old_registry,
)
from datalad_slurm.jobs.registry import Registry
from datalad_slurm.slurm.state import JobState, JobStatus, TaskState
from datalad_slurm.spool import is_registered

DSID = "1a860b25-1483-4dc3-8dd4-ec2d0c3330e0"

#: 0.2.8's tables (its reservations, which we do not read, are left out)
OPEN_JOBS = """CREATE TABLE open_jobs (slurm_job_id INTEGER, message TEXT, chain TEXT, cmd TEXT,
    dsid TEXT, inputs TEXT, extra_inputs TEXT, outputs TEXT, slurm_outputs TEXT, pwd TEXT,
    alt_dir TEXT)"""

ROOT_JOB = (2, None, [], "sbatch code/work.sh res/ok hello 0", [], ["./res/ok"],
            ["slurm-2.out", "slurm-job-2.env.json"], ".", "")  # fmt: skip
SUB_JOB = (3, None, [], "sbatch ../code/work.sh out sub 0", ["../code/work.sh"], ["sub/out"],
           ["slurm-3.out", "slurm-job-3.env.json"], "sub", "")  # fmt: skip
ARRAY_JOB = (4, "an array", ["abc"], "sbatch --array=1-2 --output=logs/arr-%A_%a.out code/w.sh",
             [], ["./res/arr"], ["logs/arr-4_1.out", "logs/arr-4_2.out",
             "logs/slurm-job-4.env.json"], ".", "")  # fmt: skip


class Dataset:
    """What the migration asks of a DataLad dataset: its path, id and config."""

    def __init__(self, path: Path, dsid: str | None = DSID) -> None:
        self.path = path
        self.id = dsid
        self.config: dict[str, Any] = {}


def _write_old(path: Path, *rows: tuple[Any, ...]) -> Path:
    conn = sqlite3.connect(path)
    conn.execute(OPEN_JOBS)
    for job, message, chain, cmd, inputs, outputs, logs, where, alt_dir in rows:
        conn.execute(
            "INSERT INTO open_jobs VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (job, message, json.dumps(chain), cmd, DSID, json.dumps(inputs), "[]",
             json.dumps(outputs), json.dumps(logs), where, alt_dir),
        )  # fmt: skip
    conn.commit()
    conn.close()
    return path


@pytest.fixture
def ds(tmp_path: Path, spool: Path, monkeypatch: pytest.MonkeyPatch) -> Dataset:
    """A dataset's place with its ``.git`` folder; a spool configured, a cluster named."""
    config = tmp_path / "datalad-slurm.conf"
    config.write_text(f"spool = {spool}\nhook_user = {pwd.getpwuid(os.getuid()).pw_name}\n")
    monkeypatch.setenv("DATALAD_SLURM_CONFIG", str(config))
    monkeypatch.setenv("SLURM_CONF", str(tmp_path / "slurm.conf"))
    (tmp_path / "slurm.conf").write_text("ClusterName=Here\n")
    path = tmp_path / "ds"
    (path / ".git").mkdir(parents=True)
    return Dataset(path)


def _registry(ds: Dataset) -> Registry:
    return Registry(str(ds.path / ".git/datalad-slurm/registry.sqlite"))


def _take(ds: Dataset) -> list[dict[str, Any]]:
    with _registry(ds) as registry:
        return list(take_over(ds, registry))


def test_finds_the_files_of_each_version_and_nothing_else(ds: Dataset) -> None:
    for name in (f"{DSID}.db", "datalad-slurm.db", f"dataset-slurm-{DSID}.db", "dataset-slurm.db"):
        (ds.path / ".git" / name).write_bytes(b"")
    (ds.path / ".git/other.db").write_bytes(b"")
    (ds.path / ".git" / f"{DSID}.db.imported").write_bytes(b"")
    assert [os.path.basename(p) for p in old_registries(ds)] == sorted(
        [f"{DSID}.db", "datalad-slurm.db", f"dataset-slurm-{DSID}.db", "dataset-slurm.db"]
    )
    assert old_registries(Dataset(ds.path / "nothing")) == []


def test_paths_come_into_our_frame(ds: Dataset) -> None:
    jobs = read_old_registry(str(_write_old(ds.path / ".git/x.db", ROOT_JOB, SUB_JOB, ARRAY_JOB)))
    assert [j.job_id for j in jobs] == [2, 3, 4]
    root, sub, array = (adopted(str(ds.path), job) for job in jobs)
    assert (root.pwd, root.outputs, root.logs) == (".", ["res/ok"], ["slurm-2.out"])
    assert (sub.pwd, sub.outputs, sub.inputs) == ("sub", ["sub/out"], ["code/work.sh"])
    assert sub.logs == ["sub/slurm-3.out"]
    assert array.logs == ["logs/arr-4_1.out", "logs/arr-4_2.out"]
    assert jobs[2].message == "an array" and jobs[2].chain == ["abc"]


def test_a_file_0_2_8_made_without_scheduling_has_no_jobs(ds: Dataset) -> None:
    empty = ds.path / ".git" / f"{DSID}.db"
    sqlite3.connect(empty).close()  # slurm-finish makes the file on its way
    assert read_old_registry(str(empty)) == []
    (ds.path / ".git/datalad-slurm.db").write_text("not sqlite")
    with pytest.raises(MigrationError, match="not a registry"):
        read_old_registry(str(ds.path / ".git/datalad-slurm.db"))


def test_jobs_are_taken_once_and_the_file_renamed_unchanged(ds: Dataset) -> None:
    old = _write_old(ds.path / ".git" / f"{DSID}.db", ROOT_JOB, SUB_JOB, ARRAY_JOB)
    content = old.read_bytes()
    assert [r["old_job_ids"] for r in waiting(ds)] == [[2, 3, 4]]
    results = _take(ds)
    assert [(r["status"], r.get("slurm_job_id")) for r in results] == [
        ("ok", 2),
        ("ok", 3),
        ("ok", 4),
        ("ok", None),
    ]
    assert results[-1]["renamed_to"] == f"{old}.imported"
    assert not old.exists() and Path(f"{old}.imported").read_bytes() == content
    assert list(waiting(ds)) == []
    with _registry(ds) as registry:
        jobs = registry.jobs()
        assert [(j.job_id, j.state, j.cluster, j.pwd) for j in jobs] == [
            (2, "open", "here", "."),
            (3, "open", "here", "sub"),
            (4, "open", "here", "."),
        ]
        assert jobs[1].inputs == ["code/work.sh"]
        assert jobs[2].submission_facts == {IMPORTED_LOGS: ["logs/arr-4_1.out", "logs/arr-4_2.out"]}
        assert jobs[2].message == "an array" and jobs[2].chain == ["abc"]
        assert registry.reservations(jobs[1]) == ["sub/out"]
        assert registry.conflicts(["res/arr/x"])[0][2].job_id == 4
    # registered with the hook as the jobs we submit are, so that it reports their end
    spool = Path(os.environ["DATALAD_SLURM_CONFIG"]).parent / "spool"
    for job in (2, 3, 4):
        assert is_registered(str(spool), os.getuid(), "here", job)
    assert _take(ds) == []
    # back under its name, as after a run stopped before renaming it: renamed, nothing taken
    shutil.copy(f"{old}.imported", old)
    again = _take(ds)
    assert [r.get("renamed_to") for r in again] == [f"{old}.imported.2"]
    with _registry(ds) as registry:
        assert len(registry.jobs()) == 3


def test_a_job_that_cannot_be_taken_keeps_the_file(ds: Dataset) -> None:
    alt = (5, None, [], "sbatch x", [], ["./res/alt"], [], ".", "/scratch/alt")
    inside = (6, None, [], "sbatch y", [], ["./res/ok/inner"], [], ".", "")  # inside job 2's
    old = _write_old(ds.path / ".git" / f"{DSID}.db", ROOT_JOB, alt, inside)
    results = _take(ds)
    assert [(r["status"], r.get("slurm_job_id")) for r in results] == [
        ("ok", 2),
        ("impossible", 5),
        ("impossible", 6),
    ]
    assert "--alt-dir /scratch/alt" in results[1]["message"]
    assert "slurm-finish --slurm-job-id 5" in results[1]["message"]
    assert "overlaps 'res/ok' of open job 2" in results[2]["message"]
    assert old.exists()
    # read again next time: the jobs left are reported again, job 2 is not taken twice
    assert [(r["status"], r.get("slurm_job_id")) for r in _take(ds)] == [
        ("impossible", 5),
        ("impossible", 6),
    ]
    with _registry(ds) as registry:
        assert [j.job_id for j in registry.jobs()] == [2]


def test_the_logs_0_2_8_found_are_committed_where_slurm_no_longer_names_them(
    ds: Dataset,
) -> None:
    """Slurm 22.05's accounting keeps no log names: the array's logs in logs/ (not the default
    slurm-%A_%a.out) are found from what 0.2.8 noted at submission, env.json beside them."""
    _write_old(ds.path / ".git" / f"{DSID}.db", ARRAY_JOB)
    _take(ds)
    (ds.path / "logs").mkdir()
    for task in (1, 2):
        (ds.path / f"logs/arr-4_{task}.out").write_text(f"task {task}\n")
    with _registry(ds) as registry:
        (job,) = registry.jobs()
    done = JobState.parse("COMPLETED")
    status = JobStatus(
        4,
        tasks={f"4_{task}": TaskState(4, task, done, work_dir=str(ds.path)) for task in (1, 2)},
    )
    files = find_job_files(str(ds.path), job, status)
    assert files.logs == ["logs/arr-4_1.out", "logs/arr-4_2.out"]
    assert files.env_json == "logs/slurm-job-4.env.json"
