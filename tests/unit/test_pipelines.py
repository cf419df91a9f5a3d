"""Dependencies derived from inputs (issue 20, item 1), without Slurm: the ``--dependency``
syntax and how a user's is joined with ours, which open jobs an input is a product of, how a
submission waits for them, and the order and verdicts ``finish`` draws from them.  The cluster
tests (``tests/cluster/test_pipelines.py``) run the same on real Slurm."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path

import pytest

from datalad_slurm.commit.jobfiles import JobFiles
from datalad_slurm.commit.record import build_record, job_facts
from datalad_slurm.jobs.job import Job
from datalad_slurm.jobs.pipelines import (
    DependencyRefusal,
    dependants,
    never_starting,
    plan,
    waiting_for,
)
from datalad_slurm.jobs.registry import Registry
from datalad_slurm.slurm.dependency import (
    DependencyError,
    Spec,
    afterok_ids,
    combine,
    parse_spec,
)
from datalad_slurm.slurm.state import JobState, JobStatus, TaskState
from datalad_slurm.usecases.finish import _batches_of_distinct_ids


@pytest.mark.parametrize(
    ("shown", "parts", "any_of"),
    [
        # as squeue -O dependency shows them on Slurm 22.05, 24.11 and 26.05
        ("(null)", (), False),
        ("", (), False),
        (
            "afterok:5(unfulfilled),after:4+1(unfulfilled)",
            ("afterok:5", "after:4+1"),
            False,
        ),
        ("afterok:4(unfulfilled)?afterany:5(unfulfilled)", ("afterok:4", "afterany:5"), True),
        ("afterok:3(failed)", ("afterok:3",), False),
        ("singleton(unfulfilled)", ("singleton",), False),
        ("afterok:7_*(unfulfilled)", ("afterok:7_*",), False),
        # as a user gives them to sbatch
        ("afterok:1:2,afterany:3", ("afterok:1:2", "afterany:3"), False),
        ("afterok:1?afterany:3", ("afterok:1", "afterany:3"), True),
    ],
)
def test_dependencies_read_as_given_and_as_squeue_shows_them(
    shown: str, parts: tuple[str, ...], any_of: bool
) -> None:
    spec = parse_spec(shown)
    assert spec.parts == parts
    assert spec.any_of is any_of


def test_a_dependency_mixing_both_separators_is_refused() -> None:
    with pytest.raises(DependencyError, match="mixes ',' and '\\?'"):
        parse_spec("afterok:1,afterok:2?afterany:3")


@pytest.mark.parametrize(
    ("user", "ours", "joined"),
    [
        ("", [12], "afterok:12"),
        ("", [12, 13, 12], "afterok:12:13"),
        ("afterany:5(unfulfilled)", [12], "afterany:5,afterok:12"),
        ("afterok:1:2,afterany:3", [4], "afterok:1:2,afterany:3,afterok:4"),
        # what the user waits for already is not asked twice
        ("afterok:12:13", [12], "afterok:12:13"),
        ("afterok:12", [12, 14], "afterok:12,afterok:14"),
        ("singleton", [9], "singleton,afterok:9"),
    ],
)
def test_ours_is_joined_with_the_users_own(user: str, ours: list[int], joined: str) -> None:
    assert str(combine(parse_spec(user), ours)) == joined


def test_a_users_any_of_list_is_never_silently_changed() -> None:
    """'A?B' means any one of them; 'and afterok:C' has no spelling with one separator."""
    with pytest.raises(DependencyError) as info:
        combine(parse_spec("afterok:4?afterany:5"), [12])
    message = str(info.value)
    assert "'afterok:4?afterany:5'" in message and "afterok:12" in message
    assert "--no-auto-dependency" in message
    # without anything of ours to add it stays as the user wrote it
    assert str(combine(parse_spec("afterok:4?afterany:5"), [])) == "afterok:4?afterany:5"


def test_afterok_ids() -> None:
    assert afterok_ids(parse_spec("afterok:1:2,afterany:3,afterok:4")) == {1, 2, 4}
    assert afterok_ids(Spec()) == set()


# -- the registry: which open jobs an input is a product of -----------------------------


@pytest.fixture
def registry(tmp_path: Path) -> Registry:
    return Registry(str(tmp_path / "registry.sqlite"))


def _open(registry: Registry, job_id: int, *outputs: str, logs: tuple[str, ...] = ()) -> Job:
    job = registry.reserve(
        cmd=f"sbatch {job_id}.sh", pwd=".", inputs=[], extra_inputs=[], outputs=list(outputs)
    )
    registry.note_held(job, job_id, "c")
    assert not registry.open_with_logs([(job, list(logs))])
    return job


def _new(registry: Registry, *outputs: str, depends_on: Sequence[tuple[int, int]] = ()) -> Job:
    return registry.reserve(
        cmd="sbatch new.sh",
        pwd=".",
        inputs=[],
        extra_inputs=[],
        outputs=list(outputs),
        depends_on=depends_on,
    )


@pytest.mark.parametrize(
    ("held", "logs", "inputs", "wanted"),
    [
        (["out"], [], ["out/data.txt"], True),  # a file inside an output folder
        (["out/data.txt"], [], ["out"], True),  # a folder holding an output
        (["out/a"], [], ["out/b"], False),
        (["out"], [], ["out/*.txt"], True),  # a glob by its fixed leading folder
        (["x/out"], [], ["x/*/data"], True),
        (["res"], [], ["*.csv"], True),  # '*.csv' stands for the whole dataset
        (["res"], ["logs/12.out"], ["logs"], True),  # a log file is a product too
        (["out/*.txt"], [], ["out/a.txt"], True),  # held as its folder 'out'
    ],
)
def test_providers_of_inputs(
    registry: Registry, held: list[str], logs: list[str], inputs: list[str], wanted: bool
) -> None:
    first = _open(registry, 12, *held, logs=tuple(logs))
    second = _new(registry, "new")
    found = registry.providers(inputs, second)
    assert [job.id for _, _, job in found] == ([first.id] if wanted else [])
    # a job is never its own provider
    assert registry.providers(["new"], second) == []


def test_a_job_held_here_is_waited_for_without_asking_slurm(registry: Registry) -> None:
    first = _open(registry, 12, "prep")
    # held_here: this process submitted it and has not released it; no squeue is asked
    found = plan(
        registry.providers(["prep/x"], None), ["prep/x"], "c", held_here={first.id}, standings={}
    )
    assert found.after == [12] and found.depends_on == [(first.id, 12)]


def test_a_job_being_committed_is_waited_for_by_finish_only(registry: Registry) -> None:
    first = _open(registry, 12, "prep")
    registry.mark_committing_many([first])
    found = plan(registry.providers(["prep"], None), ["prep"], "c")
    assert found.after == [] and found.depends_on == [(first.id, 12)]
    assert found.notes == ["job 12 is being committed"]


def test_what_cannot_be_waited_for_is_refused_with_what_to_do(registry: Registry) -> None:
    in_progress = registry.reserve(
        cmd="sbatch a.sh", pwd=".", inputs=[], extra_inputs=[], outputs=["a"]
    )
    with pytest.raises(DependencyRefusal) as info:
        plan(registry.providers(["a/x"], None), ["a/x"], "c")
    message = str(info.value)
    assert "input 'a/x' overlaps 'a' of job (a submission in progress)" in message
    assert "no Slurm job id yet" in message and "--no-auto-dependency" in message
    # the same submission after 10 minutes: interrupted
    _age(registry, in_progress, 601)
    with pytest.raises(DependencyRefusal, match="interrupted before Slurm gave it a job id"):
        plan(registry.providers(["a"], None), ["a"], "c")
    held = registry.reserve(cmd="sbatch b.sh", pwd=".", inputs=[], extra_inputs=[], outputs=["b"])
    registry.note_held(held, 77, "c")
    _age(registry, held, 601)
    with pytest.raises(DependencyRefusal, match="schedule of job 77 was interrupted"):
        plan(registry.providers(["b"], None), ["b"], "c")
    _open(registry, 78, "d")
    with pytest.raises(DependencyRefusal, match="runs on cluster 'c'"):
        plan(registry.providers(["d"], None), ["d"], "other")


def _age(registry: Registry, job: Job, seconds: float) -> None:
    with registry.transaction() as conn:
        conn.execute(
            "UPDATE jobs SET submitted_at = ? WHERE id = ?", (time.time() - seconds, job.id)
        )


def test_a_job_waiting_for_a_refused_one_is_refused_in_the_same_transaction(
    registry: Registry,
) -> None:
    first = _open(registry, 11, "taken", logs=("logs/shared.log",))
    a = registry.reserve(cmd="a", pwd=".", inputs=[], extra_inputs=[], outputs=["a"])
    b = registry.reserve(cmd="b", pwd=".", inputs=["a"], extra_inputs=[], outputs=["b"])
    c = registry.reserve(cmd="c", pwd=".", inputs=[], extra_inputs=[], outputs=["c"])
    for job, job_id in ((a, 12), (b, 13), (c, 14)):
        registry.note_held(job, job_id, "c")
    refused = registry.open_with_logs(
        [(a, ["logs/shared.log"]), (b, []), (c, [])], waits_for={b.id: [a.id]}
    )
    assert set(refused.conflicts) == {a.id, b.id} and not refused.closed
    assert refused.conflicts[a.id][0][2].id == first.id and refused.conflicts[b.id] == []
    assert {j.id: j.state for j in registry.jobs()}[c.id] == "open"
    assert {j.id: j.state for j in registry.jobs()}[b.id] == "submitting"


def test_dependencies_are_kept_and_an_older_registry_gains_them(tmp_path: Path) -> None:
    path = tmp_path / "r.sqlite"
    Registry(str(path)).close()
    conn = sqlite3.connect(path)
    for column in ("depends_on", "dependency", "alt_dir"):
        conn.execute(f"ALTER TABLE jobs DROP COLUMN {column}")
    conn.execute("PRAGMA user_version = 4")
    conn.commit()
    conn.close()
    with Registry(str(path)) as registry:
        first = _open(registry, 12, "a")
        second = _new(registry, "b", depends_on=[(first.id, 12)])
        registry.note_dependency_specs_many([(second, "afterany:3,afterok:12")])
        again = registry.get(second.id)
    assert again.depends_on == [(first.id, 12)]
    assert again.dependency == "afterany:3,afterok:12"


# -- finish ----------------------------------------------------------------------------


def _job(row: int, job_id: int, *depends_on: tuple[int, int]) -> Job:
    return Job(
        id=row,
        token=f"t{row}",
        job_id=job_id,
        cluster="c",
        state="open",
        cmd="sbatch x.sh",
        pwd=".",
        inputs=[],
        extra_inputs=[],
        outputs=[f"o{row}"],
        chain=[],
        message=None,
        dsid=None,
        submitted_from=None,
        submitted_at=0.0,
        depends_on=list(depends_on),
    )


def _status(job_id: int, state: JobState, reason: str | None = None) -> JobStatus:
    return JobStatus(job_id, {str(job_id): TaskState(job_id, None, state, reason=reason)})


def test_dependants_reach_through_the_chain() -> None:
    a, b, c, d = _job(1, 11), _job(2, 12, (1, 11)), _job(3, 13, (2, 12)), _job(4, 14)
    assert dependants({1}, [a, b, c, d]) == {2, 3}
    assert dependants({3}, [a, b, c, d]) == set()
    # a diamond: d2 waits for both branches
    left, right = _job(5, 15, (1, 11)), _job(6, 16, (1, 11))
    joined = _job(7, 17, (5, 15), (6, 16))
    assert dependants({6}, [a, left, right, joined]) == {7}


def test_a_job_is_not_committed_before_an_open_job_it_waits_for() -> None:
    b = _job(2, 12, (1, 11))
    assert waiting_for(b, done=set(), open_rows={1, 2}) == [11]
    assert waiting_for(b, done={1}, open_rows={1, 2}) == []  # committed before it, this drain
    assert waiting_for(b, done=set(), open_rows={2}) == []  # finished or closed before


def test_batches_of_distinct_ids_keep_the_dependency_order() -> None:
    # two clusters reuse job id 11: the second batch holds one of them, and what waits for it
    a, b = _job(1, 11), _job(2, 11)
    c = _job(3, 13, (2, 11))
    status = JobStatus(0)
    batches = _batches_of_distinct_ids([(a, status), (b, status), (c, status)])
    assert [[j.id for j, _ in batch] for batch in batches] == [[1], [2, 3]]


def test_jobs_that_will_never_start(registry: Registry) -> None:
    failed = _job(1, 11)
    stuck = _job(2, 12, (1, 11))
    behind = _job(3, 13, (2, 12))
    killed = _job(4, 14, (1, 11))
    waiting = _job(5, 15, (1, 11))
    free = _job(6, 16)
    statuses = {
        1: _status(11, JobState.FAILED),
        2: _status(12, JobState.PENDING, "DependencyNeverSatisfied"),
        # pending on a job that never starts: Slurm says only 'Dependency'
        3: _status(13, JobState.PENDING, "Dependency"),
        # DependencyParameters=kill_invalid_depend: cancelled, the reason kept
        4: _status(14, JobState.CANCELLED, "DependencyNeverSatisfied"),
        # Slurm has not looked yet: no verdict of ours ahead of it
        5: _status(15, JobState.PENDING, "Dependency"),
        6: _status(16, JobState.PENDING, "DependencyNeverSatisfied"),
    }
    found = never_starting(registry, [failed, stuck, behind, killed, waiting, free], statuses)
    assert set(found) == {2, 3, 4}
    assert (
        "DependencyNeverSatisfied" in found[2].why and "job 11, which ended FAILED" in found[2].why
    )
    assert found[2].pending and not found[4].pending
    assert "job 12, which will never start either" in found[3].why


def test_the_record_and_env_json_name_the_jobs_waited_for() -> None:
    job = _job(2, 12, (1, 11))
    job.dependency = "afterany:3,afterok:11"
    status = _status(12, JobState.COMPLETED)
    files = JobFiles(logs=[], env_json="slurm-job-12.env.json")
    extra = build_record(job, status, files).extra
    assert extra["slurm_dependencies"] == [11]
    assert extra["slurm_dependency"] == "afterany:3,afterok:11"
    facts = job_facts(job, status)
    assert facts["depends_on"] == [11] and facts["dependency"] == "afterany:3,afterok:11"
    # a job that waited for none keeps the record as it was
    alone = build_record(_job(1, 11), status, files).extra
    assert "slurm_dependencies" not in alone and "slurm_dependency" not in alone


# -- the committer: never a dependant before what it waits for -------------------------------


def _completed(job: Job, work_dir: str) -> tuple[Job, JobStatus]:
    assert job.job_id is not None
    task = TaskState(job.job_id, None, JobState.COMPLETED, exit_code=0, work_dir=work_dir)
    return job, JobStatus(job.job_id, {task.label: task}, backend="test")


def _write(path: Path, text: str = "content\n") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(text.encode())


def test_a_job_waits_for_the_commit_of_what_it_read(tmp_path: Path) -> None:
    """Two chains in one drain: where the first job of a chain cannot be committed (a name
    that is not UTF-8, which datalad save refuses too), the job that read its outputs is not
    committed either, and says why; the other chain is, in order.  Once the name is fixed
    the next drain commits the held-back chain, again in order."""
    from datalad.api import create

    from datalad_slurm.commit.batch import commit_jobs
    from datalad_slurm.jobs.statedir import open_registry

    top = str(tmp_path / "ds")
    ds = create(top, result_renderer="disabled")
    with open_registry(top) as registry:
        jobs = {}
        for job_id, output, reads in ((11, "a", 0), (12, "b", 11), (13, "c", 0), (14, "d", 13)):
            job = _new(registry, output, depends_on=[(jobs[reads].id, reads)] if reads else [])
            jobs[job_id] = registry.mark_submitted(job, job_id, None)
        bad = os.fsencode(top) + b"/a/caf\xe9.txt"
        os.makedirs(os.path.join(top, "a"))
        with open(bad, "wb") as stream:
            stream.write(b"x\n")
        for name in ("b/out.txt", "c/out.txt", "d/out.txt"):
            _write(Path(top, name))
        batch = [_completed(registry.get(j.id), top) for j in jobs.values()]
        results = [
            r
            for r in (o.result() for o in commit_jobs(ds, registry, batch))
            if r["action"] == "finish"
        ]
        by_id = {r["slurm_job_id"]: r for r in results}
        assert by_id[11]["status"] == "error" and "not valid UTF-8" in by_id[11]["message"]
        assert by_id[12]["status"] == "error"
        assert (
            "read the outputs of job(s) 11, which could not be committed" in (by_id[12]["message"])
        )
        assert by_id[13]["status"] == "ok" and by_id[14]["status"] == "ok"
        assert _subjects(top)[:2] == ["Slurm job 14: Completed", "Slurm job 13: Completed"]
        assert {j.job_id: j.state for j in registry.jobs(states=("open", "finished"))} == {
            11: "open",
            12: "open",
            13: "finished",
            14: "finished",
        }
        os.rename(bad, os.path.join(top, "a", "cafe.txt"))
        again = [_completed(registry.get(jobs[j].id), top) for j in (11, 12)]
        results = [
            r
            for r in (o.result() for o in commit_jobs(ds, registry, again))
            if r["action"] == "finish"
        ]
        assert [r["status"] for r in results] == ["ok", "ok"], results
    assert _subjects(top)[:2] == ["Slurm job 12: Completed", "Slurm job 11: Completed"]


def _subjects(top: str) -> list[str]:
    log = subprocess.run(
        ["git", "log", "--format=%s"], cwd=top, capture_output=True, text=True, check=True
    ).stdout
    return [line.removeprefix("[DATALAD SLURM RUN] ") for line in log.splitlines()]


# -- scratch folders (--alt-dir) ------------------------------------------------------------


def test_a_scratch_job_cannot_wait_and_no_job_waits_for_a_scratch_job() -> None:
    from datalad_slurm.usecases.request import ScheduleError, ScheduleRequest
    from datalad_slurm.usecases.waits import refuse_scratch_waits

    plain = _job(1, 101)
    in_scratch = _job(2, 102)
    in_scratch.alt_dir = "/scratch/me/ds"
    request = ScheduleRequest(cmd="sbatch x.sh", outputs=["o9"], inputs=["o1"])
    # a job of the dataset reading a job of the dataset: nothing refused
    refuse_scratch_waits(None, request, [("o1", "o1", plain)])
    # the new job runs in a scratch folder: its inputs are copied at submission
    with pytest.raises(ScheduleError, match=r"open job\(s\) 101, not committed yet.*--alt-dir"):
        refuse_scratch_waits("/scratch/me/ds2", request, [("o1", "o1", plain)])
    # the provider runs in a scratch folder: its outputs reach the dataset at finish
    with pytest.raises(ScheduleError, match=r"job 102 in /scratch/me/ds\).*finish those jobs"):
        refuse_scratch_waits(None, request, [("o2", "o2", in_scratch)])
    # --no-auto-dependency: the user's choice, nothing refused
    request.auto_dependency = False
    refuse_scratch_waits("/scratch/me/ds2", request, [("o2", "o2", in_scratch)])
