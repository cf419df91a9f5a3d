"""Mapping pyslurm's job records to task states, from records of real jobs (no pyslurm needed).

``fixtures/pyslurm-live.json`` (``pyslurm.Jobs.load()``) and ``pyslurm-db.json``
(``pyslurm.db.Jobs.load(JobFilter(ids=...))``) were recorded by
``tests/tools/record_pyslurm_fixtures.py`` from Slurm 26.05.5 with pyslurm 25.11.2 in
the pyslurm tier's chroot: one job per scenario, each with every record of that job.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from types import ModuleType, SimpleNamespace
from typing import Any

import pytest

from datalad_slurm.slurm import pyslurmapi
from datalad_slurm.slurm.backend import BackendError, merge_tasks, trusted_accounting
from datalad_slurm.slurm.pyslurmapi import PyslurmBackend
from datalad_slurm.slurm.pyslurmexit import raw_statuses, whole_exit_code
from datalad_slurm.slurm.pyslurmload import LoadedPyslurm, PyslurmApi
from datalad_slurm.slurm.pyslurmrecords import (
    RECORD_FIELDS,
    RESOURCE_FIELDS,
    accounting_tasks,
    live_tasks,
)
from datalad_slurm.slurm.state import JobState, JobStatus, TaskState, Verdict

FIXTURES = Path(__file__).parent / "fixtures"


def _scenarios(name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((FIXTURES / name).read_text())
    return data


LIVE = _scenarios("pyslurm-live.json")
DB = _scenarios("pyslurm-db.json")


def _status(source: dict[str, Any], scenario: str, db: bool = False) -> JobStatus:
    job_id = source[scenario]["job_id"]
    records = source[scenario]["records"]
    tasks = accounting_tasks(records, {job_id}) if db else list(live_tasks(records, {job_id}))
    statuses: dict[int, JobStatus] = {}
    merge_tasks(statuses, tasks, "test")
    return statuses[job_id]


def _states(status: JobStatus) -> dict[str, str]:
    return {label: task.state.value for label, task in status.tasks.items()}


def test_fixtures_hold_every_field_the_backend_reads() -> None:
    for source in (LIVE, DB):
        for scenario in source.values():
            for record in scenario["records"]:
                resources = set() if record["state"] == "PENDING" else set(RESOURCE_FIELDS)
                assert set(record) == set(RECORD_FIELDS) | resources


@pytest.mark.parametrize("db", [False, True], ids=["slurmctld", "accounting"])
@pytest.mark.parametrize(
    ("scenario", "state", "exit_code", "signal", "verdict"),
    [
        ("completed", "COMPLETED", 0, 0, Verdict.COMPLETED),
        ("failed_exit3", "FAILED", 3, 0, Verdict.FAILED),
        ("killed_signal9", "FAILED", 0, 9, Verdict.FAILED),
        ("cancelled_running", "CANCELLED", 0, None, Verdict.FAILED),
        ("cancelled_pending", "CANCELLED", 0, 0, Verdict.FAILED),
        ("timeout", "TIMEOUT", 0, None, Verdict.FAILED),
        ("running", "RUNNING", None, None, Verdict.ACTIVE),
        ("requeued", "PENDING", None, None, Verdict.ACTIVE),
    ],
)
def test_single_jobs(
    scenario: str, state: str, exit_code: int | None, signal: int | None, verdict: Verdict, db: bool
) -> None:
    status = _status(DB if db else LIVE, scenario, db)
    job_id = LIVE[scenario]["job_id"]
    task = status.tasks[str(job_id)]
    assert list(status.tasks) == [str(job_id)]
    assert task.state is JobState[state] and status.verdict is verdict
    assert task.exit_code == exit_code
    if signal is not None:
        assert task.signal == signal
    if task.state.is_terminal:
        assert task.end_time and task.end_time >= (task.start_time or 0)
    else:  # an active job's 0 exit code and time-limit end time are not facts yet
        assert task.exit_code is None and task.signal is None and task.end_time is None


def test_cancel_signal_from_slurmctld() -> None:
    # slurmctld knows the signal that ended a cancelled or timed-out job; accounting says 0
    assert _status(LIVE, "cancelled_running").tasks["5"].signal == 15
    assert _status(LIVE, "timeout").tasks["10"].signal == 15
    assert _status(LIVE, "timeout").tasks["10"].reason == "TimeLimit"


@pytest.mark.parametrize("db", [False, True], ids=["slurmctld", "accounting"])
def test_array_with_a_failed_task_and_task_0_read_as_none(db: bool) -> None:
    status = _status(DB if db else LIVE, "array_task2_fails", db)
    assert _states(status) == {
        "8_0": "COMPLETED",
        "8_1": "COMPLETED",
        "8_2": "FAILED",
        "8_3": "COMPLETED",
    }
    assert status.verdict is Verdict.FAILED
    assert status.tasks["8_2"].exit_code == 1
    # task 0 (array_task_id None in pyslurm) keeps its own log file
    assert status.tasks["8_0"].stdout == "/tmp/rec/arr-8_0.out"
    assert status.tasks["8_3"].stdout == "/tmp/rec/arr-8_3.out"


@pytest.mark.parametrize("db", [False, True], ids=["slurmctld", "accounting"])
def test_held_array_expands_its_waiting_tasks(db: bool) -> None:
    # slurmctld lists waiting tasks as "0-2", accounting as the bitmap "0x7"
    status = _status(DB if db else LIVE, "array_held", db)
    assert _states(status) == {"9_0": "PENDING", "9_1": "PENDING", "9_2": "PENDING"}
    assert status.verdict is Verdict.ACTIVE
    # pyslurm expands their log name with task id NO_VAL: not a path to report
    assert all(task.stdout is None for task in status.tasks.values())


def test_plain_job_logs_and_times() -> None:
    task = _status(LIVE, "completed").tasks["2"]
    assert task.stdout == "/tmp/rec/done-2.out" and task.work_dir == "/tmp/rec"
    assert task.cluster == "local7917" and task.submit_time and task.start_time
    assert task.reason is None  # pyslurm's "None" reason is no reason


def test_accounting_adds_only_what_slurmctld_lacks() -> None:
    live = {8: _status(LIVE, "array_task2_fails")}
    stale_running = [t for t in accounting_tasks(DB["running"]["records"], {11})]
    merge_tasks(live, trusted_accounting(live, stale_running), "db")
    assert 11 in live  # a job slurmctld did not answer for comes from accounting
    assert _states(live[8]) == _states(_status(LIVE, "array_task2_fails"))


def test_jobs_not_wanted_are_ignored() -> None:
    records = [r for s in LIVE.values() for r in s["records"]]
    assert {t.job_id for t in live_tasks(records, {2, 8})} == {2, 8}


@pytest.mark.parametrize("state", [s for s in JobState if s is not JobState.UNKNOWN])
def test_every_slurm_state_maps_to_its_verdict(state: JobState) -> None:
    record = {**LIVE["completed"]["records"][0], "state": state.value}
    (task,) = live_tasks([record], {2})
    assert task.state is state
    expected = (
        Verdict.ACTIVE
        if state.is_active
        else Verdict.COMPLETED
        if state is JobState.COMPLETED
        else Verdict.FAILED
    )
    status = JobStatus(2, tasks={task.label: task})
    assert status.verdict is expected
    # an active task's exit code is not known yet; an ended one's is
    assert (task.exit_code is None) is state.is_active


# -- pyslurm releases: stand-ins with the attributes of each real tag --------------------------
#
# Only pyslurm 25.11.x installs here (it needs its exact Slurm), so the compatibility layer is
# tested with stand-in modules carrying the attribute set each tag of github.com/PySlurm/pyslurm
# has (read with ``git show <tag>:pyslurm/...``):
#   v22.5.0, v22.5.1, v23.2.0: only the old dict API (pyslurm/pyslurm.pyx: ``config``,
#       ``slurmdb_jobs``, ``job``); no Jobs, db, RPCError
#   v22.5.2, v23.2.1: Jobs/Job (core/job/job.pyx, ``Jobs(dict)``), db.Jobs (``Jobs(dict)``,
#       ``load(search_filter)``), db.JobSearchFilter only, RPCError, slurmctld.Config with
#       ``cluster`` only; old ``config``/``slurmdb_jobs`` from pyslurm.pyx
#   v22.5.3, v23.2.2 .. v24.11.0: as above plus db.JobFilter (JobSearchFilter = JobFilter),
#       Jobs/db.Jobs are MultiClusterMaps; v24.11.0 has the old API in deprecated.pyx
#   v25.5.0 .. v25.11.2: slurmctld.Config.accounting_storage_type (core/slurmctld/config.pyx);
#       the old ``config`` class is gone, ``slurmdb_jobs`` stays (deprecated.pyx)
# Every tag's ``_get_exit_code`` (utils/helpers.pyx) takes 128 off exit codes of 128 or more.


@dataclasses.dataclass(frozen=True)
class Tag:
    """What one pyslurm tag has, of what the backend uses."""

    version: str
    object_api: bool = True
    job_filter: bool = True  # db.JobFilter next to db.JobSearchFilter
    multi_cluster: bool = True  # Jobs collections keyed by cluster, then job id
    config_storage: bool = False  # slurmctld.Config.accounting_storage_type
    old_config: bool = True  # the old API's pyslurm.config().get()


TAGS = {
    t.version: t
    for t in (
        Tag("22.5.1", object_api=False),
        Tag("23.2.0", object_api=False),
        Tag("22.5.2", job_filter=False, multi_cluster=False),
        Tag("23.2.1", job_filter=False, multi_cluster=False),
        Tag("22.5.3"),
        Tag("23.2.2"),
        Tag("23.11.0"),
        Tag("24.5.0"),
        Tag("24.11.0"),
        Tag("25.5.0", config_storage=True, old_config=False),
        Tag("25.11.2", config_storage=True, old_config=False),
    )
}
WORKING_TAGS = [v for v, t in TAGS.items() if t.object_api]


@dataclasses.dataclass
class Cluster:
    """What the stand-in's Slurm holds and how it answers."""

    live: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    #: accounting's records; None: slurmdbd does not answer
    db: list[dict[str, Any]] | None = dataclasses.field(default_factory=list)
    #: slurmctld's AccountingStorageType (None: not set)
    storage: str | None = "accounting_storage/slurmdbd"
    #: the old slurmdb_jobs().get() records (raw wait statuses)
    raw: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    #: the config RPC fails
    config_fails: bool = False
    calls: list[str] = dataclasses.field(default_factory=list)


class StandInRPCError(Exception):
    pass


def _collection(records: list[dict[str, Any]], multi_cluster: bool) -> dict[Any, Any]:
    jobs = {r["id"]: SimpleNamespace(**r) for r in records}
    return {"local": jobs} if multi_cluster else jobs


def standin(version: str, cluster: Cluster) -> ModuleType:
    """A module with the attributes pyslurm ``version`` has, answering from ``cluster``."""
    tag = TAGS[version]
    module = ModuleType("pyslurm")
    module.__version__ = version  # type: ignore[attr-defined]

    def slurmdb_jobs() -> Any:
        def get(jobids: list[int] = [], clusters: list[str] = []) -> dict[int, Any]:  # noqa: B006
            cluster.calls.append(f"slurmdb_jobs {jobids} {clusters}")
            wanted = set(jobids)
            return {
                r["jobid"]: r
                for r in cluster.raw
                if r["jobid"] in wanted or r.get("array_job_id") in wanted
            }

        return SimpleNamespace(get=get)

    def old_config() -> Any:
        cluster.calls.append("config")
        if cluster.config_fails:
            raise ValueError("Unable to contact slurm controller")
        return SimpleNamespace(get=lambda: {"accounting_storage_type": cluster.storage or ""})

    module.slurmdb_jobs = slurmdb_jobs  # type: ignore[attr-defined]
    if tag.old_config:
        module.config = old_config  # type: ignore[attr-defined]
    if not tag.object_api:
        module.job = object  # type: ignore[attr-defined]
        return module

    def load_jobs(preload_passwd_info: bool = False, frozen: bool = False) -> Any:
        cluster.calls.append("Jobs.load")
        return _collection(cluster.live, tag.multi_cluster)

    def load_db_jobs(db_filter: Any = None) -> Any:
        cluster.calls.append(f"db.Jobs.load {db_filter.ids}")
        if cluster.db is None:
            raise StandInRPCError("Failed to open onnection to slurmdbd")
        wanted = set(db_filter.ids)
        records = [r for r in cluster.db if (r.get("array_id") or r["id"]) in wanted]
        return _collection(records, tag.multi_cluster)

    def load_config() -> Any:
        cluster.calls.append("Config.load")
        if cluster.config_fails:
            raise StandInRPCError("Unable to contact slurm controller")
        return SimpleNamespace(accounting_storage_type=cluster.storage, cluster="local")

    job_filter = type(
        "JobFilter", (), {"__init__": lambda self, ids=None: setattr(self, "ids", ids)}
    )
    config_attrs: dict[str, Any] = {"load": staticmethod(load_config), "cluster": property()}
    if tag.config_storage:
        config_attrs["accounting_storage_type"] = property()
    db = SimpleNamespace(Jobs=SimpleNamespace(load=load_db_jobs), JobSearchFilter=job_filter)
    if tag.job_filter:
        db.JobFilter = job_filter
    module.Jobs = SimpleNamespace(load=load_jobs)  # type: ignore[attr-defined]
    module.Job = SimpleNamespace(load=lambda job_id: None)  # type: ignore[attr-defined]
    module.db = db  # type: ignore[attr-defined]
    module.RPCError = StandInRPCError  # type: ignore[attr-defined]
    module.slurmctld = SimpleNamespace(Config=type("Config", (), config_attrs))  # type: ignore[attr-defined]
    module.slurm_init = module.slurm_fini = lambda *args: None  # type: ignore[attr-defined]
    return module


def use_standin(monkeypatch: pytest.MonkeyPatch, version: str, cluster: Cluster) -> ModuleType:
    """Make the backend find the stand-in as pyslurm."""
    module = standin(version, cluster)
    monkeypatch.setattr(LoadedPyslurm, "get", classmethod(lambda cls: module))
    return module


def _record(scenario: str, db: bool = False, **changes: Any) -> dict[str, Any]:
    return {**(DB if db else LIVE)[scenario]["records"][0], **changes}


def _raw(
    job_id: int, exit_status: int, array_job_id: int = 0, task_id: int = 0xFFFFFFFE
) -> dict[str, Any]:
    """An old ``slurmdb_jobs`` record: raw wait statuses, NO_VAL task id for a plain job."""
    return {
        "jobid": job_id,
        "array_job_id": array_job_id,
        "array_task_id": task_id,
        "exitcode": exit_status,
        "derived_ec": exit_status,
    }


@pytest.mark.parametrize("version", WORKING_TAGS)
def test_each_release_with_the_object_api_is_used(version: str) -> None:
    api = PyslurmApi(standin(version, Cluster()))
    assert api.version == version
    # db.JobFilter from 22.5.3/23.2.2, db.JobSearchFilter before
    assert api.job_filter is (
        api.module.db.JobFilter if TAGS[version].job_filter else api.module.db.JobSearchFilter
    )


@pytest.mark.parametrize("version", ["22.5.1", "23.2.0"])
def test_a_release_without_the_object_api_is_named_with_what_it_lacks(version: str) -> None:
    with pytest.raises(BackendError) as caught:
        PyslurmApi(standin(version, Cluster()))
    message = str(caught.value)
    assert f"pyslurm {version} " in message
    for name in ("pyslurm.Jobs.load", "pyslurm.db.Jobs.load", "JobFilter", "pyslurm.RPCError"):
        assert name in message
    assert "22.5.2" in message and "jsoncli" in message


def test_a_missing_filter_class_alone_is_named() -> None:
    module = standin("24.11.0", Cluster())
    del module.db.JobFilter, module.db.JobSearchFilter
    with pytest.raises(BackendError, match=r"pyslurm 24\.11\.0 lacks pyslurm\.db\.JobFilter \(or"):
        PyslurmApi(module)


@pytest.mark.parametrize("version", WORKING_TAGS)
@pytest.mark.parametrize(
    ("storage", "configured"),
    [
        ("accounting_storage/slurmdbd", True),
        ("accounting_storage/none", False),  # 22.05's default
        (None, False),  # 23.11 on: not set at all
    ],
)
def test_each_release_tells_whether_slurm_keeps_accounting(
    version: str, storage: str | None, configured: bool
) -> None:
    cluster = Cluster(storage=storage)
    assert PyslurmApi(standin(version, cluster)).accounting_configured() is configured
    # 25.5.0 on: slurmctld.Config; before: the old API's config dict
    assert cluster.calls == (["Config.load"] if TAGS[version].config_storage else ["config"])


@pytest.mark.parametrize("version", ["23.11.0", "25.11.2"])
def test_accounting_is_unknown_where_pyslurm_cannot_tell(version: str) -> None:
    assert PyslurmApi(standin(version, Cluster(config_fails=True))).accounting_configured() is None
    module = standin(version, Cluster())
    # a build with neither way (none of the tags above): unknown, not "no accounting"
    module.slurmctld.Config = type("Config", (), {"load": staticmethod(lambda: None)})
    if hasattr(module, "config"):
        del module.config
    assert PyslurmApi(module).accounting_configured() is None


@pytest.mark.parametrize("version", WORKING_TAGS)
def test_each_release_answers_from_slurmctld_then_accounting(
    version: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    cluster = Cluster(live=LIVE["completed"]["records"], db=DB["failed_exit3"]["records"])
    use_standin(monkeypatch, version, cluster)
    backend = PyslurmBackend()
    statuses = backend.query([2, 3])
    assert statuses[2].verdict is Verdict.COMPLETED
    assert statuses[3].tasks["3"].state is JobState.FAILED
    assert statuses[3].tasks["3"].exit_code == 3 and backend.accounting is True
    assert cluster.calls[:2] == ["Jobs.load", "db.Jobs.load [3]"]


@pytest.mark.parametrize("version", WORKING_TAGS)
@pytest.mark.parametrize(
    ("storage", "config_fails", "outcome"),
    [
        ("accounting_storage/none", False, "unknown job"),
        ("accounting_storage/slurmdbd", False, "slurmdbd did not answer pyslurm: "),
        ("accounting_storage/slurmdbd", True, "cannot tell whether Slurm keeps accounting"),
    ],
)
def test_slurmdbd_not_answering(
    version: str,
    storage: str,
    config_fails: bool,
    outcome: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    cluster = Cluster(
        live=LIVE["completed"]["records"], db=None, storage=storage, config_fails=config_fails
    )
    use_standin(monkeypatch, version, cluster)
    backend = PyslurmBackend()
    if outcome == "unknown job":
        # Slurm keeps no accounting: a job slurmctld no longer holds is unknown, as before
        statuses = backend.query([2, 3])
        assert 3 not in statuses and statuses[2].verdict is Verdict.COMPLETED
        assert backend.accounting is False
        return
    # accounting kept but down, or pyslurm cannot tell: never "unknown", try again later
    with pytest.raises(BackendError, match="try again later") as caught:
        backend.query([2, 3])
    assert outcome in str(caught.value)
    if config_fails:
        assert f"pyslurm {version} cannot tell" in str(caught.value)


@pytest.mark.parametrize(
    ("reported", "raw", "whole"),
    [
        (2, 130 << 8, 130),  # exit 130 (a child killed by SIGINT) reads as 2
        (15, 143 << 8, 143),
        (0, 128 << 8, 128),
        (127, 255 << 8, 255),
        (2, 2 << 8, 2),  # a true 2
        (0, 9, 0),  # killed by SIGKILL: pyslurm says exit 0, signal 9; nothing lost
        (0, 2, 0),  # killed by SIGINT: the signal is no exit code
        (3, 130 << 8, 3),  # another record (job id reused): no change
        (2, 130 << 8 | 9, 2),  # not a normal exit: no change
        (2, None, 2),
        (None, 130 << 8, None),
    ],
)
def test_whole_exit_code(reported: int | None, raw: int | None, whole: int | None) -> None:
    assert whole_exit_code(reported, raw) == whole


def test_raw_statuses_key_tasks_like_the_backend() -> None:
    found = raw_statuses(
        [
            _raw(7, 130 << 8),
            _raw(12, 0, array_job_id=8, task_id=0),  # task 0 stays 0 in the old API
            _raw(14, 1 << 8, array_job_id=8, task_id=2),
            _raw(8, 0, array_job_id=8, task_id=0xFFFFFFFE),  # the waiting rest
            _raw(9, 0xFFFFFFFE),  # no status
        ]
    )
    assert found == {
        (7, None): (130 << 8, 130 << 8),
        (8, 0): (0, 0),
        (8, 2): (1 << 8, 1 << 8),
        (9, None): (None, None),
    }


@pytest.mark.parametrize("version", WORKING_TAGS)
@pytest.mark.parametrize("where", ["slurmctld", "accounting"])
def test_exit_codes_of_128_and_more_are_whole_again(
    version: str, where: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # job 3 exited 130, pyslurm read 2; array 8's task 2 exited 129, read 1; job 4 was killed
    # by SIGKILL (exit 0, signal 9); job 2 completed
    failed = _record("failed_exit3", db=where == "accounting", exit_code=2, derived_exit_code=2)
    killed = _record("killed_signal9", db=where == "accounting")
    array = [
        {**r, "exit_code": 1} if r["state"] == "FAILED" else r
        for r in (DB if where == "accounting" else LIVE)["array_task2_fails"]["records"]
    ]
    records = [failed, killed, *array, *LIVE["completed"]["records"]]
    cluster = Cluster(
        live=records if where == "slurmctld" else LIVE["completed"]["records"],
        db=records if where == "accounting" else [],
        raw=[
            _raw(3, 130 << 8),
            _raw(killed["id"], 9),
            _raw(14, 129 << 8, array_job_id=8, task_id=2),
            _raw(12, 0, array_job_id=8, task_id=0),
        ],
    )
    use_standin(monkeypatch, version, cluster)
    statuses = PyslurmBackend().query([2, 3, killed["id"], 8])
    task = statuses[3].tasks["3"]
    assert (task.exit_code, task.signal, task.derived_exit_code) == (130, 0, 130)
    assert statuses[8].tasks["8_2"].exit_code == 129
    assert statuses[8].tasks["8_0"].exit_code == 0
    killed_task = statuses[killed["id"]].tasks[str(killed["id"])]
    assert (killed_task.exit_code, killed_task.signal) == (0, 9)
    assert statuses[2].tasks["2"].exit_code == 0
    # one lookup of raw statuses, for the failed jobs only (killed by a signal: nothing lost)
    lookups = [c for c in cluster.calls if c.startswith("slurmdb_jobs")]
    assert lookups == ["slurmdb_jobs [3, 8] ['local7917']"]
    if where == "slurmctld":  # accounting asked only for the array whose tasks all ended
        assert cluster.calls[1] == "db.Jobs.load [8]"


@pytest.mark.parametrize("version", ["22.5.2", "23.11.0", "25.11.2"])
def test_slurmdbd_is_asked_through_the_object_api_before_the_raw_lookup(
    version: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # only slurmctld was asked; the old slurmdb_jobs does not check its connection, so
    # db.Jobs.load (which does) must answer before it is used
    cluster = Cluster(live=[_record("failed_exit3", exit_code=2)], raw=[_raw(3, 130 << 8)])
    use_standin(monkeypatch, version, cluster)
    asked = _squeue_says(monkeypatch, exit_code=130)
    assert PyslurmBackend().query([3])[3].tasks["3"].exit_code == 130
    assert cluster.calls == ["Jobs.load", "db.Jobs.load [3]", "slurmdb_jobs [3] ['local7917']"]
    assert asked == []  # accounting had it
    cluster.calls.clear()
    # slurmdbd down: no error (slurmctld answered), and slurmctld's JSON has the whole code
    cluster.db = None
    assert PyslurmBackend().query([3])[3].tasks["3"].exit_code == 130
    assert cluster.calls == ["Jobs.load", "db.Jobs.load [3]"] and asked == [[3]]
    cluster.calls.clear()
    # accounting answers but lags behind (no raw status for job 3 yet): slurmctld's JSON again
    cluster.db, cluster.raw = [], []
    assert PyslurmBackend().query([3])[3].tasks["3"].exit_code == 130
    assert asked == [[3], [3]]


@pytest.mark.parametrize("version", ["22.5.2", "23.11.0", "25.11.2"])
def test_without_accounting_and_every_job_in_slurmctld_its_json_makes_codes_whole(
    version: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # slurmctld alone answered the query, so whether accounting is kept was never learnt:
    # the failed accounting lookup must still lead to squeue --json (seen on 26.05, pyslurm)
    cluster = Cluster(
        live=[_record("failed_exit3", exit_code=2)], db=None, storage="accounting_storage/none"
    )
    use_standin(monkeypatch, version, cluster)
    asked = _squeue_says(monkeypatch, exit_code=130)
    assert PyslurmBackend().query([3])[3].tasks["3"].exit_code == 130
    assert asked == [[3]]


def _squeue_says(monkeypatch: pytest.MonkeyPatch, exit_code: int) -> list[list[int]]:
    """Stand in for ``squeue --json`` saying job 3 failed with ``exit_code``; returns the
    job ids it was asked for, one list per call."""
    asked: list[list[int]] = []

    def squeue_json(job_ids: list[int]) -> list[TaskState]:
        asked.append(list(job_ids))
        return [TaskState(3, None, JobState.FAILED, exit_code=exit_code, signal=0)]

    monkeypatch.setattr(pyslurmapi, "slurmctld_tasks", squeue_json)
    return asked


@pytest.mark.parametrize("version", ["22.5.2", "25.11.2"])
def test_without_accounting_slurmctlds_json_makes_exit_codes_whole(
    version: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    cluster = Cluster(
        live=[_record("failed_exit3", exit_code=2)],
        db=None,
        storage="accounting_storage/none",
        raw=[_raw(3, 130 << 8)],
    )
    use_standin(monkeypatch, version, cluster)
    asked: list[list[int]] = []

    def squeue_json(job_ids: list[int]) -> list[TaskState]:
        # what squeue --json says of job 3: exit 130 (recorded: fixtures/json/*/exit130*.json)
        asked.append(list(job_ids))
        return [TaskState(3, None, JobState.FAILED, exit_code=130, signal=0)]

    monkeypatch.setattr(pyslurmapi, "slurmctld_tasks", squeue_json)
    # job 99 left slurmctld: accounting is asked, found not kept; the raw lookup is not tried
    statuses = PyslurmBackend().query([3, 99])
    assert statuses[3].tasks["3"].exit_code == 130 and 99 not in statuses
    assert asked == [[3]]
    config = "Config.load" if TAGS[version].config_storage else "config"
    assert cluster.calls == ["Jobs.load", "db.Jobs.load [99]", config]

    def squeue_fails(job_ids: list[int]) -> list[TaskState]:
        raise BackendError("squeue is not installed or not on PATH")

    monkeypatch.setattr(pyslurmapi, "slurmctld_tasks", squeue_fails)
    assert PyslurmBackend().query([3, 99])[3].tasks["3"].exit_code == 2  # as pyslurm read it


def test_a_failing_raw_lookup_changes_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    cluster = Cluster(db=[_record("failed_exit3", db=True, exit_code=2)])
    module = use_standin(monkeypatch, "24.5.0", cluster)

    def broken() -> Any:
        raise ValueError("Unable to contact slurmdbd")

    module.slurmdb_jobs = broken  # type: ignore[attr-defined]
    task: TaskState = PyslurmBackend().query([3])[3].tasks["3"]
    assert task.exit_code == 2 and task.state is JobState.FAILED


@pytest.mark.parametrize("version", ["22.5.2", "25.11.2"])
@pytest.mark.parametrize("kept", [15, 15 << 8], ids=["signal", "pyslurms-code"])
def test_a_cancelled_shells_143_that_accounting_does_not_keep_comes_from_slurmctld(
    version: str, kept: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    # job 3 was cancelled and its shell exited 143: pyslurm reads 15, accounting's raw status
    # is not 143 (the signal, or an exit 15), slurmctld's JSON has the exit 143
    cancelled = {**_record("failed_exit3", exit_code=15), "state": "CANCELLED"}
    cluster = Cluster(live=[cancelled], db=[cancelled], raw=[_raw(3, kept)])
    use_standin(monkeypatch, version, cluster)
    asked = _squeue_says(monkeypatch, exit_code=143)
    task = PyslurmBackend().query([3])[3].tasks["3"]
    assert (task.state, task.exit_code, task.signal) == (JobState.CANCELLED, 143, 0)
    assert asked == [[3]]
    # gone from slurmctld too: pyslurm's reading stands, no error
    monkeypatch.setattr(pyslurmapi, "slurmctld_tasks", lambda job_ids: [])
    assert PyslurmBackend().query([3])[3].tasks["3"].exit_code == 15
