"""Who asks slurmctld about a job: pyslurm, in this process, where ``epilog/install`` found it
for the hook's Python and it starts cleanly; else ``scontrol`` (:mod:`.scontrol`). pyslurm's
answers are turned into the ``scontrol show job -o`` fields :mod:`.facts` reads."""

from __future__ import annotations

import importlib
import os
import subprocess
import sys
from types import ModuleType

from .facts import ANSWERED_BY
from .log import log
from .scontrol import ScontrolQuestions, default_slurm_conf, find_scontrol, scontrol_env
from .settings import Settings

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (the hook starts faster)
if TYPE_CHECKING:
    from typing import Any

#: Slurm's error number for a job id slurmctld does not hold (ESLURM_INVALID_JOB_ID)
ESLURM_INVALID_JOB_ID = 2017


class PyslurmQuestions:
    """Asks slurmctld through pyslurm (``pyslurm.Job.load``), in this process.

    Each call is bounded by Slurm's own MessageTimeout, not by ``query_timeout``:
    libslurm cannot be interrupted. After the first failed call of a round the
    round ends (slurmctld is not answering; the others are asked again later).
    Anything else going wrong (a pyslurm that does not fit this Slurm) hands
    over to scontrol for the rest of this process's life.
    """

    name = "pyslurm"

    def __init__(
        self, pyslurm: ModuleType, fallback: ScontrolQuestions | None, log_target: str
    ) -> None:
        self.pyslurm = pyslurm
        self.fallback = fallback
        self.log_target = log_target
        self.broken = False

    def ask(self, jobs: list[str], timeout: float) -> dict[str, dict[str, str]]:
        if self.broken:
            return self.fallback.ask(jobs, timeout) if self.fallback else {}
        answers: dict[str, dict[str, str]] = {}
        for job in jobs:
            try:
                answers[job] = pyslurm_fields(self.pyslurm.Job.load(int(job)))
            except self.pyslurm.RPCError as exc:
                if _is_unknown_job(exc):
                    answers[job] = {}  # slurmctld no longer holds it (MinJobAge passed)
                    continue
                break  # slurmctld did not answer: the rest are asked again later
            except Exception as exc:
                log(
                    self.log_target, f"pyslurm failed ({type(exc).__name__}: {exc}); using scontrol"
                )
                self.broken = True
                rest = [j for j in jobs if j not in answers]
                if self.fallback:
                    answers.update(self.fallback.ask(rest, timeout))
                break
        return answers

    def close(self) -> None:
        if self.fallback:
            self.fallback.close()


def _is_unknown_job(exc: Exception) -> bool:
    return getattr(exc, "errno", None) == ESLURM_INVALID_JOB_ID or "Invalid job id" in str(exc)


def pyslurm_fields(job: Any) -> dict[str, str]:
    """A ``pyslurm.Job`` as the ``scontrol show job -o`` fields the hook reads.

    Times stay epoch seconds (``_epoch`` takes both); a time pyslurm has no
    value for reads as scontrol's "Unknown", as after a requeue.
    """

    def text(value: Any, missing: str = "") -> str:
        return missing if value is None else str(value)

    def pair(code: Any, sig: Any) -> str:
        return f"{code or 0}:{sig or 0}"

    return {
        ANSWERED_BY: "pyslurm",
        "JobId": text(job.id),
        "JobState": text(job.state),
        "Reason": text(job.state_reason, "None"),
        "ExitCode": pair(job.exit_code, job.exit_code_signal),
        "DerivedExitCode": pair(job.derived_exit_code, job.derived_exit_code_signal),
        "StartTime": text(job.start_time, "Unknown"),
        "EndTime": text(job.end_time, "Unknown"),
        "Restarts": text(job.requeue_count),
        "WorkDir": text(job.working_directory),
        "StdOut": text(job.standard_output),
        "StdErr": text(job.standard_error),
        **pyslurm_resource_fields(job),
    }


def pyslurm_resource_fields(job: Any) -> dict[str, str]:
    """What the job was given, as scontrol would show it; an attribute this pyslurm lacks
    (or fails to compute) is left out, never a reason to stop asking through pyslurm."""
    found: dict[str, str] = {}
    for key, attribute in (
        ("RunTime", "run_time"),
        ("NodeList", "allocated_nodes"),
        ("Partition", "partition"),
        ("Account", "account"),
        ("QOS", "qos"),
        ("ReqTRES", "requested_tres"),
        ("AllocTRES", "allocated_tres"),
    ):
        try:
            value = getattr(job, attribute, None)
            if key.endswith("TRES"):
                value = tres_text(value)
            elif key == "RunTime" and isinstance(value, int):
                value = run_time_text(value)
        except Exception:
            continue
        if value is not None and value != "":
            found[key] = str(value)
    return found


def run_time_text(seconds: int) -> str:
    """Seconds as scontrol's ``RunTime`` shows them: ``00:01:02``, ``2-03:04:05``."""
    minutes, secs = divmod(max(seconds, 0), 60)
    hours, minutes = divmod(minutes, 60)
    days, hours = divmod(hours, 24)
    clock = f"{hours:02d}:{minutes:02d}:{secs:02d}"
    return f"{days}-{clock}" if days else clock


#: run in a child process before the worker imports pyslurm itself
_PYSLURM_PROBE = "import sys; sys.path.append(sys.argv[1]); import pyslurm; pyslurm.Job"


def load_pyslurm(settings: Settings) -> ModuleType | None:
    """pyslurm, where epilog/install found it for this Python and it starts cleanly; else None.

    Importing pyslurm initialises libslurm, which ends the whole process when
    slurm.conf is missing or does not parse: a child process tries it first.
    """
    path, slurm_conf, target = settings.pyslurm_path, settings.slurm_conf, settings.log
    if not path or not os.path.isdir(path):
        return None
    conf = slurm_conf or os.environ.get("SLURM_CONF", "")
    if not conf:
        conf = default_slurm_conf()
    if not conf or not os.access(conf, os.R_OK):
        return None
    try:
        probe = subprocess.run(
            [sys.executable, "-IS", "-c", _PYSLURM_PROBE, path],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=max(settings.query_timeout, 1.0),
            check=False,
            env={**scontrol_env(slurm_conf), "SLURM_CONF": conf},
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        log(target, f"pyslurm did not start ({type(exc).__name__}); using scontrol")
        return None
    if probe.returncode != 0:
        why = (probe.stderr.strip().splitlines() or [f"exit {probe.returncode}"])[-1]
        log(target, f"pyslurm did not start ({why}); using scontrol")
        return None
    os.environ["SLURM_CONF"] = conf
    if path not in sys.path:
        sys.path.append(path)  # after the standard library: it shadows nothing
    try:
        return importlib.import_module("pyslurm")
    except Exception as exc:
        log(target, f"pyslurm did not import ({type(exc).__name__}: {exc}); using scontrol")
        return None


def slurm_questions(
    settings: Settings, one_job: bool = False
) -> ScontrolQuestions | PyslurmQuestions | None:
    """Who asks slurmctld: pyslurm where installed and working, else scontrol (None: neither).

    For ``one_job`` (the worker for a single job, without a queue) scontrol comes first where
    it exists: starting pyslurm (the probe and the import, ~90 ms) costs more than the one or
    two questions it would save (one scontrol process, ~4 ms).
    """
    scontrol = find_scontrol()
    fallback = ScontrolQuestions(scontrol, settings.slurm_conf, settings.log) if scontrol else None
    if one_job and fallback:
        return fallback
    pyslurm = load_pyslurm(settings)
    if pyslurm is not None:
        return PyslurmQuestions(pyslurm, fallback, settings.log)
    return fallback


#: pyslurm's TRES attributes in the order of Slurm's TRES ids (cpu 1, mem 2, energy 3, node 4,
#: billing 5, fs/disk 6, vmem 7, pages 8), then the named kinds (gres, license: 1000 and up)
_TRES_ORDER = ("cpu", "mem", "energy", "node", "billing", "fs", "vmem", "pages", "gres", "license")


def tres_text(tres: Any) -> str | None:
    """Slurm's TRES string (``cpu=2,mem=100M,node=1,billing=2,gres/gpu=1``), as scontrol writes
    it, for a TRES value as pyslurm gives it (``Job.allocated_tres``: ``cpu``, ``mem``, ...
    objects with a ``count``, memory in megabytes, and ``fs``/``gres``/``license`` maps of
    named ones); a string stays as it is; None for nothing.

    The hook's answers through pyslurm write what scontrol would: memory in the largest unit
    that holds it exactly (``2048`` -> ``2G``).  A copy of ``datalad_slurm.slurm.resources
    .tres_text`` (the worker is stdlib only and imports nothing of the package but its spool);
    ``tests/unit/test_resources.py`` holds the two equal.
    """
    if tres is None or isinstance(tres, str):
        return tres or None
    parts = []
    for kind in _TRES_ORDER:
        value = getattr(tres, kind, None)
        named = value.items() if isinstance(value, dict) else [(None, value)]
        for key, item in named:
            amount = getattr(item, "count", None)
            if not isinstance(amount, int) or isinstance(amount, bool):
                continue
            if key is None:
                parts.append(f"{kind}={_mem_text(amount) if kind == 'mem' else amount}")
            else:
                parts.append(f"{kind}/{getattr(item, 'name', None) or key}={amount}")
    return ",".join(parts) or None


def _mem_text(megabytes: int) -> str:
    """Megabytes as Slurm writes them in TRES strings: ``1000M``, ``2G``, ``1T``."""
    amount, units = megabytes, "MGTP"
    while amount and amount % 1024 == 0 and len(units) > 1:
        amount, units = amount // 1024, units[1:]
    return f"{amount}{units[0]}"
