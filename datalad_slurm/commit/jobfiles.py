"""The files a job adds beside its outputs: its log files (where Slurm, the submission or
datalad-slurm 0.2.8 put them; in the scratch folder of an ``--alt-dir`` job) and where its
env.json goes; a dataset moved since the job ran is refused rather than committed without
its logs."""

from __future__ import annotations

import os
import posixpath
from dataclasses import dataclass

from datalad_slurm.errors import DataladSlurmError
from datalad_slurm.jobs import altdir
from datalad_slurm.jobs.job import Job
from datalad_slurm.paths import PathOutsideDatasetError, normalise
from datalad_slurm.slurm.backend import expand_filename_pattern
from datalad_slurm.slurm.state import JobStatus, TaskState, sorted_tasks


@dataclass
class JobFiles:
    """Dataset-relative paths of the files a job adds beside its outputs."""

    logs: list[str]
    env_json: str

    @property
    def all(self) -> list[str]:
        return sorted({*self.logs, self.env_json})


def log_candidates(dataset_path: str, job: Job, status: JobStatus) -> list[tuple[str, str]]:
    """Where the job's log files may be, as (the task's work folder, absolute path), in
    order: Slurm's names for each task, the names kept at submission (for backends without
    them), the default name, the files datalad-slurm 0.2.8 found.  A job run in a scratch
    folder (``--alt-dir``) wrote them there (relative names are relative to its work folder
    there)."""
    found: list[tuple[str, str]] = []
    base = job.alt_dir or dataset_path
    # a job taken over from datalad-slurm 0.2.8: the log files it found at submission
    imported = [altdir.place(base, p) for p in job.submission_facts.get("imported_logs", ())]
    for _, task in sorted_tasks(status.tasks):
        work_dir = task.work_dir or altdir.place(base, job.pwd)
        candidates = [task.stdout, task.stderr, *imported]
        if not task.stdout:
            candidates += _submitted_log_names(job, task)
            default = (
                f"slurm-{task.job_id}.out"
                if task.task_id is None
                else f"slurm-{task.job_id}_{task.task_id}.out"
            )
            candidates.append(default)
        for candidate in candidates:
            if candidate:
                absolute = os.path.join(work_dir, candidate)
                if absolute not in (path for _, path in found):
                    found.append((work_dir, absolute))
    return found


def scratch_logs(dataset_path: str, job: Job, status: JobStatus) -> list[str]:
    """The log files a job run in a scratch folder left there, as the dataset-relative paths
    they are brought back to (``finish`` copies them with the outputs)."""
    if not job.alt_dir:
        return []
    logs = []
    for _, absolute in log_candidates(dataset_path, job, status):
        if not os.path.isfile(absolute):
            continue
        mapped = altdir.to_dataset(absolute, job.alt_dir, dataset_path)
        if mapped == absolute:
            continue  # outside the scratch folder: left alone, as a log outside the dataset
        try:
            relative = normalise(mapped, dataset_path)
        except (PathOutsideDatasetError, ValueError):
            continue
        if relative not in logs:
            logs.append(relative)
    return logs


def find_job_files(dataset_path: str, job: Job, status: JobStatus) -> JobFiles:
    """The job's log files that exist inside the dataset, and where env.json goes."""
    logs: list[str] = []
    for work_dir, absolute in log_candidates(dataset_path, job, status):
        if job.alt_dir:  # brought back from the scratch folder to the same place here
            absolute = altdir.to_dataset(absolute, job.alt_dir, dataset_path)
        # a log already annexed by an interrupted finish is a symlink by now
        if not os.path.lexists(absolute):
            if not job.alt_dir:  # a job run in a scratch folder ran elsewhere on purpose
                _refuse_if_moved(dataset_path, job, work_dir, absolute)
            continue
        if os.path.isdir(absolute):
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


class MovedDatasetError(DataladSlurmError):
    """The dataset was moved after the job was scheduled: its logs are not where Slurm
    wrote them, and committing without them would lose them."""


def _refuse_if_moved(dataset_path: str, job: Job, work_dir: str, log: str) -> None:
    """A log Slurm names is missing; if the dataset was moved (the job's folder less its
    ``pwd`` is another place, and the dataset holds the log at the same relative path),
    say so instead of committing the job without it."""
    ran_in = os.path.normpath(work_dir)
    if os.path.realpath(ran_in) == os.path.realpath(os.path.join(dataset_path, job.pwd)):
        return
    old_root = ran_in
    if job.pwd not in (".", ""):
        if not ran_in.endswith("/" + job.pwd):
            return  # the job ran elsewhere on purpose (sbatch --chdir, a cd in the command)
        old_root = ran_in[: -len(job.pwd) - 1] or "/"
    relative = os.path.relpath(os.path.normpath(log), old_root)
    if relative.startswith("..") or not os.path.lexists(os.path.join(dataset_path, relative)):
        return
    raise MovedDatasetError(
        f"Slurm job {job.job_id} ran in {ran_in}, but the dataset is at {dataset_path} now: "
        f"its log {relative} is not where Slurm wrote it",
        path=old_root,
        advice=f"move the dataset back to {old_root}, run 'datalad finish' there, and move "
        "it after that",
    )


def _submitted_log_names(job: Job, task: TaskState) -> list[str]:
    """The log names sbatch was given, from the registry (for backends that lack them)."""
    facts = job.submission_facts
    return [
        expand_filename_pattern(
            facts[key],
            job_id=task.job_id,
            array_job_id=task.job_id if task.task_id is not None else None,
            task_id=task.task_id,
            job_name=facts.get("name"),
            user=facts.get("user"),
        )
        for key in ("stdout", "stderr")
        if facts.get(key)
    ]
