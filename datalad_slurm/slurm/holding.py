"""Submitting held: no job starts before ``schedule`` has reserved its log files.

The submit command runs with a folder of ours first on its PATH, holding an ``sbatch`` that
notes its arguments and working directory, then runs the real sbatch with ``--hold`` before
them.  So every job the command submits through ``sbatch`` (also from a wrapper script) is
held.  ``schedule`` then releases it, or cancels it when its logs collide; a job the user
asked to hold (``--hold`` on the command line, ``#SBATCH --hold``) stays held.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from datalad_slurm.slurm.sbatchargs import SbatchCall, read_call

#: the wrapper's text: note the call (NUL-separated: working directory, then the arguments),
#: then run the real sbatch, held
_WRAPPER = """#!/bin/sh
# datalad schedule: the job is submitted held, so that it cannot start before its log files
# are reserved; schedule releases it then (or cancels it when they collide)
printf '%s\\0' "$PWD" "$@" > "$DATALAD_SLURM_SBATCH_CALLS/$$.call" 2>/dev/null || :
exec "$DATALAD_SLURM_SBATCH" --hold "$@"
"""
#: job ids per scontrol/scancel call (an argument list has limits)
CHUNK = 1000


@dataclass(frozen=True)
class Noted:
    """The sbatch calls a submit command made through the wrapper."""

    calls: tuple[SbatchCall, ...]

    @property
    def through_wrapper(self) -> bool:
        """Whether the command's sbatch was ours (so its job is held)."""
        return bool(self.calls)

    @property
    def user_hold(self) -> bool:
        """Whether the user asked for the job to be held."""
        return any(call.hold for call in self.calls)


class HeldSubmission:
    """The wrapper's folder for one process's submissions (removed on close)."""

    def __init__(self) -> None:
        # inside a submit command of an outer schedule, sbatch on PATH is its wrapper
        self._real = os.environ.get("DATALAD_SLURM_SBATCH") or shutil.which("sbatch")
        self._folder: str | None = None

    def __enter__(self) -> HeldSubmission:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        if self._folder is not None:
            shutil.rmtree(self._folder, ignore_errors=True)
            self._folder = None

    def environment(self, base: Mapping[str, str] | None = None) -> dict[str, str]:
        """The submit command's environment: our sbatch first on PATH.  Without an sbatch on
        PATH it is the environment as it is (the command fails as it would anyway)."""
        env = dict(os.environ if base is None else base)
        if self._real is None:
            return env
        folder = self._made()
        env["PATH"] = folder + os.pathsep + env.get("PATH", "")
        env["DATALAD_SLURM_SBATCH"] = self._real
        env["DATALAD_SLURM_SBATCH_CALLS"] = os.path.join(folder, "calls")
        return env

    def _made(self) -> str:
        if self._folder is None:
            folder = tempfile.mkdtemp(prefix="datalad-slurm-sbatch-")
            os.mkdir(os.path.join(folder, "calls"))
            wrapper = os.path.join(folder, "sbatch")
            with open(wrapper, "w", encoding="utf-8") as stream:
                stream.write(_WRAPPER)
            os.chmod(wrapper, 0o755)
            self._folder = folder
        return self._folder

    def take_calls(self) -> Noted:
        """The sbatch calls noted since the last time (they are forgotten here)."""
        if self._folder is None:
            return Noted(())
        calls_dir = os.path.join(self._folder, "calls")
        calls = []
        for name in sorted(os.listdir(calls_dir)):
            path = os.path.join(calls_dir, name)
            try:
                with open(path, "rb") as stream:
                    words = [os.fsdecode(w) for w in stream.read().split(b"\0")[:-1]]
                os.unlink(path)
            except OSError:
                continue
            if words:
                calls.append(read_call(words[1:], words[0]))
        return Noted(tuple(calls))


def release(job_ids: Sequence[int]) -> str | None:
    """Release held jobs (``scontrol release``); what went wrong, if anything."""
    return _each_chunk(["scontrol", "release"], job_ids, ",")


def cancel(job_ids: Sequence[int]) -> str | None:
    """Cancel jobs (``scancel``); what went wrong, if anything.  A held job that is cancelled
    never ran, and Slurm runs no epilog for it."""
    return _each_chunk(["scancel"], job_ids, None)


def _each_chunk(command: list[str], job_ids: Sequence[int], joined: str | None) -> str | None:
    problems = []
    for first in range(0, len(job_ids), CHUNK):
        ids = [str(j) for j in job_ids[first : first + CHUNK]]
        arguments = [joined.join(ids)] if joined else ids
        try:
            proc = subprocess.run(
                [*command, *arguments], capture_output=True, text=True, timeout=60, check=False
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            problems.append(str(exc))
            continue
        if proc.returncode != 0:
            problems.append(proc.stderr.strip() or f"exit code {proc.returncode}")
    return "; ".join(problems) or None
