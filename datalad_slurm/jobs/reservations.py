"""Output reservations: which paths a job holds, and who holds what a request overlaps.

It owns the registry's ``reservations`` table: the lookups (:func:`holders`: a path, its
ancestors and everything below it, a glob by its fixed leading folder), a new job row with
the outputs it holds (:func:`insert_holding`), a held job's log files added
(:func:`add_paths`; the jobs left held: :class:`Refusals`), and :class:`OutputConflictError`
with its message.  The registry calls them inside its transactions; nothing here opens one.
"""

from __future__ import annotations

import json
import sqlite3
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from datalad_slurm.globs import is_glob, reserved_path, reserved_paths
from datalad_slurm.jobs.job import Job
from datalad_slurm.jobs.schema import RegistryError
from datalad_slurm.paths import ancestors, collapse, lies_in


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


def holders(conn: sqlite3.Connection, wanted: Sequence[str]) -> list[tuple[str, str, Job]]:
    """Each reservation overlapping a wanted path, as ``(wanted, held, holding job)``."""
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


def insert_holding(
    conn: sqlite3.Connection, lists: dict[str, Sequence[str]], **columns: Any
) -> Job:
    """A new job row (the columns given, the list columns as JSON, a new token) holding its
    outputs, unless an open job holds any of them (OutputConflictError); inside the caller's
    transaction."""
    wanted = collapse(reserved_paths(lists["outputs"]))
    conflicts = holders(conn, wanted)
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


def add_paths(
    conn: sqlite3.Connection, row_id: int, paths: Sequence[str]
) -> list[tuple[str, str, Job]]:
    """Reserve more paths for a job (a held job's log files) beside what it holds, unless
    another job holds any of them: then nothing is reserved and its conflicts are returned;
    inside the caller's transaction."""
    own = [
        row["path"]
        for row in conn.execute("SELECT path FROM reservations WHERE job = ?", (row_id,))
    ]
    wanted = [p for p in collapse(paths) if not any(lies_in(p, o) for o in own)]
    conflicts = [c for c in holders(conn, wanted) if c[2].id != row_id]
    if not conflicts:
        conn.executemany(
            "INSERT INTO reservations (path, job) VALUES (?, ?)",
            [(path, row_id) for path in wanted if path not in own],
        )
    return conflicts


@dataclass
class Refusals:
    """The held jobs ``Registry.open_with_logs`` left as they were, by row id."""

    #: what each one's logs overlap; [] for a job that waits for a refused one
    conflicts: dict[int, list[tuple[str, str, Job]]] = field(default_factory=dict)
    #: closed meanwhile (``finish --close-failed-jobs`` of a schedule stalled 10 minutes)
    closed: set[int] = field(default_factory=set)

    def __bool__(self) -> bool:
        return bool(self.conflicts or self.closed)

    def __contains__(self, row_id: object) -> bool:
        """Whether the job of that row was left held, for either reason."""
        return row_id in self.conflicts or row_id in self.closed
