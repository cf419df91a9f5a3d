#!/usr/bin/python3 -IS
"""datalad-slurm's Slurm hook worker: drop a completion event for each registered job.

Slurm runs ``datalad-slurm-epilog`` (``epilog/datalad-slurm-epilog.sh``) as
``EpilogSlurmctld``. For a registered job that script leaves a pending file
in the hook's queue, ``<spool>/.hook/<cluster>/pending/``, and starts this
worker in a new session only if none is alive (``--serve``). One worker thus
serves a whole burst of jobs: it claims pending files, waits until each job
has left COMPLETING, so its final state (COMPLETED, CANCELLED, TIMEOUT, ...)
shows plainly, writes one event per job, and leaves once the queue stayed
empty for a moment. Without a usable queue the entry point starts a worker
for its one job (``--direct``, the job's facts in the environment).

Python standard library only; the spool code is the package's own
``datalad_slurm/spool.py``, installed beside this file as
``datalad_slurm_spool.py``.

Contract: exit 0 on every path, within a bounded time; write nothing outside
the spool; log failures to syslog or the admin's log file, never to a file
of the job's user; never lose a queued job (a claim of a worker that died is
taken over by the next one).
"""

from __future__ import annotations

import importlib
import os
import re
import select
import signal
import subprocess
import sys
import time
from collections.abc import Mapping
from types import FrameType, ModuleType

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (the hook starts faster)
if TYPE_CHECKING:
    from typing import Any

#: replaced by epilog/install with the installed config's path
CONFIG_PATH = "/etc/datalad-slurm.conf"
#: a worker for one job (--direct) never takes longer than this many seconds
HARD_LIMIT = 10.0
#: where scontrol lives when the hook has no PATH
SCONTROL_CANDIDATES = ("/usr/bin/scontrol", "/usr/local/bin/scontrol", "/opt/slurm/bin/scontrol")
#: replaced by epilog/install: the folder in which it found pyslurm for the hook's Python ("" if
#: none, or installed with --no-pyslurm); the worker then asks slurmctld through pyslurm
PYSLURM_PATH = ""
#: Slurm's error number for a job id slurmctld does not hold (ESLURM_INVALID_JOB_ID)
ESLURM_INVALID_JOB_ID = 2017
#: where libslurm finds its config without SLURM_CONF: the list of datalad_slurm/slurm/conf.py,
#: which the hook cannot import (tests/unit/test_slurm_conf.py holds the two equal)
DEFAULT_SLURM_CONFIGS = (
    "/etc/slurm/slurm.conf",
    "/etc/slurm-llnl/slurm.conf",
    "/run/slurm/conf/slurm.conf",
)

#: the hook's own folder in the spool, owned by the hook's account, mode 0700
HOOK_DIR = ".hook"
#: seconds between two looks at the queue, and first between two questions about a job
TICK = 0.05
#: a job that stays COMPLETING (a slow slurmd Epilog) is asked at most this often
SLOWEST_QUESTION = 0.4
#: the job leaves COMPLETING only after the entry point and slurmd's epilog ended (0.02-0.13 s
#: later, HOOK-NOTES.md section 3): a question before that is a wasted scontrol call
FIRST_QUESTION_AFTER = 0.15
#: an idle worker stays this long for the next job of a burst
LINGER = 1.5
#: after this many seconds a worker takes no new jobs, and hands over to a fresh process
MAX_LIFE = 300.0
#: jobs asked about in one round (scontrol: processes at once)
MAX_PARALLEL = 16
#: a claim this old is taken over even if its worker seems alive (another host, a hung worker)
STALE_CLAIM_AGE = 600.0
#: a pending file without its final line this old was left by an entry point that failed
#: (it then started a worker for its job itself): it is dropped
INCOMPLETE_AGE = 10.0
#: how often a serving worker looks for claims of dead workers
RECOVER_EVERY = 1.0
#: the environment fields a pending file carries (what the worker needs besides scontrol)
PENDING_KEYS = (
    "SLURM_JOB_ID",
    "SLURM_JOB_UID",
    "SLURM_CLUSTER_NAME",
    "SLURM_ARRAY_JOB_ID",
    "SLURM_ARRAY_TASK_ID",
    "SLURM_JOB_USER",
    "SLURM_JOB_EXIT_CODE2",
    "SLURM_JOB_WORK_DIR",
)
PENDING_END = "."


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


def main(environ: Mapping[str, str] | None = None, argv: list[str] | None = None) -> int:
    """``--serve CLUSTER``: serve the queue; ``--direct CLUSTER`` or nothing: the job in env.

    ``--check`` (for admins, on a terminal): print the config and how the hook asks Slurm.
    """
    env = os.environ if environ is None else environ
    if argv is None:
        argv = sys.argv[1:] if environ is None else []
    if argv == ["--check"]:
        return check_main(env)
    if environ is None:
        _detach_from_slurm()
    if argv[:1] == ["--serve"] and len(argv) == 2:
        return serve_main(argv[1], env)
    return direct_main(env)


def _detach_from_slurm() -> None:
    """Let go of every descriptor Slurm handed down (the entry point does so too).

    slurmscriptd counts the hook as running, and the job as COMPLETING, for as
    long as anybody holds the pipe it reads the hook's output from (fds 1 and 2).
    """
    null = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        if fd != null:
            os.dup2(null, fd)
    os.closerange(3, 65536)
    try:
        os.setsid()  # leave Slurm's session too, where possible
    except OSError:
        pass  # already a group leader: the entry point gave it its own group


def check_main(env: Mapping[str, str]) -> int:
    """Say what the installed hook would do; exit 1 if it could not report anything."""
    spool = _load_spool()
    config_path = env.get("DATALAD_SLURM_CONFIG") or CONFIG_PATH
    try:
        config = spool.read_config(config_path)
    except spool.SpoolError as exc:
        print(f"config {config_path}: {exc}")
        return 1
    print(f"config {config_path}: spool {config.spool}, hook user {config.hook_user}")
    print(f"log: {config.log}")
    questions = slurm_questions(config)
    if isinstance(questions, PyslurmQuestions):
        print(f"asks slurmctld through pyslurm {questions.pyslurm.__version__} ({PYSLURM_PATH})")
    elif questions:
        print(
            f"asks slurmctld through {questions.scontrol}"
            + (f" (pyslurm in {PYSLURM_PATH} did not start; see the log)" if PYSLURM_PATH else "")
        )
    else:
        print("finds neither pyslurm nor scontrol: events carry only what the environment says")
        return 1
    answered, said = ping_slurmctld(config, config_path)
    print(said)
    return 0 if answered else 1


def ping_slurmctld(config: Any, config_path: str) -> tuple[bool, str]:
    """Whether slurmctld answers ``scontrol ping`` the way the hook calls scontrol, and what to
    say about it: a hook that cannot ask writes UNKNOWN for every job that ended with 0:0."""
    scontrol = find_scontrol()
    if scontrol is None:
        return True, "no scontrol here to ping slurmctld with"
    conf = config.slurm_conf or default_slurm_conf()
    where = f"slurm.conf {conf}" if conf else "no slurm.conf (configless)"
    if conf and not os.path.isfile(conf):  # scontrol would retry for a minute
        answer = f"{conf} is not a file"
    else:
        answered, answer = _ping(scontrol, config)
        if answered:
            return True, f"slurmctld answers ({where}): {answer}"
    return False, (
        f"slurmctld does NOT answer the hook's scontrol ({where}): {answer[-300:]}. "
        "Events would say UNKNOWN and finish would have to ask Slurm for every job. "
        f"If slurm.conf is elsewhere, set 'slurm_conf = /path/to/slurm.conf' in {config_path} "
        "(epilog/install --slurm-conf)"
    )


def _ping(scontrol: str, config: Any) -> tuple[bool, str]:
    try:
        proc = subprocess.run(
            [scontrol, "ping"],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            env=_scontrol_env(config.slurm_conf),
            timeout=max(config.query_timeout, 1.0),
        )
    except subprocess.TimeoutExpired:
        return False, f"no answer within {config.query_timeout:g} s"
    answer = " ".join((proc.stdout + proc.stderr).split())
    return proc.returncode == 0 and " is UP" in proc.stdout, answer


def direct_main(env: Mapping[str, str]) -> int:
    """One job, its facts in ``env``: resolve its state and write its event."""
    started = time.monotonic()
    log_target = "syslog"
    job = env.get("SLURM_JOB_ID", "?")
    try:
        signal.signal(signal.SIGALRM, _on_alarm)
        signal.setitimer(signal.ITIMER_REAL, HARD_LIMIT)
        spool = _load_spool()
        config_path = env.get("DATALAD_SLURM_CONFIG") or CONFIG_PATH
        try:
            config = spool.read_config(config_path)
        except spool.SpoolError:
            return 0  # not configured on this host: nothing to do
        log_target = config.log
        if not _well_formed(env):
            _log(log_target, f"job {job}: malformed environment")
            return 0
        uid = int(env["SLURM_JOB_UID"])
        if not spool.is_registered(
            config.spool, uid, env.get("SLURM_CLUSTER_NAME") or None, _owner_job(env)
        ):
            return 0
        _prepare_queue(config, env.get("SLURM_CLUSTER_NAME", ""), log_target)
        facts = resolve(job, env, config)
        write_job_event(spool, config, env, facts)
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


def _well_formed(env: Mapping[str, str]) -> bool:
    return env.get("SLURM_JOB_UID", "").isdigit() and env.get("SLURM_JOB_ID", "").isdigit()


def _array_job(env: Mapping[str, str]) -> str | None:
    array_job = env.get("SLURM_ARRAY_JOB_ID", "")
    return array_job if array_job.isdigit() and array_job != "0" else None


def _owner_job(env: Mapping[str, str]) -> str:
    """The id ``schedule`` registered: the array job's for an array task."""
    return _array_job(env) or env["SLURM_JOB_ID"]


def write_job_event(
    spool: ModuleType, config: Any, env: Mapping[str, str], facts: dict[str, Any]
) -> None:
    """The event for the job whose Slurm environment is ``env``, written into the spool."""
    facts = dict(facts)
    event = spool.Event(
        job_id=int(env["SLURM_JOB_ID"]),
        state=facts.pop("state"),
        uid=int(env["SLURM_JOB_UID"]),
        **facts,
    )
    event.cluster = env.get("SLURM_CLUSTER_NAME") or None
    array_job = _array_job(env)
    if array_job:
        event.array_job_id = int(array_job)
        task = env.get("SLURM_ARRAY_TASK_ID", "")
        event.array_task_id = int(task) if task.isdigit() else None
    event.user = env.get("SLURM_JOB_USER") or None
    spool.write_event(config.spool, event.uid, event, _spool_owners(config.hook_user))


def _spool_owners(hook_user: str) -> set[int]:
    owners = {0, os.getuid()}
    uid = _uid_of(hook_user)
    if uid is not None:
        owners.add(uid)
    return owners


def _uid_of(user: str) -> int | None:
    try:
        import pwd

        return pwd.getpwnam(user).pw_uid
    except (KeyError, ImportError):
        return None


def run_time_text(seconds: int) -> str:
    """Seconds as scontrol's ``RunTime`` shows them: ``00:01:02``, ``2-03:04:05``."""
    minutes, secs = divmod(max(seconds, 0), 60)
    hours, minutes = divmod(minutes, 60)
    days, hours = divmod(hours, 24)
    clock = f"{hours:02d}:{minutes:02d}:{secs:02d}"
    return f"{days}-{clock}" if days else clock


# -- resolving the final state ------------------------------------------------------------

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


def resolve(job: str, env: Mapping[str, str], config: Any) -> dict[str, Any]:
    """The job's final facts; falls back to the environment if Slurm does not answer."""
    deadline = time.monotonic() + config.query_timeout
    questions = slurm_questions(config, one_job=True)
    fields: dict[str, str] = {}
    try:
        while questions and time.monotonic() < deadline:
            answers = questions.ask([job], max(deadline - time.monotonic(), 0.1))
            fields = answers.get(job, {})
            # the job leaves COMPLETING moments after the hook's entry script returned
            if not fields or not still_completing(fields):
                break
            time.sleep(0.05)
    finally:
        if questions:
            questions.close()
    return final_facts(fields, env)


def default_slurm_conf() -> str:
    """The slurm.conf libslurm reads without SLURM_CONF ("" if none exists here)."""
    return next((c for c in DEFAULT_SLURM_CONFIGS if os.path.isfile(c)), "")


def find_scontrol() -> str | None:
    return next((p for p in SCONTROL_CANDIDATES if os.access(p, os.X_OK)), None)


def _scontrol_env(slurm_conf: str) -> dict[str, str]:
    return {"PATH": "/usr/bin:/bin", **({"SLURM_CONF": slurm_conf} if slurm_conf else {})}


def _job_fields(out: str, job: str) -> dict[str, str]:
    for line in out.splitlines():
        parsed = parse_scontrol_line(line)
        if parsed.get("JobId") == job:
            return parsed
    return {}


def show_jobs(
    scontrol: str, jobs: list[str], timeout: float, slurm_conf: str
) -> dict[str, dict[str, str]]:
    """``scontrol show job -o`` for several jobs at once (one process each, in parallel).

    A job missing from the result got no answer; ``{}`` means slurmctld no longer knows it.
    """
    running: list[tuple[str, subprocess.Popen[str]]] = []
    for job in jobs:
        try:
            process = subprocess.Popen(
                [scontrol, "show", "job", "-o", job],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
                env=_scontrol_env(slurm_conf),
            )
        except OSError:
            continue
        running.append((job, process))
    deadline = time.monotonic() + timeout
    answers: dict[str, dict[str, str]] = {}
    for job, process in running:
        try:
            out, err = process.communicate(timeout=max(deadline - time.monotonic(), 0.1))
        except subprocess.TimeoutExpired:
            process.kill()
            process.communicate()
            continue
        fields = _job_fields(out, job)
        if fields or "Invalid job id" in err:  # else slurmctld did not answer: no answer
            answers[job] = fields
    return answers


class ScontrolSession:
    """One interactive ``scontrol`` for many questions: each costs an RPC, not a process.

    A question is ``show job ID`` (in ``oneliner`` mode) followed by ``show
    hostnames TOKEN-N``, which prints its argument back: the end of the answer.
    scontrol reports an unknown job on stderr before it reads the next
    command, so by the time the token arrives the error is there to read.
    """

    #: what interactive scontrol puts before the echoed command (and, without readline, output)
    PROMPT = "scontrol: "

    def __init__(self, scontrol: str, slurm_conf: str) -> None:
        self.process = subprocess.Popen(
            [scontrol],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=_scontrol_env(slurm_conf),
        )
        self.token = "dls" + os.urandom(8).hex()
        self.count = 0
        self.pending = b""
        assert self.process.stdout and self.process.stderr and self.process.stdin
        self.out = self.process.stdout.fileno()
        self.err = self.process.stderr.fileno()
        os.set_blocking(self.err, False)
        self._send("oneliner\n")

    def _send(self, text: str) -> None:
        assert self.process.stdin
        self.process.stdin.write(text.encode())
        self.process.stdin.flush()

    def ask(self, job: str, deadline: float) -> dict[str, str] | None:
        """The job's fields, ``{}`` if slurmctld does not hold it, None if it did not answer.

        Raises OSError when the session broke (no end token in time, scontrol gone).
        """
        self.count += 1
        end = f"{self.token}-{self.count}"
        self._send(f"show job {job}\nshow hostnames {end}\n")
        fields: dict[str, str] = {}
        for line in self._lines_until(end, deadline):
            if line.startswith("JobId="):
                parsed = parse_scontrol_line(line)
                if parsed.get("JobId") == job:
                    fields = parsed
        if fields:
            return fields
        return {} if "Invalid job id" in self._stderr() else None

    def _lines_until(self, end: str, deadline: float) -> list[str]:
        lines: list[str] = []
        while True:
            while b"\n" in self.pending:
                raw, self.pending = self.pending.split(b"\n", 1)
                line = raw.decode("utf-8", "replace")
                while line.startswith(self.PROMPT):
                    line = line[len(self.PROMPT) :]
                if line == end:
                    return lines
                lines.append(line)
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([self.out], [], [], left)[0]:
                raise OSError("scontrol did not answer in time")
            chunk = os.read(self.out, 65536)
            if not chunk:
                raise OSError("scontrol ended")
            self.pending += chunk

    def _stderr(self) -> str:
        text = b""
        try:
            while chunk := os.read(self.err, 65536):
                text += chunk
        except BlockingIOError:
            pass
        return text.decode("utf-8", "replace")

    def close(self) -> None:
        try:
            assert self.process.stdin
            self.process.stdin.close()  # scontrol leaves at the end of its input
            self.process.wait(timeout=1)
        except (OSError, subprocess.TimeoutExpired):
            self.process.kill()
            self.process.wait()


class ScontrolQuestions:
    """Asks slurmctld through scontrol: one interactive session for a worker's whole life
    (:class:`ScontrolSession`); after the session failed once, one ``scontrol show job -o``
    process per job, in parallel (the way that works with any scontrol)."""

    name = "scontrol"

    def __init__(self, scontrol: str, slurm_conf: str, log: str = "") -> None:
        self.scontrol = scontrol
        self.slurm_conf = slurm_conf
        self.log = log
        self.session: ScontrolSession | None = None
        self.session_failed = False

    def ask(self, jobs: list[str], timeout: float) -> dict[str, dict[str, str]]:
        if self.session_failed:
            return show_jobs(self.scontrol, jobs, timeout, self.slurm_conf)
        deadline = time.monotonic() + timeout
        answers: dict[str, dict[str, str]] = {}
        try:
            if self.session is None:
                self.session = ScontrolSession(self.scontrol, self.slurm_conf)
            for job in jobs:
                fields = self.session.ask(job, deadline)
                if fields is None:
                    break  # slurmctld did not answer: the rest are asked again later
                answers[job] = fields
        except OSError as exc:
            _log(self.log, f"interactive scontrol failed ({exc}); one scontrol per job from now on")
            self.session_failed = True
            self.close()
        return answers

    def close(self) -> None:
        if self.session is not None:
            self.session.close()
            self.session = None


class PyslurmQuestions:
    """Asks slurmctld through pyslurm (``pyslurm.Job.load``), in this process.

    Each call is bounded by Slurm's own MessageTimeout, not by ``query_timeout``:
    libslurm cannot be interrupted. After the first failed call of a round the
    round ends (slurmctld is not answering; the others are asked again later).
    Anything else going wrong (a pyslurm that does not fit this Slurm) hands
    over to scontrol for the rest of this process's life.
    """

    name = "pyslurm"

    def __init__(self, pyslurm: ModuleType, fallback: ScontrolQuestions | None, log: str):
        self.pyslurm = pyslurm
        self.fallback = fallback
        self.log = log
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
                _log(self.log, f"pyslurm failed ({type(exc).__name__}: {exc}); using scontrol")
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
    spool = _load_spool()
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
                value = spool.tres_text(value)
            elif key == "RunTime" and isinstance(value, int):
                value = run_time_text(value)
        except Exception:
            continue
        if value is not None and value != "":
            found[key] = str(value)
    return found


#: run in a child process before the worker imports pyslurm itself
_PYSLURM_PROBE = "import sys; sys.path.append(sys.argv[1]); import pyslurm; pyslurm.Job"


def load_pyslurm(slurm_conf: str, timeout: float, log: str) -> ModuleType | None:
    """pyslurm, where epilog/install found it for this Python and it starts cleanly; else None.

    Importing pyslurm initialises libslurm, which ends the whole process when
    slurm.conf is missing or does not parse: a child process tries it first.
    """
    if not PYSLURM_PATH or not os.path.isdir(PYSLURM_PATH):
        return None
    conf = slurm_conf or os.environ.get("SLURM_CONF", "")
    if not conf:
        conf = default_slurm_conf()
    if not conf or not os.access(conf, os.R_OK):
        return None
    try:
        probe = subprocess.run(
            [sys.executable, "-IS", "-c", _PYSLURM_PROBE, PYSLURM_PATH],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=max(timeout, 1.0),
            check=False,
            env={**_scontrol_env(slurm_conf), "SLURM_CONF": conf},
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        _log(log, f"pyslurm did not start ({type(exc).__name__}); using scontrol")
        return None
    if probe.returncode != 0:
        why = (probe.stderr.strip().splitlines() or [f"exit {probe.returncode}"])[-1]
        _log(log, f"pyslurm did not start ({why}); using scontrol")
        return None
    os.environ["SLURM_CONF"] = conf
    if PYSLURM_PATH not in sys.path:
        sys.path.append(PYSLURM_PATH)  # after the standard library: it shadows nothing
    try:
        return importlib.import_module("pyslurm")
    except Exception as exc:
        _log(log, f"pyslurm did not import ({type(exc).__name__}: {exc}); using scontrol")
        return None


def slurm_questions(
    config: Any, one_job: bool = False
) -> ScontrolQuestions | PyslurmQuestions | None:
    """Who asks slurmctld: pyslurm where installed and working, else scontrol (None: neither).

    For ``one_job`` (the worker for a single job, without a queue) scontrol comes first where
    it exists: starting pyslurm (the probe and the import, ~90 ms) costs more than the one or
    two questions it would save (one scontrol process, ~4 ms).
    """
    scontrol = find_scontrol()
    fallback = ScontrolQuestions(scontrol, config.slurm_conf, config.log) if scontrol else None
    if one_job and fallback:
        return fallback
    pyslurm = load_pyslurm(config.slurm_conf, config.query_timeout, config.log)
    if pyslurm is not None:
        return PyslurmQuestions(pyslurm, fallback, config.log)
    return fallback


# -- the queue ------------------------------------------------------------------------------


def queue_name(cluster: str) -> str:
    """The cluster's folder under .hook; the entry point derives the same name."""
    allowed = set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._-")
    if not cluster or cluster.startswith(".") or not set(cluster) <= allowed:
        return "_"
    return cluster


def process_start(pid: int) -> str | None:
    """The start time (/proc/PID/stat field 22) of a live, non-zombie process, else None."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as stream:
            stat = stream.read()
    except OSError:
        return None
    fields = stat[stat.rfind(")") + 2 :].split()
    if len(fields) < 20 or fields[0] == "Z":
        return None
    return fields[19]


def is_alive(pid: int, start: str) -> bool:
    """Whether the process PID is alive and is the one that started at ``start``."""
    return pid > 0 and process_start(pid) == start


class Queue:
    """``<spool>/.hook/<cluster>/``: pending/, claimed/ and the serving worker's pid file."""

    def __init__(self, root: str) -> None:
        self.root = root
        self.pending = os.path.join(root, "pending")
        self.claimed = os.path.join(root, "claimed")
        self.pid_file = os.path.join(root, "worker.pid")
        #: this worker as the pid file names it: [PID, STARTTIME]
        self.pid_line = [str(os.getpid()), process_start(os.getpid()) or "0"]
        self.me = f"{'@'.join(self.pid_line)}@{os.uname().nodename}"

    # the pid file

    def announce(self) -> None:
        """Write the pid file (temporary file + rename): the entry point now starts no worker."""
        temporary = f"{self.pid_file}.{self.pid_line[0]}.tmp"
        _write_new_file(temporary, " ".join(self.pid_line) + "\n")
        os.rename(temporary, self.pid_file)

    def _named(self) -> list[str]:
        """The pid file's "PID STARTTIME", split ([] without a pid file)."""
        try:
            with open(self.pid_file, encoding="ascii") as stream:
                return stream.read().split()
        except OSError:
            return []

    def names_me(self) -> bool:
        return self._named() == self.pid_line

    def served_by_another(self) -> bool:
        """Whether the pid file names another live worker.

        Two jobs that end at the same moment may both find no worker, and their
        entry points start one each; only the first names its worker in the
        pid file. The second worker leaves at once: the first one sees the
        second job's pending file, written before that entry point looked, even
        if it is leaving (it looks at the queue once more after removing the
        pid file).
        """
        named = self._named()
        return (
            len(named) == 2
            and named != self.pid_line
            and named[0].isdigit()
            and is_alive(int(named[0]), named[1])
        )

    def retire(self) -> None:
        """Remove the pid file if it still names this worker."""
        if self.names_me():
            _unlink_quietly(self.pid_file)

    # pending and claimed files

    def pending_names(self) -> list[str]:
        try:
            return sorted(name for name in os.listdir(self.pending) if not name.startswith("."))
        except OSError:
            return []

    def has_backlog(self) -> bool:
        """Complete pending files or orphaned claims (a file still being written does not
        count: its entry point has yet to look at the pid file, and will start a worker)."""
        return any(self.read_pending(name) for name in self.pending_names()) or bool(
            self.orphaned_claims()
        )

    def claim(self, name: str) -> str | None:
        """Rename a pending file to a claim of this worker; None if another worker was faster."""
        claimed = f"{name}@{self.me}"
        try:
            os.rename(os.path.join(self.pending, name), os.path.join(self.claimed, claimed))
        except FileNotFoundError:
            return None
        os.utime(os.path.join(self.claimed, claimed))  # the claim's age starts now
        return claimed

    def orphaned_claims(self) -> list[str]:
        """Claims of workers that died (or, on another host, that are very old)."""
        try:
            names = os.listdir(self.claimed)
        except OSError:
            return []
        host = os.uname().nodename
        orphaned = []
        for name in names:
            parts = name.split("@")
            if len(parts) != 4 or "@".join(parts[1:]) == self.me:
                continue
            if self._claimant_gone(parts[1:], host) or (
                self._age(os.path.join(self.claimed, name)) > STALE_CLAIM_AGE
            ):
                orphaned.append(name)
        return sorted(orphaned)

    @staticmethod
    def _claimant_gone(claimant: list[str], host: str) -> bool:
        """Whether a worker of this host named by ``[pid, start, host]`` is dead."""
        pid, start, claimant_host = claimant
        return claimant_host == host and not (pid.isdigit() and is_alive(int(pid), start))

    def take_over(self, claimed: str) -> str | None:
        """Claim an orphaned claim for this worker; None if another worker was faster."""
        name = claimed.split("@", 1)[0]
        mine = f"{name}@{self.me}"
        try:
            os.rename(os.path.join(self.claimed, claimed), os.path.join(self.claimed, mine))
        except FileNotFoundError:
            return None
        os.utime(os.path.join(self.claimed, mine))
        return mine

    def read_claim(self, claimed: str) -> dict[str, str] | None:
        return read_pending_file(os.path.join(self.claimed, claimed))

    def read_pending(self, name: str) -> dict[str, str] | None:
        return read_pending_file(os.path.join(self.pending, name))

    def pending_age(self, name: str) -> float:
        return self._age(os.path.join(self.pending, name))

    def drop_pending(self, name: str) -> None:
        _unlink_quietly(os.path.join(self.pending, name))

    def done(self, claimed: str) -> None:
        _unlink_quietly(os.path.join(self.claimed, claimed))

    @staticmethod
    def _age(path: str) -> float:
        try:
            return time.time() - os.lstat(path).st_mtime
        except OSError:
            return 0.0


def _write_new_file(path: str, text: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    try:
        os.write(fd, text.encode())
    finally:
        os.close(fd)


def _unlink_quietly(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


def read_pending_file(path: str) -> dict[str, str] | None:
    """The job's Slurm environment from a pending file; None while it is incomplete."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK)
    except OSError:
        return None
    try:
        text = os.read(fd, 65536).decode("utf-8", errors="replace")
    finally:
        os.close(fd)
    lines = text.split("\n")
    if len(lines) < 2 or lines[-2] != PENDING_END or lines[-1] != "":
        return None
    env: dict[str, str] = {}
    for line in lines[:-2]:
        key, sep, value = line.partition("=")
        if sep and key in PENDING_KEYS:
            env[key] = value
    return env if _well_formed(env) else None


def open_queue(config: Any, cluster: str) -> Queue | None:
    """The cluster's queue, if .hook is a real folder of this account (see the entry point)."""
    hook = os.path.join(config.spool, HOOK_DIR)
    try:
        info = os.lstat(hook)
    except OSError:
        return None
    if not _is_private_dir(info):
        return None
    root = os.path.join(hook, queue_name(cluster))
    for path in (root, os.path.join(root, "pending"), os.path.join(root, "claimed")):
        try:
            os.mkdir(path, 0o700)
        except FileExistsError:
            if not _is_private_dir(os.lstat(path)):
                return None
    return Queue(root)


def _is_private_dir(info: os.stat_result) -> bool:
    import stat

    return (
        stat.S_ISDIR(info.st_mode)
        and info.st_uid == os.getuid()
        and not info.st_mode & (stat.S_IWGRP | stat.S_IWOTH)
    )


def _prepare_queue(config: Any, cluster: str, log_target: str) -> None:
    """A worker for one job (the queue was not usable) readies the queue for the next hooks.

    Only as the hook's account: a queue made by root (slurmd's Epilog) would be
    of no use to the hook running as SlurmUser.
    """
    if os.getuid() != _uid_of(config.hook_user):
        return
    hook = os.path.join(config.spool, HOOK_DIR)
    try:
        os.mkdir(hook, 0o700)
    except FileExistsError:
        pass
    except OSError as exc:
        _log(log_target, f"cannot create the hook's queue {hook}: {exc.strerror}")
        return
    queue = open_queue(config, cluster)
    if queue is None:
        _log(
            log_target,
            f"the hook's queue {hook} is not a private folder of this account; "
            "every job starts its own worker (slower)",
        )
    elif not os.access(queue.pending, os.W_OK):
        _log(
            log_target,
            f"the hook's queue {queue.pending} is not writable; "
            "every job starts its own worker (slower)",
        )


# -- serving the queue ------------------------------------------------------------------------


class QueuedJob:
    """A claimed job on its way to an event."""

    def __init__(self, claimed: str, env: dict[str, str], queued_at: float, patience: float):
        self.claimed = claimed
        self.env = env
        self.job = env["SLURM_JOB_ID"]
        self.next_question = queued_at + FIRST_QUESTION_AFTER
        self.interval = TICK
        self.deadline = time.time() + patience
        self.fields: dict[str, str] = {}

    def ask_later(self, now: float) -> None:
        """Not decided yet: ask again, a little later each time."""
        self.next_question = now + self.interval
        self.interval = min(self.interval * 2, SLOWEST_QUESTION)


class Worker:
    """One process serving a cluster's queue until it stays empty."""

    def __init__(self, spool: ModuleType, config: Any, queue: Queue) -> None:
        self.spool = spool
        self.config = config
        self.queue = queue
        self.jobs: dict[str, QueuedJob] = {}
        self.questions = slurm_questions(config)
        self.born = time.monotonic()
        self.last_recovery = 0.0

    @property
    def retiring(self) -> bool:
        return time.monotonic() - self.born >= MAX_LIFE

    def run(self) -> bool:
        """Serve until the queue stays empty; True if it must go on in a fresh process."""
        try:
            return self._serve()
        finally:
            if self.questions:
                self.questions.close()

    def _serve(self) -> bool:
        self.queue.announce()
        idle_since = time.monotonic()
        while True:
            if not self.retiring:
                self.take_jobs()
            if self.jobs:
                self.ask_slurm()
                idle_since = time.monotonic()
            elif self.retiring or time.monotonic() - idle_since >= LINGER:
                # leave: pid file first, then one more look (the entry point's order reversed)
                self.queue.retire()
                backlog = self.queue.has_backlog()
                if not backlog and not self.queue.names_me():
                    return False  # (an entry point that started this worker may name it late)
                if self.retiring:
                    return True
                self.queue.announce()
                idle_since = time.monotonic()
                continue
            time.sleep(TICK)

    def take_jobs(self) -> None:
        for name in self.queue.pending_names():
            env = self.queue.read_pending(name)
            if env is None:
                self._drop_if_abandoned(name)
                continue
            queued_at = time.time() - self.queue.pending_age(name)
            claimed = self.queue.claim(name)
            if claimed:
                self._add(claimed, env, queued_at)
        if time.monotonic() - self.last_recovery >= RECOVER_EVERY:
            self.last_recovery = time.monotonic()
            for orphan in self.queue.orphaned_claims():
                claimed = self.queue.take_over(orphan)
                env = self.queue.read_claim(claimed) if claimed else None
                if claimed and env:
                    self._add(claimed, env, queued_at=0.0)
                elif claimed:
                    self.queue.done(claimed)  # unreadable: nothing to report

    def _drop_if_abandoned(self, name: str) -> None:
        if self.queue.pending_age(name) > INCOMPLETE_AGE:
            _log(self.config.log, f"dropped the incomplete pending file {name}")
            self.queue.drop_pending(name)

    def _add(self, claimed: str, env: dict[str, str], queued_at: float) -> None:
        self.jobs[claimed] = QueuedJob(claimed, env, queued_at, self.config.query_timeout)

    def due_jobs(self) -> list[QueuedJob]:
        """The jobs to ask about now, longest waiting first; at most MAX_PARALLEL."""
        now = time.time()
        due = [job for job in self.jobs.values() if job.next_question <= now]
        return sorted(due, key=lambda job: job.next_question)[:MAX_PARALLEL]

    def ask_slurm(self) -> None:
        """One round of questions for every job that is due, then events for the decided."""
        due = self.due_jobs()
        if not due:
            return
        answers: dict[str, dict[str, str]] = {}
        if self.questions:
            answers = self.questions.ask([job.job for job in due], self.config.query_timeout)
        now = time.time()
        for job in due:
            answered = job.job in answers  # else Slurm failed or timed out: ask again
            fields = answers.get(job.job, {})
            job.fields = fields or job.fields
            # an answer without the job (MinJobAge passed): the environment has to do
            if (answered and not still_completing(fields)) or now >= job.deadline:
                self.report(job)
            else:
                job.ask_later(now)

    def report(self, job: QueuedJob) -> None:
        try:
            write_job_event(self.spool, self.config, job.env, final_facts(job.fields, job.env))
        except Exception as exc:  # one job's trouble is logged; the others go on
            _log(self.config.log, f"job {job.job}: no event written: {type(exc).__name__}: {exc}")
        self.queue.done(job.claimed)
        del self.jobs[job.claimed]


def serve_main(cluster: str, env: Mapping[str, str]) -> int:
    """Serve the cluster's queue (started by the entry point when no worker was alive)."""
    log_target = "syslog"
    try:
        signal.signal(signal.SIGALRM, _on_alarm)
        # a bound on the whole life, whatever happens; a claim left behind is taken over
        signal.setitimer(signal.ITIMER_REAL, MAX_LIFE + 120)
        spool = _load_spool()
        try:
            config = spool.read_config(env.get("DATALAD_SLURM_CONFIG") or CONFIG_PATH)
        except spool.SpoolError:
            return 0
        log_target = config.log
        queue = open_queue(config, cluster)
        if queue is None:
            _log(log_target, f"the hook's queue for cluster {cluster!r} is not usable")
            return 0
        # the entry point takes a process whose working directory is the queue for its worker
        os.chdir(queue.root)
        if queue.served_by_another():
            return 0  # started at the same moment as that one (see served_by_another)
        if Worker(spool, config, queue).run():
            signal.setitimer(signal.ITIMER_REAL, 0)
            _hand_over(cluster)
    except _Deadline:
        _log(log_target, "the worker ran out of time; the next one takes over its jobs")
    except Exception as exc:  # never fail; the claims stay for the next worker
        _log(log_target, f"the worker stopped: {type(exc).__name__}: {exc}")
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
    return 0


def _hand_over(cluster: str) -> None:
    """Go on as a fresh process (same pid), for the jobs queued after MAX_LIFE."""
    os.execv(sys.executable, [sys.executable, "-IS", os.path.abspath(__file__), "--serve", cluster])


# -- logging --------------------------------------------------------------------------------


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
