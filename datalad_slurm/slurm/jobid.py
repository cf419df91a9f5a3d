"""Parsing what a submit command prints into a Slurm job id (and cluster)."""

from __future__ import annotations

import re
from dataclasses import dataclass

_PLAIN = re.compile(r"^Submitted batch job (\d+)(?: on cluster (\S+))?\s*$")
_PARSABLE = re.compile(r"^(\d+)(?:;(\S+))?\s*$")


class NoJobIdError(ValueError):
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


def task_label(job_id: int, task_id: int | None) -> str:
    """``N`` for a plain job, ``N_T`` for an array task, as Slurm writes them."""
    return str(job_id) if task_id is None else f"{job_id}_{task_id}"
