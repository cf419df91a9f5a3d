"""The ``[DATALAD SLURM RUN]`` commit message: writing it and reading it back.

One place owns the format, for our records and for those of datalad-slurm
0.2.8 (same block, fewer keys), so that ``reschedule`` reads both.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

from datalad_slurm.errors import DataladSlurmError

SUBJECT_TAG = "[DATALAD SLURM RUN]"
BLOCK_START = "=== Do not change lines below ==="
BLOCK_END = "^^^ Do not change lines above ^^^"

#: the record keys datalad-slurm 0.2.8 wrote; everything else is kept in ``RunRecord.extra``
SEED_KEYS = frozenset(
    {
        "chain",
        "cmd",
        "commit_id",
        "dsid",
        "extra_inputs",
        "inputs",
        "outputs",
        "pwd",
        "slurm_job_id",
        "slurm_outputs",
    }
)

#: the record key that carries the registry's token of the job (ties a commit to its registry row)
REGISTRATION_KEY = "slurm_registration"

_SUBJECT = re.compile(r"^\[DATALAD SLURM RUN\] Slurm job (\d+)(?:: (.*))?$")


class RecordError(DataladSlurmError, ValueError):
    """A commit message that claims to be a Slurm run record but cannot be read."""


@dataclass
class RunRecord:
    """Provenance of one finished Slurm job, as stored in its commit."""

    cmd: str
    dsid: str | None
    slurm_job_id: int
    pwd: str = "."
    inputs: list[str] = field(default_factory=list)
    extra_inputs: list[str] = field(default_factory=list)
    #: declared outputs followed by the job's own files (logs, env.json)
    outputs: list[str] = field(default_factory=list)
    slurm_outputs: list[str] = field(default_factory=list)
    chain: list[str] = field(default_factory=list)
    commit_id: str | None = None
    #: everything beyond the seed's keys (states, times, cluster, ...)
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def declared_outputs(self) -> list[str]:
        """The outputs the user declared at schedule time."""
        own = set(self.slurm_outputs)
        return [path for path in self.outputs if path not in own]

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = dict(self.extra)
        data.update(
            chain=list(self.chain),
            cmd=self.cmd,
            commit_id=self.commit_id,
            dsid=self.dsid,
            extra_inputs=list(self.extra_inputs),
            inputs=list(self.inputs),
            outputs=list(self.outputs),
            pwd=self.pwd,
            slurm_job_id=self.slurm_job_id,
            slurm_outputs=list(self.slurm_outputs),
        )
        return data


def format_message(record: RunRecord, status: str, message: str | None = None) -> str:
    """The full commit message: subject, optional user message, record block."""
    subject = f"{SUBJECT_TAG} Slurm job {record.slurm_job_id}: {status}"
    body = json.dumps(record.to_json(), indent=1, sort_keys=True, ensure_ascii=False)
    parts = [subject, ""]
    if message:
        parts += [message.strip(), ""]
    parts += [BLOCK_START, body, BLOCK_END, ""]
    return "\n".join(parts)


def is_record_message(message: str) -> bool:
    return message.startswith(SUBJECT_TAG)


def registration_token(message: str) -> str | None:
    """The job's registration token in a record, found without parsing the whole block."""
    marker = f'"{REGISTRATION_KEY}": "'
    block = message.find(BLOCK_START)
    start = message.find(marker, max(block, 0)) if block >= 0 else -1
    if start < 0:
        return None
    start += len(marker)
    end = message.find('"', start)
    return message[start:end] if end > start else None


def parse_message(message: str) -> RunRecord:
    """Read a record written by this tool or by datalad-slurm 0.2.8."""
    first_line = message.splitlines()[0] if message else ""
    if not _SUBJECT.match(first_line):
        raise RecordError(f"not a Slurm run record: {first_line!r}")
    try:
        start = message.index(BLOCK_START) + len(BLOCK_START)
        end = message.index(BLOCK_END, start)
    except ValueError as exc:
        raise RecordError(f"the record block of {first_line!r} is missing or cut") from exc
    try:
        data = json.loads(message[start:end])
    except json.JSONDecodeError as exc:
        raise RecordError(f"the record block of {first_line!r} is not valid JSON: {exc}") from exc
    if not isinstance(data, dict) or "cmd" not in data or "slurm_job_id" not in data:
        raise RecordError(f"the record block of {first_line!r} lacks 'cmd' or 'slurm_job_id'")
    return RunRecord(
        cmd=str(data["cmd"]),
        dsid=data.get("dsid"),
        slurm_job_id=int(data["slurm_job_id"]),
        pwd=str(data.get("pwd") or "."),
        inputs=list(data.get("inputs") or []),
        extra_inputs=list(data.get("extra_inputs") or []),
        outputs=list(data.get("outputs") or []),
        slurm_outputs=list(data.get("slurm_outputs") or []),
        chain=list(data.get("chain") or []),
        commit_id=data.get("commit_id"),
        extra={k: v for k, v in data.items() if k not in SEED_KEYS},
    )
