"""The hook's queue without Slurm: liveness, claims, take-over, one worker draining a backlog."""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from datalad_slurm.spool import UserSpool
from tests.unit.hook_modules import entry, settings, worker
from tests.unit.hook_modules import queue as hook_queue


def _dead_pid() -> int:
    process = subprocess.Popen(["true"])
    process.wait()
    return process.pid


def _queue(spool: Path) -> object:
    (spool / ".hook").mkdir(mode=0o700)
    config = SimpleNamespace(spool=str(spool))
    queue = hook_queue.open_queue(config, "c")
    assert queue is not None
    return queue


def _pending_text(job: int, uid: int | None = None, complete: bool = True) -> str:
    env = {
        "SLURM_JOB_ID": str(job),
        "SLURM_JOB_UID": str(os.getuid() if uid is None else uid),
        "SLURM_CLUSTER_NAME": "c",
        "SLURM_ARRAY_JOB_ID": "",
        "SLURM_ARRAY_TASK_ID": "",
        "SLURM_JOB_USER": "someone",
        "SLURM_JOB_EXIT_CODE2": "0:0",
        "SLURM_JOB_WORK_DIR": "/data/with space",
    }
    return "".join(f"{k}={v}\n" for k, v in env.items()) + (".\n" if complete else "")


def test_liveness_needs_the_same_start_time() -> None:
    sleeper = subprocess.Popen(["sleep", "30"])
    try:
        start = hook_queue.process_start(sleeper.pid)
        assert start and start.isdigit()
        assert hook_queue.is_alive(sleeper.pid, start)
        # the same pid with another start time: a reused pid, not the worker
        assert not hook_queue.is_alive(sleeper.pid, str(int(start) - 1))
    finally:
        sleeper.kill()
        sleeper.wait()
    assert not hook_queue.is_alive(sleeper.pid, start)
    assert hook_queue.process_start(_dead_pid()) is None


def test_zombie_is_not_alive() -> None:
    child = subprocess.Popen(["true"])
    deadline = time.monotonic() + 5
    while hook_queue.process_start(child.pid) is not None and time.monotonic() < deadline:
        time.sleep(0.01)  # exited, not reaped yet: a zombie
    assert Path(f"/proc/{child.pid}/stat").read_text().split(") ")[1][0] == "Z"
    assert hook_queue.process_start(child.pid) is None
    child.wait()


def test_pending_file_is_read_only_when_complete(tmp_path: Path) -> None:
    path = tmp_path / "11.1"
    path.write_text(_pending_text(11, complete=False))
    assert hook_queue.read_pending_file(str(path)) is None
    path.write_text(_pending_text(11) + "SLURM_JOB_ID=12\n")  # text after the end line
    assert hook_queue.read_pending_file(str(path)) is None
    path.write_text(_pending_text(11).replace("SLURM_JOB_USER", "LD_PRELOAD"))
    env = hook_queue.read_pending_file(str(path))
    assert env and env["SLURM_JOB_ID"] == "11" and env["SLURM_JOB_WORK_DIR"] == "/data/with space"
    assert "LD_PRELOAD" not in env  # only the known fields
    path.unlink()
    path.symlink_to(tmp_path / "elsewhere")
    (tmp_path / "elsewhere").write_text(_pending_text(11))
    assert hook_queue.read_pending_file(str(path)) is None  # never through a symlink


def test_a_pending_job_is_claimed_once(spool: Path) -> None:
    first = _queue(spool)
    second = hook_queue.Queue(first.root)
    second.me = f"{_dead_pid()}@1@elsewhere"  # another worker
    Path(first.pending, "11.1").write_text(_pending_text(11))
    claims = [first.claim("11.1"), second.claim("11.1")]
    assert claims[0] and claims[1] is None
    assert os.listdir(first.pending) == [] and os.listdir(first.claimed) == [claims[0]]


def test_claims_of_dead_workers_are_taken_over(spool: Path) -> None:
    queue = _queue(spool)
    host = os.uname().nodename
    sleeper = subprocess.Popen(["sleep", "30"])
    try:
        live = f"12.1@{sleeper.pid}@{hook_queue.process_start(sleeper.pid)}@{host}"
        dead = f"13.1@{_dead_pid()}@1@{host}"
        reused = f"14.1@{sleeper.pid}@1@{host}"  # a live pid, but not the claimant
        remote = "15.1@1@1@another-host"
        old_remote = "16.1@1@1@another-host"
        for name in (live, dead, reused, remote, old_remote):
            Path(queue.claimed, name).write_text(_pending_text(int(name.split(".")[0])))
        past = time.time() - hook_queue.STALE_CLAIM_AGE - 10
        os.utime(Path(queue.claimed, old_remote), (past, past))
        assert queue.orphaned_claims() == sorted([dead, reused, old_remote])
        taken = queue.take_over(dead)
        assert taken == f"13.1@{queue.me}"
        assert queue.take_over(dead) is None  # already gone: another worker was faster
        assert queue.read_claim(taken)["SLURM_JOB_ID"] == "13"
        assert dead not in queue.orphaned_claims() and taken not in queue.orphaned_claims()
    finally:
        sleeper.kill()
        sleeper.wait()


def _config(tmp_path: Path, spool: Path) -> Any:
    return settings.Settings(
        config=str(tmp_path / "hook.conf"),
        spool=str(spool),
        hook_user="root",
        log=str(tmp_path / "hook.log"),
        query_timeout=0.5,
        slurm_conf=str(tmp_path / "no-slurm.conf"),
    )


def test_one_worker_drains_backlog_and_orphans(tmp_path: Path, spool: Path) -> None:
    """Slurm cannot be asked here: every event falls back to the environment."""
    queue = _queue(spool)
    UserSpool(str(spool)).register("c", 99)  # the user's folders exist
    for job in range(20, 30):
        Path(queue.pending, f"{job}.1").write_text(_pending_text(job))
    Path(queue.claimed, f"30.1@{_dead_pid()}@1@{os.uname().nodename}").write_text(_pending_text(30))
    Path(queue.pending, "31.1").write_text(_pending_text(31, complete=False))  # being written
    rounds: list[int] = []

    class CountingWorker(worker.Worker):  # type: ignore[name-defined,misc]
        def ask_slurm(self) -> None:
            rounds.append(len(self.due_jobs()))
            super().ask_slurm()

    counting = CountingWorker(_config(tmp_path, spool), queue)
    assert counting.run() is False
    # all of them in each round of questions, not one job after the other
    assert max(rounds) >= 10
    events = [
        json.loads(p.read_text()) for p in (spool / str(os.getuid()) / "events").glob("*.event")
    ]
    assert sorted(e["job_id"] for e in events) == list(range(20, 31))
    assert {e["state"] for e in events} == {"UNKNOWN"}
    assert {e["resolved_by"] for e in events} == {"environment"}
    assert {e["work_dir"] for e in events} == {"/data/with space"}
    assert os.listdir(queue.claimed) == []
    assert os.listdir(queue.pending) == ["31.1"]  # young and incomplete: left alone
    assert not os.path.exists(queue.pid_file)  # gone with the worker


def test_worker_stays_while_an_entry_point_names_it(tmp_path: Path, spool: Path) -> None:
    queue = _queue(spool)
    serving = worker.Worker(_config(tmp_path, spool), queue)
    pid, start, _ = queue.me.split("@")
    queue.announce()
    assert Path(queue.pid_file).read_text() == f"{pid} {start}\n"
    assert queue.names_me()
    queue.retire()
    assert not queue.names_me() and not os.path.exists(queue.pid_file)
    assert serving.run() is False


def test_second_worker_started_at_the_same_moment_leaves(
    tmp_path: Path, spool: Path, monkeypatch: Any
) -> None:
    """Two entry points found no worker at once: the one not named in the pid file leaves at
    once and leaves the pending files to the named one; a pid file naming a dead worker or a
    reused pid does not count."""
    queue = _queue(spool)
    UserSpool(str(spool)).register("c", 99)
    Path(queue.pending, "40.1").write_text(_pending_text(40))
    config = tmp_path / "hook.conf"
    config.write_text(f"spool = {spool}\nhook_user = root\nlog = {tmp_path / 'hook.log'}\n")
    env = {"DATALAD_SLURM_CONFIG": str(config)}
    monkeypatch.chdir(tmp_path)  # serve_main works in the queue
    sleeper = subprocess.Popen(["sleep", "30"])
    try:
        Path(queue.pid_file).write_text(f"{sleeper.pid} {hook_queue.process_start(sleeper.pid)}\n")
        assert queue.served_by_another()
        assert entry.serve_main("c", env) == 0
        assert os.listdir(queue.pending) == ["40.1"] and os.listdir(queue.claimed) == []
        for stale in (f"{_dead_pid()} 1", f"{sleeper.pid} 1"):  # dead; a reused pid
            Path(queue.pid_file).write_text(stale + "\n")
            assert not queue.served_by_another()
    finally:
        sleeper.kill()
        sleeper.wait()
    assert entry.serve_main("c", env) == 0  # named nobody alive: serves the job
    assert os.listdir(queue.pending) == []
    assert [e.job_id for e in UserSpool(str(spool)).read_events({os.getuid()})[0]] == [40]


def test_queue_of_someone_else_is_not_used(spool: Path) -> None:
    hook_dir = spool / ".hook"
    hook_dir.mkdir(mode=0o700)
    os.chown(hook_dir, 4242, 4242)  # a user made it first
    assert hook_queue.open_queue(SimpleNamespace(spool=str(spool)), "c") is None
    os.chown(hook_dir, os.getuid(), os.getgid())
    hook_dir.chmod(0o733)
    assert hook_queue.open_queue(SimpleNamespace(spool=str(spool)), "c") is None
    hook_dir.rmdir()
    hook_dir.symlink_to(spool)
    assert hook_queue.open_queue(SimpleNamespace(spool=str(spool)), "c") is None


def test_queue_name_matches_the_entry_point() -> None:
    assert hook_queue.queue_name("local7037") == "local7037"
    assert hook_queue.queue_name("") == "_"
    assert hook_queue.queue_name("../x") == "_"
    assert hook_queue.queue_name(".hidden") == "_"
    assert hook_queue.queue_name("a/b") == "_"
