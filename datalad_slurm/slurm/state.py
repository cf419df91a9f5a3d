"""The job state model: one enum for every Slurm state, and the verdict over a job's tasks.

Backends translate whatever Slurm answered into :class:`TaskState` values;
everything above them only asks ``is_active``/``is_success``.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from datalad_slurm.slurm.resources import Resources


class JobState(enum.Enum):
    PENDING = "PENDING"
    CONFIGURING = "CONFIGURING"
    RUNNING = "RUNNING"
    COMPLETING = "COMPLETING"
    SUSPENDED = "SUSPENDED"
    REQUEUED = "REQUEUED"
    REQUEUE_HOLD = "REQUEUE_HOLD"
    REQUEUE_FED = "REQUEUE_FED"
    RESIZING = "RESIZING"
    SIGNALING = "SIGNALING"
    STAGE_OUT = "STAGE_OUT"
    EXPEDITING = "EXPEDITING"
    STOPPED = "STOPPED"
    RESV_DEL_HOLD = "RESV_DEL_HOLD"
    POWER_UP_NODE = "POWER_UP_NODE"
    UPDATE_DB = "UPDATE_DB"
    COMPLETED = "COMPLETED"
    FAILED = "FAILED"
    CANCELLED = "CANCELLED"
    TIMEOUT = "TIMEOUT"
    OUT_OF_MEMORY = "OUT_OF_MEMORY"
    NODE_FAIL = "NODE_FAIL"
    BOOT_FAIL = "BOOT_FAIL"
    DEADLINE = "DEADLINE"
    PREEMPTED = "PREEMPTED"
    REVOKED = "REVOKED"
    SPECIAL_EXIT = "SPECIAL_EXIT"
    #: Slurm does not know the job (any more); never a success.
    UNKNOWN = "UNKNOWN"

    @classmethod
    def parse(cls, text: str | Iterable[str] | None) -> JobState:
        """Read a Slurm state: ``"CANCELLED by 0"``, ``"OUT_OF_ME+"``, ``["COMPLETED", ..]``.

        A list is the base state and its flags (squeue/sacct ``--json`` from data_parser
        v0.0.40, Slurm 23.11): it reads as the one word Slurm's ``job_state_string()``
        makes of them, the word ``scontrol`` and ``squeue`` show, so that a finished job
        that is still COMPLETING stays active.
        """
        if text is None:
            return cls.UNKNOWN
        if not isinstance(text, str):
            text = state_word([str(w) for w in text])
        word = text.strip().split(" ")[0].rstrip("+").upper()
        if word in cls.__members__:
            return cls[word]
        for name in cls.__members__:
            if word and name.startswith(word):
                return cls[name]
        return cls.UNKNOWN

    @property
    def is_active(self) -> bool:
        """Still on its way: never to be reported as failed."""
        return self in _ACTIVE

    @property
    def is_success(self) -> bool:
        return self is JobState.COMPLETED

    @property
    def is_terminal(self) -> bool:
        return not self.is_active and self is not JobState.UNKNOWN


_ACTIVE = frozenset(
    {
        JobState.PENDING,
        JobState.CONFIGURING,
        JobState.RUNNING,
        JobState.COMPLETING,
        JobState.SUSPENDED,
        JobState.REQUEUED,
        JobState.REQUEUE_HOLD,
        JobState.REQUEUE_FED,
        JobState.RESIZING,
        JobState.SIGNALING,
        JobState.STAGE_OUT,
        JobState.EXPEDITING,
        JobState.STOPPED,
        JobState.RESV_DEL_HOLD,
        JobState.POWER_UP_NODE,
        JobState.UPDATE_DB,
    }
)


#: the state flags that ``job_state_string()`` (Slurm 22.05-26.05, slurm_protocol_defs.c) shows
#: instead of the base state, first match wins; other flags (LAUNCH_FAILED, UPDATE_DB,
#: POWER_UP_NODE, RECONFIG_FAIL) leave the base state showing
FLAGS_SHOWN_FIRST = (
    "COMPLETING",
    "STAGE_OUT",
    "CONFIGURING",
    "EXPEDITING",
    "RESIZING",
    "REQUEUED",
    "REQUEUE_FED",
    "REQUEUE_HOLD",
    "SPECIAL_EXIT",
    "STOPPED",
    "REVOKED",
    "RESV_DEL_HOLD",
    "SIGNALING",
)


#: the base states (``JOB_STATE_BASE``); every other word in a state list is a flag
BASE_STATES = frozenset(
    {
        "PENDING",
        "RUNNING",
        "SUSPENDED",
        "COMPLETED",
        "CANCELLED",
        "FAILED",
        "TIMEOUT",
        "NODE_FAIL",
        "PREEMPTED",
        "BOOT_FAIL",
        "DEADLINE",
        "OUT_OF_MEMORY",
    }
)


def state_word(words: Iterable[str]) -> str:
    """The one word Slurm shows for a state given as base state plus flags."""
    upper = [w.strip().upper() for w in words]
    for flag in FLAGS_SHOWN_FIRST:
        if flag in upper:
            return flag
    base = [w for w in upper if w in BASE_STATES]
    return base[0] if base else (upper[0] if upper else "")


#: states of a job ended from outside (cancelled, timed out, preempted, its node failed): the
#: hook's environment says ``0:0`` then, and accounting may keep the exit code as it was when the
#: job was ended, before its shell's own exit, so pyslurm's 128-short reading cannot be checked
ENDED_FROM_OUTSIDE = frozenset(
    {JobState.CANCELLED, JobState.TIMEOUT, JobState.PREEMPTED, JobState.NODE_FAIL}
)


@dataclass(frozen=True)
class TaskState:
    """What a backend knows about one job or one array task."""

    job_id: int
    task_id: int | None
    state: JobState
    exit_code: int | None = None
    signal: int | None = None
    start_time: int | None = None
    end_time: int | None = None
    submit_time: int | None = None
    stdout: str | None = None
    stderr: str | None = None
    work_dir: str | None = None
    cluster: str | None = None
    reason: str | None = None
    #: the highest exit code of the job's steps (where the backend knows it)
    derived_exit_code: int | None = None
    #: what the task was given and used (elapsed time, TRES, MaxRSS, ...), where known
    resources: Resources | None = None
    #: the exit code may be 128 less than the true one (a hook event answered by pyslurm,
    #: which reads 143 as 15, for a job that did not end by itself): the backend's word on
    #: it replaces it where the backend has one (``jobs/events.py``)
    exit_uncertain: bool = False

    @property
    def label(self) -> str:
        return str(self.job_id) if self.task_id is None else f"{self.job_id}_{self.task_id}"


class Verdict(enum.Enum):
    COMPLETED = "completed"
    ACTIVE = "active"
    FAILED = "failed"
    UNKNOWN = "unknown"


@dataclass
class JobStatus:
    """Every task known for one submitted job, and what they add up to."""

    job_id: int
    tasks: dict[str, TaskState] = field(default_factory=dict)
    backend: str = ""
    #: the JSON layout that answered (Slurm's data_parser: ``v0.0.42``), for JSON backends
    data_parser: str | None = None

    @property
    def verdict(self) -> Verdict:
        states = [t.state for t in self.tasks.values()]
        if not states:
            return Verdict.UNKNOWN
        if any(s.is_active for s in states):
            return Verdict.ACTIVE
        if all(s.is_success for s in states):
            return Verdict.COMPLETED
        if all(s is JobState.UNKNOWN for s in states):
            return Verdict.UNKNOWN
        return Verdict.FAILED

    @property
    def summary_state(self) -> str:
        """One word for a table: the state all tasks share, or the worst one."""
        states = {t.state for t in self.tasks.values()}
        if not states:
            return JobState.UNKNOWN.value
        if len(states) == 1:
            return next(iter(states)).value
        verdict = self.verdict
        if verdict is Verdict.ACTIVE:
            active = sorted(s.value for s in states if s.is_active)
            return active[0] if JobState.RUNNING.value not in active else JobState.RUNNING.value
        failed = sorted(s.value for s in states if not s.is_success)
        return failed[0]

    def statuses(self) -> str:
        """``10524620_0: COMPLETED, 10524620_2: TIMEOUT`` as in the 0.2.8 messages."""
        if not self.tasks:
            return f"{self.job_id}: {JobState.UNKNOWN.value}"
        return ", ".join(f"{label}: {t.state.value}" for label, t in sorted_tasks(self.tasks))

    def task_counts(self) -> Mapping[str, int]:
        counts: dict[str, int] = {}
        for task in self.tasks.values():
            counts[task.state.value] = counts.get(task.state.value, 0) + 1
        return counts


def sorted_tasks(tasks: Mapping[str, TaskState]) -> list[tuple[str, TaskState]]:
    return sorted(tasks.items(), key=lambda kv: (kv[1].job_id, kv[1].task_id or -1))
