"""What a job was given and used, in its record and env.json (issue 20, item 2), on real Slurm.

A job asks for two CPUs, 200 MB and a GPU (the test clusters have two stand-in GPUs, see
tests/cluster-suite) and holds 60 MB while it counts.  ``datalad finish`` must record:

- with accounting: elapsed time, TotalCPU, MaxRSS, requested and allocated TRES (with
  ``gres/gpu``), nodes, partition, account and QOS, each equal to what ``sacct --json``,
  ``scontrol show job`` (``--json`` where it exists) or pyslurm say of the same job;
- without accounting: what slurmctld and the hook knew (elapsed time, TRES, nodes,
  partition), and no usage figure, with no error either way.

Jobs run as root and as the unprivileged ``dlstest``, through the ``datalad`` command line
with the hook installed.  A finish whose accounting stops answering still commits, and
``--list-open-jobs`` shows how long a running job has run.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import (
    REPO,
    UNPRIVILEGED,
    Actor,
    Cluster,
    _actor,
    _cluster,
    _use,
    spare_cluster,
)

#: 60 MB held in a shell variable while a loop counts for a few seconds; the result in $1
BURN = """#!/bin/sh
x=$(head -c 60000000 /dev/zero | tr '\\0' a)
i=0; while [ "$i" -lt 1000000 ]; do i=$((i + 1)); done
echo "${#x} bytes, $i rounds" > "$1/result.txt"
"""
REQUEST = ("-c", "2", "--mem=200M", "--gres=gpu:1")
#: the record's keys of the figures, as README documents them
USAGE_KEYS = ("slurm_total_cpu", "slurm_max_rss")


def _backend_option() -> list[str]:
    """The tier's backend: the CLI runs with a clean environment (no DATALAD_SLURM_BACKEND)."""
    backend = os.environ.get("DATALAD_SLURM_BACKEND")
    return ["-c", f"datalad.slurm.backend={backend}"] if backend else []


@pytest.fixture(
    params=[(kind, who) for kind in ("acct", "noacct") for who in ("root", UNPRIVILEGED)],
    ids=lambda p: "-".join(p),
)
def someone(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Iterator[Actor]:
    """The CLI as root and as dlstest, on the cluster with accounting and the one without."""
    kind, who = request.param
    actor = _actor(who, _use(_cluster(kind), monkeypatch, spool=True))
    yield actor
    for folder in actor.made:
        subprocess.run(["chmod", "-R", "u+w", str(folder)], check=False)
        shutil.rmtree(folder, ignore_errors=True)


def _dataset(actor: Actor) -> Path:
    ds = actor.dataset()
    actor.write(ds / "code" / "burn.sh", BURN)
    (ds / "code" / "burn.sh").chmod(0o755)
    actor.ok("save", "-m", "burn", "--to-git", "code", cwd=ds)
    return ds


def _git(actor: Actor, ds: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """git as the dataset's owner (root may not touch dlstest's repository)."""
    user = actor.user
    who = ["runuser", "-u", user.pw_name, "--", "env", f"HOME={user.pw_dir}"] if user else []
    identity = {
        f"GIT_{role}_{what}": value
        for role in ("AUTHOR", "COMMITTER")
        for what, value in (("NAME", "T"), ("EMAIL", "t@example.org"))
    }
    return subprocess.run(
        [*who, "git", *args],
        cwd=ds,
        capture_output=True,
        text=True,
        env={**os.environ, **identity},
    )


def _record(actor: Actor, ds: Path) -> dict[str, Any]:
    body = _git(actor, ds, "log", "-1", "--format=%B").stdout
    assert body.startswith("[DATALAD SLURM RUN]"), body
    record: dict[str, Any] = json.loads(
        body.split("=== Do not change lines below ===")[1].split("^^^")[0]
    )
    return record


def _clean(actor: Actor, ds: Path) -> None:
    """git fsck --strict and git annex fsck find nothing wrong; nothing is left uncommitted."""
    for command in (["fsck", "--strict"], ["annex", "fsck", "--json"]):
        done = _git(actor, ds, *command)
        assert done.returncode == 0, (command, done.stdout, done.stderr)
    status = _git(actor, ds, "status", "--porcelain")
    assert status.returncode == 0 and status.stdout == "", status


def _tres(text: str) -> dict[str, int]:
    """The test's own reading of a TRES string (``cpu=2,mem=200M,node=1,gres/gpu=1``)."""
    found: dict[str, int] = {}
    for item in text.split(","):
        name, _, value = item.partition("=")
        if name in ("cpu", "mem", "node") or name.startswith("gres/"):
            units = {"M": 1, "G": 1024, "T": 1024 * 1024}
            found[name] = int(value[:-1]) * units[value[-1]] if name == "mem" else int(value)
    return found


def _tres_list(items: list[dict[str, Any]]) -> dict[str, int]:
    """The test's own reading of accounting's TRES list."""
    found: dict[str, int] = {}
    for item in items:
        name = item["type"] + (f"/{item['name']}" if item.get("name") else "")
        if name in ("cpu", "mem", "node") or name.startswith("gres/"):
            found[name] = int(item["count"])
    return found


def _number(value: Any) -> int:
    return int(value["number"]) if isinstance(value, dict) else int(value)


def _slurmctld_said(cluster: Cluster, job: int) -> dict[str, Any]:
    """What slurmctld says of the job: ``scontrol show job --json`` (23.02 and later), else
    ``scontrol show job -o`` (22.05 has no --json)."""
    answer = cluster.run("scontrol", "show", "job", "--json", str(job), check=False)
    if answer.returncode == 0 and answer.stdout.lstrip().startswith("{"):
        (record,) = [j for j in json.loads(answer.stdout)["jobs"] if _number(j["job_id"]) == job]
        return {
            "elapsed": _number(record["end_time"]) - _number(record["start_time"]),
            "req_tres": _tres(record["tres_req_str"]),
            "alloc_tres": _tres(record["tres_alloc_str"]),
            "nodes": record["nodes"],
            "partition": record["partition"],
            "account": record["account"] or None,
            "qos": record["qos"] or None,
        }
    line = dict(
        re.findall(r"(\w+)=(\S*)", cluster.run("scontrol", "show", "job", "-o", str(job)).stdout)
    )
    hours, minutes, seconds = (int(p) for p in line["RunTime"].split(":"))
    return {
        "elapsed": (hours * 60 + minutes) * 60 + seconds,
        # 22.05: one TRES=, the allocated TRES of a job that ran
        "alloc_tres": _tres(line.get("AllocTRES") or line["TRES"]),
        "nodes": line["NodeList"],
        "partition": line["Partition"],
        "account": None if line["Account"] == "(null)" else line["Account"],
        "qos": None if line["QOS"] == "(null)" else line["QOS"],
    }


def _accounting_said(cluster: Cluster, job: int) -> dict[str, Any]:
    """What ``sacct --json`` says of the job (the test's own reading)."""
    (record,) = [
        j
        for j in json.loads(cluster.run("sacct", "--json", "-j", str(job)).stdout)["jobs"]
        if j["job_id"] == job
    ]
    steps = record["steps"]
    return {
        "elapsed": record["time"]["elapsed"],
        "total_cpu": round(
            sum(
                s["time"]["total"]["seconds"] + s["time"]["total"]["microseconds"] / 1e6
                for s in steps
            ),
            6,
        ),
        "max_rss": max(
            m["count"] for s in steps for m in s["tres"]["requested"]["max"] if m["type"] == "mem"
        ),
        "req_tres": _tres_list(record["tres"]["requested"]),
        "alloc_tres": _tres_list(record["tres"]["allocated"]),
        "nodes": record["nodes"],
        "partition": record["partition"],
        "account": record["account"],
        "qos": record["qos"],
    }


PYSLURM_SAYS = """
import json, sys
import pyslurm
job = int(sys.argv[1])
db = pyslurm.db.Jobs.load(pyslurm.db.JobFilter(ids=[job]))
(record,) = [j for j in db.values() if j.id == job]
print(json.dumps({"total_cpu": record.stats.total_cpu_time,
                  "max_rss": record.stats.resident_memory,
                  "elapsed": record.elapsed_time}))
"""


def _pyslurm_said(cluster: Cluster, job: int) -> dict[str, Any]:
    """What pyslurm's accounting says (pyslurm tier): its TotalCPU is whole seconds per step."""
    out = subprocess.run(
        [sys.executable, "-c", PYSLURM_SAYS, str(job)],
        env={**os.environ, "SLURM_CONF": cluster.conf},
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    said: dict[str, Any] = json.loads(out)
    return said


def test_resources_in_env_json_and_the_record(someone: Actor) -> None:
    cluster = someone.cluster
    ds = _dataset(someone)
    job = someone.schedule(
        ds, "out", "sbatch", *REQUEST, "--output=out/slurm-%j.out", "code/burn.sh", "out"
    )
    cluster.wait_done([job])
    accounting: dict[str, Any] = {}
    if cluster.accounting:
        cluster.wait_accounted([job])
        # what accounting says before finish asks it: 22.05 may add the requested TRES to a
        # job's record seconds after its end (a figure finish cannot have then)
        deadline = time.monotonic() + 15
        accounting = _accounting_said(cluster, job)
        while not accounting["req_tres"] and time.monotonic() < deadline:
            time.sleep(1)
            accounting = _accounting_said(cluster, job)
    finished = someone.datalad(*_backend_option(), "-f", "json", "finish", cwd=ds)
    assert finished.returncode == 0 and "Traceback" not in finished.stderr, finished
    results = [json.loads(line) for line in finished.stdout.splitlines() if line.strip()]
    assert [r["status"] for r in results if r["action"] == "finish"] == ["ok"], results
    record = _record(someone, ds)
    env = json.loads((ds / "out" / f"slurm-job-{job}.env.json").read_text())
    (task,) = env["tasks"].values()
    figures = task["resources"]
    # env.json: the task's figures and the job's, which are the record's slurm_* keys
    assert {k: v for k, v in figures.items() if k != "source"} == {
        k: v for k, v in env["resources"].items() if k != "source"
    }
    assert {f"slurm_{k}": v for k, v in figures.items() if k != "source"} == {
        k: v for k, v in record.items() if k.replace("slurm_", "") in figures
    }
    slurmctld = _slurmctld_said(cluster, job)
    for figure, value in slurmctld.items():
        assert figures.get(figure) == value, (figure, figures, slurmctld)
    if not cluster.accounting:
        assert not set(USAGE_KEYS) & set(record), record
        assert "account" not in figures and "qos" not in figures
        # GPUs are a TRES only with accounting; 22.05's scontrol shows no requested TRES
        assert figures["alloc_tres"] == {"cpu": 2, "node": 1}
        _clean(someone, ds)
        return
    for figure, value in accounting.items():
        # 22.05's accounting may lack the requested TRES and the partition (then what
        # slurmctld said stands, checked above)
        if figure != "total_cpu" and value:
            assert figures.get(figure) == value, (figure, figures, accounting, env)
    assert figures["alloc_tres"]["gres/gpu"] == 1
    assert figures.get("req_tres", {"gres/gpu": 1})["gres/gpu"] == 1
    assert figures["max_rss"] >= 60_000_000  # the 60 MB the job held
    expected = os.environ.get("DATALAD_SLURM_TEST_EXPECT_BACKEND")
    if expected not in ("pyslurm", "jsoncli"):
        pytest.fail("DATALAD_SLURM_TEST_EXPECT_BACKEND is not set: run the suite with tests/run")
    if expected == "pyslurm":
        assert "pyslurm.db" in figures["source"], figures
        said = _pyslurm_said(cluster, job)
        assert (figures["total_cpu"], figures["max_rss"]) == (said["total_cpu"], said["max_rss"])
    else:
        assert "sacct" in figures["source"], figures
        assert figures["total_cpu"] == accounting["total_cpu"] > 0
    _clean(someone, ds)


def test_a_finish_whose_accounting_stops_answering_still_commits() -> None:
    """slurmdbd is gone when finish asks what the jobs used: they are committed all the same,
    with what slurmctld knew, as root and as dlstest."""
    with spare_cluster("--accounting", "--jobacct-gather", "linux") as cluster:
        # no hook runs on the spare cluster: its jobs are registered in a spool of their own,
        # where no event comes, and finish asks Slurm (not another cluster's spool, where a
        # spare cluster of the same name and job ids may have left events)
        cluster.hook = _spool_without_hook(cluster)
        actors: list[Actor] = []
        mp = pytest.MonkeyPatch()
        try:
            mp.setenv("SLURM_CONF", cluster.conf)
            actors = [_actor(who, cluster) for who in ("root", UNPRIVILEGED)]
            jobs = {}
            for actor in actors:
                ds = _dataset(actor)
                # no hook on the spare cluster: finish asks slurmctld, then accounting for usage
                jobs[actor.name] = (
                    ds,
                    actor.schedule(ds, "out", "sbatch", "-c", "2", "code/burn.sh", "out"),
                )
            cluster.wait_done([job for _, job in jobs.values()])
            _stop_slurmdbd(cluster)
            for actor in actors:
                ds, job = jobs[actor.name]
                done = actor.datalad(*_backend_option(), "-f", "json", "finish", cwd=ds)
                assert done.returncode == 0 and "Traceback" not in done.stderr, done
                record = _record(actor, ds)
                assert record["slurm_job_id"] == job and record["slurm_state"] == "COMPLETED"
                assert not set(USAGE_KEYS) & set(record), record
                assert record["slurm_alloc_tres"]["cpu"] == 2 and record["slurm_elapsed"] > 0, (
                    actor.name,
                    record,
                    done.stdout[-2000:],
                )
                _clean(actor, ds)
        finally:
            mp.undo()
            for actor in actors:
                for folder in actor.made:
                    subprocess.run(["chmod", "-R", "u+w", str(folder)], check=False)
                    shutil.rmtree(folder, ignore_errors=True)
            shutil.rmtree(cluster.hook, ignore_errors=True)


def _spool_without_hook(cluster: Cluster) -> str:
    """A fresh spool and config (epilog/install) for a cluster whose slurm.conf names no hook."""
    hook = Path(tempfile.mkdtemp(prefix="dls-resources-spool-", dir="/tmp"))
    hook.chmod(0o755)
    subprocess.run(
        [
            str(REPO / "epilog" / "install"),
            *("--prefix", str(hook / "libexec"), "--config", str(hook / "datalad-slurm.conf")),
            *("--spool", str(hook / "spool"), "--log", str(hook / "hook.log")),
            *("--slurm-conf", cluster.conf, "--no-pyslurm", "--force"),
        ],
        capture_output=True,
        check=True,
    )
    return str(hook)


def _stop_slurmdbd(cluster: Cluster) -> None:
    """End the spare cluster's slurmdbd (by the pid in its pid file) and wait until it is gone."""
    state = Path(cluster.conf).parent.parent
    pid = int((state / "slurm" / "slurmdbd.pid").read_text())
    assert Path(f"/proc/{pid}/comm").read_text().strip() == "slurmdbd"
    os.kill(pid, 15)
    deadline = time.monotonic() + 30
    while Path(f"/proc/{pid}").exists() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not Path(f"/proc/{pid}").exists(), "slurmdbd did not stop"


def test_the_listing_shows_how_long_a_running_job_has_run(someone: Actor) -> None:
    cluster = someone.cluster
    ds = someone.dataset()
    someone.write(ds / "code" / "slow.sh", "#!/bin/sh\nsleep 120\n")
    (ds / "code" / "slow.sh").chmod(0o755)
    someone.ok("save", "-m", "slow", "--to-git", "code", cwd=ds)
    job = someone.schedule(ds, "out", "sbatch", "code/slow.sh")
    try:
        cluster.wait_state(job, ["RUNNING"])
        time.sleep(3)
        listed = someone.datalad(
            *_backend_option(), "-f", "json", "finish", "--list-open-jobs", cwd=ds
        )
        assert listed.returncode == 0, listed
        (result,) = [json.loads(line) for line in listed.stdout.splitlines() if line.strip()]
        # squeue's TIME of the job (M:SS), as the listing shows it
        run_time = cluster.run("squeue", "-h", "-j", str(job), "-o", "%M").stdout.strip()
        minutes, _, seconds = run_time.rpartition(":")
        reference = int(minutes or 0) * 60 + int(seconds)
        assert result["slurm_job_status"] == "RUNNING"
        assert result["elapsed"] >= 3 and abs(result["elapsed"] - reference) <= 2, (
            result,
            run_time,
        )
        table = someone.ok(*_backend_option(), "finish", "--list-open-jobs", cwd=ds).splitlines()
        assert table[2].split() == ["slurm-job-id", "slurm-job-status", "elapsed", "tasks"]
        shown = table[3].split()
        assert shown[:2] == [str(job), "RUNNING"] and re.fullmatch(r"\d+:\d\d", shown[2])
    finally:
        cluster.scancel(job)
