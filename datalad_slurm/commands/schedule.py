"""``datalad schedule``: submit a Slurm job and register its outputs."""

from __future__ import annotations

import logging
from argparse import REMAINDER
from collections.abc import Iterator
from typing import Any

from datalad.distribution.dataset import EnsureDataset, datasetmethod, require_dataset
from datalad.interface.base import Interface, build_doc, eval_results
from datalad.support.constraints import EnsureNone, EnsureStr
from datalad.support.param import Parameter

from datalad_slurm.scheduling import ScheduleError, ScheduleRequest, join_command, schedule

lgr = logging.getLogger("datalad.slurm.schedule")


@build_doc
class Schedule(Interface):
    """Submit a Slurm batch job and register it for a later ``datalad finish``.

    The outputs the job will write are reserved in the dataset's job registry:
    no two open jobs may claim the same path, or a path inside another's.
    Inputs are obtained and existing outputs unlocked before the submit
    command runs, as with ``datalad run``.  Nothing is committed now;
    ``datalad finish`` commits each completed job with its run record.

    Placeholders ``{inputs}``, ``{outputs}``, ``{pwd}`` and ``{dspath}`` in the
    command are expanded as in ``datalad run``.
    """

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
            before submission. [CMD: Can be given more than once. CMD]""",
        ),
        outputs=Parameter(
            args=("-o", "--output"),
            dest="outputs",
            metavar="PATH",
            action="append",
            doc="""a file or directory the job writes (at least one). It is
            reserved for this job until the job is finished or closed.
            [CMD: Can be given more than once. CMD]""",
        ),
        message=Parameter(
            args=("-m", "--message"),
            metavar="MESSAGE",
            doc="""a description added to the run record's commit message""",
            constraints=EnsureStr() | EnsureNone(),
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
        message: str | None = None,
        dry_run: bool = False,
    ) -> Iterator[dict[str, Any]]:
        ds = require_dataset(dataset, check_installed=True, purpose="schedule a Slurm job")
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
        )
        try:
            yield from schedule(ds, request)
        except ScheduleError as exc:
            yield _error(ds.path, str(exc))


def _error(path: Any, message: str) -> dict[str, Any]:
    return {
        "action": "schedule",
        "status": "error",
        "path": str(path),
        "type": "dataset",
        "message": message,
    }
