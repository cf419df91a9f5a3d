"""A submission's scratch folder (``--alt-dir``), as schedule meets it: the folder resolved and
checked against the outputs, outputs it already holds files of refused, the folder made ready
before the submit command runs (the directory the command runs in, the dataset's folders of
the outputs, the inputs copied), the folders of the job's logs made there before it is
released, and what the schedule's messages say of it.  The folder itself (paths, copies, the
way back into the dataset) is ``jobs/altdir.py``'s.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

from datalad_slurm.globs import is_glob, reserved_path
from datalad_slurm.jobs import altdir
from datalad_slurm.jobs import logs as joblogs
from datalad_slurm.jobs.job import Job
from datalad_slurm.usecases.request import ScheduleError, ScheduleRequest


def scratch_of(request: ScheduleRequest, dataset_path: str, outputs: Sequence[str]) -> str | None:
    """The resolved scratch folder of ``--alt-dir`` (None without), checked."""
    if request.alt_dir is None:
        return None
    try:
        root = altdir.scratch_root(request.alt_dir, dataset_path)
        altdir.check_outputs(outputs)
    except altdir.AltDirError as exc:
        raise ScheduleError(str(exc)) from exc
    return root


def refuse_left_over(scratch: str, outputs: Sequence[str], inputs: Sequence[str]) -> None:
    """An output that the scratch folder holds files of already (a failed or closed job's,
    left as they were) would be brought back as this job's: refused."""
    left = altdir.left_over(scratch, outputs, inputs)
    if left:
        raise ScheduleError(
            f"the scratch folder {scratch} holds files of the output(s) "
            + ", ".join(repr(o) for o in left)
            + " already (left there by an earlier job: a failed or closed job's files stay); "
            "'datalad finish' would take them for this job's. Remove them from the scratch "
            "folder, or give --assume-ready outputs to let the job use them"
        )


def prepare_scratch(
    dataset_path: str,
    scratch: str | None,
    pwd: str,
    inputs: Sequence[str],
    outputs: Sequence[str],
) -> list[str]:
    """The scratch folder made ready (``--alt-dir``): the directory the command runs in, the
    dataset's folders the outputs go into, the inputs copied; returns the files copied."""
    if scratch is None:
        return []
    folders = [reserved_path(o) if is_glob(o) else os.path.dirname(o) for o in outputs]
    try:
        os.makedirs(altdir.place(scratch, pwd), exist_ok=True)
        altdir.make_folders(dataset_path, scratch, folders)
        return altdir.copy_inputs(dataset_path, scratch, inputs)
    except altdir.AltDirError as exc:
        raise ScheduleError(f"{exc}; nothing was submitted") from exc
    except OSError as exc:
        raise ScheduleError(
            f"the scratch folder {scratch} cannot be prepared: {exc}; nothing was submitted"
        ) from exc


def scratch_note(run_dir: str | None, copied: Sequence[str]) -> str:
    """Where a job run in a scratch folder runs, for the schedule's message."""
    if run_dir is None:
        return ""
    return f", running in the scratch folder {run_dir} ({len(copied)} input file(s) copied there)"


def scratch_hint(run_dir: str | None) -> str:
    """Why a submit command may fail in the scratch folder: the script is not there."""
    if run_dir is None:
        return ""
    return (
        f"with --alt-dir the command runs in the scratch folder {run_dir}: a script it names "
        "by a relative path must be declared an input (-i), which copies it there, or be "
        "named by its absolute path; then schedule again"
    )


def log_folders(dataset_path: str, job: Job, claims: Sequence[joblogs.LogClaim]) -> str | None:
    """Make the folders of a scratch job's logs there (those the dataset has); why not."""
    assert job.alt_dir is not None
    folders = [os.path.dirname(c.path) if c.log.exact else c.path for c in claims]
    try:
        altdir.make_folders(dataset_path, job.alt_dir, folders)
    except altdir.AltDirError as exc:
        return f"{exc}: Slurm cannot write the job's log there"
    return None
