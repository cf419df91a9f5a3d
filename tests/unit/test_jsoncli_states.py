"""``finish --list-open-jobs`` asks only states: ``squeue --json --only-job-state`` from 23.11.

Fixtures recorded on Slurm 24.11.5 (the trixie chroot): ``squeue-only-job-state-24.11.5.json``
holds two held plain jobs (2, 3), a plain job pending (10010), array 10009 with tasks 0 and 1
running (named ``10011_0`` and ``10012_1``: by their own job ids) and 2-5 pending, and ended
arrays; ``squeue-jobs-array-24.11.5.json`` is ``squeue --json --states=all --all --jobs=10009``
at the same moment.
"""

from __future__ import annotations

import json
import stat
from pathlib import Path
from typing import Any

import pytest

from datalad_slurm.slurm.backend import Backend
from datalad_slurm.slurm.jsoncli import JOB_STATE_COMMAND, SQUEUE_COMMAND, JsonCliBackend
from datalad_slurm.slurm.jsonrecords import job_state_tasks
from datalad_slurm.slurm.select import choose_backend

SAMPLES = Path(__file__).parent / "fixtures"
JOB_STATE = "squeue-only-job-state-24.11.5.json"
ARRAY = "squeue-jobs-array-24.11.5.json"


def _load(name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((SAMPLES / name).read_text())
    return data


def test_plain_jobs_come_from_the_job_state_answer() -> None:
    tasks, unsettled = job_state_tasks(_load(JOB_STATE), {2, 3, 10010, 10009, 99})
    assert {(t.job_id, t.task_id, t.state.value, t.cluster) for t in tasks} == {
        (2, None, "PENDING", "local7957"),
        (3, None, "PENDING", "local7957"),
        (10010, None, "PENDING", "local7957"),
    }
    # the array, and a job not listed while tasks of unknown arrays are: asked in full
    assert unsettled == {10009, 99}


def test_without_foreign_array_tasks_a_job_not_listed_goes_to_accounting() -> None:
    answer = _load(JOB_STATE)
    answer["jobs"] = [j for j in answer["jobs"] if "_" not in j["job_id"]]
    tasks, unsettled = job_state_tasks(answer, {2, 99})
    assert [t.job_id for t in tasks] == [2]
    assert unsettled == set()


@pytest.fixture
def fake_slurm(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """``squeue``/``sacct`` on PATH that answer from the fixtures and log their arguments."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    log = tmp_path / "calls.log"
    script = f"""#!/usr/bin/env python3
import sys
args = sys.argv[1:]
with open({str(log)!r}, "a") as log:
    log.write(" ".join([sys.argv[0].rsplit("/", 1)[-1], *args]) + "\\n")
if args == ["--version"]:
    print(open({str(tmp_path / "release")!r}).read().strip())
elif "--only-job-state" in args:
    if "22.05" in open({str(tmp_path / "release")!r}).read():
        sys.exit("squeue: unrecognized option '--only-job-state'")
    print(open({str(SAMPLES / JOB_STATE)!r}).read())
elif args == ["--json", "--states=all", "--all", "--jobs=99"]:
    sys.exit("slurm_load_jobs error: Invalid job id specified")
elif any(a.startswith("--jobs=") for a in args):
    print(open({str(SAMPLES / ARRAY)!r}).read())
elif sys.argv[0].endswith("squeue"):
    print(open({str(SAMPLES / "squeue-active.json")!r}).read())
else:
    print(open({str(SAMPLES / "sacct-nothing-found.json")!r}).read())
"""
    for name in ("squeue", "sacct"):
        (bin_dir / name).write_text(script)
        (bin_dir / name).chmod(stat.S_IRWXU)
    (tmp_path / "release").write_text("slurm-wlm 24.11.5\n")
    monkeypatch.setenv("PATH", f"{bin_dir}:/usr/bin:/bin")
    return tmp_path


def _calls(fake: Path) -> list[str]:
    return (fake / "calls.log").read_text().splitlines()


def _states(backend: Backend, ids: list[int]) -> dict[int, dict[str, str]]:
    return {
        job: {label: t.state.value for label, t in status.tasks.items()}
        for job, status in backend.query(ids).items()
    }


def test_states_only_asks_the_job_states_then_the_arrays_in_full(fake_slurm: Path) -> None:
    backend = JsonCliBackend(states_only=True)
    backend.prefetch()
    statuses = backend.query([2, 10010, 10009])
    assert {j: {k: t.state.value for k, t in s.tasks.items()} for j, s in statuses.items()} == {
        2: {"2": "PENDING"},
        10010: {"10010": "PENDING"},
        10009: {
            "10009_0": "RUNNING",
            "10009_1": "RUNNING",
            **{f"10009_{t}": "PENDING" for t in range(2, 6)},
        },
    }
    assert statuses[2].data_parser == "v0.0.42"
    assert statuses[2].backend == "squeue/sacct --json"
    assert _calls(fake_slurm) == [
        "squeue --version",
        "squeue " + " ".join(JOB_STATE_COMMAND[1:]),
        "squeue " + " ".join(SQUEUE_COMMAND[1:]) + " --jobs=10009",
    ]


def test_one_job_slurmctld_does_not_hold_is_asked_of_accounting(fake_slurm: Path) -> None:
    # squeue --jobs=ID fails for one unknown id: no job, not an error
    assert _states(JsonCliBackend(states_only=True), [2, 99]) == {2: {"2": "PENDING"}}
    assert [c.split(" ")[0] for c in _calls(fake_slurm)] == ["squeue"] * 3 + ["sacct"]


def test_before_23_11_the_listing_asks_the_full_squeue(fake_slurm: Path) -> None:
    (fake_slurm / "release").write_text("slurm 22.05.8\n")
    assert _states(JsonCliBackend(states_only=True), [4]) == {4: {"4": "PENDING"}}
    assert _calls(fake_slurm) == ["squeue --version", "squeue " + " ".join(SQUEUE_COMMAND[1:])]


def test_finish_itself_asks_the_full_squeue(fake_slurm: Path) -> None:
    for backend in (JsonCliBackend(), choose_backend("jsoncli")):
        assert _states(backend, [4]) == {4: {"4": "PENDING"}}
    assert _calls(fake_slurm) == ["squeue " + " ".join(SQUEUE_COMMAND[1:])] * 2


def test_the_listing_chooses_a_states_only_backend() -> None:
    backend = choose_backend("jsoncli", states_only=True)
    assert isinstance(backend, JsonCliBackend) and backend.states_only
    auto = choose_backend("auto", states_only=True)
    assert getattr(auto, "states_only", False)
