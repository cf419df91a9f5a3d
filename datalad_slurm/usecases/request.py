"""A schedule request and its checks: what the user asked for (:class:`ScheduleRequest`), the
error a request that cannot be scheduled raises (:class:`ScheduleError`), and how a request
becomes what a submission works with before anything is reserved or run: the directory it is
submitted from, its outputs and inputs as dataset paths (a glob ending in ``/`` keeps it),
``--expand`` and ``--assume-ready`` checked, the command with its placeholders filled in, the
inputs to obtain and the input globs that match nothing (``datalad run`` refuses those too),
and the pieces of the schedule's message about the request itself.
"""

from __future__ import annotations

import os
import shlex
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from datalad_slurm.errors import DataladSlurmError
from datalad_slurm.globs import hits, in_git_dir, is_glob, reserved_path
from datalad_slurm.jobs.placeholders import PlaceholderError, format_command
from datalad_slurm.paths import PathOutsideDatasetError, normalise

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


def ready(assume_ready: str | None, what: str) -> bool:
    """Whether ``--assume-ready`` spares the inputs' or the outputs' preparation."""
    return assume_ready in (what, "both")


@dataclass
class Normalised:
    """A request's places as a submission uses them."""

    #: the directory it is submitted from (absolute; the dataset's root when called from
    #: outside it with -d)
    cwd: str
    #: that directory relative to the dataset (``.``: its root)
    pwd: str
    outputs: list[str]
    inputs: list[str]


def normalised(request: ScheduleRequest, dataset_path: str) -> Normalised:
    """The request's directory, outputs and inputs as dataset paths, its options checked."""
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
    return Normalised(cwd, pwd, outputs, inputs)


def command_of(
    request: ScheduleRequest, run_dir: str, dataset_path: str, configured: Mapping[str, str]
) -> str:
    """The submit command with its placeholders filled in, from the paths as given (as
    ``datalad run`` puts them into the command)."""
    try:
        return format_command(
            request.cmd,
            inputs=request.inputs,
            outputs=request.outputs,
            pwd=run_dir,
            dspath=dataset_path,
            configured=configured,
        )
    except PlaceholderError as exc:
        raise ScheduleError(str(exc)) from exc


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


def unmatched_inputs(dataset_path: str, unmatched: Sequence[str]) -> str:
    """Why input globs that match nothing refuse the submission."""
    return (
        "input glob(s) "
        + ", ".join(repr(p) for p in unmatched)
        + f" match nothing in the dataset at {dataset_path} ('datalad run' refuses such an "
        "input too); check the pattern (relative to the directory you submit from), save the "
        "files first, or install the subdataset they lie in ('datalad get -n PATH')"
    )


def glob_note(outputs: Sequence[str]) -> str:
    """How the glob outputs are held, for the schedule's message."""
    held = [f"{o} holds {reserved_path(o)}" for o in outputs if is_glob(o)]
    return f" (glob {'; '.join(held)} until the job is finished)" if held else ""
