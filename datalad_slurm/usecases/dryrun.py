"""A dry run of a submission (``schedule --dry-run``): every check a submission runs, with
nothing reserved, obtained, unlocked or run.  The output conflicts the registry (opened
read-only) would find, the open jobs it would wait for, its log files as the sbatch calls in
the command would name them (``slurm/sbatchargs.py``) and what they would collide with, the
scratch folder's left-overs, the inputs that are missing or have no copy anywhere; what it
would get and unlock.  The dry runs of one process (a ``--jobs-from`` file) are checked
against each other as the real submissions would be.
"""

from __future__ import annotations

import os
import pwd as pwd_module
import sqlite3
from collections.abc import MutableMapping, Sequence
from dataclasses import replace
from typing import Any

from datalad_slurm.git.runner import git_dir
from datalad_slurm.globs import reserved_path
from datalad_slurm.jobs import altdir
from datalad_slurm.jobs import logs as joblogs
from datalad_slurm.jobs.pipelines import DependencyRefusal, plan
from datalad_slurm.jobs.registry import Registry
from datalad_slurm.jobs.reservations import OutputConflictError
from datalad_slurm.jobs.schema import REGISTRY_DIRNAME, REGISTRY_FILENAME, RegistryError
from datalad_slurm.paths import lies_in, overlaps
from datalad_slurm.results import SCHEDULE, make_result
from datalad_slurm.slurm.conf import cluster_name
from datalad_slurm.slurm.dependency import JobStanding
from datalad_slurm.slurm.logfiles import requested_log_files
from datalad_slurm.slurm.sbatchargs import read_call, sbatch_calls
from datalad_slurm.usecases.request import (
    ScheduleError,
    ScheduleRequest,
    ready,
    unmatched_inputs,
)
from datalad_slurm.usecases.scratch import refuse_left_over
from datalad_slurm.usecases.waits import not_made_yet, refuse_scratch_waits
from datalad_slurm.usecases.worktree import inputs_to_get, outputs_to_unlock


class DryRun:
    """The dry runs of one process, into one dataset."""

    def __init__(self, ds: Any, standings: MutableMapping[int, JobStanding | None]) -> None:
        self.ds = ds
        self.dataset_path = str(ds.path)
        #: what slurmctld said of jobs to depend on (shared with the process's submissions)
        self._standings = standings
        #: the outputs of earlier dry runs of this process, by their number
        self._reserved: list[tuple[int, list[str]]] = []
        #: the log files of earlier dry runs of this process, by their number
        self._logs: list[tuple[int, list[joblogs.LogClaim]]] = []

    def _registry_path(self) -> str:
        """Where the registry is (a dry run only reads it, if it is there)."""
        return os.path.join(git_dir(self.dataset_path), REGISTRY_DIRNAME, REGISTRY_FILENAME)

    def run(
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
        problems = self._conflicts(outputs)
        waits: list[str] = []
        if inputs:
            waits, problem, held = self._waits(inputs, request, scratch)
            input_hits, unmatched = not_made_yet(input_hits, unmatched, held)
            if request.auto_dependency and problem:
                problems.append(problem)
            if not request.auto_dependency:
                waits = []
        if unmatched:
            problems.append(unmatched_inputs(self.dataset_path, unmatched))
        logs, unread = self._logs_of(command, cwd, scratch)
        problems += self._log_problems(logs, outputs)
        if scratch and not ready(request.assume_ready, "outputs"):
            try:
                refuse_left_over(scratch, outputs, input_hits)
            except ScheduleError as exc:
                problems.append(str(exc))
        inputs_ready = ready(request.assume_ready, "inputs")
        missing, to_get, unknown = inputs_to_get(self.ds, [] if inputs_ready else input_hits)
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
                SCHEDULE,
                "error",
                self.dataset_path,
                message=f"dry run: {command!r} would be refused: " + "; ".join(problems),
                **base,
            )
        self._reserved.append((len(self._reserved) + 1, outputs))
        self._logs.append((len(self._reserved), logs))
        unlock = not scratch and not ready(request.assume_ready, "outputs")
        to_unlock = outputs_to_unlock(self.ds, outputs) if unlock else []
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
            SCHEDULE,
            "ok",
            self.dataset_path,
            message="; ".join(notes) + " (dry run: nothing was done)",
            would_get=to_get,
            would_unlock=to_unlock,
            **base,
        )

    def _waits(
        self, inputs: list[str], request: ScheduleRequest, scratch: str | None
    ) -> tuple[list[str], str | None, list[str]]:
        """The jobs a submission would wait for (open jobs, earlier dry-run jobs of this
        process), why it could not, as :func:`plan_waits` decides, and the paths of the inputs
        that those jobs hold (they are to write them), with nothing written."""
        earlier = [
            (number, reserved_path(o))
            for number, outputs in self._reserved
            for o in outputs
            if any(overlaps(reserved_path(i), reserved_path(o)) for i in inputs)
        ]
        waits = list(dict.fromkeys(f"dry-run job {number}" for number, _ in earlier))
        held = [path for _, path in earlier]
        path = self._registry_path()
        if not os.path.exists(path):
            return waits, None, held
        try:
            with Registry(path, read_only=True) as registry:
                products = registry.providers(inputs, None)
            held += [path for _, path, _ in products]
            refuse_scratch_waits(scratch, request, products)
            found = plan(products, inputs, cluster_name(), (), self._standings)
        except (RegistryError, sqlite3.Error) as exc:
            raise ScheduleError(f"the job registry {path} cannot be read: {exc}") from exc
        except (DependencyRefusal, ScheduleError) as exc:
            return waits, str(exc), held
        return [f"job {job_id}" for _, job_id in found.depends_on] + waits, None, held

    def _conflicts(self, outputs: list[str]) -> list[str]:
        """The conflicts :meth:`Registry.reserve` would find, and those with earlier dry runs
        of this process (a ``--jobs-from`` file), as one message each."""
        problems: list[str] = []
        path = self._registry_path()
        if os.path.exists(path):
            try:
                with Registry(path, read_only=True) as registry:
                    conflicts = registry.conflicts(outputs)
            except (RegistryError, sqlite3.Error) as exc:
                raise ScheduleError(f"the job registry {path} cannot be read: {exc}") from exc
            if conflicts:
                problems.append(str(OutputConflictError(conflicts, outputs)))
        for number, earlier in self._reserved:
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

    def _logs_of(
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

    def _log_problems(self, logs: list[joblogs.LogClaim], outputs: list[str]) -> list[str]:
        """What settle would refuse these log files for: files git tracks, what open jobs
        hold, and what earlier dry runs of this process would hold."""
        problems = []
        name = ""
        # a log inside the job's own output is no collision: schedule unlocks what git tracks
        own = joblogs.outside(logs, outputs)
        tracked = joblogs.tracked(self.dataset_path, own)
        if tracked:
            problems.append(joblogs.tracked_message(name, tracked))
        path = self._registry_path()
        if own and os.path.exists(path):
            try:
                with Registry(path, read_only=True) as registry:
                    conflicts = registry.conflicts([c.path for c in own])
            except (RegistryError, sqlite3.Error) as exc:
                raise ScheduleError(f"the job registry {path} cannot be read: {exc}") from exc
            conflicts = [c for c in conflicts if _collides(c[0], c[1], own)]
            if conflicts:
                problems.append(joblogs.conflict_message(name, conflicts, own))
        for number, earlier in self._logs:
            held = [*self._reserved[number - 1][1], *(c.path for c in earlier)]
            clashes = [(c.path, h) for c in own for h in held if _collides(c.path, h, own)] + [
                (o, c.path) for o in outputs for c in earlier if _collides(c.path, o, earlier)
            ]
            if clashes:
                problems.append(
                    f"log file conflict with dry-run job {number} before it: "
                    + "; ".join(f"{a!r} overlaps {b!r}" for a, b in clashes)
                )
        return problems


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
