"""Submitting a job: reserve outputs, prepare the worktree, run sbatch, register.

The order matters for crash safety: outputs are reserved (state
``submitting``) before anything runs, and the job id is written the moment
the submit command returned one.  A failed submission releases the
reservation and registers nothing.
"""

from __future__ import annotations

import json
import os
import shlex
import sqlite3
import subprocess
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from datalad_slurm.errors import DataladSlurmError
from datalad_slurm.git import run_git
from datalad_slurm.gitlock import (
    clear_interrupted_writes,
    git_dir,
    git_lock,
    git_writes,
    open_registry,
)
from datalad_slurm.paths import PathOutsideDatasetError, normalise, overlaps
from datalad_slurm.placeholders import PlaceholderError, format_command, substitutions
from datalad_slurm.registry import (
    REGISTRY_DIRNAME,
    REGISTRY_FILENAME,
    Job,
    OutputConflictError,
    Registry,
    RegistryError,
)
from datalad_slurm.settings import spool_config
from datalad_slurm.slurm.conf import cluster_name
from datalad_slurm.slurm.jobid import NoJobIdError, parse_submission
from datalad_slurm.slurm.submitted import CHUNK as FACTS_CHUNK
from datalad_slurm.slurm.submitted import submission_facts
from datalad_slurm.spool import SpoolError, UserSpool

ACTION = "schedule"


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
    extra: dict[str, Any] = field(default_factory=dict)


def join_command(cmd: str | Sequence[str]) -> str:
    """A command line as a string; a single argument is taken as shell text."""
    if isinstance(cmd, str):
        return cmd
    if len(cmd) == 1:
        return cmd[0]
    return shlex.join(cmd)


def normalise_all(paths: Sequence[str], dataset_path: str, cwd: str, kind: str) -> list[str]:
    result: list[str] = []
    for path in paths:
        try:
            normal = normalise(path, dataset_path, cwd)
        except (PathOutsideDatasetError, ValueError) as exc:
            raise ScheduleError(f"{kind} {exc}") from exc
        if normal not in result:
            result.append(normal)
    return result


def schedule(ds: Any, request: ScheduleRequest) -> Iterator[dict[str, Any]]:
    """Submit one job and register it; yields its result (raises ScheduleError)."""
    with Submitter(ds) as submitter:
        result = submitter.submit(request)
        submitter.note_facts()
        yield result


def schedule_many(ds: Any, requests: Sequence[ScheduleRequest]) -> Iterator[dict[str, Any]]:
    """Submit many jobs from one process; a request that fails is an error result, not the end."""
    with Submitter(ds) as submitter:
        try:
            for number, request in enumerate(requests, start=1):
                try:
                    result = submitter.submit(request)
                except ScheduleError as exc:
                    result = {
                        "action": ACTION,
                        "status": "error",
                        "path": submitter.dataset_path,
                        "type": "dataset",
                        "message": f"job {number} ({request.cmd!r}): {exc}",
                        "cmd": request.cmd,
                    }
                if len(submitter.without_facts) >= FACTS_CHUNK:
                    submitter.note_facts()
                yield result
        finally:
            submitter.note_facts()


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
        #: submitted jobs whose facts (log patterns...) are still to be asked for
        self.without_facts: list[Job] = []
        #: the outputs of earlier dry runs of this process, by their number
        self._dry_reserved: list[tuple[int, list[str]]] = []

    def __enter__(self) -> Submitter:
        return self

    def __exit__(self, *exc: object) -> None:
        if self._registry is not None:
            self._registry.close()

    def note_facts(self) -> None:
        """Ask slurmctld about the jobs submitted since the last call (one squeue), keep it."""
        if not self.without_facts or self._registry is None:
            return
        jobs, self.without_facts = self.without_facts, []
        facts = submission_facts([job.job_id for job in jobs if job.job_id is not None])
        self._registry.note_submission_facts_many(
            [(job, facts[job.job_id]) for job in jobs if job.job_id in facts]
        )

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

    def submit(self, request: ScheduleRequest) -> dict[str, Any]:
        """Submit one job and register it; returns its result record."""
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
        pwd = normalise(cwd, dataset_path, cwd)
        try:
            # the paths as given, as datalad run puts them into the command
            command = format_command(
                request.cmd,
                inputs=request.inputs,
                outputs=request.outputs,
                pwd=cwd,
                dspath=dataset_path,
                configured=self.substitutions(),
            )
        except PlaceholderError as exc:
            raise ScheduleError(str(exc)) from exc
        if request.dry_run:
            return self._dry_run(command, pwd, inputs, outputs)
        registry = self._shared()
        spool = self._spool
        try:
            job = registry.reserve(
                cmd=request.cmd,
                pwd=pwd,
                inputs=inputs,
                extra_inputs=[],
                outputs=outputs,
                chain=list(request.chain),
                message=request.message,
                dsid=self._dsid,
                submitted_from=self._head,
            )
        except OutputConflictError as exc:
            raise ScheduleError(str(exc)) from exc
        try:
            _prepare_worktree(self.ds, inputs, outputs)
        except BaseException:
            registry.forget_submission(job)
            raise
        spool_note = _spool_call(spool, "begin_submission", job.token)
        # From here on a job may exist in Slurm: an interruption leaves the
        # reservation in 'submitting', which finish reports instead of dropping.
        proc = subprocess.run(
            command, shell=True, cwd=cwd, capture_output=True, text=True, check=False
        )
        if proc.returncode != 0:
            _spool_call(spool, "end_submission", job.token)
            registry.forget_submission(job)
            raise ScheduleError(
                f"the submit command {command!r} failed with exit code {proc.returncode}: "
                f"{proc.stderr.strip() or proc.stdout.strip() or '(no output)'}; "
                "nothing was registered, the outputs are free again",
                advice=(
                    "the shell did not find a command: put Slurm's client commands (sbatch) "
                    f"on PATH (now {os.environ.get('PATH', '')}), then schedule again"
                    if proc.returncode == 127
                    else "schedule again when the submit command works"
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
            ) from exc
        cluster = submission.cluster or self._cluster
        # the job id goes on record at once; what slurmctld says about the job is asked later,
        # for many jobs at a time (note_facts)
        try:
            registry.mark_submitted(job, submission.job_id, cluster)
        except RegistryError as exc:
            raise ScheduleError(
                f"Slurm accepted job {submission.job_id}, but the registry could not record "
                f"it: {exc}. The job runs: cancel it ('scancel {submission.job_id}'), or "
                "commit its outputs by hand when it has ended; 10 minutes from now "
                "'datalad finish --close-failed-jobs' releases its outputs"
            ) from exc
        self.without_facts.append(job)
        spool_note = spool_note or _spool_call(
            spool, "register", cluster, submission.job_id, job.token
        )
        return {
            "action": ACTION,
            "status": "ok",
            "path": dataset_path,
            "type": "dataset",
            "message": f"submitted Slurm job {submission.job_id}, outputs {', '.join(outputs)}"
            + (f" ({spool_note})" if spool_note else ""),
            "slurm_job_id": submission.job_id,
            "cluster": cluster,
            "cmd": request.cmd,
            "outputs": outputs,
            "inputs": inputs,
            "pwd": pwd,
        }

    def _dry_run(
        self, command: str, pwd: str, inputs: list[str], outputs: list[str]
    ) -> dict[str, Any]:
        """Every check a submission runs, with nothing reserved, obtained, unlocked or run."""
        problems = self._dry_conflicts(outputs)
        missing, to_get, unknown = _inputs_to_get(self.ds, inputs)
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
        base = {
            "action": ACTION,
            "path": self.dataset_path,
            "type": "dataset",
            "cmd": command,
            "outputs": outputs,
            "inputs": inputs,
            "pwd": pwd,
            "dry_run": True,
        }
        if problems:
            return {
                **base,
                "status": "error",
                "message": f"dry run: {command!r} would be refused: " + "; ".join(problems),
            }
        self._dry_reserved.append((len(self._dry_reserved) + 1, outputs))
        to_unlock = _outputs_to_unlock(self.ds, outputs)
        notes = [f"would submit {command!r} from {pwd} with outputs {outputs}"]
        if to_get:
            notes.append(f"get the content of {', '.join(to_get)}")
        if to_unlock:
            notes.append(f"unlock {', '.join(to_unlock)}")
        return {
            **base,
            "status": "ok",
            "message": "; ".join(notes) + " (dry run: nothing was done)",
            "would_get": to_get,
            "would_unlock": to_unlock,
        }

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
                problems.append(str(OutputConflictError(conflicts)))
        for number, earlier in self._dry_reserved:
            clashes = [(o, e) for o in outputs for e in earlier if overlaps(o, e)]
            if clashes:
                problems.append(
                    "output conflict with dry-run job "
                    f"{number} before it: " + "; ".join(f"{o!r} overlaps {e!r}" for o, e in clashes)
                )
        return problems


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


def _prepare_worktree(ds: Any, inputs: Sequence[str], outputs: Sequence[str]) -> None:
    """Obtain inputs and unlock outputs that exist, as ``datalad run`` does."""
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
    existing = [os.path.join(root, p) for p in outputs if _may_hold_files(os.path.join(root, p))]
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
