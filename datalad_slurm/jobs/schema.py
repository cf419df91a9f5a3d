"""The registry's file: where it lives, its schema and migrations, its errors.

It owns the SQL that creates and migrates the registry (the ordered scripts in
:data:`MIGRATIONS`; the version in ``PRAGMA user_version``), the refusal of a file
newer than this datalad-slurm, and :class:`RegistryError` with the translation of
SQLite's and the file system's errors into one that says what to do.
"""

from __future__ import annotations

import errno
import os
import sqlite3

from datalad_slurm.errors import DataladSlurmError, os_advice

REGISTRY_DIRNAME = "datalad-slurm"
REGISTRY_FILENAME = "registry.sqlite"

MIGRATIONS: list[str] = [
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

SCHEMA_VERSION = len(MIGRATIONS)


class RegistryError(DataladSlurmError, RuntimeError):
    """The registry cannot do what was asked (the message says why)."""


def failure(path: str, exc: sqlite3.Error | OSError) -> RegistryError:
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


def split_sql(script: str) -> list[str]:
    return [part.strip() for part in script.split(";") if part.strip()]


def refuse_newer(path: str, version: int) -> None:
    """A file of a schema newer than ours is never read nor changed."""
    if version > SCHEMA_VERSION:
        raise RegistryError(
            f"the job registry {path} has schema version {version}, newer than this "
            f"datalad-slurm understands ({SCHEMA_VERSION})",
            path=path,
            advice="a newer datalad-slurm wrote it: upgrade datalad-slurm to use it",
        )


def migrate(conn: sqlite3.Connection, path: str) -> None:
    """Bring the registry to :data:`SCHEMA_VERSION`, inside the caller's transaction."""
    version = conn.execute("PRAGMA user_version").fetchone()[0]
    refuse_newer(path, version)
    for number in range(version, SCHEMA_VERSION):
        for statement in split_sql(MIGRATIONS[number]):
            conn.execute(statement)
    if version != SCHEMA_VERSION:
        conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
