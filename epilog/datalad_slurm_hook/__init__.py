"""datalad-slurm's Slurm hook worker, in the modules that ``epilog/install`` puts beside it.

The executable ``datalad_slurm_epilog.py`` puts its own folder on ``sys.path`` and hands over to
:mod:`.entry`. Imports point down this list only:

- ``entry``: ``--serve``, ``--direct`` and ``--check``; the time limits; nothing fails the job
- ``worker``: serving a cluster's queue, and resolving one job without a queue
- ``queue``: the queue's files (pending, claimed, the pid file) and whether a worker is alive
- ``ask``: who asks slurmctld: pyslurm where installed, else ``scontrol``
- ``scontrol``: asking through ``scontrol`` (one session, or one process per job), ``ping``
- ``facts``: what an answer (or the environment alone) says of the job's end
- ``event``: a job's Slurm environment, and its event written into the spool
- ``settings``: the typed settings (``install.conf`` beside these modules and the shared config)
- ``log``: the hook's own log (syslog or the admin's file)

Standard library only, CPython 3.9 or newer. The spool code is the package's own
``datalad_slurm/spool.py``, installed beside this folder as ``datalad_slurm_spool.py``.
"""

from __future__ import annotations

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (the hook starts faster)
if TYPE_CHECKING:
    from datalad_slurm import spool
else:
    try:
        import datalad_slurm_spool as spool  # installed beside this folder
    except ImportError:  # a clone, or an installed datalad-slurm: the package's own
        from datalad_slurm import spool

#: the modules of this package: ``--check`` says where each was loaded from
MODULES = ("entry", "worker", "queue", "ask", "scontrol", "facts", "event", "settings", "log")

__all__ = ["MODULES", "spool"]
