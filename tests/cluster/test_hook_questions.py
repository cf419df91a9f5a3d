"""How the installed hook asks slurmctld for a job's final state: pyslurm where epilog/install
found it for the hook's Python (the pyslurm tier), scontrol otherwise (the host tier), and
scontrol again whenever pyslurm does not start."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

from datalad_slurm.spool import UserSpool
from tests.conftest import Cluster, hook_asks_through, spare_cluster

#: loads the installed worker and asks slurmctld about the given jobs three ways: the way the
#: hook asks (pyslurm or scontrol), through scontrol (one interactive session), and through one
#: ``scontrol show job -o`` process per job; prints the answers as the event's facts
_ASK_ALL_WAYS = """
import json, os, sys
sys.path.insert(0, os.path.dirname(sys.argv[1]))
from datalad_slurm_hook import ask, facts, scontrol
from datalad_slurm_hook.settings import read_installed, read_settings
config = read_settings(sys.argv[3], sys.argv[2] or read_installed().pyslurm_path)
jobs = sys.argv[4:]
questions = ask.slurm_questions(config)
session = scontrol.ScontrolQuestions(scontrol.find_scontrol(), config.slurm_conf, config.log)
ways = {
    "hook": questions.ask(jobs, 10),
    "session": session.ask(jobs, 10),
    "processes": scontrol.show_jobs(scontrol.find_scontrol(), jobs, 10, config.slurm_conf),
}
print(json.dumps({
    "questions": type(questions).__name__,
    "session_failed": session.session_failed,
    "facts": {
        way: {job: facts.final_facts(answers.get(job, {}), {}) for job in jobs}
        for way, answers in ways.items()
    },
}))
"""


def _worker(cluster: Cluster) -> Path:
    return Path(cluster.hook, "libexec", "datalad_slurm_epilog.py")


def _hook_python(cluster: Cluster) -> str:
    return _worker(cluster).read_text().splitlines()[0][2:].split()[0]  # the shebang's


def _run_with_hook(cluster: Cluster, script: str, *arguments: str) -> Any:
    """Run a script under the hook's own Python (first argument: the installed worker); its
    JSON output."""
    proc = subprocess.run(
        [_hook_python(cluster), "-IS", "-c", script, str(_worker(cluster)), *arguments],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout)


def _ask_all_ways(
    cluster: Cluster, jobs: list[str], config: str = "", pyslurm_path: str = ""
) -> dict[str, Any]:
    answer: dict[str, Any] = _run_with_hook(
        cluster, _ASK_ALL_WAYS, pyslurm_path, config or cluster.hook_config, *jobs
    )
    return answer


def test_installed_hook_says_how_it_asks(acct_cluster: Cluster) -> None:
    worker = _worker(acct_cluster)
    proc = subprocess.run(
        ["runuser", "-u", "slurm", "--", "env", "-i", str(worker), "--check"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc
    assert f"spool {acct_cluster.spool}" in proc.stdout
    if hook_asks_through() == "pyslurm":
        assert "asks slurmctld through pyslurm 25." in proc.stdout, proc.stdout
    else:
        assert "asks slurmctld through /" in proc.stdout and "scontrol" in proc.stdout
        # no pyslurm for the host's Python
        assert (
            "\npyslurm_path =\n" in (worker.parent / "datalad_slurm_hook/install.conf").read_text()
        )
    assert "slurmctld answers (slurm.conf " in proc.stdout and " is UP" in proc.stdout


def test_check_says_when_the_hook_cannot_reach_slurmctld(acct_cluster: Cluster) -> None:
    """A hook without the right slurm.conf writes UNKNOWN events: --check (and install) say so."""
    config = Path(acct_cluster.hook, "elsewhere.conf")
    config.write_text(
        Path(acct_cluster.hook_config).read_text() + "slurm_conf = /nonexistent/slurm.conf\n"
    )
    try:
        as_slurm = ["runuser", "-u", "slurm", "--", "env", "-i", f"DATALAD_SLURM_CONFIG={config}"]
        proc = subprocess.run(
            [*as_slurm, str(_worker(acct_cluster)), "--check"],
            capture_output=True,
            text=True,
            timeout=60,
        )
    finally:
        config.unlink()
    assert proc.returncode == 1, proc
    assert "slurmctld does NOT answer" in proc.stdout
    assert "/nonexistent/slurm.conf is not a file" in proc.stdout
    assert f"set 'slurm_conf = /path/to/slurm.conf' in {config}" in proc.stdout


def test_pyslurm_and_scontrol_tell_the_same_final_facts(
    acct_cluster: Cluster, tmp_path: Path
) -> None:
    """For every final state the hook's way of asking gives what scontrol gives."""
    cluster = acct_cluster
    ok = cluster.submit("-o", "ok.log", "--wrap", "echo hi", cwd=tmp_path)
    failed = cluster.submit("-o", "failed.log", "--wrap", "exit 3", cwd=tmp_path)
    killed = cluster.submit("-o", "/dev/null", "--wrap", "kill -9 $$", cwd=tmp_path)
    slow = cluster.submit("-o", "/dev/null", "--wrap", "sleep 300", cwd=tmp_path)
    array = cluster.submit(
        "--array=0-1",
        "-o",
        "arr-%A_%a.log",
        "--wrap",
        '[ "$SLURM_ARRAY_TASK_ID" = 0 ]',
        cwd=tmp_path,
    )
    cluster.wait_state(slow, ["RUNNING"])
    cluster.scancel(slow)
    cluster.wait_done([ok, failed, killed, slow, array])
    tasks = cluster.run("squeue", "-h", "-t", "all", "-j", str(array), "-o", "%A %K").stdout.split(
        "\n"
    )
    task_ids = {line.split()[1]: line.split()[0] for line in tasks if line.strip()}
    jobs = [str(ok), str(failed), str(killed), str(slow), task_ids["0"], task_ids["1"], "999999"]

    answer = _ask_all_ways(cluster, jobs)

    expected_questions = {"pyslurm": "PyslurmQuestions", "scontrol": "ScontrolQuestions"}
    assert answer["questions"] == expected_questions[hook_asks_through()]
    assert answer["session_failed"] is False
    facts = answer["facts"]
    for job in jobs[:-1]:
        hook, session, plain = (facts[way][job] for way in ("hook", "session", "processes"))
        assert hook["resolved_by"] == hook_asks_through(), job
        assert session == plain and plain["resolved_by"] == "scontrol", job
        if plain["derived_exit_code"] is None and hook["resolved_by"] == "pyslurm":
            # 26.05's scontrol prints no derived exit code where none was set (NO_VAL);
            # pyslurm reads NO_VAL as 0 and cannot tell the two apart
            assert hook["derived_exit_code"] == 0, job
            hook["derived_exit_code"] = None
        if hook["resolved_by"] == "pyslurm" and plain["exit_code"] >= 128 and not plain["signal"]:
            # pyslurm reports an exit status of 128+ less 128 (a cancelled job's shell: 143
            # read as 15); the hook corrects it from the environment where it can (unit test
            # test_pyslurm_exit_codes_from_128_up), and this test passes it no environment
            assert hook["exit_code"] == plain["exit_code"] - 128, job
            hook["exit_code"] = plain["exit_code"]
        assert {**hook, "resolved_by": "scontrol"} == plain, job
    by_job = facts["hook"]
    assert {way: facts[way]["999999"]["state"] for way in facts} == dict.fromkeys(facts, "UNKNOWN")
    assert by_job[str(ok)]["state"] == "COMPLETED" and by_job[str(ok)]["exit_code"] == 0
    assert by_job[str(ok)]["stdout"] == str(tmp_path / "ok.log")
    assert by_job[str(ok)]["end_time"] >= by_job[str(ok)]["start_time"] > 0
    assert (by_job[str(failed)]["state"], by_job[str(failed)]["exit_code"]) == ("FAILED", 3)
    assert (by_job[str(killed)]["state"], by_job[str(killed)]["signal"]) == ("FAILED", 9)
    assert by_job[str(slow)]["state"] == "CANCELLED"
    assert by_job[task_ids["0"]]["state"] == "COMPLETED"
    assert by_job[task_ids["1"]]["state"] == "FAILED"
    assert by_job[task_ids["1"]]["stdout"] == str(tmp_path / f"arr-{array}_1.log")
    # a job slurmctld does not hold: no answer, so the environment has to do
    assert by_job["999999"]["resolved_by"] == "environment"


def test_a_pyslurm_that_does_not_start_leaves_the_hook_on_scontrol(
    acct_cluster: Cluster, tmp_path: Path
) -> None:
    """pyslurm built for another Slurm fails to import; libslurm ends a process that cannot
    read its config. Either way the hook asks through scontrol and logs why."""
    cluster = acct_cluster
    job = cluster.submit("-o", "/dev/null", "--wrap", "true", cwd=tmp_path)
    cluster.wait_done([job])
    failures = {
        "import": "raise ImportError('libslurm.so.99: cannot open shared object file')\n",
        "fatal": "import os\nos._exit(1)  # as libslurm's fatal() on a broken slurm.conf\n",
    }
    for kind, init in failures.items():
        site = tmp_path / f"site-{kind}"
        (site / "pyslurm").mkdir(parents=True)
        (site / "pyslurm" / "__init__.py").write_text(init)
        log = tmp_path / f"{kind}.log"
        config = tmp_path / f"{kind}.conf"
        config.write_text(
            f"spool = {cluster.spool}\nlog = {log}\nslurm_conf = {cluster.conf}\n"
            "query_timeout = 5\n"
        )
        answer = _ask_all_ways(cluster, [str(job)], str(config), str(site))
        assert answer["questions"] == "ScontrolQuestions", kind
        asked = answer["facts"]["hook"][str(job)]
        assert (asked["state"], asked["resolved_by"]) == ("COMPLETED", "scontrol")
        assert "pyslurm did not start" in log.read_text() and "using scontrol" in log.read_text()


#: asks through a ScontrolQuestions whose scontrol cannot hold a session, twice
_ASK_TWICE = """
import json, os, sys
sys.path.insert(0, os.path.dirname(sys.argv[1]))
from datalad_slurm_hook.scontrol import ScontrolQuestions
from datalad_slurm_hook.settings import read_settings
config = read_settings(sys.argv[2])
questions = ScontrolQuestions(sys.argv[3], config.slurm_conf, config.log)
first = questions.ask([sys.argv[4]], 3)
second = questions.ask([sys.argv[4]], 10)
print(json.dumps([first, second, questions.session_failed]))
"""


def test_scontrol_that_holds_no_session_is_asked_once_per_job(
    acct_cluster: Cluster, tmp_path: Path
) -> None:
    """An scontrol whose interactive mode never answers (a wrapper, another build): the first
    round times out, the worker logs it and asks one ``scontrol show job -o`` per job after."""
    cluster = acct_cluster
    job = cluster.submit("-o", "/dev/null", "--wrap", "true", cwd=tmp_path)
    cluster.wait_done([job])
    wrapper = tmp_path / "scontrol"
    wrapper.write_text('#!/bin/sh\n[ $# -gt 0 ] || exec sleep 60\nexec /usr/bin/scontrol "$@"\n')
    wrapper.chmod(0o755)
    log = tmp_path / "hook.log"
    config = tmp_path / "hook.conf"
    config.write_text(f"spool = {cluster.spool}\nlog = {log}\nslurm_conf = {cluster.conf}\n")
    first, second, failed = _run_with_hook(cluster, _ASK_TWICE, str(config), str(wrapper), str(job))
    assert first == {} and failed is True  # no answer from the session: asked again later
    assert second[str(job)]["JobState"] == "COMPLETED"
    assert "interactive scontrol failed" in log.read_text()


def test_worker_ends_while_slurmctld_does_not_answer(tmp_path: Path) -> None:
    """A stopped slurmctld: the worker for one job gives up within its bounds (pyslurm waits
    for Slurm's MessageTimeout, scontrol for query_timeout) and exits 0."""
    with spare_cluster() as cluster:
        job = cluster.submit("-o", "/dev/null", "--wrap", "true", cwd=tmp_path)
        cluster.wait_done([job])
        hook = Path(os.environ["DATALAD_SLURM_TEST_ACCT_HOOK"])
        worker = Path(hook, "libexec", "datalad_slurm_epilog.py")
        spool = tmp_path / "spool"
        log = tmp_path / "hook.log"
        config = tmp_path / "hook.conf"
        config.write_text(
            f"spool = {spool}\nlog = {log}\nslurm_conf = {cluster.conf}\nquery_timeout = 2\n"
        )
        spool.mkdir()
        spool.chmod(0o1733)
        UserSpool(str(spool)).register(None, job)  # as `datalad schedule` does
        state_dir = Path(cluster.conf).parent.parent
        ctld = int((state_dir / "slurm" / "slurmctld.pid").read_text())
        os.kill(ctld, signal.SIGSTOP)
        try:
            started = time.monotonic()
            proc = subprocess.run(
                [str(worker), "--direct", "_"],
                env={
                    "DATALAD_SLURM_CONFIG": str(config),
                    "SLURM_JOB_ID": str(job),
                    "SLURM_JOB_UID": str(os.getuid()),
                    "SLURM_JOB_EXIT_CODE2": "0:0",
                },
                capture_output=True,
                timeout=60,
            )
            took = time.monotonic() - started
        finally:
            os.kill(ctld, signal.SIGCONT)
        assert proc.returncode == 0, proc
        assert took < 30, took
        events = list((spool / str(os.getuid()) / "events").glob("*.event"))
        # either the environment's facts (a success looks UNKNOWN) or, past the hard limit,
        # no event and a line in the admin's log; finish asks Slurm for such jobs
        if events:
            event = json.loads(events[0].read_text())
            assert (event["state"], event["resolved_by"]) == ("UNKNOWN", "environment")
        else:
            assert f"job {job}: gave up" in log.read_text()
