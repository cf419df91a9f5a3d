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

This file only starts the worker: its code is the package ``datalad_slurm_hook/``
beside it (see its ``__init__.py``), and the spool code the package's own
``datalad_slurm/spool.py``, installed beside it as ``datalad_slurm_spool.py``.
``epilog/install`` sets the interpreter line; ``datalad_slurm_hook/install.conf``
says which config file the hook reads and where pyslurm is. Python standard
library only, CPython 3.9 or newer.

Contract: exit 0 on every path, within a bounded time; write nothing outside
the spool; log failures to syslog or the admin's log file, never to a file
of the job's user; never lose a queued job (a claim of a worker that died is
taken over by the next one).
"""

from __future__ import annotations

import os
import sys


def main() -> int:
    here = os.path.dirname(os.path.realpath(__file__))
    if here not in sys.path:
        sys.path.insert(0, here)  # -I leaves this folder out
    try:
        from datalad_slurm_hook.entry import main as worker_main
    except Exception as exc:  # a module missing, or not for this Python: the installer's to fix
        return cannot_start(here, exc)
    return worker_main()


def cannot_start(here: str, exc: Exception) -> int:
    """The worker's modules did not load: ``--check`` says so (exit 1); the hook logs it to
    syslog (the config is the modules' to read) and exits 0."""
    why = (
        f"the hook's modules in {here} did not load ({type(exc).__name__}: {exc}): "
        "run epilog/install (or datalad-slurm-hook install) again"
    )
    if sys.argv[1:] == ["--check"]:
        print(why)
        return 1
    try:
        import syslog

        syslog.openlog("datalad-slurm-epilog", 0, syslog.LOG_DAEMON)
        syslog.syslog(syslog.LOG_WARNING, why)
    except Exception:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
