"""A job's Slurm log files as paths of the dataset: what ``schedule`` reserves for them, and
what they collide with.

A log file is an output of its job: it is reserved with the job's outputs, so that no other
open job's outputs or logs overlap it, and it must not be a file git tracks (the job would
write into the committed file; into the annex object, through its link).  Logs outside the
dataset (``/dev/null``, a scratch folder) are none of the dataset's business.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from datalad_slurm.git.runner import run_git
from datalad_slurm.jobs.job import Job
from datalad_slurm.paths import PathOutsideDatasetError, lies_in, normalise
from datalad_slurm.slurm.logfiles import LogFile

#: paths per ``git ls-files`` call
_CHUNK = 2000
HINT = (
    "Give each job its own log name (sbatch -o/-e with %j, or %A_%a in an array job), or put "
    "the log inside the job's own output"
)


@dataclass(frozen=True)
class LogClaim:
    """A log file (or the folder of one whose name is known only later), dataset-relative."""

    path: str
    log: LogFile

    @property
    def what(self) -> str:
        """The claim in words, for messages."""
        if self.log.exact:
            return f"log file {self.path!r}"
        when = "once it is submitted" if not self.log.own_name else "when its task starts"
        return f"log folder {self.path!r} (the name {self.log.pattern!r} is known only {when})"


def in_dataset(files: Iterable[LogFile], dataset_path: str) -> list[LogClaim]:
    """The log files that lie inside the dataset, as dataset-relative paths."""
    claims: dict[tuple[str, bool], LogClaim] = {}
    for item in files:
        try:
            relative = normalise(item.path, dataset_path, dataset_path)
        except (PathOutsideDatasetError, ValueError):
            continue
        claims.setdefault((relative, item.exact), LogClaim(relative, item))
    return list(claims.values())


def outside(claims: Iterable[LogClaim], outputs: Sequence[str]) -> list[LogClaim]:
    """The claims that do not lie in one of the job's own outputs (those are the job's
    anyway, and schedule unlocked what git tracks there)."""
    return [c for c in claims if not any(lies_in(c.path, o) for o in outputs)]


def reserved(claims: Iterable[LogClaim]) -> list[str]:
    """The paths a submitted job reserves for its logs (files, and folders of names known
    only when a task starts)."""
    return sorted({claim.path for claim in claims})


def tracked(dataset_path: str, claims: Sequence[LogClaim]) -> list[LogClaim]:
    """The log files that are files (or symlinks) git tracks."""
    exact = [c for c in claims if c.log.exact and c.path != "."]
    found: set[str] = set()
    for first in range(0, len(exact), _CHUNK):
        paths = [c.path for c in exact[first : first + _CHUNK]]
        listed = run_git(
            dataset_path, "--literal-pathspecs", "ls-files", "-z", "--", *paths, check=False
        )
        found.update(listed.split("\0"))
    return [c for c in exact if c.path in found]


def tracked_message(job_name: str, claims: Sequence[LogClaim]) -> str:
    files = ", ".join(repr(c.path) for c in claims)
    return (
        f"{job_name or 'the job'} would write its log to {files}, which git tracks: it would "
        f"write into the committed file (an annexed file's content, through its link). {HINT}, or "
        "'git rm' the file first"
    )


def conflict_message(
    job_name: str, conflicts: Sequence[tuple[str, str, Job]], claims: Sequence[LogClaim]
) -> str:
    """A refused job's log conflicts with what open jobs hold, naming both jobs and paths."""
    by_path = {c.path: c for c in claims}
    parts = []
    for wanted, held, other in conflicts:
        claim = by_path.get(wanted)
        what = claim.what if claim else f"log path {wanted!r}"
        owner = (
            f"open job {other.job_id}" if other.job_id is not None else "a submission in progress"
        )
        kind = "an output" if any(lies_in(held, o) for o in other.outputs) else "a log file"
        parts.append(f"its {what} overlaps {held!r}, {kind} of {owner}")
    prefix = f"{job_name}: " if job_name else ""
    return prefix + "; ".join(parts) + f". {HINT}, or finish that job first"
