"""Turning finished jobs into commits: one commit per job, only its own files.

Each job's declared outputs, its Slurm log files (every array task's) and a
``slurm-job-<id>.env.json`` with its final facts are saved with a
``[DATALAD SLURM RUN]`` record.  The registry row goes to ``committing``
before the save and to ``finished`` after it; a crash in between is
repaired by :func:`recover`, which looks for the job's token in the history,
so no job is committed twice and none is dropped.  Callers hold the
dataset's git lock.
"""

from __future__ import annotations

import json
import os
import posixpath
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from datalad_slurm.git import run_git
from datalad_slurm.paths import PathOutsideDatasetError, normalise
from datalad_slurm.records import RunRecord, format_message
from datalad_slurm.registry import Job, Registry
from datalad_slurm.slurm.state import JobStatus, sorted_tasks

RECORD_VERSION = 1


@dataclass
class JobFiles:
    """Dataset-relative paths of the files a job adds beside its outputs."""

    logs: list[str]
    env_json: str

    @property
    def all(self) -> list[str]:
        return sorted({*self.logs, self.env_json})


def status_word(status: JobStatus) -> str:
    """``Completed``, ``Failed``, ``Out of memory``: the subject's last word(s)."""
    return status.summary_state.replace("_", " ").capitalize()


def find_job_files(dataset_path: str, job: Job, status: JobStatus) -> JobFiles:
    """The job's log files that exist inside the dataset, and where env.json goes."""
    logs: list[str] = []
    for _, task in sorted_tasks(status.tasks):
        work_dir = task.work_dir or os.path.join(dataset_path, job.pwd)
        candidates = [task.stdout, task.stderr]
        if not task.stdout:
            default = (
                f"slurm-{task.job_id}.out"
                if task.task_id is None
                else f"slurm-{task.job_id}_{task.task_id}.out"
            )
            candidates.append(os.path.join(work_dir, default))
        for candidate in candidates:
            if not candidate:
                continue
            absolute = os.path.join(work_dir, candidate)
            if not os.path.isfile(absolute) or os.path.islink(absolute):
                continue
            try:
                relative = normalise(absolute, dataset_path)
            except (PathOutsideDatasetError, ValueError):
                continue
            if relative not in logs:
                logs.append(relative)
    env_dir = posixpath.dirname(logs[0]) if logs else job.pwd
    env_json = posixpath.normpath(posixpath.join(env_dir, f"slurm-job-{job.job_id}.env.json"))
    return JobFiles(logs=logs, env_json=env_json)


def job_facts(job: Job, status: JobStatus) -> dict[str, Any]:
    """What env.json holds: everything Slurm told us about the job's end."""
    tasks = {}
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
    return {
        "slurm_job_id": job.job_id,
        "cluster": _cluster(job, status),
        "state": status.summary_state,
        "tasks": tasks,
        "backend": status.backend,
        "cmd": job.cmd,
        "pwd": job.pwd,
        "submitted_at": job.submitted_at,
    }


def _cluster(job: Job, status: JobStatus) -> str | None:
    clusters = {t.cluster for t in status.tasks.values() if t.cluster}
    return job.cluster or (sorted(clusters)[0] if clusters else None)


def build_record(job: Job, status: JobStatus, files: JobFiles) -> RunRecord:
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
        outputs=[*job.outputs, *[p for p in files.all if p not in job.outputs]],
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
            "slurm_registration": job.token,
        },
    )


def commit_job(
    ds: Any,
    registry: Registry,
    job: Job,
    status: JobStatus,
    message: str | None = None,
) -> Iterator[dict[str, Any]]:
    """Save one job's files with its record; yields DataLad's save results.

    The last result is ``finish`` with status ``ok`` and the new commit, or
    ``error`` when nothing could be committed (the job then stays open).
    """
    dataset_path = str(ds.path)
    files = find_job_files(dataset_path, job, status)
    env_path = os.path.join(dataset_path, files.env_json)
    os.makedirs(os.path.dirname(env_path), exist_ok=True)
    with open(env_path, "w", encoding="utf-8") as stream:
        json.dump(job_facts(job, status), stream, indent=1, sort_keys=True)
        stream.write("\n")
    record = build_record(job, status, files)
    commit_message = format_message(record, status_word(status), message or job.message)
    paths = [
        os.path.join(dataset_path, p)
        for p in [*job.outputs, *files.all]
        if os.path.lexists(os.path.join(dataset_path, p)) or _is_tracked(dataset_path, p)
    ]
    before = ds.repo.get_hexsha()
    registry.mark_committing(job)
    failures: list[str] = []
    for result in ds.save(
        path=paths,
        message=commit_message,
        on_failure="ignore",
        return_type="generator",
        result_renderer="disabled",
    ):
        if result.get("status") in ("error", "impossible"):
            failures.append(f"{result.get('path')}: {result.get('message')}")
        yield result
    after = ds.repo.get_hexsha()
    if after == before:
        # nothing changed on disk that git sees: still record the run
        after = _empty_commit(dataset_path, before, commit_message)
    if after == before or not _has_token(dataset_path, after, job.token):
        registry.reopen(job)
        yield {
            "action": "finish",
            "status": "error",
            "path": dataset_path,
            "type": "dataset",
            "slurm_job_id": job.job_id,
            "message": (
                f"job {job.job_id} could not be committed"
                + (f": {'; '.join(failures)}" if failures else "")
                + "; it stays open, fix the problem and run 'datalad finish' again"
            ),
        }
        return
    registry.mark_finished(job, after)
    yield {
        "action": "finish",
        "status": "ok",
        "path": dataset_path,
        "type": "dataset",
        "slurm_job_id": job.job_id,
        "commit": after,
        "state": status.summary_state,
        "message": f"Slurm job {job.job_id}: {status_word(status)}, committed as {after[:8]}",
    }


def recover(dataset_path: str, registry: Registry) -> list[Job]:
    """Settle jobs left in ``committing`` by an interrupted finish."""
    settled = []
    for job in registry.jobs(states=("committing",)):
        sha = find_commit_with_token(dataset_path, job.token, since=job.submitted_from)
        if sha:
            registry.mark_finished(job, sha)
        else:
            registry.reopen(job)
        settled.append(job)
    return settled


def find_commit_with_token(dataset_path: str, token: str, since: str | None) -> str | None:
    revision = f"{since}..HEAD" if since else "HEAD"
    out = run_git(
        dataset_path, "log", "--format=%H", "-F", f"--grep={token}", revision, check=False
    )
    shas = out.split()
    return shas[0] if shas else None


def _has_token(dataset_path: str, sha: str, token: str) -> bool:
    return token in run_git(dataset_path, "log", "-1", "--format=%B", sha)


def _is_tracked(dataset_path: str, path: str) -> bool:
    out = run_git(dataset_path, "ls-files", "--", path, check=False)
    return bool(out.strip())


def _empty_commit(dataset_path: str, parent: str, message: str) -> str:
    """A commit with the parent's tree, without touching the index."""
    sha = run_git(
        dataset_path, "commit-tree", f"{parent}^{{tree}}", "-p", parent, "-F", "-", stdin=message
    ).strip()
    run_git(dataset_path, "update-ref", "-m", "datalad-slurm: finish", "HEAD", sha, parent)
    return sha
