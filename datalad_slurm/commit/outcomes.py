"""What committing a drain's jobs came to, one typed outcome at a time, and the DataLad result
each outcome is shown as.

:func:`datalad_slurm.commit.batch.commit_jobs` yields these, keyed by registry row (``row``:
the job's row id, which tells two clusters' jobs of the same id apart), so that its caller
learns what happened from the outcome's type, not by reading result dicts back.
:meth:`result` builds the record the user sees (:func:`datalad_slurm.results.make_result`).
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from datalad_slurm.commit.record import status_word
from datalad_slurm.git.trees import Change
from datalad_slurm.globs import is_glob
from datalad_slurm.jobs.job import Job
from datalad_slurm.results import FINISH, make_result
from datalad_slurm.slurm.state import JobStatus


def _job_result(dataset: str, job: Job, status: str, message: str, **extra: Any) -> dict[str, Any]:
    return make_result(
        FINISH, status, dataset, type="dataset", slurm_job_id=job.job_id, message=message, **extra
    )


@dataclass(frozen=True)
class Committed:
    """The job is committed as ``sha`` (on ``branch`` with ``finish --branches``)."""

    dataset: str
    job: Job
    status: JobStatus
    sha: str
    branch: str | None = None

    @property
    def row(self) -> int:
        return self.job.id

    def result(self) -> dict[str, Any]:
        status = self.status
        where = f" on branch {self.branch}" if self.branch else ""
        return _job_result(
            self.dataset,
            self.job,
            "ok",
            f"Slurm job {self.job.job_id}: {status_word(status)}, committed as "
            f"{self.sha[:8]}{where}",
            commit=self.sha,
            state=status.summary_state,
            backend=status.backend,
            data_parser=status.data_parser,
            **({"branch": self.branch} if self.branch else {}),
            **({"alt_dir": self.job.alt_dir} if self.job.alt_dir else {}),
        )


@dataclass(frozen=True)
class NotCommitted:
    """The job is not committed, and ``why``; it stays open."""

    dataset: str
    job: Job
    why: str

    @property
    def row(self) -> int:
        return self.job.id

    def result(self) -> dict[str, Any]:
        return _job_result(
            self.dataset,
            self.job,
            "error",
            f"job {self.job.job_id} could not be committed: {self.why}; it stays open, fix the "
            "problem and run 'datalad finish' again",
        )


@dataclass(frozen=True)
class Warned:
    """Something around a commit is not as it should be; what is committed stands.

    ``row``: the job it is about (None: the drain's). ``fields``: the result's keys after
    ``type``, in order.
    """

    row: int | None
    path: str
    type: str
    fields: tuple[tuple[str, Any], ...]

    @property
    def message(self) -> str:
        return str(dict(self.fields)["message"])

    def result(self) -> dict[str, Any]:
        return make_result(FINISH, "impossible", self.path, type=self.type, **dict(self.fields))


@dataclass(frozen=True)
class Reported:
    """A result that is no job's outcome: a committed job's files, ``datalad save``'s own
    results, the octopus merge."""

    record: dict[str, Any]

    @property
    def row(self) -> None:
        return None

    def result(self) -> dict[str, Any]:
        return dict(self.record)


Outcome = Committed | NotCommitted | Warned | Reported


def missing_outputs(dataset: str, job: Job, outputs: Sequence[str]) -> Iterator[Warned]:
    """One warning per declared output the job did not leave (a glob: that matches nothing):
    what existed was committed."""
    for output in outputs:
        what = "a glob that matches nothing" if is_glob(output) else "which does not exist"
        yield Warned(
            job.id,
            os.path.join(dataset, output),
            "file",
            (
                ("refds", dataset),
                ("slurm_job_id", job.job_id),
                ("missing_output", output),
                (
                    "message",
                    f"warning: Slurm job {job.job_id} declared the output {output!r}, {what}; "
                    "the job was committed without it (as 'datalad run' does)",
                ),
            ),
        )


def scratch_left(dataset: str, job: Job, problems: Sequence[str]) -> Warned:
    """The job is committed, but what it brought back could not all leave its scratch folder."""
    return Warned(
        job.id,
        dataset,
        "dataset",
        (
            ("slurm_job_id", job.job_id),
            (
                "message",
                f"warning: Slurm job {job.job_id} is committed, but its files could not all be "
                f"removed from the scratch folder {job.alt_dir}: {'; '.join(problems)}; remove "
                "them by hand",
            ),
            ("alt_dir", job.alt_dir),
        ),
    )


def not_restored(dataset: str, exc: Exception) -> Warned:
    """``--branches``: the jobs are on their branches, but their files are still on this one."""
    return Warned(
        None,
        dataset,
        "dataset",
        (
            (
                "message",
                f"warning: the jobs are committed on their branches, but their files could not "
                f"be taken out of the current branch's index and worktree ({exc}); 'git status' "
                "shows them: 'git restore --staged --worktree PATH' does it by hand",
            ),
        ),
    )


def saved(dataset: str, changes: Sequence[Change]) -> Iterator[Reported]:
    """What ``datalad save`` would have reported for one job's commit: its files, then itself."""
    for change in changes:
        yield Reported(
            make_result(
                "delete" if change.deleted else "add",
                "ok",
                os.path.join(dataset, change.path),
                type="file",
                refds=dataset,
            )
        )
    yield Reported(make_result("save", "ok", dataset, type="dataset", refds=dataset))
