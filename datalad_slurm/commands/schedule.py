"""``datalad schedule``: submit a Slurm job and register its outputs."""

from __future__ import annotations

import logging
import os
import sys
from argparse import REMAINDER
from collections.abc import Iterator
from typing import Any

from datalad.distribution.dataset import EnsureDataset, datasetmethod, require_dataset
from datalad.interface.base import Interface, build_doc, eval_results
from datalad.support.constraints import EnsureChoice, EnsureNone, EnsureStr
from datalad.support.param import Parameter

from datalad_slurm.commands.failures import error_result
from datalad_slurm.errors import DataladSlurmError
from datalad_slurm.usecases.jobspecs import read_job_specs
from datalad_slurm.usecases.request import (
    ASSUME_READY_CHOICES,
    EXPAND_CHOICES,
    ScheduleError,
    ScheduleRequest,
    join_command,
)
from datalad_slurm.usecases.schedule import schedule, schedule_many

lgr = logging.getLogger("datalad.slurm.schedule")


@build_doc
class Schedule(Interface):
    """Submit a Slurm batch job and register it for a later ``datalad finish``.

    The outputs the job will write are reserved in the dataset's job registry:
    no two open jobs may claim the same path, or a path inside another's.
    Inputs are obtained and existing outputs unlocked before the submit
    command runs, as with ``datalad run``.  Nothing is committed now;
    ``datalad finish`` commits each completed job with its run record.

    Placeholders ``{inputs}``, ``{outputs}``, ``{inputs[N]}``, ``{outputs[N]}``,
    ``{pwd}``, ``{dspath}``, ``{tmpdir}`` and ``datalad.run.substitutions`` in the
    command are filled exactly as ``datalad run`` fills them (each path one
    shell-quoted argument); the record keeps the command as written.

    An input that an open job of the dataset writes (one of its outputs or
    log files, a glob by its fixed leading folder) makes the new job wait for
    that job: it is submitted with ``--dependency=afterok:<job>`` (joined with
    a ``--dependency`` of its own), and ``datalad finish`` commits it only
    after that job. ``--no-auto-dependency`` submits it without waiting.

    Inputs and outputs may be globs (quote them: 'out/*.csv'), read as
    ``datalad run`` reads them. An output glob holds its fixed leading folder
    (``out`` for ``out/*.csv``) until the job is finished; ``datalad finish``
    commits what it matches then. An input glob's matches are obtained now. The
    record keeps the globs as given, or with --expand what they matched.

    With --alt-dir DIR the job runs in a scratch folder outside the dataset
    that mirrors its layout: the inputs are copied to their places in DIR,
    the command runs in DIR's place of the current directory, and ``datalad
    finish`` brings the outputs (and the logs Slurm wrote there) back before
    committing them (datalad-slurm 0.2.8's option).
    """

    _examples_ = [
        dict(
            text="Submit a job that reads data/1 and writes into models/1 (its log too, "
            "with '#SBATCH -o models/1/%j.log' in the script); both paths are "
            "reserved until 'datalad finish' commits the job",
            code_cmd="datalad schedule -i data/1 -o models/1 sbatch code/fit.sh 1",
            code_py="schedule(cmd='sbatch code/fit.sh 1', inputs=['data/1'], outputs=['models/1'])",
        ),
        dict(
            text="Pass the declared paths to the job as arguments, one per path, as "
            "'datalad run' does",
            code_cmd="datalad schedule -i data/1 -o models/1 sbatch code/fit.sh {inputs} {outputs}",
        ),
        dict(
            text="A pipeline: the second job reads what the first writes, so it waits for "
            "it (--dependency=afterok:<first job>); one 'datalad finish' commits both, in "
            "that order",
            code_cmd="datalad schedule -o prep sbatch code/prep.sh && "
            "datalad schedule -i prep -o fit sbatch code/fit.sh",
        ),
        dict(
            text="Run the job in a scratch folder outside the dataset: its inputs (the "
            "script too) are copied there, 'datalad finish' brings models/1 back",
            code_cmd="datalad schedule --alt-dir /scratch/me/ds -i code/fit.sh -i data/1 "
            "-o models/1 sbatch code/fit.sh 1",
        ),
        dict(
            text="Check what would be submitted and refused, without submitting",
            code_cmd="datalad schedule --dry-run -o models/1 sbatch code/fit.sh 1",
        ),
        dict(
            text="Submit many jobs in one call, one JSON object per line "
            '({"cmd": ..., "outputs": [...], "inputs": [...]})',
            code_cmd="datalad schedule --jobs-from jobs.jsonl",
        ),
    ]

    _params_ = dict(
        cmd=Parameter(
            args=("cmd",),
            nargs=REMAINDER,
            metavar="SUBMIT-COMMAND",
            doc="""the submit command, e.g. 'sbatch job.sh'. A leading '--'
            separates it from DataLad's own options.""",
        ),
        dataset=Parameter(
            args=("-d", "--dataset"),
            doc="""the dataset the job's results go into; default: the dataset
            of the current directory. The command runs in the current
            directory.""",
            constraints=EnsureDataset() | EnsureNone(),
        ),
        inputs=Parameter(
            args=("-i", "--input"),
            dest="inputs",
            metavar="PATH",
            action="append",
            doc="""a file or directory the job reads; its content is obtained
            before submission. The value can also be a glob (what it matches is
            obtained). [CMD: Can be given more than once. CMD]""",
        ),
        outputs=Parameter(
            args=("-o", "--output"),
            dest="outputs",
            metavar="PATH",
            action="append",
            doc="""a file or directory the job writes (at least one). It is
            reserved for this job until the job is finished or closed. The
            value can also be a glob: it reserves its fixed leading folder, and
            what it matches when the job is finished is committed.
            [CMD: Can be given more than once. CMD]""",
        ),
        expand=Parameter(
            args=("--expand",),
            doc="""expand globs when storing inputs and/or outputs in the run
            record, as 'datalad run --expand' does: inputs as they match at
            submission, outputs as they match when the job is finished. By
            default the record keeps the globs.""",
            constraints=EnsureChoice(None, *EXPAND_CHOICES),
        ),
        assume_ready=Parameter(
            args=("--assume-ready",),
            doc="""assume that the inputs need not be obtained ('inputs'), that
            existing outputs need not be unlocked ('outputs'), or both, as
            'datalad run --assume-ready' does: skip these preparations when you
            know they are not needed. An input glob that matches nothing is
            then not refused either. With --alt-dir, 'outputs' also lets the
            job use what the scratch folder holds of its outputs already.""",
            constraints=EnsureChoice(None, *ASSUME_READY_CHOICES),
        ),
        alt_dir=Parameter(
            args=("-a", "--alt-dir"),
            metavar="DIR",
            doc="""run the job in DIR, an existing scratch folder outside the
            dataset, as datalad-slurm 0.2.8 did: DIR mirrors the dataset (its
            path p is DIR/p), each input is copied to its place there, and the
            submit command runs in DIR's place of the current directory (so
            the job script must be an input, or be given by its absolute
            path). 'datalad finish' copies the outputs and the log files Slurm
            wrote in DIR back into the dataset, commits them, then removes them
            from DIR. A job that fails, or is closed, leaves DIR as it is.""",
            constraints=EnsureStr() | EnsureNone(),
        ),
        message=Parameter(
            args=("-m", "--message"),
            metavar="MESSAGE",
            doc="""a description added to the run record's commit message""",
            constraints=EnsureStr() | EnsureNone(),
        ),
        jobs_from=Parameter(
            args=("--jobs-from",),
            metavar="FILE",
            doc="""submit many jobs from one process: FILE ('-' for standard
            input) has one JSON object per line with "cmd" and "outputs", and
            optionally "inputs", "message" and "pwd", e.g.
            {"cmd": "sbatch job.sh 1", "outputs": ["out/1"]}. Paths are relative
            to "pwd", which is relative to the current directory. A bad line
            stops everything before the first submission; a submission that
            fails is reported and the others go on. A line may give "expand",
            "assume_ready" and "alt_dir" (as the options); those options on the
            command line apply to the lines without them. A line whose inputs
            an earlier line writes waits for that job (a line reading what a
            failed line would have written is refused).""",
            constraints=EnsureStr() | EnsureNone(),
        ),
        no_auto_dependency=Parameter(
            args=("--no-auto-dependency",),
            action="store_true",
            doc="""do not make the job wait for the open jobs whose outputs or
            logs its inputs are (by default it is submitted with
            --dependency=afterok on them, and finish commits it after them);
            a --dependency of the job's own is passed on as it is""",
        ),
        dry_run=Parameter(
            args=("--dry-run",),
            action="store_true",
            doc="""show what would be submitted and reserved; change nothing""",
        ),
    )

    @staticmethod
    @datasetmethod(name="schedule")
    @eval_results
    def __call__(
        cmd: Any = None,
        *,
        dataset: Any = None,
        inputs: list[str] | None = None,
        outputs: list[str] | None = None,
        expand: str | None = None,
        assume_ready: str | None = None,
        alt_dir: str | None = None,
        message: str | None = None,
        jobs_from: str | None = None,
        no_auto_dependency: bool = False,
        dry_run: bool = False,
    ) -> Iterator[dict[str, Any]]:
        ds = require_dataset(dataset, check_installed=True, purpose="schedule a Slurm job")
        if jobs_from is not None:
            defaults = {"expand": expand, "assume_ready": assume_ready, "alt_dir": alt_dir}
            try:
                yield from _schedule_from_file(
                    ds,
                    jobs_from,
                    cmd,
                    inputs,
                    outputs,
                    message,
                    dry_run,
                    defaults,
                    no_auto_dependency,
                )
            except DataladSlurmError as exc:
                yield _error(ds.path, exc)
            return
        if not cmd:
            yield _error(
                ds.path, "no submit command given; e.g. 'datalad schedule -o out sbatch job.sh'"
            )
            return
        request = ScheduleRequest(
            cmd=join_command(cmd),
            outputs=list(outputs or []),
            inputs=list(inputs or []),
            message=message,
            dry_run=dry_run,
            expand=expand,
            auto_dependency=not no_auto_dependency,
            assume_ready=assume_ready,
            alt_dir=alt_dir,
        )
        try:
            yield from schedule(ds, request)
        except DataladSlurmError as exc:
            yield _error(ds.path, exc)


def _schedule_from_file(
    ds: Any,
    jobs_from: str,
    cmd: Any,
    inputs: list[str] | None,
    outputs: list[str] | None,
    message: str | None,
    dry_run: bool,
    defaults: dict[str, str | None],
    no_auto_dependency: bool,
) -> Iterator[dict[str, Any]]:
    if cmd or inputs or outputs or message:
        yield _error(
            ds.path,
            "--jobs-from takes the commands, outputs, inputs and messages from the file; "
            "give none of them on the command line",
        )
        return
    try:
        if jobs_from == "-":
            requests = read_job_specs(sys.stdin, "standard input", os.getcwd())
        else:
            with open(jobs_from, encoding="utf-8") as stream:
                requests = read_job_specs(stream, jobs_from, os.getcwd())
    except OSError as exc:
        yield _error(ds.path, f"cannot read the jobs file {jobs_from}: {exc.strerror}")
        return
    except ScheduleError as exc:
        yield _error(ds.path, f"{exc}; nothing was submitted")
        return
    for request in requests:
        request.dry_run = dry_run
        request.expand = request.expand or defaults["expand"]
        request.assume_ready = request.assume_ready or defaults["assume_ready"]
        request.alt_dir = request.alt_dir or defaults["alt_dir"]
        request.auto_dependency = not no_auto_dependency
    yield from schedule_many(ds, requests)


def _error(path: Any, failure: DataladSlurmError | str) -> dict[str, Any]:
    return error_result("schedule", path, failure)
