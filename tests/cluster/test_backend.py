"""Which backend answers: the one the tier expects, named in every result and in ``-f json``."""

from __future__ import annotations

import importlib.util
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import Cluster, call, only, schedule_ok, spare_cluster, write_script

#: tests/run says which backend the tier must use: jsoncli on the host, pyslurm in the chroot
BACKEND_NAMES = {"jsoncli": "squeue/sacct --json", "pyslurm": "pyslurm"}


def _expected() -> str:
    wanted = os.environ.get("DATALAD_SLURM_TEST_EXPECT_BACKEND")
    if wanted not in BACKEND_NAMES:
        pytest.fail("DATALAD_SLURM_TEST_EXPECT_BACKEND is not set: run the suite with tests/run")
    return BACKEND_NAMES[wanted]


@pytest.fixture
def running_job(slurm_any: Cluster, dataset: Any, monkeypatch: pytest.MonkeyPatch) -> Any:
    monkeypatch.chdir(dataset.path)
    job = schedule_ok(dataset, ["sbatch", write_script(dataset, "slow.sh", "sleep 300\n")])
    slurm_any.wait_state(job, ["RUNNING"])
    yield dataset, job
    slurm_any.scancel(job)


def test_the_tiers_backend_answers(running_job: Any) -> None:
    ds, job = running_job
    listed = only(call(ds, "finish", list_open_jobs=True), "finish")
    assert [(r["slurm_job_id"], r["slurm_job_status"]) for r in listed] == [(job, "RUNNING")]
    assert listed[0]["backend"] == _expected()


def test_a_prefetched_query_answers_as_a_plain_one(running_job: Any) -> None:
    from datalad_slurm.slurm.select import choose_backend

    _, job = running_job
    plain = choose_backend().query([job])[job]
    early = choose_backend()
    early.prefetch()  # what --list-open-jobs does before it reads the registry
    time.sleep(0.5)
    answer = early.query([job])[job]
    assert [(label, t.state.value) for label, t in answer.tasks.items()] == [
        (label, t.state.value) for label, t in plain.tasks.items()
    ]
    assert answer.summary_state == "RUNNING" and answer.backend == plain.backend == _expected()


def test_json_output_names_the_backend(running_job: Any) -> None:
    ds, job = running_job
    out = subprocess.run(
        ["datalad", "-f", "json", "finish", "--list-open-jobs"],
        cwd=ds.path,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    records = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    assert [(r["slurm_job_id"], r["backend"]) for r in records] == [(job, _expected())]


def test_auto_prefers_pyslurm_where_it_works(
    running_job: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    ds, job = running_job
    monkeypatch.setenv("DATALAD_SLURM_BACKEND", "auto")
    ds.config.reload(force=True)  # DataLad caches DATALAD_* variables as config
    listed = only(call(ds, "finish", list_open_jobs=True), "finish")
    pyslurm_here = importlib.util.find_spec("pyslurm") is not None
    assert listed[0]["backend"] == ("pyslurm" if pyslurm_here else "squeue/sacct --json")
    assert (listed[0]["slurm_job_id"], listed[0]["slurm_job_status"]) == (job, "RUNNING")


def test_forcing_a_backend_that_is_missing_says_how_to_install(
    running_job: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    ds, _ = running_job
    if importlib.util.find_spec("pyslurm") is not None:
        # where pyslurm is installed, forcing the JSON CLI must work instead
        monkeypatch.setenv("DATALAD_SLURM_BACKEND", "jsoncli")
        monkeypatch.setenv("DATALAD_SLURM_TEST_EXPECT_BACKEND", "jsoncli")
        ds.config.reload(force=True)
        test_the_tiers_backend_answers(running_job)
        return
    monkeypatch.setenv("DATALAD_SLURM_BACKEND", "pyslurm")
    ds.config.reload(force=True)
    results = call(ds, "finish", list_open_jobs=True)
    assert [r["status"] for r in results] == ["error"]
    assert 'pip install "pyslurm==' in results[0]["message"]


def test_one_query_answers_an_array_from_accounting_where_there_is_some(
    slurm_any: Cluster, tmp_path: Any
) -> None:
    """An array whose tasks all ended is looked up in accounting as well: real slurmdbd or none."""
    from datalad_slurm.slurm.select import choose_backend

    job = slurm_any.submit("--array=0-2", "-o", "/dev/null", "--wrap", "true", cwd=tmp_path)
    slurm_any.wait_done([job])
    backend: Any = choose_backend()
    statuses = backend.query([job, 999_999])
    assert list(statuses) == [job]  # an id nobody knows is left out
    states = {label: t.state.value for label, t in statuses[job].tasks.items()}
    assert states == {f"{job}_{t}": "COMPLETED" for t in range(3)}
    assert statuses[job].backend == _expected()
    assert backend.accounting is slurm_any.accounting


_QUERY = """
import json, sys
from datalad_slurm.slurm.backend import BackendError
from datalad_slurm.slurm.select import choose_backend
backend = choose_backend()
try:
    status = backend.query([int(sys.argv[1])])[int(sys.argv[1])]
except BackendError as exc:
    print(json.dumps({"error": str(exc)}))
else:
    print(json.dumps({"verdict": status.verdict.value, "accounting": backend.accounting}))
"""


def test_slurmdbd_down_is_an_error_not_an_unknown_job(tmp_path: Any) -> None:
    """With accounting configured but slurmdbd gone, the query fails; no job turns UNKNOWN.

    Asked from fresh processes: within one process libslurm reaches the slurmdbd of the
    first cluster it was initialised for only (a user's process has one cluster).
    """
    with spare_cluster("--accounting") as cluster:
        job = cluster.submit("--array=0-1", "-o", "/dev/null", "--wrap", "true", cwd=tmp_path)
        cluster.wait_done([job])

        def ask() -> dict[str, Any]:
            out = cluster.run(sys.executable, "-c", _QUERY, str(job)).stdout
            answer: dict[str, Any] = json.loads(out)
            return answer

        assert ask() == {"verdict": "completed", "accounting": True}
        state_dir = Path(cluster.conf).parent.parent
        pid = int((state_dir / "slurm" / "slurmdbd.pid").read_text())
        os.kill(pid, signal.SIGTERM)  # the spare cluster's own slurmdbd, started by this test
        _wait_gone(pid)
        assert "error" in ask()


def _wait_gone(pid: int, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().split(") ", 1)[1][0]
        except (FileNotFoundError, IndexError):
            return
        if state == "Z":
            return
        time.sleep(0.1)
    raise AssertionError(f"slurmdbd {pid} still runs after {timeout} s")
