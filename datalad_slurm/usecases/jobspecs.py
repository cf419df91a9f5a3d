"""Many submissions in one file: ``datalad schedule --jobs-from FILE``.

One JSON object per line (blank lines and lines starting with ``#`` are
skipped)::

    {"cmd": "sbatch job.sh 1", "outputs": ["out/1"], "inputs": ["data/1"]}
    {"cmd": ["sbatch", "job.sh", "2"], "outputs": "out/2", "message": "run 2", "pwd": "sub"}

``cmd`` and ``outputs`` are required; ``outputs`` and ``inputs`` are a path or
a list of paths (or globs), relative to ``pwd`` (a directory relative to where
the command runs; default: there), exactly as ``-o``/``-i`` would be;
``expand``, ``assume_ready`` and ``alt_dir`` are the values of ``--expand``,
``--assume-ready`` and ``--alt-dir`` for the line.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable

from datalad_slurm.usecases.request import (
    ASSUME_READY_CHOICES,
    EXPAND_CHOICES,
    ScheduleError,
    ScheduleRequest,
    join_command,
)

KEYS = frozenset(
    {"cmd", "outputs", "inputs", "message", "pwd", "expand", "assume_ready", "alt_dir"}
)


def _paths(value: object, key: str, where: str) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return list(value)
    raise ScheduleError(f"{where}: {key!r} must be a path or a list of paths, not {value!r}")


def parse_job_spec(line: str, where: str, base: str) -> ScheduleRequest:
    """One line of a jobs file as a request; ``where`` names the line in errors."""
    try:
        spec = json.loads(line)
    except ValueError as exc:
        raise ScheduleError(f"{where} is not a JSON object: {exc}") from exc
    if not isinstance(spec, dict):
        raise ScheduleError(f"{where} is not a JSON object but {type(spec).__name__}")
    unknown = sorted(set(spec) - KEYS)
    if unknown:
        raise ScheduleError(
            f"{where} has unknown key(s) {', '.join(unknown)}; known are {', '.join(sorted(KEYS))}"
        )
    cmd = spec.get("cmd")
    if not cmd or not (
        isinstance(cmd, str) or (isinstance(cmd, list) and all(isinstance(c, str) for c in cmd))
    ):
        raise ScheduleError(f"{where} needs 'cmd': the submit command, a string or a list")
    message = spec.get("message")
    if message is not None and not isinstance(message, str):
        raise ScheduleError(f"{where}: 'message' must be a string")
    expand = spec.get("expand")
    if expand is not None and expand not in EXPAND_CHOICES:
        raise ScheduleError(f"{where}: 'expand' must be one of {', '.join(EXPAND_CHOICES)}")
    assume_ready = spec.get("assume_ready")
    if assume_ready is not None and assume_ready not in ASSUME_READY_CHOICES:
        raise ScheduleError(
            f"{where}: 'assume_ready' must be one of {', '.join(ASSUME_READY_CHOICES)}"
        )
    alt_dir = spec.get("alt_dir")
    if alt_dir is not None and not isinstance(alt_dir, str):
        raise ScheduleError(f"{where}: 'alt_dir' must be a folder (a string)")
    pwd = spec.get("pwd", ".")
    if not isinstance(pwd, str):
        raise ScheduleError(f"{where}: 'pwd' must be a directory (a string)")
    return ScheduleRequest(
        cmd=join_command(cmd),
        outputs=_paths(spec.get("outputs", []), "outputs", where),
        inputs=_paths(spec.get("inputs", []), "inputs", where),
        message=message,
        cwd=os.path.normpath(os.path.join(base, pwd)),
        expand=expand,
        assume_ready=assume_ready,
        # relative to where the command runs, as --alt-dir is
        alt_dir=None if alt_dir is None else os.path.normpath(os.path.join(base, alt_dir)),
    )


def read_job_specs(lines: Iterable[str], source: str, base: str) -> list[ScheduleRequest]:
    """Every request of a jobs file; the first bad line stops it all, before anything is
    submitted, with an error naming the file and line."""
    requests = []
    for number, line in enumerate(lines, start=1):
        text = line.strip()
        if not text or text.startswith("#"):
            continue
        requests.append(parse_job_spec(text, f"{source} line {number}", base))
    if not requests:
        raise ScheduleError(f"{source} lists no jobs (one JSON object per line)")
    return requests
