"""``datalad reschedule``: submit a recorded Slurm job again."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from datalad.distribution.dataset import EnsureDataset, datasetmethod, require_dataset
from datalad.interface.base import Interface, build_doc, eval_results
from datalad.support.constraints import EnsureChoice, EnsureNone, EnsureStr
from datalad.support.param import Parameter

from datalad_slurm.commands.failures import error_result
from datalad_slurm.errors import DataladSlurmError
from datalad_slurm.usecases.request import ASSUME_READY_CHOICES
from datalad_slurm.usecases.reschedule import reschedule


@build_doc
class Reschedule(Interface):
    """Submit the job of a ``[DATALAD SLURM RUN]`` record again.

    The recorded command is run from the recorded directory with the same
    inputs and outputs, and registered like ``datalad schedule`` does, with
    the old commit appended to the record's ``chain``.  ``datalad finish``
    then records the new run.  Records of datalad-slurm 0.2.8 are read too.

    With --since the records are submitted oldest first, each registered
    before the next: a job whose inputs an earlier one writes waits for it
    (--dependency=afterok), as ``datalad schedule`` makes it, so a recorded
    pipeline runs again as a pipeline; ``datalad finish`` commits it in that
    order.
    """

    _examples_ = [
        dict(
            text="Submit the job recorded in the last commit again",
            code_cmd="datalad reschedule",
            code_py="reschedule()",
        ),
        dict(
            text="Only show what would be submitted for a recorded job",
            code_cmd="datalad reschedule 1a2b3c4 --report",
        ),
        dict(
            text="Submit again every job recorded since a tag, or (empty value) since "
            "the root, as 'datalad rerun --since' does",
            code_cmd="datalad reschedule --since v1.0",
        ),
    ]

    _params_ = dict(
        revision=Parameter(
            args=("revision",),
            metavar="REVISION",
            nargs="?",
            doc="""the record's commit (default: HEAD); with --since, the last
            commit of the range""",
            constraints=EnsureStr() | EnsureNone(),
        ),
        dataset=Parameter(
            args=("-d", "--dataset"),
            doc="""the dataset; default: the current one""",
            constraints=EnsureDataset() | EnsureNone(),
        ),
        since=Parameter(
            args=("--since",),
            metavar="REV",
            doc="""submit every record after REV up to REVISION again, oldest
            first. An empty REV (--since=) means every record from the root,
            as in 'datalad rerun --since='""",
            constraints=EnsureStr() | EnsureNone(),
        ),
        report=Parameter(
            args=("--report",),
            action="store_true",
            doc="""only show what would be submitted""",
        ),
        no_auto_dependency=Parameter(
            args=("--no-auto-dependency",),
            action="store_true",
            doc="""do not make a job wait for the open jobs (rescheduled before
            it, or others) whose outputs its inputs are""",
        ),
        assume_ready=Parameter(
            args=("--assume-ready",),
            doc="""as 'datalad schedule --assume-ready': the inputs need not be
            obtained, the outputs not unlocked (or both)""",
            constraints=EnsureChoice(None, *ASSUME_READY_CHOICES),
        ),
        alt_dir=Parameter(
            args=("-a", "--alt-dir"),
            metavar="DIR",
            doc="""run the jobs in the scratch folder DIR, as 'datalad schedule
            --alt-dir' does. As in datalad-slurm 0.2.8 this is not taken from
            the record: a job runs in a scratch folder only when this is
            given""",
            constraints=EnsureStr() | EnsureNone(),
        ),
    )

    @staticmethod
    @datasetmethod(name="reschedule")
    @eval_results
    def __call__(
        revision: str | None = None,
        *,
        dataset: Any = None,
        since: str | None = None,
        report: bool = False,
        no_auto_dependency: bool = False,
        assume_ready: str | None = None,
        alt_dir: str | None = None,
    ) -> Iterator[dict[str, Any]]:
        ds = require_dataset(dataset, check_installed=True, purpose="reschedule a Slurm job")
        try:
            yield from reschedule(
                ds,
                revision or "HEAD",
                since=since,
                report=report,
                auto_dependency=not no_auto_dependency,
                assume_ready=assume_ready,
                alt_dir=alt_dir,
            )
        except DataladSlurmError as exc:
            yield error_result("reschedule", ds.path, exc)
