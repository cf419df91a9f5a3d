"""What a finished job's commit holds: its files, its env.json facts and its run record.

Pure preparation, no git: the committer decides how these become commits.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from typing import Any

from datalad_slurm.commit.jobfiles import JobFiles, find_job_files
from datalad_slurm.commit.message import REGISTRATION_KEY, RunRecord, format_message
from datalad_slurm.errors import DataladSlurmError, os_advice
from datalad_slurm.globs import expand, output_paths, unmatched
from datalad_slurm.jobs.job import Job
from datalad_slurm.slurm.resources import Resources, job_totals
from datalad_slurm.slurm.state import JobStatus, sorted_tasks

RECORD_VERSION = 1


def status_word(status: JobStatus) -> str:
    """``Completed``, ``Failed``, ``Out of memory``: the subject's last word(s)."""
    return status.summary_state.replace("_", " ").capitalize()


def job_facts(job: Job, status: JobStatus) -> dict[str, Any]:
    """What env.json holds: everything Slurm told us about the job's end."""
    tasks: dict[str, dict[str, Any]] = {}
    for label, task in sorted_tasks(status.tasks):
        tasks[label] = {
            "state": task.state.value,
            "exit_code": task.exit_code,
            "signal": task.signal,
            "derived_exit_code": task.derived_exit_code,
            "submit_time": task.submit_time,
            "start_time": task.start_time,
            "end_time": task.end_time,
            "stdout": task.stdout,
            "stderr": task.stderr,
            "work_dir": task.work_dir,
            "reason": task.reason,
        }
        if task.resources is not None and task.resources.figures:
            tasks[label]["resources"] = task.resources.to_json()
    totals = job_resources(status)
    return {
        "slurm_job_id": job.job_id,
        "cluster": _cluster(job, status),
        "state": status.summary_state,
        "tasks": tasks,
        **({"resources": totals.to_json()} if totals is not None and totals.figures else {}),
        "backend": status.backend,
        "data_parser": status.data_parser,
        "cmd": job.cmd,
        "pwd": job.pwd,
        "submitted_at": job.submitted_at,
        # the jobs whose outputs it read (committed before it) and its --dependency in Slurm
        "depends_on": [job_id for _, job_id in job.depends_on],
        "dependency": job.dependency,
    }


def job_resources(status: JobStatus) -> Resources | None:
    """What the job's tasks were given and used, added up (:func:`resources.job_totals`)."""
    return job_totals(task.resources for _, task in sorted_tasks(status.tasks))


#: the record's key for each figure of :class:`Resources`
RESOURCE_KEYS = {
    "elapsed": "slurm_elapsed",
    "total_cpu": "slurm_total_cpu",
    "max_rss": "slurm_max_rss",
    "req_tres": "slurm_req_tres",
    "alloc_tres": "slurm_alloc_tres",
    "nodes": "slurm_nodes",
    "partition": "slurm_partition",
    "account": "slurm_account",
    "qos": "slurm_qos",
}


def resource_keys(status: JobStatus) -> dict[str, Any]:
    """The record's ``slurm_*`` keys for the figures known of the whole job; none for a
    figure nobody gave."""
    totals = job_resources(status)
    figures = totals.figures if totals is not None else {}
    return {RESOURCE_KEYS[name]: value for name, value in figures.items()}


def _cluster(job: Job, status: JobStatus) -> str | None:
    clusters = {t.cluster for t in status.tasks.values() if t.cluster}
    return job.cluster or (sorted(clusters)[0] if clusters else None)


def record_outputs(dataset_path: str, job: Job) -> list[str]:
    """The declared outputs as the record keeps them: as given (globs too), or with
    ``--expand outputs``/``both`` what they match now, as ``datalad run`` records them."""
    if job.expand in ("outputs", "both"):
        return expand(job.outputs, dataset_path)
    return list(job.outputs)


def build_record(
    job: Job, status: JobStatus, files: JobFiles, outputs: Sequence[str] | None = None
) -> RunRecord:
    """The job's run record; ``outputs`` are the declared ones as recorded (default: as given)."""
    declared = list(job.outputs if outputs is None else outputs)
    tasks = [task for _, task in sorted_tasks(status.tasks)]
    exit_codes = [t.exit_code for t in tasks if t.exit_code is not None]
    starts = [t.start_time for t in tasks if t.start_time]
    ends = [t.end_time for t in tasks if t.end_time]
    submits = [t.submit_time for t in tasks if t.submit_time]
    assert job.job_id is not None
    return RunRecord(
        cmd=job.cmd,
        dsid=job.dsid,
        slurm_job_id=job.job_id,
        pwd=job.pwd,
        inputs=list(job.inputs),
        extra_inputs=list(job.extra_inputs),
        outputs=[*declared, *[p for p in files.all if p not in declared]],
        slurm_outputs=files.all,
        chain=list(job.chain),
        commit_id=None,
        extra={
            "slurm_record_version": RECORD_VERSION,
            "slurm_cluster": _cluster(job, status),
            "slurm_state": status.summary_state,
            "slurm_exit_code": max(exit_codes) if exit_codes else None,
            "slurm_task_states": {t.label: t.state.value for t in tasks},
            "slurm_submit_time": min(submits) if submits else int(job.submitted_at),
            "slurm_start_time": min(starts) if starts else None,
            "slurm_end_time": max(ends) if ends else None,
            "slurm_submitted_from": job.submitted_from,
            **resource_keys(status),
            REGISTRATION_KEY: job.token,
            **_dependency_keys(job),
            # where it ran instead of the dataset (--alt-dir), as 0.2.8 recorded it
            **({"slurm_alt_dir": job.alt_dir} if job.alt_dir else {}),
        },
    )


def _dependency_keys(job: Job) -> dict[str, Any]:
    """The record's keys for a job that read other jobs' outputs (none for the others):
    those jobs' ids, whose records come before this one, and the ``--dependency`` it ran
    with."""
    if not job.depends_on and not job.dependency:
        return {}
    return {
        "slurm_dependencies": [job_id for _, job_id in job.depends_on],
        "slurm_dependency": job.dependency,
    }


class JobFileError(DataladSlurmError):
    """A file finish writes for the job (its env.json) cannot be written."""


@dataclass
class PreparedCommit:
    """One job's commit, ready to be written: its message and the paths it covers."""

    job: Job
    status: JobStatus
    files: JobFiles
    #: the commit message ("" until :func:`write_record` wrote the record)
    message: str
    #: the paths the declared outputs stand for now (a glob's matches: ``globs.output_paths``)
    outputs: list[str]
    #: declared outputs that were not there at finish, globs that match nothing (the commit
    #: holds what exists)
    missing_outputs: list[str] = field(default_factory=list)
    #: what was copied back from the job's scratch folder (``--alt-dir``), to be removed
    #: there once the commit exists
    brought_back: list[str] = field(default_factory=list)

    @property
    def paths(self) -> list[str]:
        """Dataset-relative paths whose changes belong to this job's commit."""
        return [*self.outputs, *[p for p in self.files.all if p not in self.outputs]]


def replace_file(path: str, content: bytes) -> None:
    """Put a new file at ``path``, whatever is there: never write through a link.

    A retried finish finds the file it wrote before as an annex symlink, or hard-linked to
    an annex object, or read-only: opening it for writing would rewrite (or fail on) content
    that git-annex holds immutable. So the content goes into a new file beside it, which
    replaces the old entry by one ``rename``. Its name is fixed, so what a killed run left
    is taken over by the next (callers hold the dataset's lock); its mode is what ``open``
    would give.
    """
    temporary = _temporary(path)
    with contextlib.suppress(FileNotFoundError):
        os.unlink(temporary)
    handle = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o666)
    try:
        with os.fdopen(handle, "wb") as stream:
            stream.write(content)
        os.rename(temporary, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)
        raise


def _temporary(path: str) -> str:
    """Where :func:`replace_file` writes the new content of ``path`` before the rename."""
    folder, name = os.path.split(path)
    return os.path.join(folder, f".{name}.datalad-slurm-tmp")


def plan_commit(
    dataset_path: str,
    job: Job,
    status: JobStatus,
    gone: Collection[str] = (),
    missing: Sequence[str] | None = None,
) -> PreparedCommit:
    """The job's commit as far as it is known before its record: its files and paths (no
    env.json written yet, no message; :func:`write_record` adds them).

    ``gone``: tracked paths that are no longer on disk, for the job's output globs to match
    (a file the job deleted is part of its commit). ``missing``: the declared outputs the
    job did not leave, where they are not to be looked up in the dataset (a job run in a
    scratch folder: those it did not leave there).

    A temporary env.json that a finish killed while writing it left is removed now: the
    job's files are staged before its record is written, and it would be among them.
    """
    files = find_job_files(dataset_path, job, status)
    with contextlib.suppress(OSError):  # none there (or none removable: writing it fails later)
        os.unlink(_temporary(os.path.join(dataset_path, files.env_json)))
    return PreparedCommit(
        job,
        status,
        files,
        "",
        outputs=output_paths(dataset_path, job.outputs, gone),
        missing_outputs=(missing_outputs(dataset_path, job) if missing is None else list(missing)),
    )


def write_record(dataset_path: str, prepared: PreparedCommit, message: str | None = None) -> None:
    """Write the job's env.json and compose its commit message, from ``prepared.status``
    (JobFileError when the env.json cannot be written)."""
    job, status, files = prepared.job, prepared.status, prepared.files
    env_path = os.path.join(dataset_path, files.env_json)
    text = json.dumps(job_facts(job, status), indent=1, sort_keys=True) + "\n"
    try:
        os.makedirs(os.path.dirname(env_path), exist_ok=True)
        replace_file(env_path, text.encode("utf-8"))
    except OSError as exc:
        raise JobFileError(
            f"its env.json {env_path} could not be written ({exc.strerror or exc})",
            path=env_path,
            advice=os_advice(exc, os.path.dirname(env_path)),
        ) from exc
    record = build_record(job, status, files, record_outputs(dataset_path, job))
    prepared.message = format_message(record, status_word(status), message or job.message)


def prepare_commit(
    dataset_path: str,
    job: Job,
    status: JobStatus,
    message: str | None = None,
    gone: Collection[str] = (),
    missing: Sequence[str] | None = None,
) -> PreparedCommit:
    """Write the job's env.json and compose its commit message."""
    prepared = plan_commit(dataset_path, job, status, gone, missing)
    write_record(dataset_path, prepared, message)
    return prepared


def missing_outputs(dataset_path: str, job: Job) -> list[str]:
    """The job's declared outputs that do not exist, and its globs that match nothing: one
    lstat (a glob: one glob) each, no git."""
    return unmatched(dataset_path, job.outputs)
