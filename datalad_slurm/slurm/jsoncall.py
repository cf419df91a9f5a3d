"""Running Slurm's client commands for their JSON: in the background, their output in unnamed
files (:class:`SlurmCall`), read and checked when the answer is wanted (:func:`collect`); and the
release of the client tools (:func:`slurm_release`).
"""

from __future__ import annotations

import json
import re
import subprocess
import tempfile
import time
from collections.abc import Mapping
from typing import Any

from datalad_slurm.slurm.backend import BackendError

_RELEASE = re.compile(r"(\d+)\.(\d+)")


class SlurmCall:
    """A Slurm command running in the background, its output in unnamed files."""

    def __init__(self, command: list[str]) -> None:
        self.command = command
        self.started = time.monotonic()
        # files, not pipes: a pipe holds 64 KiB, and nobody reads it until the answer is wanted;
        # result() closes them
        self.stdout = tempfile.TemporaryFile()  # noqa: SIM115
        self.stderr = tempfile.TemporaryFile()  # noqa: SIM115
        self.proc: subprocess.Popen[bytes] | None = None
        self.error: BackendError | None = None
        try:
            self.proc = subprocess.Popen(
                command, stdin=subprocess.DEVNULL, stdout=self.stdout, stderr=self.stderr
            )
        except FileNotFoundError:
            self.error = BackendError(
                f"{command[0]} is not installed or not on PATH; install the Slurm client tools"
            )

    def result(self, timeout: float) -> tuple[int, str, str]:
        """(exit code, stdout, stderr); waits at most ``timeout`` seconds from the start."""
        try:
            if self.error is not None:
                raise self.error
            assert self.proc is not None
            try:
                self.proc.wait(max(0.0, timeout - (time.monotonic() - self.started)))
            except subprocess.TimeoutExpired as exc:
                self.proc.kill()
                self.proc.wait()
                raise BackendError(
                    f"'{' '.join(self.command[:2])}' did not answer within {timeout:.0f} s; "
                    "is slurmctld up? Try again later"
                ) from exc
            outputs = []
            for stream in (self.stdout, self.stderr):
                stream.seek(0)
                outputs.append(stream.read().decode("utf-8", "replace"))
            return self.proc.returncode, outputs[0], outputs[1]
        finally:
            self.stdout.close()
            self.stderr.close()


def collect(call: SlurmCall, timeout: float, unknown_job_ok: bool = False) -> dict[str, Any]:
    """The JSON a Slurm command printed, waiting at most ``timeout`` seconds from its start.
    ``unknown_job_ok``: ``squeue --jobs=ID`` naming one job slurmctld does not hold fails; that
    is an empty answer."""
    command = call.command
    returncode, stdout, stderr = call.result(timeout)
    if returncode != 0 and unknown_job_ok and "invalid job id specified" in stderr.lower():
        return {"jobs": []}
    if returncode != 0:
        raise BackendError(
            f"'{' '.join(command[:2])}' failed (exit {returncode}): "
            f"{stderr.strip() or stdout.strip()}"
        )
    try:
        data = json.loads(stdout)
    except json.JSONDecodeError as exc:
        raise BackendError(f"'{' '.join(command[:2])}' printed no valid JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise BackendError(f"'{' '.join(command[:2])}' printed JSON of an unexpected shape")
    # squeue answers a dead controller with exit 0 and an error list
    failures = [
        e
        for e in data.get("errors") or []
        if isinstance(e, Mapping) and e.get("error_number") != 9003
    ]
    if failures:
        details = "; ".join(str(e.get("description") or e.get("error")) for e in failures)
        raise BackendError(
            f"'{' '.join(command[:2])}' reported: {details}; is slurmctld up? Try again later"
        )
    return data


def slurm_release() -> tuple[int, int]:
    """(major, minor) of the Slurm client tools (``squeue --version``: ``slurm 24.11.5``);
    (0, 0) when that cannot be told."""
    try:
        answer = subprocess.run(
            ["squeue", "--version"],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=30,
        )
    except (OSError, subprocess.SubprocessError):
        return (0, 0)
    found = _RELEASE.search(answer.stdout)
    return (int(found.group(1)), int(found.group(2))) if found else (0, 0)
