"""Submitting a job: reserve outputs, prepare the worktree, run sbatch held, reserve its
log files, release it, register.

The order matters for crash safety: outputs are reserved (state
``submitting``) before anything runs, and the job id is written the moment
the submit command returned one.  The job is submitted held
(``slurm/holding.py``): it cannot start before its log files are reserved
beside its outputs (``jobs/logs.py``), which opens it; a job whose logs collide
is cancelled before it ever ran.  A failed or refused submission releases
the reservation and registers nothing.
"""

from __future__ import annotations

import json
import os
import pwd as pwd_module
import shlex
import sqlite3
import subprocess
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from datalad_slurm.errors import DataladSlurmError
from datalad_slurm.git.runner import git_dir, run_git
from datalad_slurm.globs import expand, hits, in_git_dir, is_glob, output_paths, reserved_path
from datalad_slurm.jobs import altdir
from datalad_slurm.jobs import logs as joblogs
from datalad_slurm.jobs.job import Job
from datalad_slurm.jobs.migration import take_over
from datalad_slurm.jobs.pipelines import DependencyRefusal, Plan, plan
from datalad_slurm.jobs.placeholders import PlaceholderError, format_command, substitutions
from datalad_slurm.jobs.registry import Registry
from datalad_slurm.jobs.reservations import OutputConflictError
from datalad_slurm.jobs.schema import REGISTRY_DIRNAME, REGISTRY_FILENAME, RegistryError
from datalad_slurm.jobs.statedir import (
    clear_interrupted_writes,
    git_lock,
    git_writes,
    open_registry,
)
from datalad_slurm.paths import PathOutsideDatasetError, lies_in, normalise, overlaps
from datalad_slurm.results import SCHEDULE, make_result
from datalad_slurm.settings import spool_config
from datalad_slurm.slurm.conf import cluster_name
from datalad_slurm.slurm.dependency import (
    DependencyError,
    JobStanding,
    combine,
    parse_spec,
    set_dependency,
)
from datalad_slurm.slurm.holding import HeldSubmission, Noted, cancel, release
from datalad_slurm.slurm.jobid import NoJobIdError, parse_submission, printed_job_ids
from datalad_slurm.slurm.logfiles import requested_log_files, submitted_log_files
from datalad_slurm.slurm.sbatchargs import read_call, sbatch_calls
from datalad_slurm.slurm.submitted import CHUNK as FACTS_CHUNK
from datalad_slurm.slurm.submitted import HELD_REASONS, KEPT, ask_submission_facts
from datalad_slurm.spool import SpoolError, UserSpool

ACTION = SCHEDULE

#: the values of ``--expand``: which globs the record keeps expanded, as ``datalad run``
EXPAND_CHOICES = ("inputs", "outputs", "both")
#: the values of ``--assume-ready``: what needs no preparation, as ``datalad run``
ASSUME_READY_CHOICES = ("inputs", "outputs", "both")


class ScheduleError(DataladSlurmError, RuntimeError):
    """A request that cannot be scheduled; the message says what to change."""


@dataclass
class ScheduleRequest:
    """One submission, as the user described it."""

    cmd: str
    outputs: Sequence[str]
    inputs: Sequence[str] = ()
    message: str | None = None
    chain: Sequence[str] = ()
    #: the directory the command runs in (default: the current one)
    cwd: str | None = None
    dry_run: bool = False
    #: record these globs expanded (``inputs``, ``outputs``, ``both``), as ``datalad run --expand``
    expand: str | None = None
    #: wait (``--dependency=afterok``) for the open jobs whose outputs or logs its inputs
    #: overlap (``--no-auto-dependency``: False)
    auto_dependency: bool = True
    #: how messages name it among the others of one run (a rescheduled record's commit)
    name: str | None = None
    #: what needs no preparation (``inputs``: no get; ``outputs``: no unlock), as ``datalad run``
    assume_ready: str | None = None
    #: a scratch folder outside the dataset to run the job in (``--alt-dir``, see jobs/altdir.py)
    alt_dir: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)


def join_command(cmd: str | Sequence[str]) -> str:
    """A command line as a string; a single argument is taken as shell text."""
    if isinstance(cmd, str):
        return cmd
    if len(cmd) == 1:
        return cmd[0]
    return shlex.join(cmd)


def normalise_all(paths: Sequence[str], dataset_path: str, cwd: str, kind: str) -> list[str]:
    """Dataset-relative paths; a glob ending in ``/`` keeps it (it matches folders only)."""
    result: list[str] = []
    for path in paths:
        try:
            normal = normalise(path, dataset_path, cwd)
        except (PathOutsideDatasetError, ValueError) as exc:
            raise ScheduleError(f"{kind} {exc}") from exc
        if is_glob(normal) and path.endswith("/"):
            normal += "/"
        if normal not in result:
            result.append(normal)
    return result


def _check_expand(value: str | None) -> None:
    if value not in (None, *EXPAND_CHOICES):
        raise ScheduleError(
            f"--expand takes {', '.join(EXPAND_CHOICES)}, not {value!r}: which globs the record "
            "keeps expanded"
        )


def _check_assume_ready(value: str | None) -> None:
    if value not in (None, *ASSUME_READY_CHOICES):
        raise ScheduleError(
            f"--assume-ready takes {', '.join(ASSUME_READY_CHOICES)}, not {value!r}: what needs "
            "no preparation before the submission"
        )


def _ready(assume_ready: str | None, what: str) -> bool:
    """Whether ``--assume-ready`` spares the inputs' or the outputs' preparation."""
    return assume_ready in (what, "both")


def _scratch(request: ScheduleRequest, dataset_path: str, outputs: Sequence[str]) -> str | None:
    """The resolved scratch folder of ``--alt-dir`` (None without), checked."""
    if request.alt_dir is None:
        return None
    try:
        root = altdir.scratch_root(request.alt_dir, dataset_path)
        altdir.check_outputs(outputs)
    except altdir.AltDirError as exc:
        raise ScheduleError(str(exc)) from exc
    return root


def input_paths(dataset_path: str, inputs: Sequence[str]) -> tuple[list[str], list[str]]:
    """The inputs to obtain, a glob by its hits (as ``datalad run`` gets them), and the
    input globs that match nothing."""
    paths: list[str] = []
    unmatched: list[str] = []
    for given in inputs:
        if not is_glob(given):
            found = [given]
        else:
            found = [h.rstrip("/") or "." for h in hits(given, dataset_path)]
            found = [h for h in found if not in_git_dir(h)]
            if not found:
                unmatched.append(given)
        paths += [path for path in found if path not in paths]
    return paths, unmatched


def _unmatched_inputs(dataset_path: str, unmatched: Sequence[str]) -> str:
    return (
        "input glob(s) "
        + ", ".join(repr(p) for p in unmatched)
        + f" match nothing in the dataset at {dataset_path} ('datalad run' refuses such an "
        "input too); check the pattern (relative to the directory you submit from), save the "
        "files first, or install the subdataset they lie in ('datalad get -n PATH')"
    )


def _glob_note(outputs: Sequence[str]) -> str:
    """How the glob outputs are held, for the schedule's message."""
    held = [f"{o} holds {reserved_path(o)}" for o in outputs if is_glob(o)]
    return f" (glob {'; '.join(held)} until the job is finished)" if held else ""


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


@dataclass
class _Held:
    """A job submitted held whose log files are still to be reserved."""

    job: Job
    request: ScheduleRequest
    #: its number in a ``--jobs-from`` file (None: a single schedule)
    number: int | None
    noted: Noted
    spool_note: str | None
    #: the result once it is registered (completed by settle)
    result: dict[str, Any]
    #: the open jobs it waits for (pipelines.plan)
    waits: Plan = field(default_factory=Plan)

    @property
    def name(self) -> str:
        return f"Slurm job {self.job.job_id}"


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
        self.unsettled: list[_Held] = []
        self._held = HeldSubmission()
        #: the outputs of earlier dry runs of this process, by their number
        self._dry_reserved: list[tuple[int, list[str]]] = []
        #: the log files of earlier dry runs of this process, by their number
        self._dry_logs: list[tuple[int, list[joblogs.LogClaim]]] = []
        #: what slurmctld said of jobs to depend on, asked once per process (None: not held)
        self._standings: dict[int, JobStanding | None] = {}
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
            self._spool = _user_spool(self.ds)
            # markers of schedules killed between sbatch and registration (see finishing)
            _spool_call(self._spool, "clean_inflight")
            self._dsid = self.ds.id
            self._head = self.ds.repo.get_hexsha()
            self._cluster = cluster_name()
        return self._registry

    def submit(self, request: ScheduleRequest, number: int | None = None) -> dict[str, Any] | None:
        """Submit one job, held; None: :meth:`settle` gives its result (a dry run's comes at
        once).  ``number`` is its place in a ``--jobs-from`` file."""
        dataset_path = self.dataset_path
        cwd = os.path.abspath(request.cwd or os.getcwd())
        try:
            normalise(cwd, dataset_path, cwd)
        except PathOutsideDatasetError:
            cwd = dataset_path  # called from outside with -d: run from the dataset root
        if not os.path.isdir(cwd):
            raise ScheduleError(
                f"the directory {cwd} to submit from does not exist; create it (or check out the "
                "commit that has it) and try again"
            )
        if not request.outputs:
            raise ScheduleError(
                "no outputs given: name what the job writes with -o/--output PATH (at least one)"
            )
        outputs = normalise_all(request.outputs, dataset_path, cwd, "output")
        inputs = normalise_all(request.inputs, dataset_path, cwd, "input")
        _check_expand(request.expand)
        _check_assume_ready(request.assume_ready)
        pwd = normalise(cwd, dataset_path, cwd)
        scratch = _scratch(request, dataset_path, outputs)
        # where the command runs: the scratch folder's place of the directory, with --alt-dir
        run_dir = altdir.place(scratch, pwd) if scratch else cwd
        try:
            # the paths as given, as datalad run puts them into the command
            command = format_command(
                request.cmd,
                inputs=request.inputs,
                outputs=request.outputs,
                pwd=run_dir,
                dspath=dataset_path,
                configured=self.substitutions(),
            )
        except PlaceholderError as exc:
            raise ScheduleError(str(exc)) from exc
        input_hits, unmatched = input_paths(dataset_path, inputs)
        if _ready(request.assume_ready, "inputs"):
            # as datalad run --assume-ready inputs: nothing is obtained, no glob checked
            unmatched = []
        if request.dry_run:
            return self._dry_run(
                command, run_dir, pwd, inputs, outputs, input_hits, unmatched, request, scratch
            )
        registry = self._shared()
        spool = self._spool
        # inputs that open jobs are still to write are neither obtained nor required to exist
        products = registry.providers(inputs, None) if inputs else []
        input_hits, unmatched = _not_made_yet(
            input_hits, unmatched, [held for _, held, _ in products]
        )
        if unmatched:
            raise ScheduleError(_unmatched_inputs(dataset_path, unmatched))
        waits = self._waits(inputs, request, products)
        _refuse_scratch_waits(scratch, request, products)
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
            if scratch and not _ready(request.assume_ready, "outputs"):
                _refuse_left_over(scratch, outputs, input_hits)
            _prepare_worktree(
                self.ds,
                [] if _ready(request.assume_ready, "inputs") else input_hits,
                # a job in a scratch folder writes nothing here: nothing to unlock
                [] if scratch or _ready(request.assume_ready, "outputs") else outputs,
            )
            copied = _prepare_scratch(dataset_path, scratch, pwd, input_hits, outputs)
        except BaseException:
            registry.forget_submission(job)
            raise
        spool_note = _spool_call(spool, "begin_submission", job.token)
        # From here on a job may exist in Slurm, held: an interruption leaves the
        # reservation in 'submitting', which finish reports instead of dropping.
        proc = subprocess.run(
            command,
            shell=True,
            cwd=run_dir,
            capture_output=True,
            text=True,
            check=False,
            env=self._held.environment(),
        )
        noted = self._held.take_calls()
        if proc.returncode != 0:
            _spool_call(spool, "end_submission", job.token)
            registry.forget_submission(job)
            raise ScheduleError(
                f"the submit command {command!r} failed with exit code {proc.returncode}: "
                f"{proc.stderr.strip() or proc.stdout.strip() or '(no output)'}; "
                "nothing was registered, the outputs are free again"
                + _cancelled_note(printed_job_ids(proc.stdout), noted),
                advice=(
                    "the shell did not find a command: put Slurm's client commands (sbatch) "
                    f"on PATH (now {os.environ.get('PATH', '')}), then schedule again"
                    if proc.returncode == 127
                    else _scratch_hint(run_dir if scratch else None)
                    or "schedule again when the submit command works"
                ),
            )
        try:
            submission = parse_submission(proc.stdout)
        except NoJobIdError as exc:
            _spool_call(spool, "end_submission", job.token)
            registry.forget_submission(job)
            raise ScheduleError(
                f"{exc}: {command!r} printed {proc.stdout.strip()!r}; nothing was registered. "
                "Use sbatch (plain or --parsable) as the submit command"
                + _cancelled_note(printed_job_ids(proc.stdout), noted)
            ) from exc
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
            + _glob_note(outputs)
            + _scratch_note(run_dir if scratch else None, copied),
            slurm_job_id=submission.job_id,
            cluster=cluster,
            cmd=request.cmd,
            outputs=outputs,
            inputs=inputs,
            pwd=pwd,
            depends_on=[job_id for _, job_id in waits.depends_on],
            **{"alt_dir": scratch} if scratch else {},
        )
        self.unsettled.append(_Held(job, request, number, noted, spool_note, result, waits))
        return None

    def _waits(
        self, inputs: list[str], request: ScheduleRequest, products: list[tuple[str, str, Job]]
    ) -> Plan:
        """How the job is to wait for the open jobs whose products its inputs are
        (``products``: :meth:`Registry.providers`); ScheduleError when it cannot."""
        if not request.auto_dependency or not inputs:
            return Plan()
        failed = [
            (earlier, i, o)
            for earlier, outputs in self._failed
            for i in inputs
            for o in outputs
            if overlaps(reserved_path(i), reserved_path(o))
        ]
        if failed:
            raise ScheduleError(
                "its inputs are outputs of earlier submissions of this run that failed ("
                + "; ".join(f"input {i!r} overlaps {o!r} of {n}" for n, i, o in failed)
                + "), so there is nothing to wait for; fix those and schedule it again, or "
                "give --no-auto-dependency"
            )
        try:
            return plan(
                products,
                inputs,
                self._cluster,
                held_here={held.job.id for held in self.unsettled},
                standings=self._standings,
            )
        except DependencyRefusal as exc:
            raise ScheduleError(str(exc)) from exc

    def settle(self) -> list[dict[str, Any]]:
        """Reserve the log files of the jobs submitted held, and release them; a job whose
        logs collide (with what an open job holds, or with a file git tracks) is cancelled
        before it ever ran and registers nothing.  One squeue, one registry transaction,
        one release for all of them; their results, in order."""
        if not self.unsettled or self._registry is None:
            return []
        batch, self.unsettled = self.unsettled, []
        registry = self._registry
        facts, problem = ask_submission_facts([h.job.job_id for h in batch if h.job.job_id])
        missing = [h.job.job_id for h in batch if h.job.job_id and h.job.job_id not in facts]
        if missing:  # once more: a busy slurmctld must not cost the jobs their submission
            time.sleep(1)
            again, problem = ask_submission_facts(missing)
            facts.update(again)
        claims: dict[int, list[joblogs.LogClaim]] = {}
        refused: dict[int, str] = {}
        for held in batch:
            job_facts = facts.get(held.job.job_id or 0)
            if job_facts is None and not held.noted.through_wrapper:
                # not held (sbatch by its full path): it may have ended and left slurmctld
                # already; registered as it is, its logs unknown
                claims[held.job.id] = []
                continue
            if job_facts is None:
                refused[held.job.id] = (
                    f"Slurm did not say where {held.name} writes its logs "
                    f"({problem or 'squeue does not list it'})"
                )
                continue
            files = submitted_log_files(job_facts, held.job.job_id or 0)
            if held.job.alt_dir:  # written in the scratch folder, brought back here by finish
                root = held.job.alt_dir
                files = [
                    replace(f, path=altdir.to_dataset(f.path, root, self.dataset_path))
                    for f in files
                ]
            claims[held.job.id] = joblogs.in_dataset(files, self.dataset_path)
        # a log inside the job's own output is no collision: schedule unlocked what git tracks
        foreign = {
            held.job.id: joblogs.outside(claims[held.job.id], held.job.outputs)
            for held in batch
            if held.job.id in claims
        }
        tracked = {
            (c.path, c.log.exact)
            for c in joblogs.tracked(self.dataset_path, [c for cs in foreign.values() for c in cs])
        }
        for held in batch:
            collided = [c for c in foreign.get(held.job.id, []) if (c.path, c.log.exact) in tracked]
            if collided:
                refused[held.job.id] = joblogs.tracked_message(held.name, collided)
        self._set_dependencies(batch, facts, refused)
        in_batch = {held.job.id for held in batch}
        conflicts = registry.open_with_logs(
            [
                (held.job, joblogs.reserved(claims[held.job.id]))
                for held in batch
                if held.job.id not in refused
            ],
            waits_for={
                held.job.id: [row for row, _ in held.waits.depends_on if row in in_batch]
                for held in batch
            },
        )
        for held in batch:
            if held.job.id in conflicts and not conflicts[held.job.id]:
                refused[held.job.id] = _upstream_refused(held, refused)
            elif held.job.id in conflicts:
                refused[held.job.id] = joblogs.conflict_message(
                    held.name, conflicts[held.job.id], claims[held.job.id]
                )
        results = self._refuse([h for h in batch if h.job.id in refused], refused)
        results.update(self._register([h for h in batch if h.job.id not in refused], facts, claims))
        return [results[held.job.id] for held in batch]

    def _set_dependencies(
        self, batch: list[_Held], facts: dict[int, dict[str, str]], refused: dict[int, str]
    ) -> None:
        """Give each held job that waits for others its ``--dependency``: the user's own, as
        slurmctld holds it (command line, ``#SBATCH`` lines, a script on standard input alike),
        joined with ``afterok`` on ours, set before the job is released.  A job that cannot
        get it, or that waits for a job refused here, is refused (``refused``, in place)."""
        specs: list[tuple[Job, str]] = []
        for held in batch:
            if held.job.id in refused:
                continue
            upstream = [row for row, _ in held.waits.depends_on if row in refused]
            if upstream:
                refused[held.job.id] = _upstream_refused(held, refused)
                continue
            if not held.waits.after:
                continue
            job_facts = facts.get(held.job.job_id or 0)
            if job_facts is None:
                refused[held.job.id] = (
                    f"{held.name} could not be made to wait for job(s) "
                    f"{_ids(held.waits.after)}: slurmctld does not list it (it was not "
                    "submitted held and may have run already)"
                )
                continue
            try:
                spec = combine(parse_spec(job_facts.get("dependency")), held.waits.after)
            except DependencyError as exc:
                refused[held.job.id] = f"{held.name}: {exc}"
                continue
            problem = set_dependency(held.job.job_id or 0, spec)
            if problem:
                refused[held.job.id] = (
                    f"{held.name} could not be made to wait for job(s) "
                    f"{_ids(held.waits.after)} (scontrol update Dependency={spec}: {problem})"
                )
                continue
            held.result["dependency"] = str(spec)
            specs.append((held.job, str(spec)))
        if specs and self._registry is not None:
            self._registry.note_dependency_specs_many(specs)

    def _refuse(self, refused: list[_Held], why: dict[int, str]) -> dict[int, dict[str, Any]]:
        """Cancel the refused jobs (held: they never ran) and forget them; their results."""
        if not refused:
            return {}
        problem = cancel([held.job.job_id for held in refused if held.job.job_id is not None])
        results = {}
        for held in refused:
            _spool_call(self._spool, "end_submission", held.job.token)
            if self._registry is not None:
                self._registry.forget_submission(held.job)
            self.note_failed(held.request, held.number)
            if problem:
                outcome = (
                    f"It could not be cancelled ({problem}): cancel it with 'scancel "
                    f"{held.job.job_id}'"
                )
                if held.noted.through_wrapper:
                    outcome += "; it is held and cannot start unless released"
            elif held.noted.through_wrapper:
                outcome = "It was cancelled before it could start"
            else:
                outcome = (
                    "It was cancelled, but it may have started first: the submit command did "
                    "not run sbatch through PATH, so it was not submitted held"
                )
            message = (
                f"{why[held.job.id]}. {outcome}; nothing was registered, the outputs are free again"
            )
            if held.number is not None:
                message = f"job {held.number} ({held.request.cmd!r}): {message}"
            results[held.job.id] = {
                **held.result,
                "status": "error",
                "message": message,
                "cancelled": not problem,
            }
        return results

    def _register(
        self,
        accepted: list[_Held],
        facts: dict[int, dict[str, str]],
        claims: dict[int, list[joblogs.LogClaim]],
    ) -> dict[int, dict[str, Any]]:
        """The accepted jobs are open: keep their facts, register them in the spool, release
        them (all at once); their results."""
        if not accepted or self._registry is None:
            return {}
        self._registry.note_submission_facts_many(
            [
                (held.job, {k: v for k, v in facts[held.job.job_id].items() if k in KEPT})
                for held in accepted
                if held.job.job_id in facts
            ]
        )
        for held in accepted:
            held.spool_note = held.spool_note or _spool_call(
                self._spool, "register", held.job.cluster, held.job.job_id, held.job.token
            )
        # Slurm makes no folder for a log: the dataset's folders of the logs of jobs that run
        # in a scratch folder are made there too, before they are released
        folders_note = {
            held.job.id: _log_folders(self.dataset_path, held.job, claims[held.job.id])
            for held in accepted
            if held.job.alt_dir
        }
        to_release = [
            held.job.job_id or 0
            for held in accepted
            if held.noted.through_wrapper
            and not held.noted.user_hold
            and facts.get(held.job.job_id or 0, {}).get("reason") in HELD_REASONS
        ]
        problem = release(to_release) if to_release else None
        results = {}
        for held in accepted:
            job_id = held.job.job_id
            logs = joblogs.reserved(claims[held.job.id])
            result = dict(held.result)
            outside = [p for p in logs if not any(lies_in(p, o) for o in result["outputs"])]
            if outside:
                result["message"] += f", log files {', '.join(outside)}"
            result["message"] += _waits_note(held.waits, result.get("dependency"))
            notes = [held.spool_note] if held.spool_note else []
            if folders_note.get(held.job.id):
                notes.append(folders_note[held.job.id] or "")
            if held.noted.user_hold:
                notes.append(f"held, as asked: release it with 'scontrol release {job_id}'")
            elif job_id in to_release and problem:
                notes.append(
                    f"it could not be released ({problem}): it is held until you run "
                    f"'scontrol release {job_id}'"
                )
            if notes:
                result["message"] += f" ({'; '.join(notes)})"
            result["logs"] = logs
            result["held"] = bool(held.noted.user_hold or (job_id in to_release and problem))
            results[held.job.id] = result
        return results

    def _dry_run(
        self,
        command: str,
        cwd: str,
        pwd: str,
        inputs: list[str],
        outputs: list[str],
        input_hits: list[str],
        unmatched: list[str],
        request: ScheduleRequest,
        scratch: str | None,
    ) -> dict[str, Any]:
        """Every check a submission runs, with nothing reserved, obtained, unlocked or run."""
        problems = self._dry_conflicts(outputs)
        waits: list[str] = []
        if inputs:
            waits, problem, held = self._dry_waits(inputs, request, scratch)
            input_hits, unmatched = _not_made_yet(input_hits, unmatched, held)
            if request.auto_dependency and problem:
                problems.append(problem)
            if not request.auto_dependency:
                waits = []
        if unmatched:
            problems.append(_unmatched_inputs(self.dataset_path, unmatched))
        logs, unread = self._dry_logs_of(command, cwd, scratch)
        problems += self._dry_log_problems(logs, outputs)
        if scratch and not _ready(request.assume_ready, "outputs"):
            try:
                _refuse_left_over(scratch, outputs, input_hits)
            except ScheduleError as exc:
                problems.append(str(exc))
        inputs_ready = _ready(request.assume_ready, "inputs")
        missing, to_get, unknown = _inputs_to_get(self.ds, [] if inputs_ready else input_hits)
        if missing:
            problems.append(
                "input(s) " + ", ".join(repr(p) for p in missing) + " do not exist in the "
                "dataset at " + self.dataset_path + "; check the path (relative to the "
                "directory you submit from) or save the file first"
            )
        if unknown:
            problems.append(
                "no copy of the content of input(s) "
                + ", ".join(repr(p) for p in unknown)
                + " is known ('git annex whereis' lists none): nothing can get it"
            )
        base: dict[str, Any] = {
            "cmd": command,
            "outputs": outputs,
            "inputs": inputs,
            "pwd": pwd,
            "dry_run": True,
            "logs": [c.path for c in logs],
        }
        if problems:
            return make_result(
                ACTION,
                "error",
                self.dataset_path,
                message=f"dry run: {command!r} would be refused: " + "; ".join(problems),
                **base,
            )
        self._dry_reserved.append((len(self._dry_reserved) + 1, outputs))
        self._dry_logs.append((len(self._dry_reserved), logs))
        unlock = not scratch and not _ready(request.assume_ready, "outputs")
        to_unlock = _outputs_to_unlock(self.ds, outputs) if unlock else []
        notes = [f"would submit {command!r} from {pwd} with outputs {outputs}"]
        if scratch:
            notes.append(
                f"in the scratch folder {cwd}, with the input(s) {', '.join(input_hits) or '-'} "
                "copied there"
            )
        shown = [c.path if c.log.exact else c.what for c in joblogs.outside(logs, outputs)]
        if shown:
            notes.append(f"log files {', '.join(shown)}")
        if unread:
            notes.append(unread)
        if to_get:
            notes.append(f"get the content of {', '.join(to_get)}")
        if to_unlock:
            notes.append(f"unlock {', '.join(to_unlock)}")
        if waits:
            notes.append(f"wait for {', '.join(waits)} (its inputs are their outputs)")
        return make_result(
            ACTION,
            "ok",
            self.dataset_path,
            message="; ".join(notes) + " (dry run: nothing was done)",
            would_get=to_get,
            would_unlock=to_unlock,
            **base,
        )

    def _dry_waits(
        self, inputs: list[str], request: ScheduleRequest, scratch: str | None
    ) -> tuple[list[str], str | None, list[str]]:
        """The jobs a submission would wait for (open jobs, earlier dry-run jobs of this
        process), why it could not, as :meth:`_waits` decides, and the paths of the inputs
        that those jobs hold (they are to write them), with nothing written."""
        earlier = [
            (number, reserved_path(o))
            for number, outputs in self._dry_reserved
            for o in outputs
            if any(overlaps(reserved_path(i), reserved_path(o)) for i in inputs)
        ]
        waits = list(dict.fromkeys(f"dry-run job {number}" for number, _ in earlier))
        held = [path for _, path in earlier]
        path = os.path.join(git_dir(self.dataset_path), REGISTRY_DIRNAME, REGISTRY_FILENAME)
        if not os.path.exists(path):
            return waits, None, held
        try:
            with Registry(path, read_only=True) as registry:
                products = registry.providers(inputs, None)
            held += [path for _, path, _ in products]
            _refuse_scratch_waits(scratch, request, products)
            found = plan(products, inputs, cluster_name(), (), self._standings)
        except (RegistryError, sqlite3.Error) as exc:
            raise ScheduleError(f"the job registry {path} cannot be read: {exc}") from exc
        except (DependencyRefusal, ScheduleError) as exc:
            return waits, str(exc), held
        return [f"job {job_id}" for _, job_id in found.depends_on] + waits, None, held

    def _dry_conflicts(self, outputs: list[str]) -> list[str]:
        """The conflicts :meth:`Registry.reserve` would find, and those with earlier dry runs
        of this process (a ``--jobs-from`` file), as one message each."""
        problems: list[str] = []
        path = os.path.join(git_dir(self.dataset_path), REGISTRY_DIRNAME, REGISTRY_FILENAME)
        if os.path.exists(path):
            try:
                with Registry(path, read_only=True) as registry:
                    conflicts = registry.conflicts(outputs)
            except (RegistryError, sqlite3.Error) as exc:
                raise ScheduleError(f"the job registry {path} cannot be read: {exc}") from exc
            if conflicts:
                problems.append(str(OutputConflictError(conflicts, outputs)))
        for number, earlier in self._dry_reserved:
            clashes = [
                (o, e)
                for o in outputs
                for e in earlier
                if overlaps(reserved_path(o), reserved_path(e))
            ]
            if clashes:
                problems.append(
                    "output conflict with dry-run job "
                    f"{number} before it: " + "; ".join(f"{o!r} overlaps {e!r}" for o, e in clashes)
                )
        return problems

    def _dry_logs_of(
        self, command: str, cwd: str, scratch: str | None
    ) -> tuple[list[joblogs.LogClaim], str | None]:
        """The log files (inside the dataset) of the sbatch calls in a submit command, as sbatch
        would read its options, script and environment; and why none could be told.  Run in a
        scratch folder, they are written there and brought back to the same places here."""
        calls = list(sbatch_calls(command))
        if not calls:
            return [], "its log files cannot be told before submission: it runs no sbatch itself"
        files = []
        for arguments in calls:
            call = read_call(arguments, cwd)
            stdout, stderr = call.log_patterns()
            try:
                files += requested_log_files(
                    stdout, stderr, call.work_dir, call.array, call.job_name, _user_name()
                )
            except ValueError:
                continue  # an array spec sbatch refuses: so does the submission
        if scratch:
            files = [
                replace(f, path=altdir.to_dataset(f.path, scratch, self.dataset_path))
                for f in files
            ]
        return joblogs.in_dataset(files, self.dataset_path), None

    def _dry_log_problems(self, logs: list[joblogs.LogClaim], outputs: list[str]) -> list[str]:
        """What settle would refuse these log files for: files git tracks, what open jobs
        hold, and what earlier dry runs of this process would hold."""
        problems = []
        name = ""
        # a log inside the job's own output is no collision: schedule unlocks what git tracks
        own = joblogs.outside(logs, outputs)
        tracked = joblogs.tracked(self.dataset_path, own)
        if tracked:
            problems.append(joblogs.tracked_message(name, tracked))
        path = os.path.join(git_dir(self.dataset_path), REGISTRY_DIRNAME, REGISTRY_FILENAME)
        if own and os.path.exists(path):
            try:
                with Registry(path, read_only=True) as registry:
                    conflicts = registry.conflicts([c.path for c in own])
            except (RegistryError, sqlite3.Error) as exc:
                raise ScheduleError(f"the job registry {path} cannot be read: {exc}") from exc
            conflicts = [c for c in conflicts if _collides(c[0], c[1], own)]
            if conflicts:
                problems.append(joblogs.conflict_message(name, conflicts, own))
        for number, earlier in self._dry_logs:
            held = [*self._dry_reserved[number - 1][1], *(c.path for c in earlier)]
            clashes = [(c.path, h) for c in own for h in held if _collides(c.path, h, own)] + [
                (o, c.path) for o in outputs for c in earlier if _collides(c.path, o, earlier)
            ]
            if clashes:
                problems.append(
                    f"log file conflict with dry-run job {number} before it: "
                    + "; ".join(f"{a!r} overlaps {b!r}" for a, b in clashes)
                )
        return problems


def _refuse_scratch_waits(
    scratch: str | None, request: ScheduleRequest, products: Sequence[tuple[str, str, Job]]
) -> None:
    """A job cannot wait for a product that goes through a scratch folder (``--alt-dir``):
    its own inputs are copied there at submission, and a provider that runs in one puts its
    outputs into the dataset only when ``finish`` commits it."""
    if not request.auto_dependency or not products:
        return
    providers = {job.id: job for _, _, job in products}
    if scratch:
        ids = _ids([job.job_id for job in providers.values() if job.job_id is not None])
        raise ScheduleError(
            f"its inputs are outputs of open job(s) {ids}, not committed yet, and a job run in "
            "a scratch folder (--alt-dir) gets copies of its inputs when it is submitted, so it "
            "cannot wait for them; run 'datalad finish' for those jobs first and schedule it "
            "then, or run it in the dataset (without --alt-dir)"
        )
    in_scratch = [job for job in providers.values() if job.alt_dir]
    if in_scratch:
        named = "; ".join(f"job {job.job_id} in {job.alt_dir}" for job in in_scratch)
        raise ScheduleError(
            f"its inputs are outputs of open jobs that run in a scratch folder ({named}): their "
            "outputs reach the dataset only when 'datalad finish' commits them, so it cannot "
            "wait for them; finish those jobs first and schedule it then"
        )


def _not_made_yet(
    to_get: list[str], unmatched: list[str], held: Sequence[str]
) -> tuple[list[str], list[str]]:
    """The inputs to obtain and the globs that match nothing, without what open jobs are still
    to write (``held``: an input inside what one holds; a glob whose folder overlaps it): such
    an input need not exist yet, and there is nothing to obtain."""
    if not held:
        return to_get, unmatched
    return (
        [p for p in to_get if not any(lies_in(p, h) for h in held)],
        [g for g in unmatched if not any(overlaps(reserved_path(g), h) for h in held)],
    )


def _waits_note(waits: Plan, dependency: str | None) -> str:
    """What the job waits for, for its result's message (with the whole ``--dependency``)."""
    if not waits.depends_on:
        return ""
    ids = [job_id for _, job_id in waits.depends_on]
    note = f", reads the outputs of open job(s) {_ids(ids)}"
    if waits.notes:
        note += f" ({'; '.join(waits.notes)})"
    if waits.after:
        whom = "them" if sorted(waits.after) == sorted(ids) else f"job(s) {_ids(waits.after)}"
        ours = "afterok:" + ":".join(map(str, waits.after))
        note += f", waits for {whom}: --dependency={dependency or ours}"
        if dependency and dependency != ours:
            note += " (its own joined with ours)"
    return note


def _upstream_refused(held: _Held, refused: dict[int, str]) -> str:
    """Why a job that waits for a refused job of the same batch is refused too."""
    ids = [job_id for row, job_id in held.waits.depends_on if row in refused]
    return (
        f"{held.name} waits for job(s) {_ids(ids)}, which were refused (see there), so it "
        "could never start"
    )


def _ids(job_ids: Sequence[int]) -> str:
    return ", ".join(map(str, job_ids))


def _collides(log: str, other: str, claims: Sequence[joblogs.LogClaim]) -> bool:
    """Whether a log claim collides with another path: a folder of names known only once the
    job id is holds only this job's files of that name, so it collides only with what
    holds the folder (it or a folder above it)."""
    claim = next((c for c in claims if c.path == log), None)
    if claim is not None and not claim.log.own_name:
        return lies_in(log, other)
    return overlaps(log, other)


def _user_name() -> str:
    """The account's name (``%u`` in log names)."""
    try:
        return pwd_module.getpwuid(os.getuid()).pw_name
    except KeyError:
        return str(os.getuid())


def _cancelled_note(job_ids: list[int], noted: Noted) -> str:
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


def _inputs_to_get(ds: Any, inputs: Sequence[str]) -> tuple[list[str], list[str], list[str]]:
    """Inputs as ``datalad get`` would meet them: (missing, content to get, content nowhere).

    An input inside a subdataset that is not installed counts as there (get installs it).
    """
    if not inputs:
        return [], [], []
    root = str(ds.path)
    absent = [
        os.path.relpath(r["path"], root)
        for r in ds.subdatasets(
            state="absent", on_failure="ignore", return_type="list", result_renderer="disabled"
        )
        if r.get("path")
    ]
    missing: list[str] = []
    present: list[str] = []
    for path in inputs:
        if any(path == a or path.startswith(a + "/") for a in absent):
            continue
        (present if os.path.lexists(os.path.join(root, path)) else missing).append(path)
    if not present or not os.path.exists(os.path.join(git_dir(root), "annex")):
        return missing, [], []
    absent_content = _annex_json(root, "find", ["--not", "--in=here"], present)
    whereis = _annex_json(root, "whereis", [], absent_content) if absent_content else {}
    nowhere = [f for f in absent_content if not whereis.get(f)]
    return missing, [f for f in absent_content if f not in nowhere], nowhere


def _annex_json(root: str, command: str, options: Sequence[str], paths: Sequence[str]) -> Any:
    """``git annex find`` (the files) or ``whereis`` (file -> its copies) as JSON."""
    proc = subprocess.run(
        ["git", "annex", command, *options, "--json", "--", *paths],
        cwd=root,
        capture_output=True,
        text=True,
        check=False,
    )
    records = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    if command == "find":
        return [r["file"] for r in records if "file" in r]
    return {r["file"]: r.get("whereis") or [] for r in records if "file" in r}


def _user_spool(ds: Any) -> UserSpool | None:
    config = spool_config(ds)
    return UserSpool(config.spool) if config else None


def _spool_call(spool: UserSpool | None, method: str, *args: Any) -> str | None:
    """Tell the spool; trouble there costs the job its event, not its submission."""
    if spool is None:
        return None
    try:
        getattr(spool, method)(*args)
    except (OSError, SpoolError) as exc:
        return f"not registered in the spool, finish will ask Slurm instead: {exc}"
    return None


def _refuse_left_over(scratch: str, outputs: Sequence[str], inputs: Sequence[str]) -> None:
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


def _prepare_scratch(
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


def _scratch_note(run_dir: str | None, copied: Sequence[str]) -> str:
    """Where a job run in a scratch folder runs, for the schedule's message."""
    if run_dir is None:
        return ""
    return f", running in the scratch folder {run_dir} ({len(copied)} input file(s) copied there)"


def _scratch_hint(run_dir: str | None) -> str:
    """Why a submit command may fail in the scratch folder: the script is not there."""
    if run_dir is None:
        return ""
    return (
        f"with --alt-dir the command runs in the scratch folder {run_dir}: a script it names "
        "by a relative path must be declared an input (-i), which copies it there, or be "
        "named by its absolute path; then schedule again"
    )


def _log_folders(dataset_path: str, job: Job, claims: Sequence[joblogs.LogClaim]) -> str | None:
    """Make the folders of a scratch job's logs there (those the dataset has); why not."""
    assert job.alt_dir is not None
    folders = [os.path.dirname(c.path) if c.log.exact else c.path for c in claims]
    try:
        altdir.make_folders(dataset_path, job.alt_dir, folders)
    except altdir.AltDirError as exc:
        return f"{exc}: Slurm cannot write the job's log there"
    return None


def _prepare_worktree(ds: Any, inputs: Sequence[str], outputs: Sequence[str]) -> None:
    """Obtain inputs (globs by their hits) and unlock outputs that exist (globs: what
    they match now), as ``datalad run`` does."""
    root = str(ds.path)
    if inputs:
        results = ds.get(
            path=[os.path.join(root, p) for p in inputs],
            on_failure="ignore",
            return_type="list",
            result_renderer="disabled",
        )
        failed = [r for r in results if r.get("status") in ("error", "impossible")]
        if failed:
            details = "; ".join(f"{r.get('path')}: {r.get('message')}" for r in failed)
            raise ScheduleError(f"could not obtain input(s): {details}")
    existing = [os.path.join(root, p) for p in _outputs_to_unlock(ds, outputs)]
    if existing:
        with git_lock(root):
            clear_interrupted_writes(root)
            with git_writes(root):
                results = ds.unlock(
                    path=existing,
                    on_failure="ignore",
                    return_type="list",
                    result_renderer="disabled",
                )
        failed = [r for r in results if r.get("status") == "error"]
        if failed:
            details = "; ".join(f"{r.get('path')}: {r.get('message')}" for r in failed)
            raise ScheduleError(f"could not unlock output(s): {details}")


def _outputs_to_unlock(ds: Any, outputs: Sequence[str]) -> list[str]:
    """The outputs that exist and hold what git tracks: those schedule unlocks."""
    root = str(ds.path)
    existing = [
        os.path.join(root, p)
        for p in output_paths(root, outputs)
        if _may_hold_files(os.path.join(root, p))
    ]
    # only what git tracks can be (and needs to be) unlocked
    tracked = run_git(root, "ls-files", "-z", "--", *existing).split("\0") if existing else []
    return [os.path.relpath(path, root) for path in existing if _holds_tracked(root, path, tracked)]


def _may_hold_files(path: str) -> bool:
    """Anything there that git could track (a missing path or an empty folder holds nothing)?"""
    if os.path.isdir(path) and not os.path.islink(path):
        with os.scandir(path) as entries:
            return any(True for _ in entries)
    return os.path.lexists(path)


def _holds_tracked(root: str, path: str, tracked: Sequence[str]) -> bool:
    relative = os.path.relpath(path, root)
    if relative == ".":
        return any(tracked)
    return any(t == relative or t.startswith(relative + "/") for t in tracked if t)
