"""Submitting jobs into a dataset: ``schedule`` (one request), ``schedule_many``
(``--jobs-from``: results in the file's order, settled a chunk at a time) and the
:class:`Submitter` they share, which takes each request from its checks to a job held in
Slurm and hands the held jobs to settling (``usecases/settle.py``). The order matters for
crash safety: outputs are reserved (state ``submitting``) before anything runs (the worktree
prepared, ``usecases/worktree.py``; a scratch folder, ``usecases/scratch.py``), and the job id
is written the moment the submit command returned one (``usecases/submitcommand.py``). The
job is submitted held (``slurm/holding.py``): it cannot start before its log files are
reserved beside its outputs (``jobs/logs.py``), which opens it; a job whose logs collide is
cancelled before it ever ran. A failed or refused submission releases the reservation and
registers nothing. A dry run is ``usecases/dryrun.py``'s.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from typing import Any

from datalad_slurm.globs import expand
from datalad_slurm.jobs import altdir
from datalad_slurm.jobs.migration import take_over
from datalad_slurm.jobs.placeholders import substitutions
from datalad_slurm.jobs.registry import Registry
from datalad_slurm.jobs.reservations import OutputConflictError
from datalad_slurm.jobs.schema import RegistryError
from datalad_slurm.jobs.statedir import open_registry
from datalad_slurm.paths import PathOutsideDatasetError, normalise
from datalad_slurm.results import SCHEDULE, make_result
from datalad_slurm.slurm.conf import cluster_name
from datalad_slurm.slurm.dependency import JobStanding
from datalad_slurm.slurm.holding import HeldSubmission
from datalad_slurm.slurm.submitted import CHUNK as FACTS_CHUNK
from datalad_slurm.spool import UserSpool
from datalad_slurm.usecases.dryrun import DryRun
from datalad_slurm.usecases.request import (
    ScheduleError,
    ScheduleRequest,
    command_of,
    glob_note,
    input_paths,
    normalised,
    ready,
    unmatched_inputs,
)
from datalad_slurm.usecases.scratch import (
    prepare_scratch,
    refuse_left_over,
    scratch_note,
    scratch_of,
)
from datalad_slurm.usecases.settle import Held, settle_batch
from datalad_slurm.usecases.submitcommand import run_held, spool_call, user_spool
from datalad_slurm.usecases.waits import not_made_yet, plan_waits, refuse_scratch_waits
from datalad_slurm.usecases.worktree import prepare_worktree

ACTION = SCHEDULE


def schedule(ds: Any, request: ScheduleRequest) -> Iterator[dict[str, Any]]:
    """Submit one job and register it; yields its result (raises ScheduleError)."""
    with Submitter(ds) as submitter:
        if not request.dry_run:
            yield from submitter.take_over()
        result = submitter.submit(request)
        yield from [result] if result is not None else submitter.settle()


def schedule_many(ds: Any, requests: Sequence[ScheduleRequest]) -> Iterator[dict[str, Any]]:
    """Submit many jobs from one process; a request that fails is an error result, not the end.

    Jobs are submitted held and settled (logs reserved, released) a chunk at a time, so their
    results come in chunks, in the file's order."""
    with Submitter(ds) as submitter:
        if not all(request.dry_run for request in requests):
            yield from submitter.take_over()
        #: results in the file's order; None: a held job's, which settle gives
        waiting: list[dict[str, Any] | None] = []

        def settled() -> Iterator[dict[str, Any]]:
            results = iter(submitter.settle())
            for result in waiting:
                yield result if result is not None else next(results)
            waiting.clear()

        try:
            for number, request in enumerate(requests, start=1):
                try:
                    waiting.append(submitter.submit(request, number))
                except ScheduleError as exc:
                    submitter.note_failed(request, number)
                    waiting.append(
                        make_result(
                            ACTION,
                            "error",
                            submitter.dataset_path,
                            type="dataset",
                            message=f"job {number} ({request.cmd!r}): {exc}",
                            cmd=request.cmd,
                        )
                    )
                if len(submitter.unsettled) >= FACTS_CHUNK or not submitter.unsettled:
                    yield from settled()
            yield from settled()
        finally:
            # jobs an interrupted loop left held: released or cancelled, unreported
            submitter.settle()


class Submitter:
    """Submits jobs into one dataset; what all submissions share is looked up once."""

    def __init__(self, ds: Any) -> None:
        self.ds = ds
        self.dataset_path = str(ds.path)
        self._registry: Registry | None = None
        self._spool: UserSpool | None = None
        self._dsid: str | None = None
        self._head: str | None = None
        self._cluster: str | None = None
        self._substitutions: dict[str, str] | None = None
        #: jobs submitted held whose logs are still to be reserved (see settle)
        self.unsettled: list[Held] = []
        self._held = HeldSubmission()
        #: what slurmctld said of jobs to depend on, asked once per process (None: not held)
        self._standings: dict[int, JobStanding | None] = {}
        #: the dry runs of this process (their outputs and log files, by their number)
        self._dry = DryRun(ds, self._standings)
        #: the outputs of the submissions of this process that failed (``--jobs-from`` lines,
        #: rescheduled records), by their name: a later one that reads them has nothing to
        #: wait for and is refused
        self._failed: list[tuple[str, list[str]]] = []

    def __enter__(self) -> Submitter:
        return self

    def __exit__(self, *exc: object) -> None:
        self._held.close()
        if self._registry is not None:
            self._registry.close()

    def take_over(self) -> Iterator[dict[str, Any]]:
        """The open jobs of datalad-slurm 0.2.8, with their outputs reserved before ours are."""
        yield from take_over(self.ds, self._shared())

    def note_failed(self, request: ScheduleRequest, number: int | None = None) -> None:
        """A submission of many (a ``--jobs-from`` line, a rescheduled record: one with a
        number or a name) failed: later ones reading its outputs are refused (there is no
        job to wait for, and their inputs would not be its products)."""
        label = request.name or (f"job {number}" if number is not None else None)
        if label is None:
            return
        cwd = os.path.abspath(request.cwd or os.getcwd())
        outputs = []
        for output in request.outputs:
            try:
                outputs.append(normalise(output, self.dataset_path, cwd))
            except (PathOutsideDatasetError, ValueError):
                continue
        if outputs:
            self._failed.append((label, outputs))

    def substitutions(self) -> dict[str, str]:
        """The dataset's ``datalad.run.substitutions.*``, read once."""
        if self._substitutions is None:
            self._substitutions = substitutions(self.ds.config)
        return self._substitutions

    def _shared(self) -> Registry:
        """Open the registry and read the dataset's facts, on the first real submission."""
        if self._registry is None:
            self._registry = open_registry(self.dataset_path)
            self._spool = user_spool(self.ds)
            # markers of schedules killed between sbatch and registration (see finishing)
            spool_call(self._spool, "clean_inflight")
            self._dsid = self.ds.id
            self._head = self.ds.repo.get_hexsha()
            self._cluster = cluster_name()
        return self._registry

    def submit(self, request: ScheduleRequest, number: int | None = None) -> dict[str, Any] | None:
        """Submit one job, held; None: :meth:`settle` gives its result (a dry run's comes at
        once).  ``number`` is its place in a ``--jobs-from`` file."""
        dataset_path = self.dataset_path
        where = normalised(request, dataset_path)
        pwd, outputs, inputs = where.pwd, where.outputs, where.inputs
        scratch = scratch_of(request, dataset_path, outputs)
        # where the command runs: the scratch folder's place of the directory, with --alt-dir
        run_dir = altdir.place(scratch, pwd) if scratch else where.cwd
        command = command_of(request, run_dir, dataset_path, self.substitutions())
        input_hits, unmatched = input_paths(dataset_path, inputs)
        if ready(request.assume_ready, "inputs"):
            # as datalad run --assume-ready inputs: nothing is obtained, no glob checked
            unmatched = []
        if request.dry_run:
            return self._dry.run(
                command, run_dir, pwd, inputs, outputs, input_hits, unmatched, request, scratch
            )
        registry = self._shared()
        # inputs that open jobs are still to write are neither obtained nor required to exist
        products = registry.providers(inputs, None) if inputs else []
        input_hits, unmatched = not_made_yet(
            input_hits, unmatched, [held for _, held, _ in products]
        )
        if unmatched:
            raise ScheduleError(unmatched_inputs(dataset_path, unmatched))
        waits = plan_waits(
            inputs,
            request,
            products,
            failed=self._failed,
            cluster=self._cluster,
            held_here={held.job.id for held in self.unsettled},
            standings=self._standings,
        )
        refuse_scratch_waits(scratch, request, products)
        try:
            job = registry.reserve(
                cmd=request.cmd,
                pwd=pwd,
                # as datalad run records them: the globs, or (--expand) what they match now
                inputs=(
                    expand(inputs, dataset_path) if request.expand in ("inputs", "both") else inputs
                ),
                extra_inputs=[],
                outputs=outputs,
                chain=list(request.chain),
                message=request.message,
                dsid=self._dsid,
                submitted_from=self._head,
                expand=request.expand,
                depends_on=waits.depends_on,
                alt_dir=scratch,
            )
        except OutputConflictError as exc:
            raise ScheduleError(str(exc)) from exc
        try:
            if scratch and not ready(request.assume_ready, "outputs"):
                refuse_left_over(scratch, outputs, input_hits)
            prepare_worktree(
                self.ds,
                [] if ready(request.assume_ready, "inputs") else input_hits,
                # a job in a scratch folder writes nothing here: nothing to unlock
                [] if scratch or ready(request.assume_ready, "outputs") else outputs,
            )
            copied = prepare_scratch(dataset_path, scratch, pwd, input_hits, outputs)
        except BaseException:
            registry.forget_submission(job)
            raise
        submitted = run_held(
            command, run_dir, self._held, self._spool, registry, job, bool(scratch)
        )
        submission = submitted.submission
        cluster = submission.cluster or self._cluster
        # the job id goes on record at once; the job is held until settle reserved its logs
        try:
            registry.note_held(job, submission.job_id, cluster)
        except RegistryError as exc:
            raise ScheduleError(
                f"Slurm accepted job {submission.job_id}, but the registry could not record "
                f"it: {exc}. Cancel it ('scancel {submission.job_id}'), or commit its outputs "
                "by hand when it has ended; 10 minutes from now "
                "'datalad finish --close-failed-jobs' releases its outputs"
            ) from exc
        result = make_result(
            ACTION,
            "ok",
            dataset_path,
            type="dataset",
            message=f"submitted Slurm job {submission.job_id}, outputs {', '.join(outputs)}"
            + glob_note(outputs)
            + scratch_note(run_dir if scratch else None, copied),
            slurm_job_id=submission.job_id,
            cluster=cluster,
            cmd=request.cmd,
            outputs=outputs,
            inputs=inputs,
            pwd=pwd,
            depends_on=[job_id for _, job_id in waits.depends_on],
            **{"alt_dir": scratch} if scratch else {},
        )
        self.unsettled.append(
            Held(job, request, number, submitted.noted, submitted.spool_note, result, waits)
        )
        return None

    def settle(self) -> list[dict[str, Any]]:
        """Reserve the log files of the jobs submitted held, and release them (see
        :func:`settle_batch`); their results, in order."""
        if not self.unsettled or self._registry is None:
            return []
        batch, self.unsettled = self.unsettled, []
        return settle_batch(batch, self._registry, self._spool, self.dataset_path, self.note_failed)
