"""What slurmctld knows about a job right after its submission, kept for when it has gone.

Slurm 22.05's accounting (``sacct --json``) has no log file names, so a job
that left slurmctld (MinJobAge) before ``finish`` asked would lose its logs.
``schedule`` therefore asks once, right after ``sbatch``, for the job's
``--output``/``--error`` patterns, its name and user (one ``squeue`` call,
~5 ms), and the registry keeps them.
"""

from __future__ import annotations

import subprocess

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


def submission_facts(job_id: int, timeout: float = 10.0) -> dict[str, str]:
    """``stdout``/``stderr`` patterns (unexpanded, as given to sbatch), ``name`` and ``user``;
    empty if squeue cannot tell (the job then relies on what finish learns)."""
    fmt = ",".join(f"{field}:{width}" for _, field, width in _FIELDS)
    try:
        proc = subprocess.run(
            ["squeue", "-h", "-j", str(job_id), "-O", fmt],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return {}
    lines = proc.stdout.splitlines()
    if proc.returncode != 0 or not lines:
        return {}
    line, facts, start = lines[0], {}, 0
    for key, _, width in _FIELDS:
        value = line[start : start + width].rstrip()
        start += width
        if value and value != "(null)":
            facts[key] = value
    return facts
