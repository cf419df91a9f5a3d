"""Reading datalad-slurm 0.2.8's registry (and 0.2.5-0.2.7's): where the files are, their
rows as they are stored (:class:`OldJob`), and each row in our frame (:func:`adopted`), or
:class:`MigrationError` for one we cannot take.

Those versions kept each dataset's open jobs in an SQLite file in the dataset's ``.git``
folder: ``<dataset id>.db`` (``datalad-slurm.db`` without an id) from 0.2.7 on,
``dataset-slurm-<dataset id>.db`` (``dataset-slurm.db``) before.  Its table ``open_jobs``
has one row per open job: ``slurm_job_id``, ``message``, ``cmd`` (as written, placeholders
unexpanded), ``dsid``, ``pwd`` (the directory submitted from, relative to the dataset root),
JSON lists ``chain``, ``inputs`` and ``extra_inputs`` (relative to ``pwd``), ``outputs``
(relative to the root: ``./out``, ``sub/out``) and ``slurm_outputs`` (the job's log files as
scontrol named them at submission, then ``slurm-job-<id>.env.json``, relative to ``pwd``),
and ``alt_dir`` (the folder the job ran in instead, or ``''``: the same layout as our
``schedule --alt-dir``, so such a job is taken over with it and ``finish`` brings its outputs
back from there).  Its reservations
(``locked_names``, ``locked_prefixes``) are the outputs again, and are not read.  The file is
only read here (read-only), never changed.
"""

from __future__ import annotations

import fnmatch
import hashlib
import json
import os
import posixpath
import sqlite3
import urllib.parse
from dataclasses import dataclass
from typing import Any

from datalad_slurm.jobs import altdir
from datalad_slurm.paths import PathOutsideDatasetError, normalise

#: the start of the registry note of a job taken over from 0.2.8 (the note is its key)
NOTE_PREFIX = "imported from datalad-slurm 0.2.8"


class MigrationError(ValueError):
    """A job of 0.2.8 that cannot be taken over; the message says why and what to do."""


@dataclass(frozen=True)
class OldJob:
    """One row of 0.2.8's ``open_jobs``, as it is stored."""

    job_id: int
    cmd: str
    message: str | None
    dsid: str | None
    pwd: str
    chain: list[str]
    inputs: list[str]
    extra_inputs: list[str]
    outputs: list[str]
    slurm_outputs: list[str]
    alt_dir: str

    def note(self, registry_name: str) -> str:
        """The job's key in our registry: the file it came from and what it was."""
        content = json.dumps(
            [self.job_id, self.cmd, self.pwd, self.outputs, self.inputs, self.message],
            sort_keys=True,
        )
        digest = hashlib.sha256(content.encode("utf-8")).hexdigest()[:16]
        return f"{NOTE_PREFIX} (.git/{registry_name}, job {self.job_id}, {digest})"


@dataclass(frozen=True)
class Adopted:
    """What an old job is in our registry's terms (every path relative to the dataset root)."""

    pwd: str
    inputs: list[str]
    extra_inputs: list[str]
    outputs: list[str]
    logs: list[str]
    #: the scratch folder it ran in (0.2.8's ``--alt-dir``, resolved), None: the dataset
    alt_dir: str | None = None


def old_registries(ds: Any) -> list[str]:
    """The registry files of 0.2.5-0.2.8 in the dataset's ``.git`` folder (where those
    versions kept them; a ``.git`` file, as in a submodule, held none).  One listing of the
    folder; the dataset id is read only when a ``.db`` file is there."""
    folder = os.path.join(str(ds.path), ".git")
    try:
        names = [name for name in os.listdir(folder) if name.endswith(".db")]
    except (NotADirectoryError, FileNotFoundError):
        return []
    if not names:
        return []
    dsid = getattr(ds, "id", None)
    fixed = {"datalad-slurm.db", *([f"{dsid}.db"] if dsid else [])}
    wanted = [n for n in names if n in fixed or fnmatch.fnmatch(n, "dataset-slurm*.db")]
    return sorted(
        path for path in (os.path.join(folder, name) for name in wanted) if os.path.isfile(path)
    )


def read_old_registry(path: str) -> list[OldJob]:
    """The open jobs in one 0.2.8 registry file, read without changing it."""
    uri = "file:" + urllib.parse.quote(os.path.abspath(path)) + "?mode=ro"
    try:
        conn = sqlite3.connect(uri, uri=True, timeout=30.0)
    except sqlite3.Error as exc:
        raise MigrationError(f"it cannot be opened: {exc}") from exc
    try:
        conn.row_factory = sqlite3.Row
        known = {
            row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
        }
        if "open_jobs" not in known:
            return []  # 0.2.8 made the file (slurm-finish does) but never scheduled a job
        return [_old_job(row) for row in conn.execute("SELECT * FROM open_jobs ORDER BY rowid")]
    except (sqlite3.Error, ValueError, TypeError) as exc:
        raise MigrationError(f"it is not a registry 0.2.8 wrote: {exc}") from exc
    finally:
        conn.close()


def _old_job(row: sqlite3.Row) -> OldJob:
    columns = set(row.keys())

    def text(name: str) -> str | None:
        value = row[name] if name in columns else None
        return None if value is None else str(value)

    def listed(name: str) -> list[str]:
        value = json.loads(text(name) or "[]")
        if not isinstance(value, list):
            raise ValueError(f"{name} of job {row['slurm_job_id']} is not a JSON list")
        return [str(item) for item in value]

    if row["slurm_job_id"] is None:
        raise ValueError("a row has no slurm_job_id")
    return OldJob(
        job_id=int(row["slurm_job_id"]),
        cmd=text("cmd") or "",
        message=text("message") or None,
        dsid=text("dsid"),
        pwd=text("pwd") or ".",
        chain=listed("chain"),
        inputs=listed("inputs"),
        extra_inputs=listed("extra_inputs"),
        outputs=listed("outputs"),
        slurm_outputs=listed("slurm_outputs"),
        alt_dir=text("alt_dir") or "",
    )


def adopted(dataset_path: str, old: OldJob) -> Adopted:
    """Our frame for an old job's paths; raises MigrationError for a job we cannot take."""
    scratch = _scratch(dataset_path, old)
    if not old.cmd:
        raise MigrationError("its command is empty")
    if not old.outputs:
        raise MigrationError("it names no outputs")
    try:
        pwd = normalise(old.pwd, dataset_path, dataset_path)
        workdir = os.path.join(dataset_path, pwd)
        outputs = [normalise(path, dataset_path, dataset_path) for path in old.outputs]
        inputs = [normalise(path, dataset_path, workdir) for path in old.inputs]
        extra = [normalise(path, dataset_path, workdir) for path in old.extra_inputs]
    except (PathOutsideDatasetError, ValueError) as exc:
        raise MigrationError(
            f"{exc}; finish it with datalad-slurm 0.2.8 "
            f"('datalad slurm-finish --slurm-job-id {old.job_id}') or commit its outputs by hand"
        ) from exc
    logs: list[str] = []
    env_json = f"slurm-job-{old.job_id}.env.json"
    # 0.2.8 noted the logs of a job run in its --alt-dir relative to that folder, which
    # mirrors the dataset: relative to the dataset's root here
    logs_from = dataset_path if scratch else workdir
    for path in old.slurm_outputs:
        if not path or posixpath.basename(path) == env_json:
            continue  # finish writes its own env.json, in the same place
        try:
            log = normalise(path, dataset_path, logs_from)
        except (PathOutsideDatasetError, ValueError):
            continue  # a log outside the dataset is not committed, as by 0.2.8
        if log not in logs:
            logs.append(log)
    return Adopted(
        pwd=pwd,
        inputs=_unique(inputs),
        extra_inputs=_unique(extra),
        outputs=_unique(outputs),
        logs=logs,
        alt_dir=scratch,
    )


def _scratch(dataset_path: str, old: OldJob) -> str | None:
    """The folder a job run with 0.2.8's ``--alt-dir`` ran in (0.2.8's finish read a relative
    one from the dataset's root), resolved; it must be there to bring the outputs back from."""
    if not old.alt_dir:
        return None
    try:
        return altdir.scratch_root(old.alt_dir, dataset_path, dataset_path)
    except altdir.AltDirError as exc:
        raise MigrationError(
            f"it ran in 0.2.8's --alt-dir {old.alt_dir}, which cannot be used here ({exc}); make "
            "the folder reachable at that path and run 'datalad finish' again, or finish the job "
            f"with datalad-slurm 0.2.8 ('datalad slurm-finish --slurm-job-id {old.job_id}')"
        ) from exc


def _unique(paths: list[str]) -> list[str]:
    return list(dict.fromkeys(paths))
