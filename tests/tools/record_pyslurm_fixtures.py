"""Record what pyslurm reports for each kind of job, as fixtures for the unit tests.

Run inside the pyslurm tier's chroot against a cluster WITH accounting
(``SLURM_CONF`` set), from a scratch directory the jobs may write into::

    contrib/slurm-chroot/run --src . -- bash -c '... start --accounting ...;
        python /src/tests/tools/record_pyslurm_fixtures.py OUTDIR'

Submits one job per scenario, waits until each reached the state wanted, and
writes ``pyslurm-live.json`` (``pyslurm.Jobs.load()``) and ``pyslurm-db.json``
(``pyslurm.db.Jobs.load(JobFilter(ids=...))``): for each scenario its job id and
the :func:`plain_record` of every record of that job; and ``pyslurm-sacct.json``:
what ``sacct --json`` and ``scontrol show job -o`` said of the ``resources`` job at
the same moment.  Takes about 90 s (the timeout scenario needs Slurm's
minute-granular time limit).  The ``resources`` job asks for 200 MB and a GPU:
start the cluster with ``--accounting --jobacct-gather linux --gpus 2
--real-memory 1000``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pyslurm

from datalad_slurm.slurm.pyslurmrecords import plain_record

SCENARIOS: dict[str, list[str]] = {
    "completed": ["-o", "done-%j.out", "--wrap", "true"],
    "failed_exit3": ["--wrap", "exit 3"],
    "killed_signal9": ["--wrap", "kill -9 $$"],
    "cancelled_running": ["--wrap", "sleep 300"],
    "requeued": ["--requeue", "--wrap", "sleep 300"],
    "cancelled_pending": ["--hold", "--wrap", "true"],
    "array_task2_fails": [
        "--array=0-3",
        "-o",
        "arr-%A_%a.out",
        "--wrap",
        'test "$SLURM_ARRAY_TASK_ID" != 2',
    ],
    "array_held": ["--array=0-2", "--hold", "--wrap", "true"],
    "timeout": ["--time=1", "--wrap", "sleep 300"],
    "running": ["--wrap", "sleep 300"],
    # what the job was given and used: 60 MB held while the CPU counts for a few seconds
    # (one CPU: "running" and "timeout" hold the other two cores' worth while it waits)
    "resources": [
        "--mem=200M",
        "--gres=gpu:1",
        "--wrap",
        "x=$(head -c 60000000 /dev/zero | tr '\\0' a); i=0; "
        'while [ "$i" -lt 1000000 ]; do i=$((i + 1)); done; echo "${#x}"',
    ],
}


def sbatch(args: list[str]) -> int:
    out = subprocess.run(
        ["sbatch", "--parsable", *args], capture_output=True, text=True, check=True
    ).stdout
    return int(out.strip().split(";")[0])


def state_of(job_id: int) -> set[str]:
    out = subprocess.run(
        ["squeue", "-h", "-t", "all", "-j", str(job_id), "-o", "%T"],
        capture_output=True,
        text=True,
        check=False,
    ).stdout
    return set(out.split())


def wait_for(job_id: int, wanted: set[str], timeout: float = 150) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if state_of(job_id) and state_of(job_id) <= wanted:
            return
        time.sleep(0.5)
    raise SystemExit(f"job {job_id} did not reach {wanted}: {state_of(job_id)}")


def records(collection: Any, ids: dict[str, int]) -> dict[str, Any]:
    jobs = [plain_record(job) for job in collection.values()]
    return {
        name: {
            "job_id": job_id,
            "records": [j for j in jobs if job_id in (j["id"], j["array_id"])],
        }
        for name, job_id in ids.items()
    }


def others_said(job_id: int) -> dict[str, Any]:
    """``sacct --json`` and ``scontrol show job -o`` of one job, for the differential tests."""

    def out(*command: str) -> str:
        return subprocess.run(command, capture_output=True, text=True, check=True).stdout

    sacct = json.loads(out("sacct", "--json", "-j", str(job_id)))
    return {
        "job_id": job_id,
        "sacct": [j for j in sacct["jobs"] if j.get("job_id") == job_id],
        "scontrol": out("scontrol", "show", "job", "-o", str(job_id)).strip(),
    }


def main() -> None:
    out_dir = Path(sys.argv[1])
    out_dir.mkdir(parents=True, exist_ok=True)
    os.chdir(out_dir)
    ids = {name: sbatch(args) for name, args in SCENARIOS.items()}
    terminal = {"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT"}
    wait_for(ids["cancelled_running"], {"RUNNING"})
    subprocess.run(["scancel", str(ids["cancelled_running"])], check=True)
    subprocess.run(["scancel", str(ids["cancelled_pending"])], check=True)
    wait_for(ids["requeued"], {"RUNNING"})
    subprocess.run(["scontrol", "requeue", str(ids["requeued"])], check=True)
    for name in ("completed", "failed_exit3", "killed_signal9", "cancelled_running"):
        wait_for(ids[name], terminal)
    wait_for(ids["array_task2_fails"], terminal)
    wait_for(ids["resources"], terminal)
    wait_for(ids["timeout"], terminal)
    time.sleep(2)  # accounting trails slurmctld by a moment
    live = records(pyslurm.Jobs.load(), ids)
    db = records(pyslurm.db.Jobs.load(pyslurm.db.JobFilter(ids=sorted(ids.values()))), ids)
    (out_dir / "pyslurm-live.json").write_text(json.dumps(live, indent=1, sort_keys=True) + "\n")
    (out_dir / "pyslurm-db.json").write_text(json.dumps(db, indent=1, sort_keys=True) + "\n")
    (out_dir / "pyslurm-sacct.json").write_text(
        json.dumps(others_said(ids["resources"]), indent=1, sort_keys=True) + "\n"
    )
    subprocess.run(["scancel", *(str(i) for i in ids.values())], check=False)


if __name__ == "__main__":
    main()
