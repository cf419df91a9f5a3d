"""The job registry: an SQLite file in the dataset's git directory.

It owns access to the file (opening, one transaction per change; checks that must not
be split from their write run under ``BEGIN IMMEDIATE``), the queries on the scheduled
jobs and every change of a job's state: each step is checked against the life cycle
(``jobs/lifecycle.py``: ``submitting`` -> ``open`` -> ``committing`` -> ``finished`` |
``closed``) before it is written.  The schema and its migrations are ``jobs/schema.py``,
the reservation lookups ``jobs/reservations.py``, the row type ``jobs/job.py``.
"""

from __future__ import annotations

import json
import os
import sqlite3
import time
import urllib.parse
from collections.abc import Collection, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

from datalad_slurm.globs import reserved_paths
from datalad_slurm.jobs.job import Job
from datalad_slurm.jobs.lifecycle import HOLDING_STATES, Phase, check_step
from datalad_slurm.jobs.reservations import Refusals, add_paths, holders, insert_holding
from datalad_slurm.jobs.schema import (
    REGISTRY_DIRNAME,
    REGISTRY_FILENAME,
    RegistryError,
    failure,
    migrate,
    refuse_newer,
)
from datalad_slurm.paths import collapse

#: row ids per ``SELECT ... IN (...)`` (SQLite before 3.32 takes at most 999 parameters)
_CHUNK = 500


class Registry:
    """Access to one dataset's job registry."""

    def __init__(self, path: str, timeout: float = 120.0, read_only: bool = False) -> None:
        self.path = path
        with self._translated():
            if read_only:
                # nothing created, nothing migrated: for looks that must change nothing
                uri = "file:" + urllib.parse.quote(os.path.abspath(path)) + "?mode=ro"
                self._conn = sqlite3.connect(uri, timeout=timeout, isolation_level=None, uri=True)
                self._conn.row_factory = sqlite3.Row
                version = self._conn.execute("PRAGMA user_version").fetchone()[0]
                refuse_newer(path, version)
                return
            os.makedirs(os.path.dirname(path), exist_ok=True)
            self._conn = sqlite3.connect(path, timeout=timeout, isolation_level=None)
            self._conn.row_factory = sqlite3.Row
            self._conn.execute("PRAGMA foreign_keys = ON")
            self._migrate()

    @classmethod
    def for_git_dir(cls, git_dir: str) -> Registry:
        return cls(os.path.join(git_dir, REGISTRY_DIRNAME, REGISTRY_FILENAME))

    def close(self) -> None:
        self._conn.close()

    def __enter__(self) -> Registry:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextmanager
    def _translated(self) -> Iterator[None]:
        """SQLite's and the file system's errors as a :class:`RegistryError` that names the
        file and says what to do ("file is not a database" alone helps nobody)."""
        try:
            yield
        except (sqlite3.Error, OSError) as exc:
            raise failure(self.path, exc) from exc

    @contextmanager
    def transaction(self, immediate: bool = True) -> Iterator[sqlite3.Connection]:
        with self._translated():
            self._conn.execute("BEGIN IMMEDIATE" if immediate else "BEGIN")
            try:
                yield self._conn
            except BaseException:
                # SQLite already rolled back after some errors (a full disk): a second
                # ROLLBACK would hide the first error behind "no transaction is active"
                if self._conn.in_transaction:
                    self._conn.execute("ROLLBACK")
                raise
            else:
                self._conn.execute("COMMIT")

    def _migrate(self) -> None:
        with self.transaction() as conn:
            migrate(conn, self.path)

    # -- schedule -------------------------------------------------------------

    def conflicts(self, outputs: Sequence[str]) -> list[tuple[str, str, Job]]:
        """What :meth:`reserve` would refuse these outputs for, without reserving anything."""
        with self.transaction(immediate=False) as conn:
            return holders(conn, collapse(reserved_paths(outputs)))

    def reserve(
        self,
        *,
        cmd: str,
        pwd: str,
        inputs: Sequence[str],
        extra_inputs: Sequence[str],
        outputs: Sequence[str],
        chain: Sequence[str] = (),
        message: str | None = None,
        dsid: str | None = None,
        submitted_from: str | None = None,
        expand: str | None = None,
        depends_on: Sequence[tuple[int, int]] = (),
        alt_dir: str | None = None,
    ) -> Job:
        """Check the outputs against every open job and reserve them, atomically (a glob
        by its fixed leading folder).  ``depends_on``: (row id, Slurm job id) of the open jobs
        whose outputs its inputs are."""
        lists = {"inputs": inputs, "extra_inputs": extra_inputs, "outputs": outputs, "chain": chain}
        with self.transaction() as conn:
            return insert_holding(
                conn,
                lists,
                state=Phase.SUBMITTING,
                cmd=cmd,
                pwd=pwd,
                message=message,
                dsid=dsid,
                submitted_from=submitted_from,
                expand=expand,
                depends_on=json.dumps([list(pair) for pair in depends_on]),
                alt_dir=alt_dir,
            )

    def adopt(
        self,
        *,
        note: str,
        job_id: int,
        cluster: str | None,
        cmd: str,
        pwd: str,
        inputs: Sequence[str],
        extra_inputs: Sequence[str],
        outputs: Sequence[str],
        chain: Sequence[str],
        message: str | None,
        dsid: str | None,
        submission_facts: dict[str, Any],
        alt_dir: str | None = None,
    ) -> Job | None:
        """Register a job that was submitted without us (by datalad-slurm 0.2.8) as open, its
        outputs reserved, in one transaction.  ``note`` names where it came from and is its
        key: None if a job with this note is registered already (taken over before)."""
        with self.transaction() as conn:
            if conn.execute("SELECT 1 FROM jobs WHERE note = ?", (note,)).fetchone():
                return None
            return insert_holding(
                conn,
                {
                    "inputs": inputs,
                    "extra_inputs": extra_inputs,
                    "outputs": outputs,
                    "chain": chain,
                },
                state=Phase.OPEN,
                job_id=job_id,
                cluster=cluster,
                cmd=cmd,
                pwd=pwd,
                message=message,
                dsid=dsid,
                note=note,
                submission_facts=json.dumps(submission_facts),
                alt_dir=alt_dir,
            )

    def providers(self, paths: Sequence[str], job: Job | None) -> list[tuple[str, str, Job]]:
        """The other jobs holding what these paths overlap (an input a job writes: its output
        or log), as ``(path, held path, job)``, oldest job first; a glob by its fixed leading
        folder."""
        with self.transaction(immediate=False) as conn:
            found = holders(conn, collapse(reserved_paths(paths)))
        own = job.id if job is not None else None
        return sorted((c for c in found if c[2].id != own), key=lambda c: c[2].id)

    def note_dependency_specs_many(self, jobs: Sequence[tuple[Job, str]]) -> None:
        """The ``--dependency`` each job was given in Slurm."""
        with self.transaction() as conn:
            conn.executemany(
                "UPDATE jobs SET dependency = ? WHERE id = ?",
                [(spec, job.id) for job, spec in jobs],
            )
        for job, spec in jobs:
            job.dependency = spec

    def mark_submitted(self, job: Job, job_id: int, cluster: str | None) -> Job:
        """Slurm took the job: its id is on record before anything else can go wrong."""
        with self.transaction() as conn:
            self._step(conn, [job], Phase.OPEN, start=Phase.SUBMITTING)
            conn.execute(
                "UPDATE jobs SET job_id = ?, cluster = ?, state = ? WHERE id = ?",
                (job_id, cluster, Phase.OPEN, job.id),
            )
        job.job_id, job.cluster, job.state = job_id, cluster, Phase.OPEN
        return job

    # -- log files (submitted held; see usecases/settle.py) ----------

    def note_held(self, job: Job, job_id: int, cluster: str | None) -> Job:
        """Slurm took the job, held: its id is on record at once, the row stays 'submitting'
        until its log files are reserved (a held job never starts before)."""
        with self.transaction() as conn:
            conn.execute(
                "UPDATE jobs SET job_id = ?, cluster = ? WHERE id = ?", (job_id, cluster, job.id)
            )
        job.job_id, job.cluster = job_id, cluster
        return job

    def open_with_logs(
        self,
        claims: Sequence[tuple[Job, Sequence[str]]],
        waits_for: Mapping[int, Collection[int]] | None = None,
    ) -> Refusals:
        """Reserve each held job's log paths beside its outputs and open it, in one
        transaction, in the given order.  A job whose logs overlap what another job holds
        (or what a job before it here just took) is left as it is, and so is one a finish
        closed meanwhile: see :class:`Refusals`.  ``waits_for``: row ids of jobs among the
        claims that a job depends on; when one of them is refused, so is the job."""
        refused = Refusals()
        waits_for = waits_for or {}
        with self.transaction() as conn:
            current = self._states(conn, [job for job, _ in claims])
            for job, logs in claims:
                if current.get(job.id) == Phase.CLOSED:
                    refused.closed.add(job.id)
                    continue
                check_step(job.id, current.get(job.id), Phase.OPEN, start=Phase.SUBMITTING)
                if any(row in refused for row in waits_for.get(job.id, ())):
                    refused.conflicts[job.id] = []
                    continue
                conflicts = add_paths(conn, job.id, logs)
                if conflicts:
                    refused.conflicts[job.id] = conflicts
                    continue
                conn.execute("UPDATE jobs SET state = ? WHERE id = ?", (Phase.OPEN, job.id))
        for job, _ in claims:
            if job.id not in refused:
                job.state = Phase.OPEN
        return refused

    def note_submission_facts(self, job: Job, facts: dict[str, str]) -> None:
        """What slurmctld said about the job right after its submission (log patterns...)."""
        self.note_submission_facts_many([(job, facts)])

    def note_submission_facts_many(self, jobs: Sequence[tuple[Job, dict[str, str]]]) -> None:
        with self.transaction() as conn:
            conn.executemany(
                "UPDATE jobs SET submission_facts = ? WHERE id = ?",
                [(json.dumps(facts), job.id) for job, facts in jobs],
            )
        for job, facts in jobs:
            job.submission_facts = dict(facts)

    def forget_submission(self, job: Job) -> None:
        """Drop a reservation whose submission failed (nothing was submitted)."""
        with self.transaction() as conn:
            conn.execute("DELETE FROM jobs WHERE id = ? AND state = ?", (job.id, Phase.SUBMITTING))

    # -- finish ---------------------------------------------------------------

    def jobs(self, states: Sequence[str] = HOLDING_STATES, job_id: int | None = None) -> list[Job]:
        where, args = self._selection(states, job_id)
        with self._translated():
            rows = self._conn.execute(f"SELECT * FROM jobs WHERE {where} ORDER BY id", args)
            return [Job.from_row(row) for row in rows]

    def has_jobs(self, states: Sequence[str] = HOLDING_STATES, job_id: int | None = None) -> bool:
        """Whether :meth:`jobs` would return any (without reading them)."""
        where, args = self._selection(states, job_id)
        query = f"SELECT EXISTS (SELECT 1 FROM jobs WHERE {where})"
        with self._translated():
            return bool(self._conn.execute(query, args).fetchone()[0])

    @staticmethod
    def _selection(states: Sequence[str], job_id: int | None) -> tuple[str, list[Any]]:
        where = f"state IN ({','.join('?' * len(states))})"
        args: list[Any] = list(states)
        if job_id is not None:
            where += " AND job_id = ?"
            args.append(job_id)
        return where, args

    def get(self, row_id: int) -> Job:
        with self._translated():
            row = self._conn.execute("SELECT * FROM jobs WHERE id = ?", (row_id,)).fetchone()
        if row is None:
            raise RegistryError(f"no registry entry {row_id}")
        return Job.from_row(row)

    def mark_committing_many(self, jobs: Sequence[Job]) -> None:
        """Note that commits for these jobs are being written (see ``commit/batch.recover``)."""
        with self.transaction() as conn:
            self._step(conn, jobs, Phase.COMMITTING)
            conn.executemany(
                "UPDATE jobs SET state = ? WHERE id = ?",
                [(Phase.COMMITTING, job.id) for job in jobs],
            )
        for job in jobs:
            job.state = Phase.COMMITTING

    def mark_finished(self, job: Job, commit_sha: str | None) -> None:
        """The job's commit is written: it is finished, its reservations released, in one
        transaction."""
        self.mark_finished_many([(job, commit_sha)])

    def mark_finished_many(self, jobs: Sequence[tuple[Job, str | None]]) -> None:
        """The jobs' commits are written: finished, their reservations released, at once."""
        self._end(jobs, Phase.FINISHED)

    def close_job(self, job: Job) -> None:
        """Drop the job without a commit (failed, never to start, interrupted) and release
        its reservations, in one transaction."""
        self._end([(job, None)], Phase.CLOSED)

    def _end(self, jobs: Sequence[tuple[Job, str | None]], state: Phase) -> None:
        now = time.time()
        with self.transaction() as conn:
            self._step(conn, [job for job, _ in jobs], state)
            conn.executemany(
                "UPDATE jobs SET state = ?, commit_sha = ?, finished_at = ? WHERE id = ?",
                [(state, sha, now, job.id) for job, sha in jobs],
            )
            conn.executemany(
                "DELETE FROM reservations WHERE job = ?", [(job.id,) for job, _ in jobs]
            )
        for job, sha in jobs:
            job.state, job.commit_sha = state, sha

    def reopen(self, job: Job) -> None:
        """A commit attempt left no commit behind: the job is open again."""
        self.reopen_many([job])

    def reopen_many(self, jobs: Sequence[Job]) -> None:
        """Commit attempts left no commit behind: the jobs are open again.  A job not being
        committed (still submitting, or open) is left as it is: there is nothing to undo."""
        with self.transaction() as conn:
            current = self._states(conn, jobs)
            back = [
                job for job in jobs if current.get(job.id) not in (Phase.SUBMITTING, Phase.OPEN)
            ]
            for job in back:
                check_step(job.id, current.get(job.id), Phase.OPEN, start=Phase.COMMITTING)
            conn.executemany(
                "UPDATE jobs SET state = ? WHERE id = ?", [(Phase.OPEN, job.id) for job in back]
            )
        for job in back:
            job.state = Phase.OPEN

    @staticmethod
    def _states(conn: sqlite3.Connection, jobs: Sequence[Job]) -> dict[int, str]:
        """The stored state of each job, by row id (a deleted row is missing)."""
        ids = [job.id for job in jobs]
        found: dict[int, str] = {}
        for start in range(0, len(ids), _CHUNK):
            part = ids[start : start + _CHUNK]
            marks = ",".join("?" * len(part))
            for row in conn.execute(f"SELECT id, state FROM jobs WHERE id IN ({marks})", part):
                found[row["id"]] = row["state"]
        return found

    def _step(
        self,
        conn: sqlite3.Connection,
        jobs: Sequence[Job],
        to: Phase,
        start: Phase | None = None,
    ) -> None:
        """Check that every job may become ``to`` (TransitionError if one may not; ``start``:
        the one state the step leaves), inside the caller's transaction, before the write."""
        current = self._states(conn, jobs)
        for job in jobs:
            check_step(job.id, current.get(job.id), to, start)

    def note_cron_reported(self, job: Job, report: str | None) -> None:
        """Remember what ``finish --cron`` reported about the job (None: forget it)."""
        with self.transaction() as conn:
            conn.execute("UPDATE jobs SET cron_reported = ? WHERE id = ?", (report, job.id))
        job.cron_reported = report

    def reservations(self, job: Job) -> list[str]:
        with self._translated():
            return [
                row["path"]
                for row in self._conn.execute(
                    "SELECT path FROM reservations WHERE job = ? ORDER BY path", (job.id,)
                )
            ]
