"""What slurmctld knows about a job right after its submission, kept for when it has gone.

Slurm 22.05's accounting (``sacct --json``) has no log file names, so a job
that left slurmctld (MinJobAge) before ``finish`` asked would lose its logs.
``schedule`` therefore asks once, right after ``sbatch``, for the job's
``--output``/``--error`` patterns, its name and user (one ``squeue`` call,
one call for many jobs of a ``--jobs-from`` batch), and the registry keeps them.
The same answer tells where each array task's logs go (its work dir and array
task ids, ``slurm/logfiles.py``) and whether the job is held.
"""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Sequence

#: between squeue -O fields, which are printed whole (width 0: neither padded nor cut); a
#: character no path or name holds in practice (a newline would end the line anyway)
SEPARATOR = "\x1f"
#: (our key, squeue -O field)
_FIELDS = (
    ("stdout", "stdout"),
    ("stderr", "stderr"),
    ("name", "name"),
    ("user", "username"),
    ("work_dir", "workdir"),
    ("array", "arraytaskid"),
    ("reason", "reason"),
    # what is left of the job's own --dependency (command line or #SBATCH), joined with ours
    # by schedule (slurm/dependency.py)
    ("dependency", "dependency"),
)
#: the facts the registry keeps (the others matter only while the job is held)
KEPT = ("stdout", "stderr", "name", "user")
#: reasons of a held job
HELD_REASONS = ("JobHeldUser", "JobHeldAdmin")


#: job ids per squeue call
CHUNK = 500


def submission_facts(job_ids: Sequence[int], timeout: float = 30.0) -> dict[int, dict[str, str]]:
    """Per job: ``stdout``/``stderr`` patterns (unexpanded, as given to sbatch), ``name``,
    ``user``, ``work_dir``, ``array`` (pending task ids, ``N/A`` for a job that is no array),
    ``reason`` and ``dependency`` (as squeue shows it); a job squeue cannot tell about is
    left out (finish then relies on its backend)."""
    return ask_submission_facts(job_ids, timeout)[0]


def squeue_fields(
    job_ids: Sequence[int], fields: Sequence[str], timeout: float
) -> subprocess.CompletedProcess[str]:
    """``squeue -O`` of these fields for these jobs, finished ones too: one line per job or
    task, each field whole (width 0) and ended by :data:`SEPARATOR`.  Raises OSError or
    TimeoutExpired when squeue cannot be run."""
    fmt = ",".join(f"{field}:0{SEPARATOR}" for field in fields)
    return subprocess.run(
        ["squeue", "-h", "-t", "all", "-j", ",".join(str(j) for j in job_ids), "-O", fmt],
        capture_output=True,
        text=True,
        timeout=timeout,
        # squeue cuts an array's task ids to 64 characters otherwise
        env={**os.environ, "SLURM_BITSTR_LEN": "0"},
        check=False,
    )


def ask_submission_facts(
    job_ids: Sequence[int], timeout: float = 30.0
) -> tuple[dict[int, dict[str, str]], str | None]:
    """:func:`submission_facts`, and what went wrong when squeue could not be asked."""
    fields = (("jobid", "jobid"), ("arrayjobid", "arrayjobid"), *_FIELDS)
    facts: dict[int, dict[str, str]] = {}
    problem = None
    for first in range(0, len(job_ids), CHUNK):
        chunk = job_ids[first : first + CHUNK]
        try:
            proc = squeue_fields(chunk, [field for _, field in fields], timeout)
        except (OSError, subprocess.TimeoutExpired) as exc:
            problem = f"squeue could not be asked: {exc}"
            continue
        if proc.returncode != 0:
            problem = f"squeue failed: {proc.stderr.strip() or proc.returncode}"
            continue
        for line in proc.stdout.splitlines():
            parts = line.split(SEPARATOR)
            if len(parts) != len(fields) + 1:
                continue  # a name with a newline in it
            values = dict(zip((key for key, _ in fields), parts, strict=False))
            job_id = values.pop("jobid")
            if not job_id.isdigit() or int(job_id) in facts:
                continue  # one record per job: an array's tasks share their patterns
            facts[int(job_id)] = {k: v for k, v in values.items() if v and v != "(null)"}
    return facts, problem


def facts_of_held(job_ids: Sequence[int]) -> tuple[dict[int, dict[str, str]], str | None]:
    """:func:`ask_submission_facts` for jobs just submitted held; those missing are asked for
    once more a second later: a busy slurmctld must not cost the jobs their submission."""
    facts, problem = ask_submission_facts(job_ids)
    missing = [job_id for job_id in job_ids if job_id not in facts]
    if missing:
        time.sleep(1)
        again, problem = ask_submission_facts(missing)
        facts.update(again)
    return facts, problem
