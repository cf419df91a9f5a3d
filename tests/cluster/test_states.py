"""Every job state through schedule and finish, on the real local Slurm."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import (
    Cluster,
    call,
    finish_by_job,
    git,
    only,
    schedule_ok,
    subjects,
    write_script,
)


def _schedule(ds: Any, script: str, output: str = "out", *sbatch_args: str) -> int:
    return schedule_ok(ds, ["sbatch", *sbatch_args, script], output)


def _finish(ds: Any, **kwargs: Any) -> dict[Any, dict[str, Any]]:
    return finish_by_job(ds, **kwargs)


@pytest.fixture
def in_dataset(dataset: Any, monkeypatch: pytest.MonkeyPatch) -> Any:
    monkeypatch.chdir(dataset.path)
    return dataset


def test_completed_and_failed(slurm_any: Cluster, in_dataset: Any) -> None:
    ds = in_dataset
    ok = _schedule(ds, write_script(ds, "ok.sh", "#SBATCH -o out/%j.log\necho 1 > out/a\n"))
    bad = _schedule(
        ds, write_script(ds, "bad.sh", "#SBATCH -o bad/%j.log\necho 1 > bad/a\nexit 3\n"), "bad"
    )
    slurm_any.wait_done([ok, bad])
    done = _finish(ds)
    assert done[ok]["status"] == "ok" and done[ok]["state"] == "COMPLETED"
    assert done[bad]["status"] == "impossible" and done[bad]["state"] == "FAILED"
    assert subjects(ds)[0] == f"[DATALAD SLURM RUN] Slurm job {ok}: Completed"
    # the failed job is still open and reported again, never committed by accident
    again = _finish(ds)
    assert list(again) == [bad] and again[bad]["status"] == "impossible"


def test_cancelled_while_running(slurm_any: Cluster, in_dataset: Any) -> None:
    ds = in_dataset
    job = _schedule(ds, write_script(ds, "slow.sh", "echo started > out/a\nsleep 300\n"))
    slurm_any.wait_state(job, ["RUNNING"])
    # RUNNING comes before the script's first line: on a busy machine, wait for that line
    started = Path(ds.path, "out", "a")
    for _ in range(300):
        if started.exists():
            break
        time.sleep(0.1)
    listed = only(call(ds, "finish", list_open_jobs=True), "finish")
    assert listed[0]["slurm_job_status"] == "RUNNING"
    running = _finish(ds)
    assert running[job]["status"] == "notneeded" and "still active" in running[job]["message"]
    slurm_any.scancel(job)
    slurm_any.wait_done([job])
    cancelled = _finish(ds)
    assert cancelled[job]["status"] == "impossible"
    assert f"Statuses: {job}: CANCELLED" in cancelled[job]["message"]
    committed = _finish(ds, commit_failed_jobs=True)
    assert committed[job]["status"] == "ok"
    assert subjects(ds)[0] == f"[DATALAD SLURM RUN] Slurm job {job}: Cancelled"
    assert "out/a" in git(ds, "show", "--name-only", "--format=", "HEAD").split()


def test_cancelled_while_pending(slurm_any: Cluster, in_dataset: Any) -> None:
    ds = in_dataset
    job = _schedule(ds, write_script(ds, "held.sh", "echo x > out/a\n"), "out", "--hold")
    listed = only(call(ds, "finish", list_open_jobs=True), "finish")
    assert [(r["slurm_job_id"], r["slurm_job_status"]) for r in listed] == [(job, "PENDING")]
    assert _finish(ds)[job]["status"] == "notneeded"
    slurm_any.scancel(job)
    slurm_any.wait_done([job])
    result = _finish(ds, close_failed_jobs=True)[job]
    assert result["status"] == "ok"
    assert result["message"] == f"Closing failed / cancelled jobs. Statuses: {job}: CANCELLED"
    assert len(subjects(ds)) == len(git(ds, "log", "--format=%H").split())  # nothing committed
    assert not any("SLURM RUN" in s for s in subjects(ds))


def test_array_with_one_failed_task(slurm_any: Cluster, in_dataset: Any) -> None:
    ds = in_dataset
    script = write_script(
        ds,
        "arr.sh",
        """
#SBATCH --array=0-3
#SBATCH --output=out/slurm-%A_%a.out
echo $SLURM_ARRAY_TASK_ID > out/r_$SLURM_ARRAY_TASK_ID
[ "$SLURM_ARRAY_TASK_ID" != 3 ]
""",
    )
    job = _schedule(ds, script)
    slurm_any.wait_done([job])
    result = _finish(ds)[job]
    assert result["status"] == "impossible"
    assert (
        f"Statuses: {job}_0: COMPLETED, {job}_1: COMPLETED, {job}_2: COMPLETED, {job}_3: FAILED"
    ) in result["message"]
    committed = _finish(ds, commit_failed_jobs=True)[job]
    assert committed["status"] == "ok"
    assert subjects(ds)[0] == f"[DATALAD SLURM RUN] Slurm job {job}: Failed"
    files = set(git(ds, "show", "--name-only", "--format=", "HEAD").split())
    assert {f"out/slurm-{job}_{t}.out" for t in range(4)} <= files
    assert {f"out/r_{t}" for t in range(4)} <= files


def test_array_all_completed(slurm_any: Cluster, in_dataset: Any) -> None:
    ds = in_dataset
    script = write_script(
        ds,
        "arr.sh",
        """
#SBATCH --array=1-3
#SBATCH --output=out/slurm-%A_%a.out
echo $SLURM_ARRAY_TASK_ID > out/r_$SLURM_ARRAY_TASK_ID
""",
    )
    job = _schedule(ds, script)
    slurm_any.wait_done([job])
    assert _finish(ds)[job]["status"] == "ok"
    message = git(ds, "log", "-1", "--format=%B")
    assert f'"{job}_1": "COMPLETED"' in message and f'"{job}_3": "COMPLETED"' in message
    files = set(git(ds, "show", "--name-only", "--format=", "HEAD").split())
    assert {f"out/slurm-{job}_{t}.out" for t in (1, 2, 3)} <= files


def test_requeued_job_is_active_then_completes(slurm_any: Cluster, in_dataset: Any) -> None:
    ds = in_dataset
    script = write_script(
        ds,
        "requeue.sh",
        """
#SBATCH --requeue
#SBATCH --output=out/slurm-%j.out
echo "run $SLURM_RESTART_COUNT" >> out/runs
if [ "${SLURM_RESTART_COUNT:-0}" = 0 ]; then sleep 300; fi
""",
    )
    job = _schedule(ds, script)
    slurm_any.wait_state(job, ["RUNNING"])
    slurm_any.run("scontrol", "requeue", str(job))
    state = slurm_any.wait_state(job, ["REQUEUED", "PENDING", "REQUEUE_HOLD"])
    result = _finish(ds)[job]
    assert result["status"] == "notneeded", result  # requeued is active, never failed
    assert f"{job}: {state}" in result["message"] or f"{job}: PENDING" in result["message"], result
    # Slurm holds a requeued job back (Reason=BeginTime) for two minutes: release it soon
    # (not at once: slurmd refuses a relaunch within moments as "Job credential revoked")
    slurm_any.wait_state(job, ["PENDING"])
    for _ in range(50):
        if (
            slurm_any.run(
                "scontrol", "update", f"jobid={job}", "StartTime=now+5", check=False
            ).returncode
            == 0
        ):
            break
        time.sleep(0.2)
    slurm_any.wait_done([job], timeout=180)
    final = _finish(ds)[job]
    assert final["status"] == "ok", final["message"]
    assert subjects(ds)[0] == f"[DATALAD SLURM RUN] Slurm job {job}: Completed"


def test_finish_one_job_by_id(slurm: Cluster, in_dataset: Any) -> None:
    ds = in_dataset
    script = write_script(ds, "ok.sh", "#SBATCH -o %x-%j.log\necho 1 > $1/a\n")
    ids = []
    for name in ("one", "two"):
        Path(ds.path, name).mkdir()
        results = call(ds, "schedule", f"sbatch --job-name={name} {script} {name}", outputs=[name])
        ids.append(int(results[0]["slurm_job_id"]))
    first, second = ids
    slurm.wait_done([first, second])
    done = _finish(ds, job_id=second)
    assert list(done) == [second] and done[second]["status"] == "ok"
    assert subjects(ds)[0] == f"[DATALAD SLURM RUN] Slurm job {second}: Completed"
    assert f"two-{second}.log" in git(ds, "show", "--name-only", "--format=", "HEAD").split()
    open_jobs = only(call(ds, "finish", list_open_jobs=True), "finish")
    assert [r["slurm_job_id"] for r in open_jobs] == [first]
    unknown = call(ds, "finish", job_id=999999)
    assert unknown[0]["status"] == "error"
    assert "job 999999 is not an open job" in unknown[0]["message"]


def test_unknown_job_does_not_stop_the_others(slurm: Cluster, in_dataset: Any) -> None:
    ds = in_dataset
    from datalad_slurm.jobs.statedir import open_registry

    ok = _schedule(ds, write_script(ds, "ok.sh", "#SBATCH -o out/%j.log\necho 1 > out/a\n"))
    with open_registry(ds.path) as registry:
        ghost = registry.reserve(
            cmd="sbatch gone.sh", pwd=".", inputs=[], extra_inputs=[], outputs=["ghost"]
        )
        registry.mark_submitted(ghost, 987654, None)
    slurm.wait_done([ok])
    done = _finish(ds)
    assert done[ok]["status"] == "ok"
    assert done[987654]["status"] == "impossible"
    assert "Slurm does not know job 987654" in done[987654]["message"]
    closed = _finish(ds, close_failed_jobs=True)
    assert closed[987654]["status"] == "ok"


def test_timeout_is_never_completed(slurm: Cluster, in_dataset: Any) -> None:
    """Slow: Slurm enforces time limits in whole minutes on a ~30 s sweep."""
    ds = in_dataset
    job = _schedule(
        ds,
        write_script(
            ds, "slow.sh", "#SBATCH --time=1\n#SBATCH -o out/%j.log\necho x > out/a\nsleep 600\n"
        ),
    )
    slurm.wait_done([job], timeout=200)
    result = _finish(ds)[job]
    assert result["status"] == "impossible"
    assert f"Statuses: {job}: TIMEOUT" in result["message"]
