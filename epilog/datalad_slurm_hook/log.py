"""The hook's own log: syslog or the admin's file, never a file of the job's user."""

from __future__ import annotations

import os
import time

#: the ``log`` setting that sends lines to syslog (facility daemon)
SYSLOG = "syslog"


def log(target: str, message: str) -> None:
    """One line to ``target`` ("syslog", an absolute file path; anything else: nowhere).

    Never raises: the hook's trouble must not become the job's.
    """
    try:
        if target == SYSLOG:
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
