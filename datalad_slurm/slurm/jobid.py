"""Parsing what a submit command prints into a Slurm job id (and cluster)."""

from __future__ import annotations

import re
from dataclasses import dataclass

from datalad_slurm.errors import DataladSlurmError

_PLAIN = re.compile(r"^Submitted batch job (\d+)(?: on cluster (\S+))?\s*$")
_PARSABLE = re.compile(r"^(\d+)(?:;(\S+))?\s*$")


class NoJobIdError(DataladSlurmError, ValueError):
    """The submit command's output names no job, or more than one."""


@dataclass(frozen=True)
class Submission:
    job_id: int
    cluster: str | None = None


def parse_submission(stdout: str) -> Submission:
    """Find the single job id in sbatch's output.

    Accepts ``Submitted batch job N``, ``Submitted batch job N on cluster C``,
    and ``--parsable`` output ``N`` or ``N;C``.
    """
    found: list[Submission] = []
    for line in stdout.splitlines():
        line = line.strip()
        match = _PLAIN.match(line) or _PARSABLE.match(line)
        if match:
            found.append(Submission(int(match.group(1)), match.group(2)))
    if not found:
        raise NoJobIdError("the submit command printed no Slurm job id")
    if len(set(found)) > 1:
        ids = ", ".join(str(s.job_id) for s in found)
        raise NoJobIdError(
            f"the submit command printed several job ids ({ids}); schedule one job per command"
        )
    return found[0]


def printed_job_ids(stdout: str) -> list[int]:
    """Every job id a submit command printed (a command that failed may have submitted some)."""
    ids = []
    for line in stdout.splitlines():
        match = _PLAIN.match(line.strip()) or _PARSABLE.match(line.strip())
        if match and int(match.group(1)) not in ids:
            ids.append(int(match.group(1)))
    return ids


class JobIdError(DataladSlurmError, ValueError):
    """A job id given by the user is not the plain number of a whole job.

    ``whole_job`` is the job it names a part of (an array task, a step), where
    the spelling names one.
    """

    def __init__(self, message: str, whole_job: int | None = None) -> None:
        super().__init__(message)
        self.whole_job = whole_job


_DIGITS = r"[0-9]+"  # not \d: int() and \d take other scripts' digits too
_PLAIN_ID = re.compile(rf"^{_DIGITS}$")
#: Slurm's spellings of a part of a job, and what the part is
_PARTS: list[tuple[re.Pattern[str], str]] = [
    (re.compile(rf"^({_DIGITS})_({_DIGITS})$"), "is task {part} of array job {job}"),
    (re.compile(rf"^({_DIGITS})_(\[.*\]|\*)$"), "names tasks {part} of array job {job}"),
    (re.compile(rf"^({_DIGITS})\+({_DIGITS})$"), "is component {part} of heterogeneous job {job}"),
    (re.compile(rf"^({_DIGITS})\.(\S+)$"), "is step {part} of job {job}"),
]
_WITH_CLUSTER = re.compile(rf"^({_DIGITS});(\S+)$")


def parse_job_id(value: object, command: str = "datalad finish") -> int:
    """A job id the user gave (``4``), refusing parts of jobs and anything else.

    ``int()`` would read ``4_9`` as 49 and take ``+4`` or non-ASCII digits;
    Slurm's spellings of array tasks (``4_9``, ``4_[1-3]``), heterogeneous job
    components (``4+1``), steps (``4.batch``) and ``--parsable``'s ``4;cluster``
    name the whole job in the error, so that the user knows what to type.
    """
    not_an_id = "is not a Slurm job id; give the number sbatch printed ('Submitted batch job N')"
    if isinstance(value, bool):
        raise JobIdError(f"{value!r} {not_an_id}")
    text = str(value).strip()
    if isinstance(value, int) or _PLAIN_ID.match(text):
        number = int(text)
        if number < 1:
            raise JobIdError(
                f"{text} is not a Slurm job id (they are whole numbers from 1); "
                "give the number sbatch printed"
            )
        return number
    for pattern, what in _PARTS:
        match = pattern.match(text)
        if match:
            job = int(match.group(1))
            part = match.group(2)
            part = str(int(part)) if part.isdigit() else part
            raise JobIdError(
                f"{text} {what.format(part=part, job=job)}; "
                f"{command} takes whole jobs: {command} {job}",
                job,
            )
    match = _WITH_CLUSTER.match(text)
    if match:
        job = int(match.group(1))
        raise JobIdError(
            f"{text} is job {job} on cluster {match.group(2)}; give the job id alone: "
            f"{command} {job}",
            job,
        )
    raise JobIdError(
        f"{text!r} {not_an_id}: {command} N. 'datalad finish --list-open-jobs' shows the open jobs"
    )
