"""The hook -> spool -> finish pipeline on real Slurm, with the hook installed by tests/run
through epilog/install and contrib/slurm.conf.d/datalad-slurm.conf."""

from __future__ import annotations

import json
import os
import pwd
import shutil
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
    only,
    schedule_ok,
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
    """The submit command lingers after sbatch: the job ends before schedule registers it."""
    ds = in_dataset
    script = write_script(ds, "fast.sh", "#SBATCH -o out/%j.log\necho fast > out/a\n")
    job = _schedule(ds, f"sbatch {script} && sleep 4")
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
        proc = subprocess.run(
            [
                "runuser",
                "-u",
                "slurm",
                "--",
                "env",
                "-i",
                *[f"{k}={v}" for k, v in env.items()],
                str(hook),
            ],
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert proc.returncode == 0, proc
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


def test_hook_as_slurmd_epilog_never_drains_the_node(
    spooled_acct: Cluster, in_dataset: Any, tmp_path: Path
) -> None:
    """The same hook as a slurmd Epilog, with an unwritable spool: the node stays up."""
    spooled = spooled_acct
    ds = in_dataset
    extra = tmp_path / "epilog.conf"
    hook = Path(spooled.hook, "libexec", "datalad-slurm-epilog")
    extra.write_text(f"Epilog={hook}\n")
    # munged wants a socket path everybody may traverse: not under pytest's 0700 tmp_path
    state = Path(tempfile.mkdtemp(prefix="dls-epilog-node-", dir="/tmp"))
    state.chmod(0o755)
    start = subprocess.run(
        [
            str(REPO / "contrib/slurm-local/start"),
            "--state-dir",
            str(state),
            "--port-base",
            os.environ.get("DATALAD_SLURM_TEST_SPARE_PORT", "6897"),
            "--extra-conf",
            str(extra),
        ],
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert start.returncode == 0, start.stderr[-3000:]
    conf = str(state / "etc" / "slurm.conf")
    env = {**os.environ, "SLURM_CONF": conf}
    try:
        events = spooled.events_dir()
        mode = events.stat().st_mode
        events.chmod(0o700)
        try:
            Path(ds.path, "out").mkdir()
            results = call(ds, "schedule", "sbatch --wrap 'echo hi > out/a'", outputs=["out"])
            job = results[0]["slurm_job_id"]
            for _ in range(100):
                out = subprocess.run(
                    ["squeue", "-h", "-j", str(job), "-t", "all", "-o", "%T"],
                    env=env,
                    capture_output=True,
                    text=True,
                ).stdout.strip()
                if out in ("COMPLETED", ""):
                    break
                time.sleep(0.2)
            time.sleep(1)
            node = subprocess.run(
                ["sinfo", "-h", "-o", "%T"], env=env, capture_output=True, text=True
            ).stdout.strip()
            assert node == "idle", node
        finally:
            events.chmod(mode)
    finally:
        subprocess.run(
            [str(REPO / "contrib/slurm-local/stop"), "--state-dir", str(state), "--purge"],
            capture_output=True,
            timeout=120,
        )


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
    from datalad_slurm.gitlock import git_lock

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
