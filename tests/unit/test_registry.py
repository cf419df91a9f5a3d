from __future__ import annotations

import multiprocessing
import sqlite3
from pathlib import Path

import pytest

from datalad_slurm.jobs.registry import Registry
from datalad_slurm.jobs.reservations import OutputConflictError
from datalad_slurm.jobs.schema import SCHEMA_VERSION, RegistryError


def _reserve(registry: Registry, *outputs: str) -> object:
    return registry.reserve(
        cmd="sbatch job.sh", pwd=".", inputs=[], extra_inputs=[], outputs=list(outputs)
    )


@pytest.fixture
def registry(tmp_path: Path) -> Registry:
    return Registry(str(tmp_path / "git" / "datalad-slurm" / "registry.sqlite"))


def test_schema_version_and_reopen(registry: Registry, tmp_path: Path) -> None:
    job = _reserve(registry, "out")
    registry.close()
    again = Registry(registry.path)
    conn = sqlite3.connect(registry.path)
    assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    assert [j.token for j in again.jobs()] == [job.token]  # type: ignore[attr-defined]


def test_newer_schema_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "r.sqlite"
    conn = sqlite3.connect(path)
    conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    conn.close()
    with pytest.raises(RegistryError, match="upgrade datalad-slurm"):
        Registry(str(path))


@pytest.mark.parametrize(
    ("held", "wanted"),
    [
        ("out", "out"),
        ("out", "out/file"),
        ("out/file", "out"),
        (".", "x"),
        ("x", "."),
        ("a/b/c", "a"),
    ],
)
def test_conflicts_are_refused_with_both_names(registry: Registry, held: str, wanted: str) -> None:
    first = _reserve(registry, held)
    registry.mark_submitted(first, 101, None)  # type: ignore[arg-type]
    with pytest.raises(OutputConflictError) as info:
        _reserve(registry, "other", wanted)
    message = str(info.value)
    assert repr(wanted) in message and repr(held) in message and "job 101" in message
    # the refused request left nothing behind
    assert [j.job_id for j in registry.jobs()] == [101]
    assert registry.reservations(first) == [held]  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("held", "wanted"), [("out", "out2"), ("a/b", "a/c"), ("a-b", "a/b"), ("a", "a0")]
)
def test_neighbours_do_not_conflict(registry: Registry, held: str, wanted: str) -> None:
    _reserve(registry, held)
    _reserve(registry, wanted)
    assert len(registry.jobs()) == 2


def test_lifecycle_releases_reservations(registry: Registry) -> None:
    job = _reserve(registry, "out")
    registry.mark_submitted(job, 7, "c1")  # type: ignore[arg-type]
    registry.note_submission_facts(job, {"stdout": "/x/%j.out"})  # type: ignore[arg-type]
    registry.mark_committing_many([job])  # type: ignore[list-item]
    assert registry.jobs(job_id=7)[0].state == "committing"
    registry.reopen(job)  # type: ignore[arg-type]
    assert registry.jobs(job_id=7)[0].state == "open"
    assert registry.jobs(job_id=7)[0].submission_facts == {"stdout": "/x/%j.out"}
    registry.mark_committing_many([job])  # type: ignore[list-item]
    registry.mark_finished(job, "abc")  # type: ignore[arg-type]
    assert registry.jobs() == []
    assert registry.jobs(states=("finished",))[0].commit_sha == "abc"
    _reserve(registry, "out")  # free again


def test_many_jobs_change_state_together(registry: Registry) -> None:
    jobs = [_reserve(registry, f"out{n}") for n in range(3)]
    for number, job in enumerate(jobs):
        registry.mark_submitted(job, 10 + number, None)  # type: ignore[arg-type]
    registry.mark_committing_many(jobs)  # type: ignore[arg-type]
    assert {j.state for j in registry.jobs()} == {"committing"}
    registry.mark_finished_many([(jobs[0], "a"), (jobs[1], "b")])  # type: ignore[list-item]
    registry.reopen_many([jobs[2]])  # type: ignore[list-item]
    assert [(j.job_id, j.state) for j in registry.jobs()] == [(12, "open")]
    finished = registry.jobs(states=("finished",))
    assert sorted((j.job_id, j.commit_sha) for j in finished) == [(10, "a"), (11, "b")]
    _reserve(registry, "out0")  # released


def test_failed_submission_is_forgotten(registry: Registry) -> None:
    job = _reserve(registry, "out")
    registry.forget_submission(job)  # type: ignore[arg-type]
    assert registry.jobs() == []
    _reserve(registry, "out")


def _race(path: str, barrier: object, results: object) -> None:
    registry = Registry(path)
    barrier.wait()  # type: ignore[attr-defined]
    try:
        _reserve(registry, "shared/out")
        results.put("won")  # type: ignore[attr-defined]
    except OutputConflictError:
        results.put("lost")  # type: ignore[attr-defined]


def test_concurrent_reservations_exactly_one_wins(registry: Registry) -> None:
    ctx = multiprocessing.get_context("fork")
    n = 8
    barrier = ctx.Barrier(n)
    results = ctx.Queue()
    procs = [ctx.Process(target=_race, args=(registry.path, barrier, results)) for _ in range(n)]
    for proc in procs:
        proc.start()
    for proc in procs:
        proc.join(60)
    outcome = sorted(results.get(timeout=5) for _ in range(n))
    assert outcome == ["lost"] * (n - 1) + ["won"]
    assert len(registry.jobs()) == 1


def _old_registry(path: Path, version: int) -> None:
    """A registry as a datalad-slurm of schema ``version`` left it: one open job holding 'o'."""
    from datalad_slurm.jobs.schema import MIGRATIONS, split_sql

    conn = sqlite3.connect(path)
    for script in MIGRATIONS[:version]:
        for statement in split_sql(script):
            conn.execute(statement)
    conn.execute(
        "INSERT INTO jobs (token, job_id, state, cmd, pwd, inputs, extra_inputs, outputs, chain,"
        " submitted_at) VALUES ('t', 5, 'open', 'sbatch x', '.', '[]', '[]', '[\"o\"]', '[]', 1)"
    )
    conn.execute("INSERT INTO reservations (path, job) VALUES ('o', 1)")
    conn.execute(f"PRAGMA user_version = {version}")
    conn.commit()
    conn.close()


@pytest.mark.parametrize("version", range(1, SCHEMA_VERSION))
def test_an_older_registry_is_migrated_with_its_jobs(tmp_path: Path, version: int) -> None:
    path = tmp_path / "old.sqlite"
    _old_registry(path, version)
    registry = Registry(str(path))
    [job] = registry.jobs()
    assert (job.job_id, job.outputs, job.submission_facts) == (5, ["o"], {})
    assert job.cron_reported is None
    with pytest.raises(OutputConflictError):
        _reserve(registry, "o")
    assert sqlite3.connect(path).execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    # what cron reported is kept (schema 3)
    registry.note_cron_reported(job, "5: FAILED; ended 7")
    registry.close()
    assert Registry(str(path)).jobs()[0].cron_reported == "5: FAILED; ended 7"


@pytest.mark.parametrize("version", range(1, SCHEMA_VERSION + 1))
def test_a_read_only_look_finds_conflicts_and_changes_nothing(tmp_path: Path, version: int) -> None:
    path = tmp_path / "old.sqlite"
    _old_registry(path, version)
    before = path.read_bytes()
    with Registry(str(path), read_only=True) as registry:
        [(wanted, held, job)] = registry.conflicts(["o/deeper", "free"])
        assert (wanted, held, job.job_id) == ("o/deeper", "o", 5)
        assert registry.conflicts(["free"]) == []
    assert path.read_bytes() == before  # not migrated


def test_a_read_only_look_refuses_a_newer_registry(tmp_path: Path) -> None:
    path = tmp_path / "new.sqlite"
    _old_registry(path, SCHEMA_VERSION)
    conn = sqlite3.connect(path)
    conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    conn.commit()
    conn.close()
    with pytest.raises(RegistryError, match="newer than this datalad-slurm"):
        Registry(str(path), read_only=True)
