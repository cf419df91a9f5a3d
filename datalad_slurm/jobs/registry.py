"""The job registry: an SQLite file in the dataset's git directory.

It owns the scheduled jobs, the outputs they reserve and their life cycle
(``submitting`` -> ``open`` -> ``committing`` -> ``finished`` | ``closed``).
Every change is one transaction; checks that must not be split from their
write run under ``BEGIN IMMEDIATE``.  The schema version lives in
``PRAGMA user_version`` and is raised by the ordered migrations below.
"""

from __future__ import annotations

import errno
import json
import os
import sqlite3
import time
import urllib.parse
import uuid
from collections.abc import Collection, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from datalad_slurm.errors import DataladSlurmError, os_advice
from datalad_slurm.globs import is_glob, reserved_path, reserved_paths
from datalad_slurm.paths import ancestors, collapse, lies_in

REGISTRY_DIRNAME = "datalad-slurm"
REGISTRY_FILENAME = "registry.sqlite"

#: states in which a job holds its output reservations
HOLDING_STATES = ("submitting", "open", "committing")

_MIGRATIONS: list[str] = [
    # 1: jobs and their reservations
    """
    CREATE TABLE jobs (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        token TEXT NOT NULL UNIQUE,
        job_id INTEGER,
        cluster TEXT,
        state TEXT NOT NULL CHECK (state IN
            ('submitting', 'open', 'committing', 'finished', 'closed')),
        cmd TEXT NOT NULL,
        pwd TEXT NOT NULL,
        inputs TEXT NOT NULL,
        extra_inputs TEXT NOT NULL,
        outputs TEXT NOT NULL,
        chain TEXT NOT NULL,
        message TEXT,
        dsid TEXT,
        submitted_from TEXT,
        submitted_at REAL NOT NULL,
        finished_at REAL,
        commit_sha TEXT,
        note TEXT
    );
    CREATE INDEX jobs_by_job_id ON jobs (job_id);
    CREATE INDEX jobs_by_state ON jobs (state);
    CREATE TABLE reservations (
        path TEXT PRIMARY KEY,
        job INTEGER NOT NULL REFERENCES jobs (id) ON DELETE CASCADE
    );
    CREATE INDEX reservations_by_job ON reservations (job);
    """,
    # 2: what slurmctld said about the job at submission (log patterns, name, user), as JSON
    """
    ALTER TABLE jobs ADD COLUMN submission_facts TEXT;
    """,
    # 3: the trouble 'finish --cron' last reported for the job (so that cron reports news only)
    """
    ALTER TABLE jobs ADD COLUMN cron_reported TEXT;
    """,
    # 4: which globs the record keeps expanded ('inputs', 'outputs', 'both'; NULL: none)
    """
    ALTER TABLE jobs ADD COLUMN expand TEXT;
    """,
    # 5: the open jobs whose outputs or logs the job's inputs overlap ([[row id, Slurm job id],
    # ...]; finish commits them first), and the --dependency Slurm was given for it (ours
    # joined with the user's; NULL: none set by us)
    """
    ALTER TABLE jobs ADD COLUMN depends_on TEXT NOT NULL DEFAULT '[]';
    ALTER TABLE jobs ADD COLUMN dependency TEXT;
    """,
    # 6: the scratch folder the job runs in (``schedule --alt-dir``; NULL: in the dataset)
    """
    ALTER TABLE jobs ADD COLUMN alt_dir TEXT;
    """,
]

SCHEMA_VERSION = len(_MIGRATIONS)


class RegistryError(DataladSlurmError, RuntimeError):
    """The registry cannot do what was asked (the message says why)."""


def _failure(path: str, exc: sqlite3.Error | OSError) -> RegistryError:
    """What SQLite (or the file system) said, with the registry's path and what to do."""
    folder = os.path.dirname(path)
    if isinstance(exc, OSError):
        why = exc.strerror or str(exc)
        return RegistryError(
            f"the job registry {path} failed ({why})", path=path, advice=os_advice(exc, folder)
        )
    why = str(exc)
    words = why.lower()
    if "full" in words:
        advice = os_advice(OSError(errno.ENOSPC, why), folder)
    elif "readonly" in words or "unable to open" in words:
        advice = (
            f"{folder} and the file in it must be writable for you (datalad-slurm keeps its "
            "state there): fix their permissions, or run the command as the dataset's owner"
        )
    elif "locked" in words or "busy" in words:
        advice = "another datalad-slurm command holds it: try again when that has ended"
    elif isinstance(exc, sqlite3.DatabaseError) and not isinstance(exc, sqlite3.OperationalError):
        return RegistryError(
            f"the job registry {path} is damaged ({why})",
            path=path,
            advice=f"put back a copy from a backup, or move it aside ('mv {path} "
            f"{path}.damaged'): the next command starts a new registry, which knows none of "
            "the open jobs (commit their outputs with 'datalad save')",
        )
    else:
        advice = f"check the file and the disk that holds {folder}"
    return RegistryError(f"the job registry {path} failed ({why})", path=path, advice=advice)


class OutputConflictError(RegistryError):
    """Outputs overlap with those of a job that is still open.

    ``declared`` are the outputs asked for: a glob among them is named with the folder it
    holds (as are the globs of the open job).
    """

    def __init__(
        self, conflicts: Sequence[tuple[str, str, Job]], declared: Sequence[str] = ()
    ) -> None:
        self.conflicts = list(conflicts)
        parts = []
        for wanted, held, job in self.conflicts:
            owner = f"job {job.job_id}" if job.job_id is not None else "a submission in progress"
            parts.append(
                f"{_as_declared(wanted, declared)} overlaps "
                f"{_as_declared(held, job.outputs)} of open {owner}"
            )
        super().__init__(
            "output conflict: " + "; ".join(parts) + ". Finish or close that job first"
            " ('datalad finish', or 'datalad finish --close-failed-jobs')"
        )


def _as_declared(reserved: str, declared: Sequence[str]) -> str:
    """A reserved path as the user sees it: the glob(s) it holds for, if any."""
    globs = [d for d in declared if is_glob(d) and reserved_path(d) == reserved]
    if not globs:
        return repr(reserved)
    return f"{reserved!r} (held for the glob {', '.join(repr(g) for g in globs)})"


@dataclass
class Job:
    """One registered submission."""

    id: int
    token: str
    job_id: int | None
    cluster: str | None
    state: str
    cmd: str
    pwd: str
    inputs: list[str]
    extra_inputs: list[str]
    outputs: list[str]
    chain: list[str]
    message: str | None
    dsid: str | None
    submitted_from: str | None
    submitted_at: float
    finished_at: float | None = None
    commit_sha: str | None = None
    note: str | None = None
    #: ``stdout``/``stderr`` patterns, ``name``, ``user`` as slurmctld had them at submission;
    #: for a job taken over from datalad-slurm 0.2.8 the log files it found (``imported_logs``)
    submission_facts: dict[str, Any] = field(default_factory=dict)
    #: what ``finish --cron`` last reported about the job (None: nothing, or it was active since)
    cron_reported: str | None = None
    #: which of inputs/outputs the record keeps with globs expanded (``datalad run --expand``)
    expand: str | None = None
    #: the jobs it waits for: ``(row id, Slurm job id)`` of each open job whose outputs or
    #: logs its inputs overlapped at submission (``jobs/pipelines.py``)
    depends_on: list[tuple[int, int]] = field(default_factory=list)
    #: the ``--dependency`` Slurm was given for it by schedule (None: none set)
    dependency: str | None = None
    #: the scratch folder (absolute, resolved) the job runs in, mirroring the dataset's
    #: layout (``schedule --alt-dir``; None: it runs in the dataset)
    alt_dir: str | None = None

    @classmethod
    def from_row(cls, row: sqlite3.Row) -> Job:
        # a read-only look (schedule --dry-run) may meet a registry of an older schema
        columns = set(row.keys())
        return cls(
            id=row["id"],
            token=row["token"],
            job_id=row["job_id"],
            cluster=row["cluster"],
            state=row["state"],
            cmd=row["cmd"],
            pwd=row["pwd"],
            inputs=_json_list(row["inputs"]),
            extra_inputs=_json_list(row["extra_inputs"]),
            outputs=_json_list(row["outputs"]),
            chain=_json_list(row["chain"]),
            message=row["message"],
            dsid=row["dsid"],
            submitted_from=row["submitted_from"],
            submitted_at=row["submitted_at"],
            finished_at=row["finished_at"],
            commit_sha=row["commit_sha"],
            note=row["note"],
            submission_facts=json.loads(
                (row["submission_facts"] if "submission_facts" in columns else None) or "{}"
            ),
            cron_reported=row["cron_reported"] if "cron_reported" in columns else None,
            expand=row["expand"] if "expand" in columns else None,
            depends_on=[
                (int(row_id), int(job_id))
                for row_id, job_id in _json_list(
                    row["depends_on"] if "depends_on" in columns else "[]"
                )
            ],
            dependency=row["dependency"] if "dependency" in columns else None,
            alt_dir=row["alt_dir"] if "alt_dir" in columns else None,
        )


def _json_list(text: str) -> list[Any]:
    """A list column; most are empty, and ``json.loads`` costs ~3 us even for ``[]`` (a listing of
    10,000 jobs reads 40,000 of them)."""
    if text == "[]":
        return []
    loaded: list[Any] = json.loads(text)
    return loaded


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
                self._refuse_newer(version)
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
            raise _failure(self.path, exc) from exc

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
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            self._refuse_newer(version)
            for number in range(version, SCHEMA_VERSION):
                for statement in _split_sql(_MIGRATIONS[number]):
                    conn.execute(statement)
            if version != SCHEMA_VERSION:
                conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")

    def _refuse_newer(self, version: int) -> None:
        if version > SCHEMA_VERSION:
            raise RegistryError(
                f"the job registry {self.path} has schema version {version}, newer than this "
                f"datalad-slurm understands ({SCHEMA_VERSION})",
                path=self.path,
                advice="a newer datalad-slurm wrote it: upgrade datalad-slurm to use it",
            )

    # -- schedule -------------------------------------------------------------

    def conflicts(self, outputs: Sequence[str]) -> list[tuple[str, str, Job]]:
        """What :meth:`reserve` would refuse these outputs for, without reserving anything."""
        with self.transaction(immediate=False) as conn:
            return self._conflicts(conn, collapse(reserved_paths(outputs)))

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
            return self._insert(
                conn,
                lists,
                state="submitting",
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
            return self._insert(
                conn,
                {
                    "inputs": inputs,
                    "extra_inputs": extra_inputs,
                    "outputs": outputs,
                    "chain": chain,
                },
                state="open",
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

    def _insert(
        self, conn: sqlite3.Connection, lists: dict[str, Sequence[str]], **columns: Any
    ) -> Job:
        """A new job row (the columns given, the list columns as JSON, a new token) holding
        its outputs, unless an open job holds any of them (OutputConflictError); inside the
        caller's transaction."""
        wanted = collapse(reserved_paths(lists["outputs"]))
        conflicts = self._conflicts(conn, wanted)
        if conflicts:
            raise OutputConflictError(conflicts, lists["outputs"])
        values = {
            "token": uuid.uuid4().hex,
            "submitted_at": time.time(),
            **{name: json.dumps(list(paths)) for name, paths in lists.items()},
            **columns,
        }
        names = ", ".join(values)
        marks = ", ".join("?" * len(values))
        cursor = conn.execute(f"INSERT INTO jobs ({names}) VALUES ({marks})", list(values.values()))
        row_id = cursor.lastrowid
        conn.executemany(
            "INSERT INTO reservations (path, job) VALUES (?, ?)",
            [(path, row_id) for path in wanted],
        )
        row = conn.execute("SELECT * FROM jobs WHERE id = ?", (row_id,)).fetchone()
        return Job.from_row(row)

    def _conflicts(
        self, conn: sqlite3.Connection, wanted: Sequence[str]
    ) -> list[tuple[str, str, Job]]:
        found: list[tuple[str, str, Job]] = []
        for path in wanted:
            held_rows = []
            candidates = [path, *ancestors(path)]
            marks = ",".join("?" * len(candidates))
            held_rows += conn.execute(
                f"SELECT path, job FROM reservations WHERE path IN ({marks})", candidates
            ).fetchall()
            if path == ".":
                held_rows += conn.execute(
                    "SELECT path, job FROM reservations WHERE path != '.'"
                ).fetchall()
            else:
                # every path below `path`: '0' sorts right after '/'
                held_rows += conn.execute(
                    "SELECT path, job FROM reservations WHERE path > ? AND path < ?",
                    (path + "/", path + "0"),
                ).fetchall()
            for held in held_rows:
                job_row = conn.execute("SELECT * FROM jobs WHERE id = ?", (held["job"],)).fetchone()
                found.append((path, held["path"], Job.from_row(job_row)))
        return found

    def providers(self, paths: Sequence[str], job: Job | None) -> list[tuple[str, str, Job]]:
        """The other jobs holding what these paths overlap (an input a job writes: its output
        or log), as ``(path, held path, job)``, oldest job first; a glob by its fixed leading
        folder."""
        with self.transaction(immediate=False) as conn:
            found = self._conflicts(conn, collapse(reserved_paths(paths)))
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
            conn.execute(
                "UPDATE jobs SET job_id = ?, cluster = ?, state = 'open' WHERE id = ?",
                (job_id, cluster, job.id),
            )
        job.job_id, job.cluster, job.state = job_id, cluster, "open"
        return job

    # -- log files (submitted held; see scheduling.Submitter.settle) ----------

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
    ) -> dict[int, list[tuple[str, str, Job]]]:
        """Reserve each held job's log paths beside its outputs and open it, in one
        transaction, in the given order.  A job whose logs overlap what another job holds
        (or what a job before it here just took) is left as it is; its conflicts are returned
        by its row id.  ``waits_for``: row ids of jobs among the claims that a job depends
        on; when one of them is refused, so is the job (with no conflicts of its own)."""
        refused: dict[int, list[tuple[str, str, Job]]] = {}
        waits_for = waits_for or {}
        with self.transaction() as conn:
            for job, logs in claims:
                if any(row in refused for row in waits_for.get(job.id, ())):
                    refused[job.id] = []
                    continue
                own = [
                    row["path"]
                    for row in conn.execute(
                        "SELECT path FROM reservations WHERE job = ?", (job.id,)
                    )
                ]
                wanted = [p for p in collapse(logs) if not any(lies_in(p, o) for o in own)]
                conflicts = [c for c in self._conflicts(conn, wanted) if c[2].id != job.id]
                if conflicts:
                    refused[job.id] = conflicts
                    continue
                conn.executemany(
                    "INSERT INTO reservations (path, job) VALUES (?, ?)",
                    [(path, job.id) for path in wanted if path not in own],
                )
                conn.execute("UPDATE jobs SET state = 'open' WHERE id = ?", (job.id,))
        for job, _ in claims:
            if job.id not in refused:
                job.state = "open"
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
            conn.execute("DELETE FROM jobs WHERE id = ? AND state = 'submitting'", (job.id,))

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
        """Note that commits for these jobs are being written (see ``committer.recover``)."""
        with self.transaction() as conn:
            conn.executemany(
                "UPDATE jobs SET state = 'committing' WHERE id = ?", [(job.id,) for job in jobs]
            )
        for job in jobs:
            job.state = "committing"

    def mark_finished(self, job: Job, commit_sha: str | None, state: str = "finished") -> None:
        """Close the job and release its reservations, in one transaction."""
        self.mark_finished_many([(job, commit_sha)], state)

    def mark_finished_many(
        self, jobs: Sequence[tuple[Job, str | None]], state: str = "finished"
    ) -> None:
        """Close the jobs (with their commits) and release their reservations at once."""
        now = time.time()
        with self.transaction() as conn:
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
        """Commit attempts left no commit behind: the jobs are open again."""
        with self.transaction() as conn:
            conn.executemany(
                "UPDATE jobs SET state = 'open' WHERE id = ? AND state = 'committing'",
                [(job.id,) for job in jobs],
            )
        for job in jobs:
            job.state = "open"

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


def _split_sql(script: str) -> list[str]:
    return [part.strip() for part in script.split(";") if part.strip()]
