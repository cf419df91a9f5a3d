"""Asking slurmctld through ``scontrol``: one interactive session for many questions, one
``scontrol show job -o`` process per job where a session does not work, and ``scontrol ping``
for ``--check``."""

from __future__ import annotations

import os
import select
import subprocess
import time

from .facts import parse_scontrol_line
from .log import log
from .settings import Settings

#: where scontrol lives when the hook has no PATH
SCONTROL_CANDIDATES = ("/usr/bin/scontrol", "/usr/local/bin/scontrol", "/opt/slurm/bin/scontrol")
#: where libslurm finds its config without SLURM_CONF: the list of datalad_slurm/slurm/conf.py,
#: which the hook cannot import (tests/unit/test_slurm_conf.py holds the two equal)
DEFAULT_SLURM_CONFIGS = (
    "/etc/slurm/slurm.conf",
    "/etc/slurm-llnl/slurm.conf",
    "/run/slurm/conf/slurm.conf",
)


def default_slurm_conf() -> str:
    """The slurm.conf libslurm reads without SLURM_CONF ("" if none exists here)."""
    return next((c for c in DEFAULT_SLURM_CONFIGS if os.path.isfile(c)), "")


def find_scontrol() -> str | None:
    return next((p for p in SCONTROL_CANDIDATES if os.access(p, os.X_OK)), None)


def scontrol_env(slurm_conf: str) -> dict[str, str]:
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
                env=scontrol_env(slurm_conf),
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
            env=scontrol_env(slurm_conf),
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

    def __init__(self, scontrol: str, slurm_conf: str, log_target: str = "") -> None:
        self.scontrol = scontrol
        self.slurm_conf = slurm_conf
        self.log_target = log_target
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
            log(
                self.log_target,
                f"interactive scontrol failed ({exc}); one scontrol per job from now on",
            )
            self.session_failed = True
            self.close()
        return answers

    def close(self) -> None:
        if self.session is not None:
            self.session.close()
            self.session = None


def ping_slurmctld(settings: Settings) -> tuple[bool, str]:
    """Whether slurmctld answers ``scontrol ping`` the way the hook calls scontrol, and what to
    say about it: a hook that cannot ask writes UNKNOWN for every job that ended with 0:0."""
    scontrol = find_scontrol()
    if scontrol is None:
        return True, "no scontrol here to ping slurmctld with"
    conf = settings.slurm_conf or default_slurm_conf()
    where = f"slurm.conf {conf}" if conf else "no slurm.conf (configless)"
    if conf and not os.path.isfile(conf):  # scontrol would retry for a minute
        answer = f"{conf} is not a file"
    else:
        answered, answer = _ping(scontrol, settings)
        if answered:
            return True, f"slurmctld answers ({where}): {answer}"
    return False, (
        f"slurmctld does NOT answer the hook's scontrol ({where}): {answer[-300:]}. "
        "Events would say UNKNOWN and finish would have to ask Slurm for every job. "
        f"If slurm.conf is elsewhere, set 'slurm_conf = /path/to/slurm.conf' in {settings.config} "
        "(epilog/install --slurm-conf)"
    )


def _ping(scontrol: str, settings: Settings) -> tuple[bool, str]:
    try:
        proc = subprocess.run(
            [scontrol, "ping"],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            env=scontrol_env(settings.slurm_conf),
            timeout=max(settings.query_timeout, 1.0),
        )
    except subprocess.TimeoutExpired:
        return False, f"no answer within {settings.query_timeout:g} s"
    answer = " ".join((proc.stdout + proc.stderr).split())
    return proc.returncode == 0 and " is UP" in proc.stdout, answer
