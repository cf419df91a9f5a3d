"""Where datalad-slurm's settings come from, on the DataLad side.

The spool setting is the file the Slurm hook reads too (see spool.py):
``DATALAD_SLURM_CONFIG``, else the git config ``datalad.slurm.config``, else
``/etc/datalad-slurm.conf``.  Without that file there is no spool: jobs are
resolved through Slurm alone.
"""

from __future__ import annotations

import os
from typing import Any

from datalad_slurm.errors import DataladSlurmError
from datalad_slurm.spool import DEFAULT_CONFIG, SpoolConfig, SpoolError, read_config


class SpoolConfigError(DataladSlurmError, SpoolError):
    """The named config file cannot be read: our error, and still a ``SpoolError`` for the
    callers that go on without the spool (``spool.py`` itself imports nothing of ours)."""


def spool_config(ds: Any = None) -> SpoolConfig | None:
    """The shared config, or None when none is installed. A named file must exist."""
    named = os.environ.get("DATALAD_SLURM_CONFIG") or (
        ds.config.get("datalad.slurm.config") if ds is not None else None
    )
    path = named or DEFAULT_CONFIG
    if not named and not os.path.exists(path):
        return None
    try:
        return read_config(path)
    except SpoolError as exc:
        raise SpoolConfigError(
            str(exc),
            path=path,
            advice="fix it, or unset DATALAD_SLURM_CONFIG / datalad.slurm.config",
        ) from exc


#: whether finish asks accounting what the jobs it commits used (TotalCPU, MaxRSS)
USAGE_KEY = "datalad.slurm.usage"


def asks_usage(ds: Any) -> bool:
    """``datalad.slurm.usage`` (git config; default true): ``false`` leaves accounting's usage
    figures out of the records of jobs that the hook or slurmctld settled, and so the one
    accounting question for them (slurmdbd, MariaDB and sacct CPU for each job)."""
    value = ds.config.get(USAGE_KEY) if ds is not None else None
    return str(value or "true").strip().lower() not in ("false", "no", "off", "0")


def hook_uids(config: SpoolConfig) -> set[int]:
    """The accounts whose events finish trusts: the hook's, and root."""
    import pwd

    uids = {0}
    try:
        uids.add(pwd.getpwnam(config.hook_user).pw_uid)
    except KeyError:
        pass
    return uids
