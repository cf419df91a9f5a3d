"""A registered job's life cycle (jobs/lifecycle.py): every legal step through the registry's
methods, every illegal one refused with TransitionError and nothing changed, the stored words
unchanged, and no state written anywhere but in the registry."""

from __future__ import annotations

import ast
import sqlite3
from collections.abc import Callable
from pathlib import Path

import pytest

from datalad_slurm.errors import DataladSlurmError
from datalad_slurm.jobs.job import Job
from datalad_slurm.jobs.lifecycle import HOLDING_STATES, STEPS, Phase, TransitionError
from datalad_slurm.jobs.registry import Registry
from datalad_slurm.jobs.reservations import Refusals
from datalad_slurm.jobs.schema import MIGRATIONS

PACKAGE = Path(__file__).resolve().parents[2] / "datalad_slurm"


@pytest.fixture
def registry(tmp_path: Path) -> Registry:
    return Registry(str(tmp_path / "datalad-slurm" / "registry.sqlite"))


def _job_in(registry: Registry, phase: Phase) -> Job:
    """A job brought to ``phase`` by the registry's own steps, holding 'out'."""
    job = registry.reserve(cmd="sbatch x", pwd=".", inputs=[], extra_inputs=[], outputs=["out"])
    if phase is Phase.SUBMITTING:
        return job
    registry.mark_submitted(job, 42, "c")
    if phase is Phase.CLOSED:
        registry.close_job(job)
    elif phase in (Phase.COMMITTING, Phase.FINISHED):
        registry.mark_committing_many([job])
        if phase is Phase.FINISHED:
            registry.mark_finished(job, "f" * 40)
    return job


def _stored(registry: Registry, job: Job) -> str:
    conn = sqlite3.connect(registry.path)
    try:
        state: str = conn.execute("SELECT state FROM jobs WHERE id = ?", (job.id,)).fetchone()[0]
    finally:
        conn.close()
    return state


def _submitted(registry: Registry, job: Job) -> None:
    registry.mark_submitted(job, 43, "c")


#: a registry method that takes a job to each state (none takes one back to 'submitting')
STEP_TO: dict[Phase, Callable[[Registry, Job], None]] = {
    Phase.OPEN: lambda registry, job: _submitted(registry, job),
    Phase.COMMITTING: lambda registry, job: registry.mark_committing_many([job]),
    Phase.FINISHED: lambda registry, job: registry.mark_finished(job, "a" * 40),
    Phase.CLOSED: lambda registry, job: registry.close_job(job),
}

LEGAL = [(start, end) for start, ends in STEPS.items() for end in sorted(ends)]
#: every other step, also to the state the job is in (closing twice, committing twice...)
ILLEGAL = [(start, end) for start in Phase for end in STEP_TO if end not in STEPS[start]]


def test_the_stored_words_are_those_of_the_schema() -> None:
    """A str enum: the registry stores what it stored before, no migration needed."""
    assert {p.value for p in Phase} == {"submitting", "open", "committing", "finished", "closed"}
    for phase in Phase:
        assert f"'{phase.value}'" in MIGRATIONS[0]
        assert phase == phase.value and f"{phase}" == phase.value == str(phase)
    assert set(HOLDING_STATES) == {Phase.SUBMITTING, Phase.OPEN, Phase.COMMITTING}


@pytest.mark.parametrize(("start", "end"), LEGAL, ids=[f"{s}->{e}" for s, e in LEGAL])
def test_every_legal_step(registry: Registry, start: Phase, end: Phase) -> None:
    job = _job_in(registry, start)
    if (start, end) == (Phase.COMMITTING, Phase.OPEN):
        registry.reopen(job)
    else:
        STEP_TO[end](registry, job)
    assert job.state is end
    assert _stored(registry, job) == end.value
    assert registry.get(job.id).state is end
    # only jobs in a holding state keep their reservation
    assert registry.reservations(job) == (["out"] if end in HOLDING_STATES else [])


def test_a_held_job_is_opened_with_its_logs(registry: Registry) -> None:
    job = _job_in(registry, Phase.SUBMITTING)
    registry.note_held(job, 44, "c")
    assert _stored(registry, job) == "submitting"
    assert not registry.open_with_logs([(job, ["logs/44.out"])])
    assert (job.state, _stored(registry, job)) == (Phase.OPEN, "open")


@pytest.mark.parametrize(("start", "end"), ILLEGAL, ids=[f"{s}->{e}" for s, e in ILLEGAL])
def test_an_illegal_step_raises_and_changes_nothing(
    registry: Registry, start: Phase, end: Phase
) -> None:
    job = _job_in(registry, start)
    held = registry.reservations(job)
    with pytest.raises(TransitionError, match=f"from {start.value} to {end.value}") as info:
        STEP_TO[end](registry, job)
    assert isinstance(info.value, DataladSlurmError)
    assert (job.state, _stored(registry, job)) == (start, start.value)
    assert registry.reservations(job) == held


@pytest.mark.parametrize("how", ["open_with_logs", "mark_submitted"])
@pytest.mark.parametrize("start", [Phase.OPEN, Phase.COMMITTING, Phase.FINISHED, Phase.CLOSED])
def test_only_a_submitting_job_is_opened(registry: Registry, start: Phase, how: str) -> None:
    """Also a job being committed, which may go back to open, only by a reopening.  A held
    job that a finish closed meanwhile is refused, not an error: its schedule stalled."""
    job = _job_in(registry, start)
    if how == "open_with_logs" and start is Phase.CLOSED:
        assert registry.open_with_logs([(job, ["logs/42.out"])]) == Refusals(closed={job.id})
        assert registry.reservations(job) == []
    else:
        with pytest.raises(TransitionError, match=f"from {start.value} to open"):
            if how == "open_with_logs":
                registry.open_with_logs([(job, ["logs/42.out"])])
            else:
                registry.mark_submitted(job, 47, "c")
    assert _stored(registry, job) == start.value


def test_a_job_closed_meanwhile_is_refused_with_those_waiting_for_it(registry: Registry) -> None:
    """The others of the batch are opened; one waiting for the closed job stays held."""
    closed, waiting, other = (
        registry.reserve(cmd="sbatch x", pwd=".", inputs=[], extra_inputs=[], outputs=[out])
        for out in ("c", "w", "o")
    )
    for job, job_id in ((closed, 51), (waiting, 52), (other, 53)):
        registry.note_held(job, job_id, "c")
    registry.close_job(registry.get(closed.id))  # finish --close-failed-jobs, meanwhile
    refused = registry.open_with_logs(
        [(closed, ["logs/51.out"]), (waiting, ["logs/52.out"]), (other, ["logs/53.out"])],
        waits_for={waiting.id: [closed.id]},
    )
    assert refused == Refusals(conflicts={waiting.id: []}, closed={closed.id})
    stored = {job.id: _stored(registry, job) for job in (closed, waiting, other)}
    assert stored == {closed.id: "closed", waiting.id: "submitting", other.id: "open"}
    assert (waiting.state, other.state) == (Phase.SUBMITTING, Phase.OPEN)
    assert registry.reservations(closed) == [] and registry.reservations(waiting) == ["w"]
    assert sorted(registry.reservations(other)) == ["logs/53.out", "o"]


@pytest.mark.parametrize("start", [Phase.FINISHED, Phase.CLOSED])
def test_an_ended_job_is_never_reopened(registry: Registry, start: Phase) -> None:
    job = _job_in(registry, start)
    with pytest.raises(TransitionError, match=f"from {start.value} to open"):
        registry.reopen(job)
    assert _stored(registry, job) == start.value


@pytest.mark.parametrize("start", [Phase.SUBMITTING, Phase.OPEN])
def test_reopening_a_job_not_being_committed_leaves_it(registry: Registry, start: Phase) -> None:
    job = _job_in(registry, start)
    registry.reopen(job)
    assert (job.state, _stored(registry, job)) == (start, start.value)


def test_a_step_of_a_forgotten_row_raises(registry: Registry) -> None:
    job = _job_in(registry, Phase.SUBMITTING)
    registry.forget_submission(job)
    with pytest.raises(TransitionError, match="not in the registry"):
        registry.mark_submitted(job, 45, "c")
    assert registry.jobs(states=tuple(Phase)) == []


def test_a_batch_with_one_illegal_step_changes_none(registry: Registry) -> None:
    first = _job_in(registry, Phase.OPEN)
    other = registry.reserve(cmd="x", pwd=".", inputs=[], extra_inputs=[], outputs=["other"])
    registry.mark_submitted(other, 46, "c")
    registry.close_job(other)
    with pytest.raises(TransitionError):
        registry.mark_committing_many([first, other])
    assert (_stored(registry, first), _stored(registry, other)) == ("open", "closed")


def _writes_a_state(tree: ast.AST) -> list[int]:
    """Lines assigning ``<x>.state`` or holding SQL that sets the ``state`` column."""
    lines = []
    for node in ast.walk(tree):
        targets: list[ast.expr] = []
        if isinstance(node, ast.Assign):
            targets = node.targets
        elif isinstance(node, (ast.AugAssign, ast.AnnAssign)):
            targets = [node.target]
        for target in targets:
            parts = target.elts if isinstance(target, ast.Tuple) else [target]
            if any(isinstance(p, ast.Attribute) and p.attr == "state" for p in parts):
                lines.append(node.lineno)
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            words = " ".join(node.value.split()).lower()
            if "update jobs" in words and "state =" in words.split(" where ")[0]:
                lines.append(node.lineno)
    return lines


def test_nothing_outside_the_registry_writes_a_state() -> None:
    found = {
        str(path.relative_to(PACKAGE)): lines
        for path in sorted(PACKAGE.rglob("*.py"))
        if path.name != "registry.py" or path.parent.name != "jobs"
        if (lines := _writes_a_state(ast.parse(path.read_text())))
    }
    assert found == {}
    # the check sees a write where there is one
    assert _writes_a_state(ast.parse("job.state = 'open'")) == [1]
    assert _writes_a_state(ast.parse("job.job_id, job.state = 1, 'open'")) == [1]
    assert _writes_a_state(ast.parse("counts[task.state.value] = 1")) == []
    assert _writes_a_state(ast.parse("q = 'UPDATE jobs SET state = ? WHERE id = ?'")) == [1]
    assert _writes_a_state(ast.parse("q = 'UPDATE jobs SET note = ? WHERE state = ?'")) == []
    registry_source = (PACKAGE / "jobs" / "registry.py").read_text()
    assert _writes_a_state(ast.parse(registry_source))
