"""Serving a cluster's queue: a worker claims pending jobs, asks slurmctld about all that are
due in one round, waits until each job has left COMPLETING (so its final state shows plainly),
writes one event per job, and leaves once the queue stayed empty for a moment. Also the
worker for one job, when the queue is not usable (:func:`resolve`)."""

from __future__ import annotations

import time
from collections.abc import Mapping

from .ask import slurm_questions
from .event import write_job_event
from .facts import final_facts, still_completing
from .log import log
from .queue import Queue
from .settings import Settings

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (the hook starts faster)
if TYPE_CHECKING:
    from typing import Any

#: seconds between two looks at the queue, and first between two questions about a job
TICK = 0.05
#: a job that stays COMPLETING (a slow slurmd Epilog) is asked at most this often
SLOWEST_QUESTION = 0.4
#: the job leaves COMPLETING only after the entry point and slurmd's epilog ended (0.02-0.13 s
#: later, HOOK-NOTES.md section 3): a question before that is a wasted scontrol call
FIRST_QUESTION_AFTER = 0.15
#: an idle worker stays this long for the next job of a burst
LINGER = 1.5
#: after this many seconds a worker takes no new jobs, and hands over to a fresh process
MAX_LIFE = 300.0
#: jobs asked about in one round (scontrol: processes at once)
MAX_PARALLEL = 16
#: a pending file without its final line this old was left by an entry point that failed
#: (it then started a worker for its job itself): it is dropped
INCOMPLETE_AGE = 10.0
#: how often a serving worker looks for claims of dead workers
RECOVER_EVERY = 1.0


def resolve(job: str, env: Mapping[str, str], settings: Settings) -> dict[str, Any]:
    """The job's final facts; falls back to the environment if Slurm does not answer."""
    deadline = time.monotonic() + settings.query_timeout
    questions = slurm_questions(settings, one_job=True)
    fields: dict[str, str] = {}
    try:
        while questions and time.monotonic() < deadline:
            answers = questions.ask([job], max(deadline - time.monotonic(), 0.1))
            fields = answers.get(job, {})
            # the job leaves COMPLETING moments after the hook's entry script returned
            if not fields or not still_completing(fields):
                break
            time.sleep(0.05)
    finally:
        if questions:
            questions.close()
    return final_facts(fields, env)


class QueuedJob:
    """A claimed job on its way to an event."""

    def __init__(
        self, claimed: str, env: dict[str, str], queued_at: float, patience: float
    ) -> None:
        self.claimed = claimed
        self.env = env
        self.job = env["SLURM_JOB_ID"]
        self.next_question = queued_at + FIRST_QUESTION_AFTER
        self.interval = TICK
        self.deadline = time.time() + patience
        self.fields: dict[str, str] = {}

    def ask_later(self, now: float) -> None:
        """Not decided yet: ask again, a little later each time."""
        self.next_question = now + self.interval
        self.interval = min(self.interval * 2, SLOWEST_QUESTION)


class Worker:
    """One process serving a cluster's queue until it stays empty."""

    def __init__(self, settings: Settings, queue: Queue) -> None:
        self.settings = settings
        self.queue = queue
        self.jobs: dict[str, QueuedJob] = {}
        self.questions = slurm_questions(settings)
        self.born = time.monotonic()
        self.last_recovery = 0.0

    @property
    def retiring(self) -> bool:
        return time.monotonic() - self.born >= MAX_LIFE

    def run(self) -> bool:
        """Serve until the queue stays empty; True if it must go on in a fresh process."""
        try:
            return self._serve()
        finally:
            if self.questions:
                self.questions.close()

    def _serve(self) -> bool:
        self.queue.announce()
        idle_since = time.monotonic()
        while True:
            if not self.retiring:
                self.take_jobs()
            if self.jobs:
                self.ask_slurm()
                idle_since = time.monotonic()
            elif self.retiring or time.monotonic() - idle_since >= LINGER:
                # leave: pid file first, then one more look (the entry point's order reversed)
                self.queue.retire()
                backlog = self.queue.has_backlog()
                if not backlog and not self.queue.names_me():
                    return False  # (an entry point that started this worker may name it late)
                if self.retiring:
                    return True
                self.queue.announce()
                idle_since = time.monotonic()
                continue
            time.sleep(TICK)

    def take_jobs(self) -> None:
        for name in self.queue.pending_names():
            env = self.queue.read_pending(name)
            if env is None:
                self._drop_if_abandoned(name)
                continue
            queued_at = time.time() - self.queue.pending_age(name)
            claimed = self.queue.claim(name)
            if claimed:
                self._add(claimed, env, queued_at)
        if time.monotonic() - self.last_recovery >= RECOVER_EVERY:
            self.last_recovery = time.monotonic()
            for orphan in self.queue.orphaned_claims():
                claimed = self.queue.take_over(orphan)
                env = self.queue.read_claim(claimed) if claimed else None
                if claimed and env:
                    self._add(claimed, env, queued_at=0.0)
                elif claimed:
                    self.queue.done(claimed)  # unreadable: nothing to report

    def _drop_if_abandoned(self, name: str) -> None:
        if self.queue.pending_age(name) > INCOMPLETE_AGE:
            log(self.settings.log, f"dropped the incomplete pending file {name}")
            self.queue.drop_pending(name)

    def _add(self, claimed: str, env: dict[str, str], queued_at: float) -> None:
        self.jobs[claimed] = QueuedJob(claimed, env, queued_at, self.settings.query_timeout)

    def due_jobs(self) -> list[QueuedJob]:
        """The jobs to ask about now, longest waiting first; at most MAX_PARALLEL."""
        now = time.time()
        due = [job for job in self.jobs.values() if job.next_question <= now]
        return sorted(due, key=lambda job: job.next_question)[:MAX_PARALLEL]

    def ask_slurm(self) -> None:
        """One round of questions for every job that is due, then events for the decided."""
        due = self.due_jobs()
        if not due:
            return
        answers: dict[str, dict[str, str]] = {}
        if self.questions:
            answers = self.questions.ask([job.job for job in due], self.settings.query_timeout)
        now = time.time()
        for job in due:
            answered = job.job in answers  # else Slurm failed or timed out: ask again
            fields = answers.get(job.job, {})
            job.fields = fields or job.fields
            # an answer without the job (MinJobAge passed): the environment has to do
            if (answered and not still_completing(fields)) or now >= job.deadline:
                self.report(job)
            else:
                job.ask_later(now)

    def report(self, job: QueuedJob) -> None:
        try:
            write_job_event(self.settings, job.env, final_facts(job.fields, job.env))
        except Exception as exc:  # one job's trouble is logged; the others go on
            log(self.settings.log, f"job {job.job}: no event written: {type(exc).__name__}: {exc}")
        self.queue.done(job.claimed)
        del self.jobs[job.claimed]
