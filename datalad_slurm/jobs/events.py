"""Job states from spool events first, then one backend query for what events cannot tell.

Events are free and survive a job leaving slurmctld; the backend is asked
only about jobs with no event (a job cancelled while pending runs no hook),
about arrays (more tasks may still be pending or running), and about jobs
whose event says they are not over (requeue) or could not say at all
(``UNKNOWN``: the hook got no answer from slurmctld), and about a job ended from
outside whose exit code pyslurm told the hook (it reads 143 as 15).  A task the backend sees
as active overrides an older event, a state it knows overrides an event that
settles nothing; otherwise the hook's resolved state wins.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace

from datalad_slurm.slurm.backend import Backend
from datalad_slurm.slurm.resources import Resources, merge, run_time_text, text, tres_from_text
from datalad_slurm.slurm.state import ENDED_FROM_OUTSIDE, JobState, JobStatus, TaskState
from datalad_slurm.spool import Event


@dataclass(frozen=True)
class JobKey:
    """What identifies a registered job: its (array) job id and, if known, its cluster."""

    job_id: int
    cluster: str | None = None


def _exit_uncertain(event: Event, state: JobState) -> bool:
    """pyslurm (25.11) reads an exit status of 128 or more as 128 less (143 as 15); the hook
    corrects it from its environment for a job that ended by itself, not for one ended from
    outside (a cancelled job's shell exits 143 or dies of signal 15, as the race goes)."""
    return (
        event.resolved_by == "pyslurm"
        and state in ENDED_FROM_OUTSIDE
        and event.exit_code is not None
        and 0 < event.exit_code < 128
        and not event.signal
    )


def event_task(event: Event) -> TaskState:
    state = JobState.parse(event.state)
    return TaskState(
        job_id=event.owner_job_id,
        task_id=event.array_task_id if event.array_job_id is not None else None,
        state=state,
        exit_code=event.exit_code,
        signal=event.signal,
        start_time=event.start_time,
        end_time=event.end_time,
        stdout=event.stdout,
        stderr=event.stderr,
        work_dir=event.work_dir,
        cluster=event.cluster,
        reason=event.reason,
        resources=event_resources(event),
        exit_uncertain=_exit_uncertain(event, state),
    )


def event_resources(event: Event) -> Resources | None:
    """What the hook learnt of the job's resources from slurmctld (None: nothing, as from a
    hook older than these fields, or one that got no answer)."""
    found = Resources(
        elapsed=run_time_text(event.run_time),
        req_tres=tres_from_text(event.req_tres),
        alloc_tres=tres_from_text(event.alloc_tres),
        nodes=text(event.nodes),
        partition=text(event.partition),
        account=text(event.account),
        qos=text(event.qos),
        source=f"hook ({event.resolved_by or 'scontrol'})",
    )
    return found if found.figures else None


def match_events(
    keys: Iterable[JobKey], events: Iterable[Event]
) -> tuple[dict[JobKey, list[Event]], list[Event]]:
    """Events per registered job, and the events that match none of them."""
    by_id: dict[int, list[JobKey]] = {}
    for key in keys:
        by_id.setdefault(key.job_id, []).append(key)
    matched: dict[JobKey, list[Event]] = {}
    unmatched: list[Event] = []
    for event in events:
        candidates = [
            key
            for key in by_id.get(event.owner_job_id, [])
            if key.cluster is None or event.cluster is None or key.cluster == event.cluster
        ]
        if len(candidates) == 1:
            matched.setdefault(candidates[0], []).append(event)
        else:
            unmatched.append(event)
    return matched, unmatched


def statuses_from_events(events: Sequence[Event], job_id: int) -> JobStatus:
    """The newest event per task, as a job status."""
    status = JobStatus(job_id, backend="spool")
    newest: dict[str, tuple[float, TaskState]] = {}
    for event in events:
        task = event_task(event)
        if task.label not in newest or newest[task.label][0] <= event.written_at:
            newest[task.label] = (event.written_at, task)
    status.tasks = {label: task for label, (_, task) in newest.items()}
    return status


def needs_backend(status: JobStatus) -> bool:
    """Whether events alone cannot settle this job."""
    if not status.tasks:
        return True
    tasks = list(status.tasks.values())
    if any(t.task_id is not None for t in tasks):
        return True  # an array: other tasks may not have ended
    # not over (requeue), or an exit code only the backend can tell (``_exit_uncertain``)
    return any(not t.state.is_terminal or t.exit_uncertain for t in tasks)


def combine(from_events: JobStatus, from_backend: JobStatus | None) -> JobStatus:
    """Merge a job's event tasks with what the backend said about it.

    Without the backend's word, events settle a plain job, never an array: its
    tasks cancelled while pending ran no hook, so the events may cover only
    some of them. Such an array gets one more task, the array as a whole in
    state ``UNKNOWN``, and is never taken for COMPLETED.
    """
    if from_backend is None or not from_backend.tasks:
        if not any(t.task_id is not None for t in from_events.tasks.values()):
            return from_events
        unsettled = JobStatus(from_events.job_id, backend=from_events.backend)
        unsettled.tasks = dict(from_events.tasks)
        whole = TaskState(job_id=from_events.job_id, task_id=None, state=JobState.UNKNOWN)
        unsettled.tasks.setdefault(whole.label, whole)
        return unsettled
    merged = JobStatus(
        from_events.job_id,
        backend=f"{from_events.backend} + {from_backend.backend}"
        if from_events.tasks
        else from_backend.backend,
        data_parser=from_backend.data_parser,
    )
    merged.tasks = dict(from_events.tasks)
    for label, task in from_backend.tasks.items():
        from_event = merged.tasks.get(label)
        if _backend_wins(from_event, task):
            merged.tasks[label] = _with_resources_of(task, from_event)
        elif from_event is not None:
            merged.tasks[label] = _with_resources_of(_with_exit_of(from_event, task), task)
    return merged


def _with_exit_of(task: TaskState, other: TaskState) -> TaskState:
    """An event's task whose exit code is uncertain, with the backend's exit code and signal
    where the backend tells of the same run (ended, at the same time where both say)."""
    if not task.exit_uncertain or not other.state.is_terminal or other.exit_code is None:
        return task
    if task.end_time and other.end_time and task.end_time != other.end_time:
        return task  # another run of a requeued job
    return replace(task, exit_code=other.exit_code, signal=other.signal, exit_uncertain=False)


def _with_resources_of(task: TaskState, other: TaskState | None) -> TaskState:
    """``task`` with the gaps in its figures filled from ``other``'s, if both tell of the
    same run: both ended, at the same time where both say when."""
    if (
        other is None
        or other.resources is None
        or not (task.state.is_terminal and other.state.is_terminal)
    ):
        return task
    if task.end_time and other.end_time and task.end_time != other.end_time:
        return task  # another run of a requeued job
    return replace(task, resources=merge(task.resources, other.resources))


def _backend_wins(from_event: TaskState | None, from_backend: TaskState) -> bool:
    """Whether the backend's word on a task replaces its event's.

    An active task in Slurm is newer than any event (a requeue). An event that
    settles nothing (``UNKNOWN``: the hook could not ask slurmctld; or a state
    that goes on) gives way to any state the backend knows.
    """
    if from_event is None or from_backend.state.is_active:
        return True
    return not from_event.state.is_terminal and from_backend.state is not JobState.UNKNOWN


def resolve(
    keys: Sequence[JobKey], events_by_key: dict[JobKey, list[Event]], backend: Backend | None
) -> dict[JobKey, JobStatus]:
    """Every job's status: events first, one backend query for the rest."""
    from_events = {
        key: statuses_from_events(events_by_key.get(key, []), key.job_id) for key in keys
    }
    ask = sorted({key.job_id for key, status in from_events.items() if needs_backend(status)})
    answers = backend.query(ask) if (backend is not None and ask) else {}
    return {
        key: combine(from_events[key], for_cluster(answers.get(key.job_id), key.cluster))
        if needs_backend(from_events[key])
        else from_events[key]
        for key in keys
    }


def for_cluster(answer: JobStatus | None, cluster: str | None) -> JobStatus | None:
    """The part of a backend's answer about the job on ``cluster``.

    Job ids are per cluster: the same id on another cluster is another job.
    Tasks that name no cluster are taken as the cluster's (a backend asks one).
    """
    if answer is None or cluster is None:
        return answer
    tasks = {
        label: task
        for label, task in answer.tasks.items()
        if task.cluster is None or task.cluster == cluster
    }
    if len(tasks) == len(answer.tasks):
        return answer
    kept = JobStatus(answer.job_id, backend=answer.backend, data_parser=answer.data_parser)
    kept.tasks = tasks
    return kept
