"""What slurmctld knows about a job right after its submission, kept for when it has gone.

Slurm 22.05's accounting (``sacct --json``) has no log file names, so a job
that left slurmctld (MinJobAge) before ``finish`` asked would lose its logs.
``schedule`` therefore asks once, right after ``sbatch``, for the job's
``--output``/``--error`` patterns, its name and user (one ``squeue`` call,
one call for many jobs of a ``--jobs-from`` batch), and the registry keeps them.
"""

from __future__ import annotations

import subprocess
from collections.abc import Sequence

#: squeue -O field widths: the longest path Linux allows, so nothing is cut
_PATH_WIDTH = 4100
_NAME_WIDTH = 1000
#: (our key, squeue -O field, width)
_FIELDS = (
    ("stdout", "stdout", _PATH_WIDTH),
    ("stderr", "stderr", _PATH_WIDTH),
    ("name", "name", _NAME_WIDTH),
    ("user", "username", _NAME_WIDTH),
)


#: job ids per squeue call
CHUNK = 500


def submission_facts(job_ids: Sequence[int], timeout: float = 30.0) -> dict[int, dict[str, str]]:
    """Per job: ``stdout``/``stderr`` patterns (unexpanded, as given to sbatch), ``name`` and
    ``user``; a job squeue cannot tell about is left out (finish then relies on its backend)."""
    fields = (("jobid", "arrayjobid", _NAME_WIDTH), *_FIELDS)
    fmt = ",".join(f"{field}:{width}" for _, field, width in fields)
    facts: dict[int, dict[str, str]] = {}
    for first in range(0, len(job_ids), CHUNK):
        chunk = job_ids[first : first + CHUNK]
        try:
            proc = subprocess.run(
                ["squeue", "-h", "-t", "all", "-j", ",".join(str(j) for j in chunk), "-O", fmt],
                capture_output=True,
                text=True,
                timeout=timeout,
                check=False,
            )
        except (OSError, subprocess.TimeoutExpired):
            continue
        if proc.returncode != 0:
            continue
        for line in proc.stdout.splitlines():
            values, start = {}, 0
            for key, _, width in fields:
                values[key] = line[start : start + width].rstrip()
                start += width
            job_id = values.pop("jobid")
            if not job_id.isdigit() or int(job_id) in facts:
                continue  # one record per job: an array's tasks share their patterns
            facts[int(job_id)] = {k: v for k, v in values.items() if v and v != "(null)"}
    return facts
