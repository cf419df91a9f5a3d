"""Slurm's JSON values in every layout from 22.05 to 26.05, recognised from the values.

``squeue --json`` and ``sacct --json`` write what Slurm's data_parser plugin
makes of a job.  Each release defaults to its newest data_parser (and from
24.11 ``DataParserParameters`` can change that), so the layout is read from the
values themselves, never from the release number:

============  =============================  ==================================================
layout        Slurm                          what differs
============  =============================  ==================================================
v0.0.38       22.05 (openapi plugin)         numbers plain; squeue ``exit_code`` a wait status;
                                             ``job_state`` a string; sacct ``exit_code``
                                             ``{"status": "SUCCESS", "return_code": 0}`` for
                                             every normal exit (a bug); signal only on steps,
                                             at ``signal.signal_id``
v0.0.39       23.02                          numbers ``{"set", "infinite", "number"}``, the
                                             squeue wait status too; sacct as v0.0.38
v0.0.40-45    23.11-26.05                    ``job_state``/``state.current`` a list (base state,
                                             then flags); ``exit_code`` ``{"status": [..],
                                             "return_code": {..}, "signal": {"id": {..},
                                             "name": ..}}``, right in sacct too
v0.0.41+      24.05 (sacct), 25.05 (squeue)  ``stdout_expanded``/``stderr_expanded``; squeue's
                                             ``standard_output`` is the raw pattern again
============  =============================  ==================================================

(From Slurm's ``src/plugins/data_parser/v0.0.*/parsers.c`` and
``src/plugins/openapi/*v0.0.38``; docs/design.md has the whole table.)
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

#: Slurm's NO_VAL and INFINITE for 32-bit fields ("not set", "no array task")
_NO_VAL32 = (0xFFFFFFFE, 0xFFFFFFFF)
#: and for 16-bit fields (signals)
_NO_VAL16 = (0xFFFE, 0xFFFF)
_VERSION = re.compile(r"v\d+\.\d+\.\d+")


def number(value: Any) -> int | None:
    """A number, plain or ``{"set": .., "infinite": .., "number": ..}``; None when unset."""
    if isinstance(value, Mapping):
        if not value.get("set", True) or value.get("infinite"):
            return None
        value = value.get("number")
    if isinstance(value, bool) or value is None:
        return None
    try:
        result = int(value)
    except (TypeError, ValueError):
        return None
    return None if result in _NO_VAL32 else result


def dig(record: Any, *keys: str) -> Any:
    """``record[k1][k2]...``, or None where a level is missing or not an object."""
    value = record
    for key in keys:
        if not isinstance(value, Mapping):
            return None
        value = value.get(key)
    return value


def data_parser_version(answer: Mapping[str, Any]) -> str | None:
    """The layout an answer is written in (``v0.0.42``), from its ``meta``.

    22.05 names its openapi plugin (``meta.plugin.type``: ``openapi/dbv0.0.38``),
    23.02 ``meta.plugins.data_parser``, 23.11 and later ``meta.plugin.data_parser``.
    """
    meta = answer.get("meta")
    for where in (("plugin", "data_parser"), ("plugins", "data_parser"), ("plugin", "type")):
        found = _VERSION.search(str(dig(meta, *where) or ""))
        if found:
            return found.group(0)
    return None


@dataclass(frozen=True)
class ExitStatus:
    """How a process ended, as ``scontrol`` shows it (``ExitCode=exit:signal``)."""

    exit_code: int | None
    signal: int | None

    @classmethod
    def from_wait_status(cls, status: int | None) -> ExitStatus:
        if status is None:
            return cls(None, None)
        return cls((status >> 8) & 0xFF, status & 0x7F)


UNKNOWN_EXIT = ExitStatus(None, None)


def exit_status(value: Any) -> ExitStatus:
    """Any layout's ``exit_code``: a wait status, a ``set/number`` object, or a described one.

    A described exit whose ``status`` is a plain string is the v0.0.38/v0.0.39
    accounting layout, which writes ``SUCCESS``/0 for every normal exit: its exit
    code is unknown unless the process was signalled.
    """
    if not isinstance(value, Mapping) or "status" not in value:
        return ExitStatus.from_wait_status(number(value))
    status = value.get("status")
    words = {status} if isinstance(status, str) else {str(w) for w in status or []}
    signal = _signal(value.get("signal"))
    if "PENDING" in words:
        return UNKNOWN_EXIT
    if "SIGNALED" in words or "CORE_DUMPED" in words:
        return ExitStatus(0, signal)
    if isinstance(status, str):
        # v0.0.38/v0.0.39 accounting: SUCCESS and 0 for every normal exit (no signal, but the
        # exit code is lost)
        code = None if "SUCCESS" in words else number(value.get("return_code"))
        return ExitStatus(code, 0)
    code = number(value.get("return_code"))
    if "SUCCESS" in words:
        return ExitStatus(0, 0)
    if "ERROR" in words:
        return ExitStatus(code, 0)
    # INVALID: return_code carries the raw wait status
    return ExitStatus.from_wait_status(code)


def _signal(value: Any) -> int | None:
    """``signal.id`` (an object from v0.0.40) or ``signal.signal_id`` (v0.0.38/39)."""
    if not isinstance(value, Mapping):
        return None
    found = number(value.get("id")) if "id" in value else number(value.get("signal_id"))
    return None if found is None or found in _NO_VAL16 else found


def log_name(record: Mapping[str, Any], stream: str) -> tuple[str | None, bool]:
    """A job's ``stdout``/``stderr`` file as (name, still a pattern to expand).

    ``stdout_expanded`` (sacct from 24.05, squeue from 25.05) is taken when
    present.  Otherwise squeue's ``standard_output`` or sacct's ``stdout``, which
    is a pattern in some releases and expanded in others: only a name with ``%``
    fields is expanded.  A blank name means Slurm's default (stderr goes to the
    stdout file; 25.11 leaves ``standard_error`` blank unless ``-e`` was given).
    """
    expanded = record.get(f"{stream}_expanded")
    if isinstance(expanded, str) and expanded:
        return expanded, False
    raw = record.get("standard_output" if stream == "stdout" else "standard_error")
    if raw is None:
        raw = record.get(stream)
    if not isinstance(raw, str) or not raw:
        return None, False
    return raw, "%" in raw
