"""The hook -> spool -> finish pipeline on real Slurm, with the hook installed by tests/run
through epilog/install and contrib/slurm.conf.d/datalad-slurm.conf."""

from __future__ import annotations

import json
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import (
    Cluster,
    call,
    finish_by_job,
    git,
    hook_asks_through,
    only,
    schedule_ok,
    spare_cluster,
    subjects,
    write_script,
)

REPO = Path(__file__).resolve().parents[2]


def _schedule(ds: Any, cmd: str, output: str = "out") -> int:
    return schedule_ok(ds, cmd, output)


def _finish(ds: Any, **kwargs: Any) -> dict[Any, dict[str, Any]]:
    return finish_by_job(ds, **kwargs)


def _wait_events(cluster: Cluster, labels: set[str], timeout: float = 120) -> dict[str, Any]:
    """Events by ``N`` / ``A_T`` label once all the given labels have one."""
    deadline = time.monotonic() + timeout
    found: dict[str, Any] = {}
    while time.monotonic() < deadline:
        found = {}
        for event in cluster.events():
            job = event.get("array_job_id", event["job_id"])
            task = event.get("array_task_id")
            found[f"{job}" if task is None else f"{job}_{task}"] = event
        if labels <= set(found):
            return found
        time.sleep(0.2)
    raise AssertionError(
        f"events for {labels - set(found)} did not arrive; hook log: "
        f"{Path(cluster.hook_log).read_text()[-2000:]}"
    )


@pytest.fixture
def in_dataset(dataset: Any, monkeypatch: pytest.MonkeyPatch) -> Any:
    monkeypatch.chdir(dataset.path)
    return dataset


def test_events_for_every_state(spooled: Cluster, in_dataset: Any) -> None:
    ds = in_dataset
    ok = _schedule(
        ds, "sbatch " + write_script(ds, "ok.sh", "#SBATCH -o out/%j.log\necho 1 > out/a\n")
    )
    bad = _schedule(
        ds, "sbatch " + write_script(ds, "bad.sh", "#SBATCH -o bad/%j.log\nexit 3\n"), "bad"
    )
    slow = _schedule(
        ds, "sbatch " + write_script(ds, "slow.sh", "#SBATCH -o slow/%j.log\nsleep 300\n"), "slow"
    )
    arr = _schedule(
        ds,
        "sbatch "
        + write_script(
            ds,
            "arr.sh",
            """
#SBATCH --array=0-2
#SBATCH -o arr/%A_%a.log
echo $SLURM_ARRAY_TASK_ID > arr/r$SLURM_ARRAY_TASK_ID
[ "$SLURM_ARRAY_TASK_ID" != 2 ]
""",
        ),
        "arr",
    )
    spooled.wait_state(slow, ["RUNNING"])
    spooled.scancel(slow)
    events = _wait_events(
        spooled, {str(ok), str(bad), str(slow), f"{arr}_0", f"{arr}_1", f"{arr}_2"}
    )
    assert events[str(ok)]["state"] == "COMPLETED" and events[str(ok)]["exit_code"] == 0
    assert events[str(bad)]["state"] == "FAILED" and events[str(bad)]["exit_code"] == 3
    assert events[str(slow)]["state"] == "CANCELLED"
    assert [events[f"{arr}_{t}"]["state"] for t in range(3)] == ["COMPLETED", "COMPLETED", "FAILED"]
    assert events[str(ok)]["stdout"].endswith(f"out/{ok}.log")
    assert all(e["version"] == 1 and e["uid"] == os.getuid() for e in events.values())
    assert {e["resolved_by"] for e in events.values()} == {hook_asks_through()}
    spooled.wait_done([ok, bad, slow, arr])

    done = _finish(ds)
    assert done[ok]["status"] == "ok"
    assert done[bad]["status"] == "impossible" and f"{bad}: FAILED" in done[bad]["message"]
    assert done[slow]["status"] == "impossible" and f"{slow}: CANCELLED" in done[slow]["message"]
    assert f"{arr}_2: FAILED" in done[arr]["message"]
    env = json.loads(Path(ds.path, "out", f"slurm-job-{ok}.env.json").read_text())
    assert env["backend"] == "spool"  # no Slurm query was needed for it
    assert f"out/{ok}.log" in git(ds, "show", "--name-only", "--format=", "HEAD").split()
    # the committed job's events are consumed, the others kept
    left = {e.get("array_job_id", e["job_id"]) for e in spooled.events()}
    assert ok not in left and {bad, slow, arr} <= left
    closed = _finish(ds, close_failed_jobs=True)
    assert {closed[j]["status"] for j in (bad, slow, arr)} == {"ok"}
    assert not {bad, slow, arr} & {e.get("array_job_id", e["job_id"]) for e in spooled.events()}
    # registrations are gone with them
    registered = {
        p.name.split(".")[-1] for p in Path(spooled.spool, str(os.getuid()), "jobs").iterdir()
    }
    assert not registered & {str(j) for j in (ok, bad, slow, arr)}


def test_cancelled_while_pending_runs_no_hook(spooled_acct: Cluster, in_dataset: Any) -> None:
    spooled = spooled_acct
    ds = in_dataset
    job = _schedule(ds, "sbatch --hold " + write_script(ds, "h.sh", "echo\n"))
    spooled.scancel(job)
    spooled.wait_done([job])
    time.sleep(1)
    assert str(job) not in {str(e["job_id"]) for e in spooled.events()}
    result = _finish(ds)[job]
    assert result["status"] == "impossible" and f"{job}: CANCELLED" in result["message"]


def test_job_ending_before_its_registration(short: Cluster, in_dataset: Any) -> None:
    """The submit command lingers after sbatch: the job ends before schedule registers it.

    sbatch through PATH submits held (the job cannot start before schedule reserved its
    logs); called by its full path it does not, so the job can end first."""
    ds = in_dataset
    script = write_script(ds, "fast.sh", "#SBATCH -o out/%j.log\necho fast > out/a\n")
    sbatch = shutil.which("sbatch")
    job = _schedule(ds, f"{sbatch} {script} && sleep 4")
    assert short.state(job) in ("COMPLETED", "")  # it ended while schedule still ran
    _wait_events(short, {str(job)})
    short.gone(job)
    result = _finish(ds)[job]
    assert result["status"] == "ok", result
    assert subjects(ds)[0] == f"[DATALAD SLURM RUN] Slurm job {job}: Completed"


def test_jobs_gone_from_slurmctld_without_accounting(
    short: Cluster, in_dataset: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    ds = in_dataset
    ok = _schedule(
        ds, "sbatch " + write_script(ds, "ok.sh", "#SBATCH -o out/%j.log\necho 1 > out/a\n")
    )
    slow = _schedule(
        ds, "sbatch " + write_script(ds, "s.sh", "#SBATCH -o s/%j.log\nsleep 300\n"), "s"
    )
    short.wait_state(slow, ["RUNNING"])
    short.scancel(slow)
    _wait_events(short, {str(ok), str(slow)})
    short.gone(ok)
    short.gone(slow)
    # Slurm itself no longer knows either job: without the spool nothing could be decided
    monkeypatch.delenv("DATALAD_SLURM_CONFIG")
    ds.config.reload(force=True)  # DataLad caches DATALAD_* variables as config
    blind = _finish(ds)
    assert blind[ok]["status"] == "impossible" and "does not know" in blind[ok]["message"]
    assert "SLURM RUN" not in subjects(ds)[0]
    monkeypatch.setenv("DATALAD_SLURM_CONFIG", short.hook_config)
    ds.config.reload(force=True)
    done = _finish(ds)
    assert done[ok]["status"] == "ok"
    assert done[slow]["status"] == "impossible" and f"{slow}: CANCELLED" in done[slow]["message"]
    assert subjects(ds)[0] == f"[DATALAD SLURM RUN] Slurm job {ok}: Completed"


def test_timeout_event_after_the_job_left(short: Cluster, in_dataset: Any) -> None:
    """Slow (~80 s): time limits are whole minutes."""
    ds = in_dataset
    job = _schedule(
        ds,
        "sbatch "
        + write_script(
            ds, "t.sh", "#SBATCH --time=1\n#SBATCH -o out/%j.log\necho x > out/a\nsleep 600\n"
        ),
    )
    events = _wait_events(short, {str(job)}, timeout=200)
    assert events[str(job)]["state"] == "TIMEOUT"
    assert events[str(job)]["resolved_by"] == hook_asks_through()
    short.gone(job)
    result = _finish(ds)[job]
    assert result["status"] == "impossible" and f"{job}: TIMEOUT" in result["message"]


def _forger() -> pwd.struct_passwd:
    name = "dls-forger"
    try:
        return pwd.getpwnam(name)
    except KeyError:
        subprocess.run(
            ["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", name],
            check=True,
        )
        return pwd.getpwnam(name)


def test_forged_event_is_rejected(spooled_acct: Cluster, in_dataset: Any) -> None:
    spooled = spooled_acct
    ds = in_dataset
    job = _schedule(ds, "sbatch --hold " + write_script(ds, "h.sh", "echo\n"))
    forger = _forger()
    events = spooled.events_dir()
    forged = {
        "version": 1,
        "job_id": job,
        "state": "COMPLETED",
        "exit_code": 0,
        "cluster": None,
        "written_at": time.time(),
    }
    name = f"_.{job}.{job}.1.1.event"
    body = json.dumps({k: v for k, v in forged.items() if v is not None})
    # another user can drop a file into the events folder (mode 1733), but not as the hook
    subprocess.run(
        ["runuser", "-u", forger.pw_name, "--", "sh", "-c", f"cat > {events}/{name}"],
        input=body,
        text=True,
        check=True,
    )
    assert (events / name).stat().st_uid == forger.pw_uid
    results = only(call(ds, "finish"), "finish")
    rejected = [r for r in results if r.get("rejected_event") == name]
    assert rejected and rejected[0]["status"] == "impossible"
    assert f"was written by uid {forger.pw_uid}" in rejected[0]["message"]
    # the forged completion was not used: the held job is still just pending
    mine = [r for r in results if r.get("slurm_job_id") == job]
    assert mine[0]["status"] == "notneeded"
    assert not any("SLURM RUN" in s for s in subjects(ds))
    assert (events / (name + ".rejected")).exists()
    spooled.scancel(job)


def test_symlink_in_the_spool_is_not_followed(
    spooled_acct: Cluster, in_dataset: Any, tmp_path: Path
) -> None:
    spooled = spooled_acct
    ds = in_dataset
    # a job registered, then its user swaps the events folder for a symlink into
    # a folder the hook's account could write to
    target = tmp_path / "elsewhere"
    target.mkdir()
    shutil.chown(target, "slurm")
    events = spooled.events_dir()
    job = _schedule(
        ds, "sbatch --hold " + write_script(ds, "ok.sh", "#SBATCH -o out/%j.log\necho\n")
    )
    aside = events.with_name("events.aside")
    events.rename(aside)
    try:
        events.symlink_to(target)
        log_before = Path(spooled.hook_log).read_text()
        spooled.run("scontrol", "release", str(job))
        spooled.wait_done([job])
        deadline = time.monotonic() + 20
        while Path(spooled.hook_log).read_text() == log_before and time.monotonic() < deadline:
            time.sleep(0.2)
        assert list(target.iterdir()) == []  # nothing written through the link
        assert f"job {job}: no event written" in Path(spooled.hook_log).read_text()
        # finish reports the unusable spool and still finishes through Slurm
        results = only(call(ds, "finish"), "finish")
        assert any("the spool could not be read" in r["message"] for r in results)
        assert [r["status"] for r in results if r.get("slurm_job_id") == job] == ["ok"]
    finally:
        events.unlink()
        aside.rename(events)


def _hook_env(cluster: Cluster, job_id: int) -> dict[str, str]:
    from datalad_slurm.slurm.conf import cluster_name

    return {
        "SLURM_JOB_ID": str(job_id),
        "SLURM_JOB_UID": str(os.getuid()),
        "SLURM_JOB_USER": "root",
        "SLURM_CLUSTER_NAME": cluster_name(cluster.conf) or "",
        "SLURM_JOB_EXIT_CODE2": "0:0",
    }


def _run_as_slurm(hook: Path, env: dict[str, str]) -> None:
    """The hook as slurmctld runs it: user slurm, only the given environment; it must exit 0."""
    assignments = [f"{k}={v}" for k, v in env.items()]
    proc = subprocess.run(
        ["runuser", "-u", "slurm", "--", "env", "-i", *assignments, str(hook)],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert proc.returncode == 0, proc


@pytest.mark.parametrize("trouble", ["unwritable", "missing", "malformed", "no-config"])
def test_hook_exits_0_on_every_path(spooled_acct: Cluster, in_dataset: Any, trouble: str) -> None:
    spooled = spooled_acct
    ds = in_dataset
    job = _schedule(ds, "sbatch --hold " + write_script(ds, "h.sh", "echo\n"))
    hook = Path(spooled.hook, "libexec", "datalad-slurm-epilog")
    env = _hook_env(spooled, job)
    events = spooled.events_dir()
    mode = events.stat().st_mode
    config = None
    try:
        if trouble == "unwritable":
            events.chmod(0o700)  # the hook's account may no longer write
        elif trouble == "missing":
            env["DATALAD_SLURM_CONFIG"] = str(Path(spooled.hook, "moved.conf"))
            config = Path(env["DATALAD_SLURM_CONFIG"])
            config.write_text(f"spool = {spooled.spool}/nowhere\nlog = {spooled.hook_log}\n")
        elif trouble == "malformed":
            env["SLURM_JOB_UID"] = "not-a-number"
        else:
            env["DATALAD_SLURM_CONFIG"] = "/nonexistent/datalad-slurm.conf"
        started = time.monotonic()
        _run_as_slurm(hook, env)
        assert time.monotonic() - started < 5  # the entry point hands off and returns
        if trouble == "unwritable":
            # the detached worker gives up and says so in the admin's log
            deadline = time.monotonic() + 20
            while f"job {job}: no event written" not in Path(spooled.hook_log).read_text():
                assert time.monotonic() < deadline, Path(spooled.hook_log).read_text()[-2000:]
                time.sleep(0.2)
        assert not [e for e in spooled.events() if e["job_id"] == job]
    finally:
        events.chmod(mode)
        if config:
            config.unlink()
        spooled.scancel(job)


def test_event_the_hook_could_not_resolve_is_settled_by_finish(
    spooled_acct: Cluster, in_dataset: Any
) -> None:
    """slurmctld does not answer the hook: its event says UNKNOWN, and finish asks Slurm."""
    ds = in_dataset
    job = _schedule(
        ds, "sbatch " + write_script(ds, "ok.sh", "#SBATCH -o out/%j.log\necho 1 > out/a\n")
    )
    _wait_events(spooled_acct, {str(job)})
    # forget the hook's real event; a worker that cannot reach slurmctld writes the next one
    for path in spooled_acct.events_dir().glob(f"*.{job}.*.event"):
        path.unlink()
    _wait_no_worker(spooled_acct)
    config = Path(spooled_acct.hook, "unreachable.conf")
    config.write_text(
        Path(spooled_acct.hook_config).read_text() + "slurm_conf = /nonexistent/slurm.conf\n"
    )
    try:
        _run_as_slurm(
            Path(spooled_acct.hook, "libexec", "datalad-slurm-epilog"),
            {**_hook_env(spooled_acct, job), "DATALAD_SLURM_CONFIG": str(config)},
        )
        event = _wait_events(spooled_acct, {str(job)})[str(job)]
        _wait_no_worker(spooled_acct)  # the worker that cannot ask serves no later test
    finally:
        config.unlink()
    assert (event["state"], event["resolved_by"]) == ("UNKNOWN", "environment")
    result = _finish(ds)[job]
    assert result["status"] == "ok", result
    assert subjects(ds)[0] == f"[DATALAD SLURM RUN] Slurm job {job}: Completed"
    assert not [e for e in spooled_acct.events() if e["job_id"] == job]  # consumed


def test_hook_as_slurmd_epilog_never_drains_the_node(
    spooled_acct: Cluster, in_dataset: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The same hook as a slurmd Epilog, with an unwritable spool: the node stays up.

    The job runs on a cluster of its own whose slurmd has the hook as its Epilog (issue 16:
    it used to go to the accounting cluster, whose slurmd does not run the hook)."""
    spooled = spooled_acct
    ds = in_dataset
    extra = tmp_path / "epilog.conf"
    hook = Path(spooled.hook, "libexec", "datalad-slurm-epilog")
    extra.write_text(f"Epilog={hook}\n")
    with spare_cluster("--extra-conf", str(extra)) as cluster:
        monkeypatch.setenv("SLURM_CONF", cluster.conf)  # schedule submits there
        events = spooled.events_dir()
        if not events.exists():  # the first job of ours this spool sees
            events.mkdir(parents=True)
            events.chmod(0o1733)
        mode = events.stat().st_mode
        events.chmod(0o700)
        try:
            Path(ds.path, "out").mkdir()
            results = call(ds, "schedule", "sbatch --wrap 'echo hi > out/a'", outputs=["out"])
            assert [r["status"] for r in results] == ["ok"], results
            job = results[0]["slurm_job_id"]
            # the job leaves COMPLETING only once slurmd's Epilog has ended and slurmctld has
            # heard its exit status (a failed Epilog drains the node in the same step)
            cluster.wait_done([job])
            assert cluster.state(job) == "COMPLETED", "the job did not run on the spare cluster"
            assert Path(ds.path, "out", "a").read_text() == "hi\n"
            node = cluster.run("sinfo", "-h", "-o", "%T %E").stdout.strip()
            assert node == "idle none", node
        finally:
            events.chmod(mode)


def test_cron_finish_beside_a_manual_one(spooled_acct: Cluster, in_dataset: Any) -> None:
    spooled = spooled_acct
    ds = in_dataset
    script = write_script(ds, "w.sh", "echo $1 > $1/r\n")
    jobs = [_schedule(ds, f"sbatch -o o{n}/%j.log {script} o{n}", f"o{n}") for n in range(8)]
    spooled.wait_done(jobs)
    _wait_events(spooled, {str(j) for j in jobs})
    datalad = shutil.which("datalad")
    assert datalad
    cron_env = {
        "PATH": "/usr/bin:/bin",
        "HOME": os.environ.get("HOME", "/root"),
        "SLURM_CONF": spooled.conf,
        "DATALAD_SLURM_CONFIG": spooled.hook_config,
        **{k: v for k, v in os.environ.items() if k.startswith("GIT_")},
    }
    cron_cmd = [
        "env",
        "-i",
        *[f"{k}={v}" for k, v in cron_env.items()],
        datalad,
        "finish",
        "--cron",
    ]
    manual = subprocess.Popen(
        [datalad, "finish"],
        cwd=ds.path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        stdin=subprocess.DEVNULL,
    )
    cron = subprocess.Popen(
        cron_cmd,
        cwd=ds.path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        stdin=subprocess.DEVNULL,
        start_new_session=True,
    )
    outcomes = [(p.wait(300), *p.communicate()) for p in (manual, cron)]
    for code, out, err in outcomes:
        assert code == 0, (out, err)
        assert "index.lock" not in out + err and "Traceback" not in err
    log = subjects(ds)
    for job in jobs:
        assert log.count(f"[DATALAD SLURM RUN] Slurm job {job}: Completed") == 1
    # nothing left to do: a cron finish is silent and succeeds
    quiet = subprocess.run(
        cron_cmd, cwd=ds.path, capture_output=True, text=True, stdin=subprocess.DEVNULL
    )
    assert (quiet.returncode, quiet.stdout, quiet.stderr) == (0, "", "")


def test_finish_killed_mid_drain_then_run_again(spooled_acct: Cluster, in_dataset: Any) -> None:
    spooled = spooled_acct
    ds = in_dataset
    script = write_script(ds, "w.sh", "echo $1 > $1/r\n")
    jobs = [_schedule(ds, f"sbatch -o o{n}/%j.log {script} o{n}", f"o{n}") for n in range(10)]
    spooled.wait_done(jobs)
    _wait_events(spooled, {str(j) for j in jobs})
    before = len(subjects(ds))
    proc = subprocess.Popen(
        [str(shutil.which("datalad")), "finish"],
        cwd=ds.path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 120
    while len(subjects(ds)) < before + 3 and time.monotonic() < deadline:
        time.sleep(0.05)
    proc.kill()
    proc.wait()
    # let git children of the killed process end on their own
    time.sleep(2)
    done = _finish(ds)
    assert all(r["status"] in ("ok",) for k, r in done.items() if k in jobs), done
    log = subjects(ds)
    for job in jobs:
        assert log.count(f"[DATALAD SLURM RUN] Slurm job {job}: Completed") == 1
    assert (
        only(call(ds, "finish", list_open_jobs=True), "finish")[0]["message"]
        == "there are no open jobs"
    )
    assert not any(e.get("job_id") in jobs for e in spooled.events())
    assert git(ds, "status", "--porcelain", "--untracked-files=no").strip() == ""


def test_cron_reports_problems_on_stderr(spooled_acct: Cluster, in_dataset: Any) -> None:
    spooled = spooled_acct
    ds = in_dataset
    bad = _schedule(ds, "sbatch " + write_script(ds, "bad.sh", "#SBATCH -o out/%j.log\nexit 2\n"))
    running = _schedule(ds, "sbatch --hold " + write_script(ds, "h.sh", "echo\n"), "held")
    spooled.wait_done([bad])
    _wait_events(spooled, {str(bad)})
    datalad = str(shutil.which("datalad"))
    cron = subprocess.run(
        [datalad, "finish", "--cron"],
        cwd=ds.path,
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
    )
    assert cron.returncode != 0
    assert cron.stdout == ""  # the held job, still pending, is nobody's business yet
    assert f"Statuses: {bad}: FAILED" in cron.stderr
    assert f"job {running}" not in cron.stderr
    # another finish holds the lock: cron steps aside quietly
    from datalad_slurm.jobs.statedir import git_lock

    with git_lock(ds.path):
        aside = subprocess.run(
            [datalad, "finish", "--cron"],
            cwd=ds.path,
            capture_output=True,
            text=True,
            stdin=subprocess.DEVNULL,
        )
    assert (aside.returncode, aside.stdout, aside.stderr) == (0, "", "")
    spooled.scancel(running)


# -- the hook's queue: one worker per burst ------------------------------------------------


def _queue(cluster: Cluster) -> Path:
    from datalad_slurm.slurm.conf import cluster_name

    return Path(cluster.spool, ".hook", cluster_name(cluster.conf) or "_")


def _serving_workers(cluster: Cluster) -> set[tuple[int, str]]:
    """(pid, start time) of every live queue worker of this cluster's hook."""
    worker = str(Path(cluster.hook, "libexec", "datalad_slurm_epilog.py"))
    found = set()
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            argv = Path(entry.path, "cmdline").read_bytes().split(b"\0")
            stat = Path(entry.path, "stat").read_text()
        except OSError:
            continue
        if worker.encode() in argv and b"--serve" in argv:
            found.add((int(entry.name), stat[stat.rfind(")") + 2 :].split()[19]))
    return found


def _pids_named(name: str) -> list[int]:
    pids = []
    for entry in os.scandir("/proc"):
        try:
            if entry.name.isdigit() and Path(entry.path, "comm").read_text().strip() == name:
                pids.append(int(entry.name))
        except OSError:
            continue
    return pids


def _pipes(pid: int) -> set[str]:
    """The pipes a process holds open (``pipe:[inode]``)."""
    try:
        fds = os.listdir(f"/proc/{pid}/fd")
    except OSError:
        return set()
    found = set()
    for fd in fds:
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if target.startswith("pipe:"):
            found.add(target)
    return found


def _named_worker(cluster: Cluster) -> tuple[int, str] | None:
    """(pid, start time) in the queue's pid file, None without one."""
    try:
        pid, start = (_queue(cluster) / "worker.pid").read_text().split()
        return int(pid), start
    except (OSError, ValueError):
        return None


def _wait_no_worker(cluster: Cluster, timeout: float = 30) -> None:
    """Until no worker runs (a pid file naming a dead one may stay behind)."""
    deadline = time.monotonic() + timeout
    while workers := _serving_workers(cluster):
        assert time.monotonic() < deadline, f"the hook's worker did not leave: {workers}"
        time.sleep(0.1)


def _ready_queue(cluster: Cluster, ds: Any) -> Path:
    """The cluster's queue exists (the first registered job's worker makes it), no worker runs."""
    queue = _queue(cluster)
    if not (queue / "pending").is_dir():
        job = _schedule(ds, "sbatch " + write_script(ds, "warm.sh", "echo\n"), "warm")
        _wait_events(cluster, {str(job)})
    _wait_no_worker(cluster)
    assert (queue / "pending").is_dir()
    return queue


@pytest.fixture
def hook_queue(spooled_acct: Cluster, in_dataset: Any) -> Path:
    """The accounting cluster's hook queue, ready and without a worker."""
    return _ready_queue(spooled_acct, in_dataset)


def _events_by_label(cluster: Cluster) -> dict[str, list[dict[str, Any]]]:
    found: dict[str, list[dict[str, Any]]] = {}
    for event in cluster.events():
        job = event.get("array_job_id", event["job_id"])
        task = event.get("array_task_id")
        found.setdefault(f"{job}" if task is None else f"{job}_{task}", []).append(event)
    return found


def test_burst_served_by_one_worker(
    spooled_acct: Cluster, in_dataset: Any, hook_queue: Path
) -> None:
    """40 array tasks end within a few seconds: each gets one event, from one to three workers."""
    spooled, ds, queue = spooled_acct, in_dataset, hook_queue
    arr = _schedule(
        ds,
        "sbatch "
        + write_script(
            ds,
            "burst.sh",
            """
#SBATCH --array=0-39
#SBATCH -o burst/%A_%a.log
echo $SLURM_ARRAY_TASK_ID > burst/r$SLURM_ARRAY_TASK_ID
[ $((SLURM_ARRAY_TASK_ID % 10)) != 9 ]
""",
        ),
        "burst",
    )
    labels = {f"{arr}_{t}" for t in range(40)}
    workers: set[tuple[int, str]] = set()
    shared_pipes: set[str] = set()
    deadline = time.monotonic() + 120
    while not labels <= set(_events_by_label(spooled)):
        assert time.monotonic() < deadline, labels - set(_events_by_label(spooled))
        seen = _serving_workers(spooled)
        workers |= seen
        scriptd = set().union(*(_pipes(pid) for pid in _pids_named("slurmscriptd")))
        shared_pipes |= scriptd & set().union(*(_pipes(pid) for pid, _ in seen))
        time.sleep(0.02)
    events = _events_by_label(spooled)
    assert all(len(events[label]) == 1 for label in labels), events
    for task in range(40):
        event = events[f"{arr}_{task}"][0]
        assert event["resolved_by"] == hook_asks_through()
        assert event["state"] == ("FAILED" if task % 10 == 9 else "COMPLETED"), event
    # a worker holding the pipe slurmscriptd reads the hook's output from would keep its job
    # COMPLETING for as long as it lives
    assert not shared_pipes, shared_pipes
    # a worker lingers 1.5 s for the next job: one burst, one worker (or two or three, when the
    # first tasks end at the same moment and each hook finds no worker yet)
    assert 1 <= len(workers) <= 3, workers
    spooled.wait_done([arr])
    _wait_no_worker(spooled)
    assert list((queue / "pending").iterdir()) == [] and list((queue / "claimed").iterdir()) == []


def _worker_of(cluster: Cluster) -> tuple[int, str]:
    deadline = time.monotonic() + 30
    while (named := _named_worker(cluster)) not in _serving_workers(cluster) or named is None:
        assert time.monotonic() < deadline, "no live worker in the pid file"
        time.sleep(0.01)
    return named


def test_killed_worker_backlog_recovered_by_next_hook(
    spooled_acct: Cluster, in_dataset: Any, hook_queue: Path
) -> None:
    spooled, ds, queue = spooled_acct, in_dataset, hook_queue
    held = _schedule(
        ds,
        "sbatch --hold "
        + write_script(ds, "held.sh", "#SBATCH --array=0-7\n#SBATCH -o held/%A_%a.log\necho\n"),
        "held",
    )
    first = _schedule(ds, "sbatch " + write_script(ds, "first.sh", "echo\n"), "first")
    # the worker that serves `first` is stopped, then its queue fills up: the hooks see a
    # live worker (a stopped process is alive) and start none
    pid, _ = _worker_of(spooled)
    os.kill(pid, signal.SIGSTOP)
    try:
        spooled.run("scontrol", "release", str(held))
        spooled.wait_done([held])
        deadline = time.monotonic() + 30
        while len(list((queue / "pending").iterdir())) < 8:
            assert time.monotonic() < deadline, list((queue / "pending").iterdir())
            time.sleep(0.1)
        assert {p for p, _ in _serving_workers(spooled)} == {pid}
    finally:
        os.kill(pid, signal.SIGKILL)
    time.sleep(0.5)
    assert (queue / "worker.pid").exists()  # a dead worker's pid file stays behind
    # the next registered job's hook finds the worker dead and starts one for the backlog
    after = _schedule(ds, "sbatch " + write_script(ds, "after.sh", "echo\n"), "after")
    labels = {str(first), str(after)} | {f"{held}_{t}" for t in range(8)}
    _wait_events(spooled, labels)
    events = _events_by_label(spooled)
    assert all(len(events[label]) == 1 for label in labels - {str(first)}), events
    assert {e["state"] for label in labels for e in events[label]} == {"COMPLETED"}
    _wait_no_worker(spooled)
    assert list((queue / "pending").iterdir()) == [] and list((queue / "claimed").iterdir()) == []


def _dead_pid() -> int:
    process = subprocess.Popen(["true"])
    process.wait()
    return process.pid


def _pending_text(cluster: Cluster, job: int) -> str:
    env = _hook_env(cluster, job)
    return "".join(f"{k}={v}\n" for k, v in env.items()) + ".\n"


def test_claim_of_a_dead_worker_is_taken_over(
    spooled_acct: Cluster, in_dataset: Any, hook_queue: Path
) -> None:
    spooled, ds, queue = spooled_acct, in_dataset, hook_queue
    lost = _schedule(ds, "sbatch " + write_script(ds, "lost.sh", "echo\n"), "lost")
    _wait_events(spooled, {str(lost)})
    _wait_no_worker(spooled)
    # as if a worker had claimed the job and died before it wrote the event
    for path in spooled.events_dir().glob(f"*.{lost}.{lost}.*.event"):
        path.unlink()
    claim = queue / "claimed" / f"{lost}.1@{_dead_pid()}@1@{os.uname().nodename}"
    claim.write_text(_pending_text(spooled, lost))
    shutil.chown(claim, "slurm")
    assert str(lost) not in _events_by_label(spooled)
    trigger = _schedule(ds, "sbatch " + write_script(ds, "trigger.sh", "echo\n"), "trigger")
    events = _wait_events(spooled, {str(lost), str(trigger)})
    assert events[str(lost)]["state"] == "COMPLETED"
    assert events[str(lost)]["resolved_by"] == hook_asks_through()
    assert len(_events_by_label(spooled)[str(lost)]) == 1
    _wait_no_worker(spooled)
    assert list((queue / "claimed").iterdir()) == []


def test_worker_liveness_survives_pid_reuse(
    spooled_acct: Cluster, in_dataset: Any, hook_queue: Path
) -> None:
    """A pid file naming a live process that is no worker of this queue (pid reuse) is ignored."""
    spooled, ds, queue = spooled_acct, in_dataset, hook_queue
    held = [
        _schedule(ds, "sbatch --hold " + write_script(ds, f"h{n}.sh", "echo\n"), f"h{n}")
        for n in range(3)
    ]
    pid_file = queue / "worker.pid"
    # processes of the hook's account (setpriv execs in place: the pid is sleep's)
    as_slurm = ["setpriv", "--reuid", "slurm", "--regid", "slurm", "--clear-groups", "sleep", "120"]
    elsewhere = subprocess.Popen(as_slurm, cwd="/")
    inside = subprocess.Popen(as_slurm, cwd=queue)  # as a worker: its cwd is the queue
    try:
        # a live pid, but of a process elsewhere: the hook must start a worker
        pid_file.write_text(f"{elsewhere.pid} 1\n")
        shutil.chown(pid_file, "slurm")
        spooled.run("scontrol", "release", str(held[0]))
        _wait_events(spooled, {str(held[0])}, timeout=30)
        _wait_no_worker(spooled)
        # a live process in the queue: taken for a worker, so the job waits in the queue
        pid_file.write_text(f"{inside.pid} 1\n")
        shutil.chown(pid_file, "slurm")
        spooled.run("scontrol", "release", str(held[1]))
        spooled.wait_done([held[1]])
        time.sleep(3)
        assert [p.name.split(".")[0] for p in (queue / "pending").iterdir()] == [str(held[1])]
        assert str(held[1]) not in _events_by_label(spooled)
    finally:
        for process in (elsewhere, inside):
            process.kill()
            process.wait()
    # that "worker" is gone now: the next job's hook starts a real one, which serves both
    spooled.run("scontrol", "release", str(held[2]))
    _wait_events(spooled, {str(held[1]), str(held[2])}, timeout=30)
    _wait_no_worker(spooled)
    assert list((queue / "pending").iterdir()) == []


def test_first_registered_job_of_a_cluster_makes_its_queue(
    spooled_acct: Cluster, in_dataset: Any, hook_queue: Path
) -> None:
    """The entry point makes the cluster's queue itself (0700, the hook's account): even the
    first registered job is served by a queue worker (asking the tier's way), not its own one."""
    spooled, ds, queue = spooled_acct, in_dataset, hook_queue
    _wait_no_worker(spooled)
    aside = queue.with_name(queue.name + ".aside")
    queue.rename(aside)
    try:
        job = _schedule(ds, "sbatch " + write_script(ds, "first.sh", "echo\n"), "first")
        workers: set[tuple[int, str]] = set()
        deadline = time.monotonic() + 60
        while str(job) not in _events_by_label(spooled):
            assert time.monotonic() < deadline, Path(spooled.hook_log).read_text()[-2000:]
            workers |= _serving_workers(spooled)
            time.sleep(0.05)
        workers |= _serving_workers(spooled)  # a queue worker lingers 1.5 s after its last job
        assert workers, "no queue worker served the first job"
        assert _events_by_label(spooled)[str(job)][0]["resolved_by"] == hook_asks_through()
        slurm_uid = pwd.getpwnam("slurm").pw_uid
        for folder in (queue, queue / "pending", queue / "claimed"):
            info = folder.stat()
            assert (info.st_uid, info.st_mode & 0o777) == (slurm_uid, 0o700), folder
        _wait_no_worker(spooled)
    finally:
        shutil.rmtree(aside)


def test_unwritable_queue_falls_back_to_a_worker_per_job(
    spooled_acct: Cluster, in_dataset: Any, hook_queue: Path
) -> None:
    spooled, ds, queue = spooled_acct, in_dataset, hook_queue
    pending = queue / "pending"
    job = _schedule(ds, "sbatch --hold " + write_script(ds, "h.sh", "echo\n"))
    hook = Path(spooled.hook, "libexec", "datalad-slurm-epilog")
    env = _hook_env(spooled, job)
    pending.chmod(0o500)  # the hook's account may no longer write there
    try:
        spooled.run("scontrol", "release", str(job))
        spooled.wait_done([job])
        events = _wait_events(spooled, {str(job)})
        assert events[str(job)]["state"] == "COMPLETED"
        # and run by hand: exits 0, the worker for its one job says why
        _run_as_slurm(hook, env)
        assert list(pending.iterdir()) == []
    finally:
        pending.chmod(0o700)
    deadline = time.monotonic() + 20
    while "is not writable" not in Path(spooled.hook_log).read_text():
        assert time.monotonic() < deadline, Path(spooled.hook_log).read_text()[-2000:]
        time.sleep(0.2)


def test_entry_point_reads_a_changed_config() -> None:
    """The spool embedded at install holds only while the config is not newer than the script."""
    root = Path(tempfile.mkdtemp(prefix="dls-config-", dir="/tmp"))  # reachable by slurm
    root.chmod(0o755)
    try:
        log = root / "hook.log"
        log.touch()
        shutil.chown(log, "slurm")
        for name in ("one", "two"):
            options = ["--prefix", str(root / f"libexec-{name}"), "--spool", str(root / name)]
            options += ["--config", str(root / f"{name}.conf"), "--log", str(log), "--force"]
            subprocess.run([REPO / "epilog/install", *options], check=True, capture_output=True)
        config = root / "one.conf"
        hook = root / "libexec-one" / "datalad-slurm-epilog"
        assert f"spool='{root / 'one'}'" in hook.read_text()  # embedded
        from datalad_slurm.spool import UserSpool

        UserSpool(str(root / "two")).register(None, 7)  # registered in the other spool only
        env = {"SLURM_JOB_ID": "7", "SLURM_JOB_UID": str(os.getuid())}
        events = root / "two" / str(os.getuid()) / "events"
        config.write_text(config.read_text().replace(str(root / "one"), str(root / "two")))
        # a config older than the script is not read: the embedded spool knows no job 7
        os.utime(config, (hook.stat().st_mtime - 10,) * 2)
        _run_as_slurm(hook, env)
        time.sleep(2)
        assert not list(events.glob("*.event"))
        # a config changed after the install is read: the hook follows it at once
        os.utime(config, (hook.stat().st_mtime + 2,) * 2)
        _run_as_slurm(hook, env)
        deadline = time.monotonic() + 30  # a worker for the one job; no Slurm to ask here
        while not list(events.glob("*.event")):
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.2)
        assert json.loads(next(events.glob("*.event")).read_text())["job_id"] == 7
    finally:
        shutil.rmtree(root)
