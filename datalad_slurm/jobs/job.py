"""One registered job as read from the registry's ``jobs`` table (:class:`Job`)."""

from __future__ import annotations

import json
import sqlite3
from dataclasses import dataclass, field
from typing import Any

from datalad_slurm.jobs.lifecycle import Phase


@dataclass
class Job:
    """One registered submission."""

    id: int
    token: str
    job_id: int | None
    cluster: str | None
    state: Phase
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
            state=Phase(row["state"]),
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
