#!/usr/bin/python3 -IS
"""datalad-slurm's Slurm hook worker: drop a completion event for a registered job.

Slurm runs ``datalad-slurm-epilog`` (``epilog/datalad-slurm-epilog.sh``) as
``EpilogSlurmctld``; for registered jobs that script starts this worker in a
new session and returns at once, so the job is no longer COMPLETING by the
time the worker asks slurmctld, and its final state (COMPLETED, CANCELLED,
TIMEOUT, ...) shows plainly.  Python standard library only; the spool code
is the package's own ``datalad_slurm/spool.py``, installed beside this file
as ``datalad_slurm_spool.py``.

Contract: exit 0 on every path, within a bounded time; write nothing outside
the spool; log failures to syslog or the admin's log file, never to a file
of the job's user.
"""

from __future__ import annotations

import importlib
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Mapping
from types import FrameType, ModuleType
from typing import Any

#: replaced by epilog/install with the installed config's path
CONFIG_PATH = "/etc/datalad-slurm.conf"
#: the whole hook never takes longer than this many seconds
HARD_LIMIT = 10.0
#: where scontrol lives when the hook has no PATH
SCONTROL_CANDIDATES = ("/usr/bin/scontrol", "/usr/local/bin/scontrol", "/opt/slurm/bin/scontrol")


def _load_spool() -> ModuleType:
    here = os.path.dirname(os.path.realpath(__file__))
    if here not in sys.path:
        sys.path.insert(0, here)
    try:
        return importlib.import_module("datalad_slurm_spool")
    except ImportError:  # running from a source tree or an installed package
        return importlib.import_module("datalad_slurm.spool")


class _Deadline(Exception):
    pass


def _on_alarm(signum: int, frame: FrameType | None) -> None:
    raise _Deadline()


def main(environ: Mapping[str, str] | None = None) -> int:
    env = os.environ if environ is None else environ
    started = time.monotonic()
    log_target = "syslog"
    job = env.get("SLURM_JOB_ID", "?")
    try:
        if environ is None:
            try:
                os.setsid()  # leave Slurm's session too, where possible
            except OSError:
                pass  # already a group leader: the entry point gave it its own group
        signal.signal(signal.SIGALRM, _on_alarm)
        signal.setitimer(signal.ITIMER_REAL, HARD_LIMIT)
        spool = _load_spool()
        config_path = env.get("DATALAD_SLURM_CONFIG") or CONFIG_PATH
        try:
            config = spool.read_config(config_path)
        except spool.SpoolError:
            return 0  # not configured on this host: nothing to do
        log_target = config.log
        uid_text = env.get("SLURM_JOB_UID", "")
        if not uid_text.isdigit() or not job.isdigit():
            _log(log_target, f"job {job}: malformed environment (SLURM_JOB_UID={uid_text!r})")
            return 0
        uid = int(uid_text)
        cluster = env.get("SLURM_CLUSTER_NAME") or None
        array_job = env.get("SLURM_ARRAY_JOB_ID", "")
        owner = array_job if array_job.isdigit() and array_job != "0" else job
        if not spool.is_registered(config.spool, uid, cluster, owner):
            return 0
        facts = resolve(job, env, config.query_timeout, config.slurm_conf)
        event = spool.Event(job_id=int(job), state=facts.pop("state"), uid=uid, **facts)
        event.cluster = cluster
        if array_job.isdigit() and array_job != "0":
            event.array_job_id = int(array_job)
            task = env.get("SLURM_ARRAY_TASK_ID", "")
            event.array_task_id = int(task) if task.isdigit() else None
        event.user = env.get("SLURM_JOB_USER") or None
        spool.write_event(config.spool, uid, event, _spool_owners(config.hook_user))
    except _Deadline:
        _log(log_target, f"job {job}: gave up after {HARD_LIMIT:.0f} s; no event written")
    except Exception as exc:  # the hook must never fail: log and go
        _log(log_target, f"job {job}: no event written: {type(exc).__name__}: {exc}")
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        elapsed = time.monotonic() - started
        if elapsed > 1.0:
            _log(log_target, f"job {job}: the hook took {elapsed:.2f} s")
    return 0


def _spool_owners(hook_user: str) -> set[int]:
    owners = {0, os.getuid()}
    try:
        import pwd

        owners.add(pwd.getpwnam(hook_user).pw_uid)
    except (KeyError, ImportError):
        pass
    return owners


# -- resolving the final state ------------------------------------------------------------

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


def resolve(
    job: str, env: Mapping[str, str], timeout: float, slurm_conf: str = ""
) -> dict[str, Any]:
    """The job's final facts; falls back to the environment if Slurm does not answer."""
    facts: dict[str, Any] = {}
    fields: dict[str, str] = {}
    scontrol = next((p for p in SCONTROL_CANDIDATES if os.access(p, os.X_OK)), None)
    deadline = time.monotonic() + timeout
    while scontrol and time.monotonic() < deadline:
        fields = _show_job(scontrol, job, deadline - time.monotonic(), slurm_conf)
        # the job leaves COMPLETING moments after the hook's entry script returned
        if not fields or not fields.get("JobState", "").startswith("COMPLETING"):
            break
        time.sleep(0.05)
    if fields:
        facts["resolved_by"] = "scontrol"
        facts["state"] = decide_state(fields, env)
        code, sig = _exit_pair(fields.get("ExitCode"))
        facts["exit_code"], facts["signal"] = code, sig
        facts["derived_exit_code"] = _exit_pair(fields.get("DerivedExitCode"))[0]
        facts["start_time"] = _epoch(fields.get("StartTime"))
        facts["end_time"] = _epoch(fields.get("EndTime"))
        restarts = fields.get("Restarts", "")
        facts["restarts"] = int(restarts) if restarts.isdigit() else None
        facts["reason"] = fields.get("Reason") or None
        facts["work_dir"] = fields.get("WorkDir") or env.get("SLURM_JOB_WORK_DIR") or None
        facts["stdout"] = fields.get("StdOut") or None
        facts["stderr"] = fields.get("StdErr") or None
    else:
        # Slurm did not answer: the environment cannot tell a cancel from a success
        facts["resolved_by"] = "environment"
        code, sig = _exit_pair(env.get("SLURM_JOB_EXIT_CODE2"))
        facts["state"] = "FAILED" if (code or sig) else "UNKNOWN"
        facts["exit_code"], facts["signal"] = code, sig
        facts["work_dir"] = env.get("SLURM_JOB_WORK_DIR") or None
    return facts


# -- logging --------------------------------------------------------------------------------


def _show_job(scontrol: str, job: str, timeout: float, slurm_conf: str) -> dict[str, str]:
    try:
        out = subprocess.run(
            [scontrol, "show", "job", "-o", job],
            capture_output=True,
            text=True,
            timeout=max(timeout, 0.1),
            check=False,
            env={"PATH": "/usr/bin:/bin", **({"SLURM_CONF": slurm_conf} if slurm_conf else {})},
        ).stdout
    except (OSError, subprocess.TimeoutExpired):
        return {}
    for line in out.splitlines():
        parsed = parse_scontrol_line(line)
        if parsed.get("JobId") == job:
            return parsed
    return {}


def _log(target: str, message: str) -> None:
    try:
        if target == "syslog":
            import syslog

            syslog.openlog("datalad-slurm-epilog", 0, syslog.LOG_DAEMON)
            syslog.syslog(syslog.LOG_WARNING, message)
        elif target.startswith("/"):
            fd = os.open(target, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW, 0o640)
            try:
                stamp = time.strftime("%Y-%m-%dT%H:%M:%S")
                os.write(fd, f"{stamp} datalad-slurm-epilog: {message}\n".encode())
            finally:
                os.close(fd)
    except Exception:
        pass


if __name__ == "__main__":
    sys.exit(main())
