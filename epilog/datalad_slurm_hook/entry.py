"""The worker's entry: ``--serve CLUSTER`` (the queue), ``--direct`` (the one job in the
environment) and ``--check`` (for admins). Reads the settings once and passes them on; bounds
the time; whatever goes wrong is one line in the hook's log and exit 0, never the job's failure.

Contract: exit 0 on every path, within a bounded time; write nothing outside the spool; log
failures to syslog or the admin's log file, never to a file of the job's user; never lose a
queued job (a claim of a worker that died is taken over by the next one).
"""

from __future__ import annotations

import os
import signal
import sys
import time
from collections.abc import Mapping
from types import FrameType

from . import MODULES, spool
from .ask import PyslurmQuestions, slurm_questions
from .event import is_registered, well_formed, write_job_event
from .log import SYSLOG, log
from .queue import open_queue, prepare_queue
from .scontrol import ping_slurmctld
from .settings import INSTALL_FILE, Settings, SettingsError, load_settings
from .worker import MAX_LIFE, Worker, resolve

#: a worker for one job (--direct) never takes longer than this many seconds
HARD_LIMIT = 10.0
#: the executable that Slurm's entry point starts, beside this package
SCRIPT = os.path.join(
    os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "datalad_slurm_epilog.py"
)


class _Deadline(Exception):
    pass


def _on_alarm(signum: int, frame: FrameType | None) -> None:
    raise _Deadline()


def main(environ: Mapping[str, str] | None = None, argv: list[str] | None = None) -> int:
    """``--serve CLUSTER``: serve the queue; ``--direct CLUSTER`` or nothing: the job in env.

    ``--check`` (for admins, on a terminal): print the settings and how the hook asks Slurm.
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
    print(modules_said())
    try:
        settings = load_settings(env)
    except SettingsError as exc:
        print(f"settings: {exc}")
        return 1
    print(
        f"settings {INSTALL_FILE}: config {settings.config}, "
        + (f"pyslurm in {settings.pyslurm_path}" if settings.pyslurm_path else "no pyslurm")
    )
    print(f"config {settings.config}: spool {settings.spool}, hook user {settings.hook_user}")
    print(f"log: {settings.log}")
    questions = slurm_questions(settings)
    if isinstance(questions, PyslurmQuestions):
        version = questions.pyslurm.__version__
        print(f"asks slurmctld through pyslurm {version} ({settings.pyslurm_path})")
    elif questions:
        print(
            f"asks slurmctld through {questions.scontrol}"
            + (
                f" (pyslurm in {settings.pyslurm_path} did not start; see the log)"
                if settings.pyslurm_path
                else ""
            )
        )
    else:
        print("finds neither pyslurm nor scontrol: events carry only what the environment says")
        return 1
    answered, said = ping_slurmctld(settings)
    print(said)
    return 0 if answered else 1


def modules_said() -> str:
    """Where this package's modules and the spool module were loaded from (all of them are
    imported by now: one that did not load stopped the worker before, and said so)."""
    package = os.path.dirname(os.path.abspath(__file__))
    return f"modules: {package}/ ({', '.join(MODULES)}); spool module {spool.__file__}"


def direct_main(env: Mapping[str, str]) -> int:
    """One job, its facts in ``env``: resolve its state and write its event."""
    started = time.monotonic()
    log_target = SYSLOG
    job = env.get("SLURM_JOB_ID", "?")
    try:
        signal.signal(signal.SIGALRM, _on_alarm)
        signal.setitimer(signal.ITIMER_REAL, HARD_LIMIT)
        try:
            settings = load_settings(env)
        except SettingsError as exc:
            log_target = exc.log_target
            log(log_target, f"job {job}: {exc}; no event written")
            return 0
        log_target = settings.log
        if not well_formed(env):
            log(log_target, f"job {job}: malformed environment")
            return 0
        if not is_registered(settings, env):
            return 0
        prepare_queue(settings, env.get("SLURM_CLUSTER_NAME", ""))
        facts = resolve(job, env, settings)
        write_job_event(settings, env, facts)
    except _Deadline:
        log(log_target, f"job {job}: gave up after {HARD_LIMIT:.0f} s; no event written")
    except Exception as exc:  # the hook must never fail: log and go
        log(log_target, f"job {job}: no event written: {type(exc).__name__}: {exc}")
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        elapsed = time.monotonic() - started
        if elapsed > 1.0:
            log(log_target, f"job {job}: the hook took {elapsed:.2f} s")
    return 0


def serve_main(cluster: str, env: Mapping[str, str]) -> int:
    """Serve the cluster's queue (started by the entry point when no worker was alive)."""
    log_target = SYSLOG
    try:
        signal.signal(signal.SIGALRM, _on_alarm)
        # a bound on the whole life, whatever happens; a claim left behind is taken over
        signal.setitimer(signal.ITIMER_REAL, MAX_LIFE + 120)
        try:
            settings = load_settings(env)
        except SettingsError as exc:
            log(exc.log_target, f"{exc}; the jobs queued for cluster {cluster!r} wait for a fix")
            return 0
        log_target = settings.log
        if serve(settings, cluster):
            signal.setitimer(signal.ITIMER_REAL, 0)
            _hand_over(cluster)
    except _Deadline:
        log(log_target, "the worker ran out of time; the next one takes over its jobs")
    except Exception as exc:  # never fail; the claims stay for the next worker
        log(log_target, f"the worker stopped: {type(exc).__name__}: {exc}")
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
    return 0


def serve(settings: Settings, cluster: str) -> bool:
    """Serve the cluster's queue; True if a fresh process must go on (after MAX_LIFE)."""
    queue = open_queue(settings, cluster)
    if queue is None:
        log(settings.log, f"the hook's queue for cluster {cluster!r} is not usable")
        return False
    # the entry point takes a process whose working directory is the queue for its worker
    os.chdir(queue.root)
    if queue.served_by_another():
        return False  # started at the same moment as that one (see served_by_another)
    return Worker(settings, queue).run()


def _hand_over(cluster: str) -> None:
    """Go on as a fresh process (same pid), for the jobs queued after MAX_LIFE."""
    os.execv(sys.executable, [sys.executable, "-IS", SCRIPT, "--serve", cluster])
