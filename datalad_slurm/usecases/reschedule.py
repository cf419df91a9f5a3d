"""Reading ``[DATALAD SLURM RUN]`` commits back into schedule requests."""

from __future__ import annotations

import os
import posixpath
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from datalad_slurm.commit.message import RecordError, RunRecord, is_record_message, parse_message
from datalad_slurm.errors import DataladSlurmError
from datalad_slurm.git.runner import GitError, run_git
from datalad_slurm.results import RESCHEDULE, make_result
from datalad_slurm.slurm.jobid import JobIdError, parse_job_id
from datalad_slurm.usecases.request import ScheduleError, ScheduleRequest
from datalad_slurm.usecases.schedule import Submitter


class RescheduleError(DataladSlurmError, RuntimeError):
    """The revision names no Slurm run record that can be submitted again."""


@dataclass
class RecordedJob:
    commit: str
    record: RunRecord

    @property
    def is_ours(self) -> bool:
        """Written by this tool (every path relative to the dataset root) or by 0.2.8."""
        return "slurm_record_version" in self.record.extra

    @property
    def outputs(self) -> list[str]:
        """The declared outputs, relative to the dataset root.  0.2.8 wrote ``outputs``
        relative to the root (``./out``, ``sub/out``), its logs and env.json among them, and
        ``slurm_outputs`` (those logs) relative to ``pwd``."""
        if self.is_ours:
            return self.record.declared_outputs
        own = {self._from_pwd(path) for path in self.record.slurm_outputs}
        declared = [posixpath.normpath(path) for path in self.record.outputs]
        return [path for path in dict.fromkeys(declared) if path not in own]

    @property
    def inputs(self) -> list[str]:
        """The inputs, relative to the dataset root (0.2.8 wrote them relative to ``pwd``)."""
        if self.is_ours:
            return self.record.inputs
        return [self._from_pwd(path) for path in self.record.inputs]

    def _from_pwd(self, path: str) -> str:
        return posixpath.normpath(posixpath.join(self.record.pwd, path))

    def request(self, dataset_path: str, auto_dependency: bool = True) -> ScheduleRequest:
        return ScheduleRequest(
            cmd=self.record.cmd,
            outputs=[os.path.join(dataset_path, p) for p in self.outputs],
            inputs=[os.path.join(dataset_path, p) for p in self.inputs],
            chain=[*self.record.chain, self.commit],
            cwd=os.path.join(dataset_path, self.record.pwd),
            auto_dependency=auto_dependency,
            name=f"the job of commit {self.commit[:8]}",
        )


def _resolve(dataset_path: str, revision: str) -> str:
    try:
        return run_git(
            dataset_path, "rev-parse", "--verify", "-q", f"{revision}^{{commit}}"
        ).strip()
    except GitError as exc:
        raise RescheduleError(
            f"{revision!r} is not a commit of the dataset at {dataset_path}"
            + _job_id_hint(dataset_path, revision)
        ) from exc


def _job_id_hint(dataset_path: str, revision: str) -> str:
    """A revision that reads as a Slurm job id (``4``, ``4_9``): name the job's record commit."""
    try:
        job: int | None = parse_job_id(revision, "datalad reschedule")
    except JobIdError as exc:
        job = exc.whole_job
    if job is None:
        return ""
    found = run_git(
        dataset_path,
        "log",
        "--format=%h",
        "--fixed-strings",
        f"--grep=[DATALAD SLURM RUN] Slurm job {job}:",
        check=False,
    ).split()
    where = (
        f"job {job}'s record is commit {found[0]}: datalad reschedule {found[0]}"
        if found
        else f"no record of job {job} is in the history of HEAD"
    )
    return (
        "; reschedule takes the commit of a job's [DATALAD SLURM RUN] record, not a job id: "
        + where
    )


def _message(dataset_path: str, sha: str) -> str:
    return run_git(dataset_path, "log", "-1", "--format=%B", sha)


def find_records(dataset_path: str, revision: str, since: str | None) -> list[RecordedJob]:
    """The record at ``revision``, or every record after ``since`` up to it, oldest first."""
    tip = _resolve(dataset_path, revision)
    if since is None:
        message = _message(dataset_path, tip)
        if not is_record_message(message):
            raise RescheduleError(
                f"commit {tip[:8]} ({revision}) is not a [DATALAD SLURM RUN] record; "
                "name the commit 'datalad finish' made for the job"
            )
        try:
            return [RecordedJob(tip, parse_message(message))]
        except RecordError as exc:
            raise RescheduleError(f"commit {tip[:8]}: {exc}") from exc
    if since == "":
        # as 'datalad rerun --since=': every commit from the root
        shas = run_git(dataset_path, "rev-list", "--reverse", tip).split()
    else:
        base = _resolve(dataset_path, since)
        shas = run_git(dataset_path, "rev-list", "--reverse", f"{base}..{tip}").split()
    found = []
    for sha in shas:
        message = _message(dataset_path, sha)
        if is_record_message(message):
            try:
                found.append(RecordedJob(sha, parse_message(message)))
            except RecordError as exc:
                raise RescheduleError(f"commit {sha[:8]}: {exc}") from exc
    return found


def reschedule(
    ds: Any,
    revision: str,
    since: str | None = None,
    report: bool = False,
    auto_dependency: bool = True,
    assume_ready: str | None = None,
    alt_dir: str | None = None,
) -> Iterator[dict[str, Any]]:
    """Submit the recorded jobs again, oldest first, each registered before the next is
    submitted: a job whose inputs an earlier one writes waits for it (``jobs/pipelines.py``), as
    the recorded jobs did, and one whose inputs a failed one writes is refused.
    ``assume_ready`` and ``alt_dir`` as ``schedule``'s (not taken from the record: as 0.2.8,
    a job runs in a scratch folder only when asked)."""
    dataset_path = str(ds.path)
    records = find_records(dataset_path, revision, since)
    if not records:
        yield make_result(
            "reschedule",
            "notneeded",
            dataset_path,
            type="dataset",
            message=f"no [DATALAD SLURM RUN] records from the root up to {revision}"
            if since == ""
            else f"no [DATALAD SLURM RUN] records between {since} and {revision}",
        )
        return
    if report:
        yield from (_report(dataset_path, recorded) for recorded in records)
        return
    with Submitter(ds) as submitter:
        yield from submitter.take_over()
        for recorded in records:
            yield from _submit(
                submitter, dataset_path, recorded, auto_dependency, assume_ready, alt_dir
            )


def _base(dataset_path: str, recorded: RecordedJob, status: str, message: str) -> dict[str, Any]:
    return make_result(
        RESCHEDULE,
        status,
        dataset_path,
        message=message,
        commit=recorded.commit,
        cmd=recorded.record.cmd,
        pwd=recorded.record.pwd,
        outputs=recorded.outputs,
        inputs=recorded.inputs,
        chain=[*recorded.record.chain, recorded.commit],
    )


def _report(dataset_path: str, recorded: RecordedJob) -> dict[str, Any]:
    return _base(
        dataset_path,
        recorded,
        "ok",
        f"would submit {recorded.record.cmd!r} from {recorded.record.pwd} "
        f"(job {recorded.record.slurm_job_id}, commit {recorded.commit[:8]})",
    )


def _submit(
    submitter: Submitter,
    dataset_path: str,
    recorded: RecordedJob,
    auto_dependency: bool,
    assume_ready: str | None,
    alt_dir: str | None,
) -> Iterator[dict[str, Any]]:
    """One record submitted again and registered (its result), or its error; a failure is
    noted, so that the records that read its outputs are refused."""
    request = recorded.request(dataset_path, auto_dependency)
    request.assume_ready, request.alt_dir = assume_ready, alt_dir
    try:
        submitted = submitter.submit(request)
        # settled at once: the next record may wait for this job
        results = [submitted] if submitted is not None else submitter.settle()
    except ScheduleError as exc:
        submitter.note_failed(request)
        yield _base(dataset_path, recorded, "error", f"commit {recorded.commit[:8]}: {exc}")
        return
    for result in results:
        again = f"{result.get('message')} (again, from {recorded.commit[:8]})"
        base = _base(dataset_path, recorded, result["status"], again)
        yield {
            **result,
            **{k: v for k, v in base.items() if k not in result},
            "action": RESCHEDULE,
            "message": again,
        }
