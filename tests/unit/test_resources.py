"""What a job was given and used, read from every source, checked against each other.

Differential over the recorded fixtures (``fixtures/json/``: Slurm 22.05, 24.11
and 26.05, with and without accounting; ``fixtures/pyslurm-*.json``: pyslurm
25.11 on 26.05): for every ended job, the figures read from ``squeue --json``,
from ``sacct --json`` and from the ``scontrol show job`` line the hook reads
must agree wherever two of them know a figure, and the ``resources`` jobs
(``-c 2 --mem=200M --gres=gpu:1``, 60 MB held for a few seconds, on clusters
with ``jobacct_gather/linux``) must show every figure, equal to the test's own
reading of Slurm's answers.
"""

from __future__ import annotations

import dataclasses
import json
import re
import subprocess
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest

from datalad_slurm.commit.record import RESOURCE_KEYS, build_record, job_facts, resource_keys
from datalad_slurm.jobs.events import event_resources
from datalad_slurm.slurm.jsonrecords import sacct_tasks, squeue_tasks
from datalad_slurm.slurm.pyslurmrecords import accounting_tasks, live_tasks
from datalad_slurm.slurm.resources import (
    Resources,
    job_totals,
    run_time,
    run_time_text,
    tres_from_list,
    tres_from_text,
)
from datalad_slurm.slurm.state import JobState, JobStatus, TaskState
from datalad_slurm.slurm.usage import Usage, wants_usage
from datalad_slurm.spool import Event
from tests.unit.hook_modules import ask
from tests.unit.hook_modules import facts as hook_facts
from tests.unit.test_events import RecordingBackend
from tests.unit.test_jobrecord import _job

FIXTURES = Path(__file__).parent / "fixtures"
#: the figures every source may know (TotalCPU and MaxRSS: accounting only)
SHARED = ("elapsed", "req_tres", "alloc_tres", "nodes", "partition", "account", "qos")
#: what the ``resources`` job asked for (record_json_fixtures.RESOURCE_REQUEST)
REQUESTED = {"cpu": 2, "mem": 200, "node": 1}


def _json_fixtures() -> list[Path]:
    return sorted(p for p in (FIXTURES / "json").rglob("*.json") if p.parent.name != "built")


def _answer(fixture: Mapping[str, Any], prefix: str) -> Mapping[str, Any] | None:
    for command, answer in fixture["command_outputs"].items():
        if command.startswith(prefix) and isinstance(answer, Mapping):
            return answer
    return None


def _readings(fixture: Mapping[str, Any]) -> Iterator[tuple[str, dict[str, Resources]]]:
    """Per ended task: what squeue, sacct and the hook (from scontrol's line) say."""
    wanted = set(fixture["job_ids"])
    squeue = _answer(fixture, "squeue --json --states=all")
    sacct = _answer(fixture, "sacct")
    from_squeue = {t.label: t for t in squeue_tasks(squeue or {}, wanted)}
    from_sacct = {t.label: t for t in sacct_tasks(sacct or {}, wanted)}
    for label, line in fixture["scontrol"].items():
        fields = hook_facts.parse_scontrol_line(line)
        if not JobState.parse(fields.get("JobState")).is_terminal:
            continue
        event = Event(
            job_id=int(fields["JobId"]), state="COMPLETED", **hook_facts.resource_facts(fields)
        )
        found = {"hook": event_resources(event)}
        for source, tasks in (("squeue", from_squeue), ("sacct", from_sacct)):
            if label in tasks and tasks[label].state.is_terminal:
                found[source] = tasks[label].resources
        yield label, {k: v for k, v in found.items() if v is not None}


@pytest.mark.parametrize("path", _json_fixtures(), ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_squeue_sacct_and_scontrol_agree_on_every_figure_they_share(path: Path) -> None:
    fixture = json.loads(path.read_text())
    compared = 0
    for label, readings in _readings(fixture):
        for figure in SHARED:
            known = {s: getattr(r, figure) for s, r in readings.items() if getattr(r, figure)}
            assert len(set(map(repr, known.values()))) <= 1, (label, figure, known)
            compared += len(known) > 1
        if not fixture["accounting"]:
            assert all(r.total_cpu is None and r.max_rss is None for r in readings.values())
    ended = [line for line in fixture["scontrol"].values() if "JobState=PENDING" not in line]
    assert compared or not ended or fixture["moment"] != "finished", "nothing compared"


def _scontrol(line: str) -> dict[str, str]:
    """The test's own reading of an ``scontrol show job -o`` line (no value has a space here)."""
    return dict(re.findall(r"(\w+)=(\S*)", line))


def _seconds(text: str) -> int:
    hours, minutes, seconds = (int(part) for part in text.split(":"))
    return (hours * 60 + minutes) * 60 + seconds


@pytest.mark.parametrize(
    "path", sorted((FIXTURES / "json").glob("*/resources*.json")), ids=lambda p: p.parent.name
)
def test_the_resources_job_shows_every_figure_slurm_gave(path: Path) -> None:
    fixture = json.loads(path.read_text())
    (job_id,) = fixture["job_ids"]
    line = _scontrol(fixture["scontrol"][str(job_id)])
    readings = dict(_readings(fixture))[str(job_id)]
    best = readings.get("sacct", readings["squeue"]).merged(readings["squeue"])
    assert best.elapsed == _seconds(line["RunTime"]) > 0
    assert (best.nodes, best.partition) == (line["NodeList"], line["Partition"])
    assert best.req_tres is not None and best.alloc_tres is not None
    if not fixture["accounting"]:
        # no slurmdbd: no accounting's usage, no account or QOS, and GPUs are no TRES
        assert best.total_cpu is None and best.max_rss is None
        assert best.account is None and best.qos is None
        assert dict(best.req_tres) == REQUESTED
        assert dict(best.alloc_tres) == {"cpu": 2, "node": 1}
        return
    (record,) = _answer(fixture, "sacct")["jobs"]  # type: ignore[index]
    assert (best.account, best.qos) == (line["Account"], line["QOS"])
    assert dict(best.req_tres) == {**REQUESTED, "gres/gpu": 1}
    assert dict(best.alloc_tres) == {"cpu": 2, "node": 1, "gres/gpu": 1}
    steps = record["steps"]
    assert best.total_cpu == round(
        sum(
            s["time"]["total"]["seconds"] + s["time"]["total"]["microseconds"] / 1e6 for s in steps
        ),
        6,
    )
    assert best.total_cpu > 0
    rss = [m["count"] for s in steps for m in s["tres"]["requested"]["max"] if m["type"] == "mem"]
    # the job held 60 MB of text in a shell variable
    assert best.max_rss == max(rss) >= 60_000_000


PYSLURM_LIVE = json.loads((FIXTURES / "pyslurm-live.json").read_text())
PYSLURM_DB = json.loads((FIXTURES / "pyslurm-db.json").read_text())
PYSLURM_OTHERS = json.loads((FIXTURES / "pyslurm-sacct.json").read_text())


def _pyslurm(scenario: str) -> tuple[TaskState, TaskState]:
    job_id = PYSLURM_LIVE[scenario]["job_id"]
    (live,) = [
        t for t in live_tasks(PYSLURM_LIVE[scenario]["records"], {job_id}) if t.task_id is None
    ]
    (db,) = [t for t in accounting_tasks(PYSLURM_DB[scenario]["records"], {job_id})]
    return live, db


def test_pyslurm_agrees_with_sacct_and_scontrol_on_the_same_job() -> None:
    live, db = _pyslurm("resources")
    assert live.resources is not None and db.resources is not None
    (record,) = PYSLURM_OTHERS["sacct"]
    line = _scontrol(PYSLURM_OTHERS["scontrol"])
    from_sacct = sacct_tasks({"jobs": [record]}, {PYSLURM_OTHERS["job_id"]})[0].resources
    assert from_sacct is not None
    for figure in SHARED:
        assert getattr(live.resources, figure) == getattr(db.resources, figure), figure
        assert getattr(db.resources, figure) == getattr(from_sacct, figure), figure
    assert live.resources.elapsed == _seconds(line["RunTime"])
    assert dict(live.resources.alloc_tres or {}) == tres_from_text(line["AllocTRES"])
    assert dict(db.resources.req_tres or {}) == {"cpu": 1, "mem": 200, "node": 1, "gres/gpu": 1}
    # MaxRSS in bytes as sacct has it; pyslurm's TotalCPU is whole seconds per step (its
    # object API drops the microseconds), accounting's own figure has them
    assert db.resources.max_rss == from_sacct.max_rss >= 60_000_000
    assert from_sacct.total_cpu is not None and db.resources.total_cpu is not None
    assert db.resources.total_cpu == sum(s["time"]["total"]["seconds"] for s in record["steps"])
    assert live.resources.total_cpu is None and live.resources.max_rss is None


@pytest.mark.parametrize("scenario", ["completed", "failed_exit3", "timeout", "cancelled_running"])
def test_pyslurm_slurmctld_and_accounting_agree(scenario: str) -> None:
    live, db = _pyslurm(scenario)
    assert live.resources is not None and db.resources is not None
    for figure in SHARED:
        assert getattr(live.resources, figure) == getattr(db.resources, figure), figure
    # jobacct_gather/linux samples every second: a job of no time has no usage figures
    if (db.resources.elapsed or 0) < 1:
        assert db.resources.max_rss is None


def test_a_cancelled_pending_job_ran_nowhere() -> None:
    live, db = _pyslurm("cancelled_pending")
    for task in (live, db):
        assert task.resources is not None
        assert task.resources.nodes is None and task.resources.alloc_tres is None
        assert task.resources.elapsed == 0


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("00:00:04", 4), ("01:02:03", 3723), ("2-00:00:01", 172801), ("59:59", 3599), ("17", 17)],
)
def test_run_time_text(text: str, seconds: int) -> None:
    assert run_time_text(text) == seconds


@pytest.mark.parametrize("seconds", [0, 4, 3723, 86399, 172801])
def test_the_hook_writes_pyslurms_run_time_as_scontrol_does(seconds: int) -> None:
    written = ask.run_time_text(seconds)
    assert re.fullmatch(r"(\d+-)?\d\d:\d\d:\d\d", written) and run_time_text(written) == seconds


@pytest.mark.parametrize(
    ("text", "tres"),
    [
        (
            "cpu=2,mem=200M,node=1,billing=2,gres/gpu=1",
            {"cpu": 2, "mem": 200, "node": 1, "gres/gpu": 1},
        ),
        (
            "cpu=4,mem=2G,node=1,gres/gpu:a100=2",
            {"cpu": 4, "mem": 2048, "node": 1, "gres/gpu:a100": 2},
        ),
        ("mem=1.50G,energy=5", {"mem": 1536}),
        ("mem=1T", {"mem": 1024 * 1024}),
        ("(null)", None),
        ("", None),
    ],
)
def test_tres_text(text: str, tres: dict[str, int] | None) -> None:
    assert tres_from_text(text) == tres


def test_tres_list_of_accounting() -> None:
    assert tres_from_list(
        [
            {"type": "cpu", "name": "", "count": 2},
            {"type": "energy", "name": "", "count": -2},
            {"type": "gres", "name": "gpu", "count": 1},
            {"type": "billing", "count": 2},
            {"type": "mem", "name": None, "count": 200},
        ]
    ) == {"cpu": 2, "gres/gpu": 1, "mem": 200}
    assert tres_from_list([]) is None


def test_run_time_counts_as_scontrol_does() -> None:
    common = {"pending": False, "suspended": False, "start": 100, "suspend_time": None}
    assert run_time(**common, running=False, end=160, pre_sus_time=0, now=999) == 60
    assert run_time(**common, running=True, end=5000, pre_sus_time=0, now=130) == 30
    # resumed at 150 after 20 s of running: the time suspended does not count
    resumed = {**common, "suspend_time": 150}
    assert run_time(**resumed, running=True, end=None, pre_sus_time=20, now=160) == 30
    assert (
        run_time(**{**common, "suspended": True}, running=False, end=None, pre_sus_time=7, now=1)
        == 7
    )
    assert (
        run_time(**{**common, "pending": True}, running=False, end=None, pre_sus_time=0, now=1) == 0
    )


def _array_tasks() -> list[TaskState]:
    fixture = json.loads((FIXTURES / "json" / "24.11.5" / "array.json").read_text())
    return list(sacct_tasks(_answer(fixture, "sacct") or {}, set(fixture["job_ids"])))


def test_an_array_adds_up_its_tasks() -> None:
    tasks = _array_tasks()
    per_task = [t.resources for t in tasks]
    assert len(per_task) == 4 and all(r is not None for r in per_task)
    total = job_totals(per_task)
    assert total is not None
    assert total.elapsed == sum(r.elapsed for r in per_task if r and r.elapsed is not None)
    assert dict(total.alloc_tres or {}) == {"cpu": 4, "node": 4}
    assert (total.nodes, total.partition, total.account) == ("localhost", "debug", "root")
    # a figure some task lacks is no total: it would pass for the job's
    assert job_totals([*per_task[:3], Resources(elapsed=1, source="hook")]).nodes is None
    assert job_totals([*per_task[:3], None]) is None


def _resources_status(release: str = "24.11.5") -> JobStatus:
    fixture = json.loads((FIXTURES / "json" / release / "resources.json").read_text())
    tasks = list(sacct_tasks(_answer(fixture, "sacct") or {}, set(fixture["job_ids"])))
    return JobStatus(42, {t.label: t for t in tasks}, backend="squeue/sacct --json")


def test_env_json_and_record_carry_the_figures() -> None:
    status = _resources_status()
    (task,) = status.tasks.values()
    assert task.resources is not None
    facts = job_facts(_job({}), status)
    assert facts["tasks"][task.label]["resources"] == task.resources.to_json()
    assert facts["tasks"][task.label]["resources"]["source"] == "sacct"
    assert facts["resources"] == task.resources.to_json()
    keys = resource_keys(status)
    assert set(keys) == set(RESOURCE_KEYS.values())
    assert keys["slurm_max_rss"] == task.resources.max_rss
    assert keys["slurm_alloc_tres"] == dict(task.resources.alloc_tres or {})
    record = build_record(_job({}), status, find_files_stub())
    assert {k: record.extra[k] for k in keys} == keys


def find_files_stub() -> Any:
    from datalad_slurm.commit.jobfiles import JobFiles

    return JobFiles(logs=[], env_json="slurm-job-42.env.json")


def test_a_figure_nobody_gave_is_no_key() -> None:
    status = JobStatus(42, backend="spool")
    task = TaskState(42, None, JobState.COMPLETED, resources=Resources(elapsed=3, source="hook"))
    status.tasks[task.label] = task
    assert resource_keys(status) == {"slurm_elapsed": 3}
    bare = JobStatus(42, backend="spool")
    bare.tasks["42"] = TaskState(42, None, JobState.COMPLETED)
    assert resource_keys(bare) == {}
    assert "resources" not in job_facts(_job({}), bare)
    assert "resources" not in job_facts(_job({}), bare)["tasks"]["42"]


def test_usage_is_asked_once_for_jobs_accounting_did_not_answer() -> None:
    accounted = _resources_status()
    (from_sacct,) = accounted.tasks.values()
    hook_said = Resources(elapsed=from_sacct.resources.elapsed, nodes="localhost", source="hook")  # type: ignore[union-attr]
    settled = JobStatus(7, backend="spool")
    by_hook = TaskState(
        7, None, JobState.COMPLETED, start_time=from_sacct.start_time, resources=hook_said
    )
    settled.tasks[by_hook.label] = by_hook
    backend = RecordingBackend(
        {},
        {
            (7, None): TaskState(
                7,
                None,
                JobState.COMPLETED,
                start_time=from_sacct.start_time,
                resources=from_sacct.resources,
            )
        },
    )
    usage = Usage.ask(backend, [settled, accounted])
    assert backend.usage_calls == [[7]]  # the job sacct answered for is not asked again
    assert wants_usage(settled) and not wants_usage(accounted)
    (task,) = usage.added_to(settled).tasks.values()
    assert task.resources is not None and from_sacct.resources is not None
    assert task.resources.max_rss == from_sacct.resources.max_rss
    assert task.resources.source == "sacct"  # the hook knew nothing sacct did not
    assert usage.added_to(accounted) is accounted
    # where accounting lacks a figure, the hook's fills the gap
    gap = dataclasses.replace(from_sacct.resources, nodes=None)
    filled = gap.merged(hook_said)
    assert filled.nodes == "localhost" and filled.source == "sacct + hook"


def test_usage_of_another_run_is_not_taken() -> None:
    """Job ids are reused after a reset: accounting's record of another start is not this job's."""
    settled = JobStatus(7, backend="spool")
    settled.tasks["7"] = TaskState(7, None, JobState.COMPLETED, start_time=100)
    other = TaskState(
        7, None, JobState.COMPLETED, start_time=50, resources=Resources(max_rss=9, source="sacct")
    )
    usage = Usage.ask(RecordingBackend({}, {(7, None): other}), [settled])
    assert usage.added_to(settled).tasks["7"].resources is None


def test_no_question_without_jobs_to_commit() -> None:
    backend = RecordingBackend({})
    usage = Usage.ask(backend, [])
    assert backend.usage_calls == []
    status = JobStatus(1, backend="spool")
    assert usage.added_to(status) is status


def test_the_listing_shows_how_long_running_jobs_have_run() -> None:
    from datalad_slurm.commands.finish import render_open_jobs
    from datalad_slurm.usecases.finish_listing import running_for

    running = JobStatus(5, backend="pyslurm")
    for task_id, state, elapsed in ((0, JobState.RUNNING, 65), (1, JobState.RUNNING, 3723)):
        task = TaskState(5, task_id, state, resources=Resources(elapsed=elapsed, source="pyslurm"))
        running.tasks[task.label] = task
    pending = JobStatus(6, backend="pyslurm")
    pending.tasks["6"] = TaskState(6, None, JobState.PENDING)
    assert running_for(running) == 3723 and running_for(pending) is None
    table = render_open_jobs(
        [
            {"slurm_job_id": 5, "slurm_job_status": "RUNNING", "elapsed": 3723, "backend": "x"},
            {"slurm_job_id": 6, "slurm_job_status": "PENDING", "elapsed": None},
            {"slurm_job_id": 7, "slurm_job_status": "RUNNING", "elapsed": 2 * 86400 + 61},
            {"slurm_job_id": 8, "slurm_job_status": "RUNNING", "elapsed": 65},
        ]
    ).splitlines()
    assert table[2].split() == ["slurm-job-id", "slurm-job-status", "elapsed", "tasks"]
    assert [line.split()[2] for line in table[3:7]] == ["1:02:03", "-", "2-00:01:01", "1:05"]


class _LateAnswer:
    """Accounting's answer, read only once finish has staged the job's outputs."""

    def __init__(self, top: Path, found: dict[Any, TaskState]) -> None:
        self.top, self.found = top, found
        self.staged_when_read: list[str] = []

    def result(self) -> dict[Any, TaskState]:
        staged = subprocess.run(
            ["git", "diff", "--cached", "--name-only"],
            cwd=self.top,
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        self.staged_when_read = staged.split()
        return self.found


def _one_job_dataset(top: Path) -> Any:
    from datalad.api import create

    ds = create(str(top), result_renderer="disabled")
    (top / "out").mkdir()
    (top / "out" / "result.txt").write_text("result\n")
    return ds


def _commit_one(ds: Any, top: Path, task: TaskState, usage: Usage | None) -> list[dict[str, Any]]:
    from datalad_slurm.commit.batch import commit_jobs
    from datalad_slurm.jobs.statedir import open_registry

    with open_registry(str(top)) as registry:
        job = registry.reserve(
            cmd="sbatch job.sh", pwd=".", inputs=[], extra_inputs=[], outputs=["out"]
        )
        job = registry.mark_submitted(job, 42, None)
        status = JobStatus(42, {task.label: task}, backend="spool")
        return [o.result() for o in commit_jobs(ds, registry, [(job, status)], usage=usage)]


def _git_out(top: Path, *args: str) -> str:
    return subprocess.run(
        ["git", *args], cwd=top, capture_output=True, text=True, check=True
    ).stdout


def test_a_temporary_record_a_killed_finish_left_is_not_committed(tmp_path: Path) -> None:
    """The job's files are staged before its record is written: what a finish killed while
    writing env.json left beside it must be gone by then."""
    top = tmp_path / "ds"
    ds = _one_job_dataset(top)
    # the log in the output folder: env.json goes beside it, inside what the job owns
    (top / "out" / "slurm-42.out").write_text("log\n")
    (top / "out" / ".slurm-job-42.env.json.datalad-slurm-tmp").write_text('{"half": ')
    task = TaskState(
        42,
        None,
        JobState.COMPLETED,
        exit_code=0,
        work_dir=str(top),
        stdout=str(top / "out/slurm-42.out"),
    )
    results = _commit_one(ds, top, task, None)
    assert [r["status"] for r in results if r["action"] == "finish"] == ["ok"]
    assert sorted(_git_out(top, "show", "--name-only", "--format=", "HEAD").split()) == [
        "out/result.txt",
        "out/slurm-42.out",
        "out/slurm-job-42.env.json",
    ]
    assert _git_out(top, "status", "--porcelain") == ""


def test_accounting_answers_while_the_outputs_are_staged(tmp_path: Path) -> None:
    """The usage question costs finish no wait of its own: the outputs are staged before its
    answer is read, and the records written after carry what it says."""
    top = tmp_path / "ds"
    ds = _one_job_dataset(top)
    accounted = dict(_resources_status().tasks)["2"]
    start = accounted.start_time
    figures = accounted.resources
    assert figures is not None and figures.max_rss
    by_hook = Resources(elapsed=figures.elapsed, nodes="localhost", source="hook (scontrol)")
    task = TaskState(42, None, JobState.COMPLETED, exit_code=0, start_time=start, resources=by_hook)
    late = _LateAnswer(top, {(42, None): dataclasses.replace(accounted, job_id=42)})

    class Asked:
        def usage(self, job_ids: Any) -> _LateAnswer:
            return late

    usage = Usage.ask(Asked(), [JobStatus(42, {task.label: task})])  # type: ignore[arg-type]
    results = _commit_one(ds, top, task, usage)
    assert [r["status"] for r in results if r["action"] == "finish"] == ["ok"]
    assert "out/result.txt" in late.staged_when_read
    assert not any(name.endswith(".env.json") for name in late.staged_when_read)
    body = _git_out(top, "log", "-1", "--format=%B")
    record = json.loads(body.split("=== Do not change lines below ===")[1].split("^^^")[0])
    assert record["slurm_max_rss"] == figures.max_rss
    assert record["slurm_total_cpu"] == figures.total_cpu
    env = json.loads((top / "slurm-job-42.env.json").read_text())
    assert env["tasks"]["42"]["resources"]["source"] == "sacct"
    assert _git_out(top, "status", "--porcelain") == ""


def test_an_event_and_slurms_answer_fill_each_others_gaps() -> None:
    """The hook on 22.05 knows no requested TRES; squeue does: the merged task has both, where
    both tell of the same run, and never figures of another run (a requeue)."""
    from datalad_slurm.jobs.events import combine, statuses_from_events

    event = Event(
        job_id=7,
        state="COMPLETED",
        end_time=200,
        run_time="00:01:40",
        alloc_tres="cpu=2,node=1",
        partition="debug",
        resolved_by="scontrol",
    )
    from_events = statuses_from_events([event], 7)
    answer = JobStatus(7, backend="squeue/sacct --json")
    squeue_said = Resources(req_tres={"cpu": 2, "mem": 200, "node": 1}, source="squeue")
    answer.tasks["7"] = TaskState(7, None, JobState.COMPLETED, end_time=200, resources=squeue_said)
    (task,) = combine(from_events, answer).tasks.values()
    assert task.resources is not None
    assert dict(task.resources.req_tres or {}) == {"cpu": 2, "mem": 200, "node": 1}
    assert dict(task.resources.alloc_tres or {}) == {"cpu": 2, "node": 1}
    assert task.resources.elapsed == 100 and task.resources.partition == "debug"
    assert task.resources.source == "hook (scontrol) + squeue"
    # the job ran again since (another end): the other run's figures stay out
    answer.tasks["7"] = dataclasses.replace(answer.tasks["7"], end_time=900)
    (task,) = combine(from_events, answer).tasks.values()
    assert task.resources is not None and task.resources.req_tres is None


def test_totals_add_up_distinct_tasks() -> None:
    first = Resources(
        elapsed=3,
        total_cpu=1.5,
        max_rss=100,
        req_tres={"cpu": 2, "mem": 200},
        alloc_tres={"cpu": 2, "gres/gpu": 1},
        nodes="n1",
        partition="p",
        account="a",
        qos="normal",
        source="sacct",
    )
    second = dataclasses.replace(first, elapsed=5, total_cpu=2.25, max_rss=300, nodes="n2")
    total = job_totals([first, second])
    assert total is not None
    assert (total.elapsed, total.total_cpu, total.max_rss) == (8, 3.75, 300)
    assert dict(total.req_tres or {}) == {"cpu": 4, "mem": 400}
    assert dict(total.alloc_tres or {}) == {"cpu": 4, "gres/gpu": 2}
    assert (total.nodes, total.partition, total.account, total.qos) == ("n1,n2", "p", "a", "normal")


def test_pyslurm_tres_are_written_as_slurm_writes_them() -> None:
    """pyslurm 25.11's ``allocated_tres``: ``cpu``/``mem``/``node`` objects with a ``count``
    (memory in megabytes) and a ``gres`` map (``GPU`` objects name themselves ``gpu`` or
    ``gpu:a100``); the same shapes stand in here (pyslurm runs in the pyslurm tier only, where
    tests/cluster/test_resources.py compares its figures with sacct's)."""
    from types import SimpleNamespace

    from datalad_slurm.slurm.resources import tres_text

    def counted(amount: int) -> SimpleNamespace:
        return SimpleNamespace(count=amount)

    tres = SimpleNamespace(
        cpu=counted(2),
        mem=counted(200),
        node=counted(1),
        billing=counted(2),
        gres={"gpu:a100": SimpleNamespace(name="gpu:a100", count=1)},
    )
    # as scontrol writes it: Slurm's TRES order, billing too, memory in its largest exact unit
    assert tres_text(tres) == "cpu=2,mem=200M,node=1,billing=2,gres/gpu:a100=1"
    assert tres_from_text(tres_text(tres)) == {"cpu": 2, "mem": 200, "node": 1, "gres/gpu:a100": 1}
    assert tres_text(SimpleNamespace(mem=counted(2048), gres={})) == "mem=2G"
    assert tres_text(SimpleNamespace(mem=counted(1000), gres={})) == "mem=1000M"
    assert tres_text(SimpleNamespace(cpu=None, mem=None, node=None, gres={})) is None
    assert tres_text("cpu=1") == "cpu=1" and tres_text(None) is None


@pytest.mark.parametrize("setting", [None, "true", "false"])
def test_finish_asks_accounting_unless_told_not_to(tmp_path: Path, setting: str | None) -> None:
    """The whole finish: a job the backend settled (no accounting) is asked about once, with
    ``datalad.slurm.usage`` unset or true; with false not at all, and committed all the same."""
    from datalad_slurm.usecases.finish import finish
    from datalad_slurm.usecases.finish_request import FinishRequest

    top = tmp_path / "ds"
    ds = _one_job_dataset(top)
    if setting is not None:
        ds.config.set("datalad.slurm.usage", setting, scope="local")
    from datalad_slurm.jobs.statedir import open_registry

    with open_registry(str(top)) as registry:
        job = registry.reserve(
            cmd="sbatch job.sh", pwd=".", inputs=[], extra_inputs=[], outputs=["out"]
        )
        registry.mark_submitted(job, 42, None)
    said = Resources(elapsed=3, nodes="localhost", source="squeue")
    task = TaskState(42, None, JobState.COMPLETED, exit_code=0, work_dir=str(top), resources=said)
    accounted = dataclasses.replace(task, resources=Resources(max_rss=5, source="sacct"))
    backend = RecordingBackend({42: JobStatus(42, {task.label: task})}, {(42, None): accounted})
    results = list(finish(ds, FinishRequest(), backend))
    assert [r["status"] for r in results if r["action"] == "finish"] == ["ok"]
    record = json.loads(
        _git_out(top, "log", "-1", "--format=%B")
        .split("=== Do not change lines below ===")[1]
        .split("^^^")[0]
    )
    if setting == "false":
        assert backend.usage_calls == [] and "slurm_max_rss" not in record
    else:
        assert backend.usage_calls == [[42]] and record["slurm_max_rss"] == 5
    assert record["slurm_elapsed"] == 3


def test_the_hooks_tres_text_is_the_packages() -> None:
    """The hook's worker keeps its own copy of ``tres_text`` (stdlib only, installed without the
    package): both write the same string for every shape pyslurm gives."""
    from types import SimpleNamespace

    from datalad_slurm.slurm.resources import tres_text
    from tests.unit.hook_modules import ask

    def counted(amount: object) -> SimpleNamespace:
        return SimpleNamespace(count=amount)

    gpu = SimpleNamespace(count=2, name="gpu:a100")
    shapes: list[object] = [
        None,
        "",
        "cpu=2,mem=1G",
        SimpleNamespace(),
        SimpleNamespace(cpu=counted(4)),
        SimpleNamespace(cpu=counted(True), mem=counted("x")),
        SimpleNamespace(mem=counted(0)),
        SimpleNamespace(mem=counted(1000)),
        SimpleNamespace(mem=counted(1024)),
        SimpleNamespace(mem=counted(3 * 1024 * 1024)),
        SimpleNamespace(mem=counted(1024**4)),
        SimpleNamespace(cpu=counted(1), energy=counted(7), node=counted(1), billing=counted(3)),
        SimpleNamespace(fs={"disk": counted(10)}, vmem=counted(5), pages=counted(6)),
        SimpleNamespace(gres={"gpu": gpu, "mps": counted(100)}, license={"matlab": counted(1)}),
        SimpleNamespace(gres={}, license=None),
    ]
    written = [tres_text(shape) for shape in shapes]
    assert [ask.tres_text(shape) for shape in shapes] == written
    assert written[-2] == "gres/gpu:a100=2,gres/mps=100,license/matlab=1"
    assert written[9] == "mem=3T"
