"""The submit command run held, and what Slurm and the spool are told around it: the
spool's in-flight marker set before the command runs, the command run with
``slurm/holding.py``'s ``sbatch`` wrapper first on its PATH (every job it submits is held),
the job id it printed, a command that failed or printed no job id turned into the
schedule's error (the reservation forgotten, jobs it submitted all the same cancelled), and
what slurmctld says of the held jobs (asked once more after a second for those it did not
list).  Trouble with the spool costs a job its event, not its submission.
"""

from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass
from typing import Any

from datalad_slurm.jobs.job import Job
from datalad_slurm.jobs.registry import Registry
from datalad_slurm.settings import spool_config
from datalad_slurm.slurm.holding import HeldSubmission, Noted, cancel
from datalad_slurm.slurm.jobid import NoJobIdError, Submission, parse_submission, printed_job_ids
from datalad_slurm.spool import SpoolError, UserSpool
from datalad_slurm.usecases.request import ScheduleError
from datalad_slurm.usecases.scratch import scratch_hint


def user_spool(ds: Any) -> UserSpool | None:
    """The user's spool, as the config names it (None: there is none)."""
    config = spool_config(ds)
    return UserSpool(config.spool) if config else None


def spool_call(spool: UserSpool | None, method: str, *args: Any) -> str | None:
    """Tell the spool; trouble there costs the job its event, not its submission."""
    if spool is None:
        return None
    try:
        getattr(spool, method)(*args)
    except (OSError, SpoolError) as exc:
        return f"not registered in the spool, finish will ask Slurm instead: {exc}"
    return None


@dataclass
class Submitted:
    """What the submit command left: the job, held, and what the spool was told."""

    submission: Submission
    #: the sbatch calls it made through the wrapper
    noted: Noted
    #: why the spool knows nothing of it (None: it does)
    spool_note: str | None


def run_held(
    command: str,
    run_dir: str,
    held: HeldSubmission,
    spool: UserSpool | None,
    registry: Registry,
    job: Job,
    scratch: bool,
) -> Submitted:
    """Run the submit command of ``job`` (reserved) in ``run_dir``, its ``sbatch`` held; the job
    it submitted.  A command that fails or prints no job id raises ScheduleError, with the
    reservation and the in-flight marker gone (``scratch``: it ran in a scratch folder)."""
    spool_note = spool_call(spool, "begin_submission", job.token)
    # From here on a job may exist in Slurm, held: an interruption leaves the
    # reservation in 'submitting', which finish reports instead of dropping.
    proc = subprocess.run(
        command,
        shell=True,
        cwd=run_dir,
        capture_output=True,
        text=True,
        check=False,
        env=held.environment(),
    )
    noted = held.take_calls()
    if proc.returncode != 0:
        spool_call(spool, "end_submission", job.token)
        registry.forget_submission(job)
        raise ScheduleError(
            f"the submit command {command!r} failed with exit code {proc.returncode}: "
            f"{proc.stderr.strip() or proc.stdout.strip() or '(no output)'}; "
            "nothing was registered, the outputs are free again"
            + cancelled_note(printed_job_ids(proc.stdout), noted),
            advice=(
                "the shell did not find a command: put Slurm's client commands (sbatch) "
                f"on PATH (now {os.environ.get('PATH', '')}), then schedule again"
                if proc.returncode == 127
                else scratch_hint(run_dir if scratch else None)
                or "schedule again when the submit command works"
            ),
        )
    try:
        submission = parse_submission(proc.stdout)
    except NoJobIdError as exc:
        spool_call(spool, "end_submission", job.token)
        registry.forget_submission(job)
        raise ScheduleError(
            f"{exc}: {command!r} printed {proc.stdout.strip()!r}; nothing was registered. "
            "Use sbatch (plain or --parsable) as the submit command"
            + cancelled_note(printed_job_ids(proc.stdout), noted)
        ) from exc
    return Submitted(submission, noted, spool_note)


def cancelled_note(job_ids: list[int], noted: Noted) -> str:
    """A failed submit command may have submitted jobs all the same: held ones are cancelled,
    so that no job runs unregistered."""
    if not job_ids or not noted.through_wrapper:
        return ""
    listed = ", ".join(str(j) for j in job_ids)
    problem = cancel(job_ids)
    if problem:
        return (
            f"; it submitted Slurm job(s) {listed}, held, which could not be cancelled "
            f"({problem}): cancel them with 'scancel {' '.join(str(j) for j in job_ids)}'"
        )
    return f"; the Slurm job(s) it submitted ({listed}) were held and are cancelled, unstarted"
