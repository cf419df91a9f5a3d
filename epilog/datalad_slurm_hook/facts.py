"""What slurmctld's answer (or, without one, the job's environment) says of a job's end: the
event's facts. Answers are ``scontrol show job -o`` fields; pyslurm's are translated into them
(:mod:`.ask`), so one :func:`decide_state` serves both."""

from __future__ import annotations

import re
import time
from collections.abc import Mapping

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (the hook starts faster)
if TYPE_CHECKING:
    from typing import Any

#: the key under which pyslurm's answers say so (no scontrol field starts with "_")
ANSWERED_BY = "_answered_by"
_FIELD = re.compile(r"(?:^|\s)([A-Za-z][A-Za-z0-9_:/]*)=")


def parse_scontrol_line(line: str) -> dict[str, str]:
    """``scontrol show job -o`` output as a dict (values may contain spaces)."""
    fields: dict[str, str] = {}
    matches = list(_FIELD.finditer(line))
    for index, match in enumerate(matches):
        end = matches[index + 1].start() if index + 1 < len(matches) else len(line)
        fields[match.group(1)] = line[match.end() : end].strip()
    return fields


def _exit_pair(text: str | None) -> tuple[int | None, int | None]:
    if not text or ":" not in text:
        return None, None
    code, _, sig = text.partition(":")
    return (int(code) if code.isdigit() else None, int(sig) if sig.isdigit() else None)


def _epoch(text: str | None) -> int | None:
    if not text or text in ("Unknown", "None", "N/A"):
        return None
    if text.isdigit():  # pyslurm's times, see pyslurm_fields()
        return int(text)
    try:
        return int(time.mktime(time.strptime(text, "%Y-%m-%dT%H:%M:%S")))
    except ValueError:
        return None


_REASON_STATES = {
    "TimeLimit": "TIMEOUT",
    "NodeDown": "NODE_FAIL",
    "NodeFail": "NODE_FAIL",
    "NonZeroExitCode": "FAILED",
    "JobLaunchFailure": "FAILED",
    "Deadline": "DEADLINE",
    "OutOfMemory": "OUT_OF_MEMORY",
}


def decide_state(fields: Mapping[str, str], env: Mapping[str, str]) -> str:
    """The final state from ``scontrol show job -o`` (see contrib/slurm-local/HOOK-NOTES.md).

    Once the job has left COMPLETING, scontrol names the final state itself.
    While it is still COMPLETING, only some states can be read off the
    fields; a job that looks successful may also be a cancelled one whose
    script trapped SIGTERM, so that case is UNKNOWN and finish asks Slurm.
    """
    state = fields.get("JobState", "")
    base = state.split()[0] if state else ""
    if base and base not in ("COMPLETING", "RUNNING", "CONFIGURING"):
        return base  # final, or PENDING again after a requeue
    if fields.get("EndTime") in ("Unknown", "None"):
        return "REQUEUED"  # the hook ran for a requeue: the job goes on
    reason = fields.get("Reason", "None")
    for key, value in _REASON_STATES.items():
        if reason.startswith(key):
            return value
    code, sig = _exit_pair(fields.get("ExitCode"))
    if code:
        return "FAILED"
    if sig:
        return "CANCELLED"
    return "UNKNOWN"


#: states scontrol shows while the job's end is still being settled: COMPLETING (epilogs run),
#: EXPEDITING (25.11+: slurmctld checks for an expedited requeue)
UNSETTLED_STATES = ("COMPLETING", "EXPEDITING")


def still_completing(fields: Mapping[str, str]) -> bool:
    return fields.get("JobState", "").startswith(UNSETTLED_STATES)


def _pyslurm_exit_code(code: int | None, sig: int | None, env: Mapping[str, str]) -> int | None:
    """pyslurm (25.11, ``_get_exit_code``) reports an exit status of 128 or more less 128: 143
    reads as 15. The environment holds the true one for a job that ended by itself, so take it
    where it is exactly 128 more; otherwise (a cancelled job's shell) the truth is lost."""
    env_code, env_sig = _exit_pair(env.get("SLURM_JOB_EXIT_CODE2"))
    if code is not None and not sig and not env_sig and env_code == code + 128:
        return env_code
    return code


def facts_from_slurm(fields: Mapping[str, str], env: Mapping[str, str]) -> dict[str, Any]:
    """The event's facts from ``scontrol show job -o`` fields (or pyslurm's, as such fields)."""
    code, sig = _exit_pair(fields.get("ExitCode"))
    if fields.get(ANSWERED_BY) == "pyslurm":
        code = _pyslurm_exit_code(code, sig, env)
    restarts = fields.get("Restarts", "")
    return {
        "resolved_by": fields.get(ANSWERED_BY, "scontrol"),
        "state": decide_state(fields, env),
        "exit_code": code,
        "signal": sig,
        "derived_exit_code": _exit_pair(fields.get("DerivedExitCode"))[0],
        "start_time": _epoch(fields.get("StartTime")),
        "end_time": _epoch(fields.get("EndTime")),
        "restarts": int(restarts) if restarts.isdigit() else None,
        "reason": fields.get("Reason") or None,
        "work_dir": fields.get("WorkDir") or env.get("SLURM_JOB_WORK_DIR") or None,
        "stdout": fields.get("StdOut") or None,
        "stderr": fields.get("StdErr") or None,
        **resource_facts(fields),
    }


def resource_facts(fields: Mapping[str, str]) -> dict[str, str | None]:
    """What the job was given, as scontrol shows it (finish reads the values).

    Slurm 22.05 shows one ``TRES=``: the allocated TRES once the job has
    nodes, else the requested; later releases ``ReqTRES=`` and ``AllocTRES=``.
    """

    def value(key: str) -> str | None:
        found = fields.get(key, "").strip()
        return None if found in ("", "(null)", "None", "N/A") else found

    ran = value("NodeList") is not None
    return {
        "run_time": value("RunTime"),
        "req_tres": value("ReqTRES") or (None if ran else value("TRES")),
        "alloc_tres": value("AllocTRES") or (value("TRES") if ran else None),
        "nodes": value("NodeList"),
        "partition": value("Partition"),
        "account": value("Account"),
        "qos": value("QOS"),
    }


def facts_from_environment(env: Mapping[str, str]) -> dict[str, Any]:
    """Slurm did not answer: the environment cannot tell a cancel from a success."""
    code, sig = _exit_pair(env.get("SLURM_JOB_EXIT_CODE2"))
    return {
        "resolved_by": "environment",
        "state": "FAILED" if (code or sig) else "UNKNOWN",
        "exit_code": code,
        "signal": sig,
        "work_dir": env.get("SLURM_JOB_WORK_DIR") or None,
    }


def final_facts(fields: Mapping[str, str], env: Mapping[str, str]) -> dict[str, Any]:
    return facts_from_slurm(fields, env) if fields else facts_from_environment(env)
