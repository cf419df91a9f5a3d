"""Facts of Slurm's own configuration: from the slurm.conf the client commands read, and from
slurmctld (``scontrol show config``) where no file says.

On a configless login node there is no slurm.conf in /etc: a configless slurmd (or sackd)
keeps the controller's config in ``/run/slurm/conf``, where libslurm looks after its default
path; with neither, libslurm finds slurmctld through DNS, and only slurmctld can tell.
"""

from __future__ import annotations

import os
import re
import subprocess

#: where Slurm's clients find slurm.conf without SLURM_CONF, in the order tried: the default of
#: Debian's (and most) builds, that of Debian's builds before Slurm 20.11, and the copy a
#: configless slurmd or sackd keeps.  The pyslurm backend uses this list (slurm_conf_path); the
#: hook keeps a copy (epilog/datalad_slurm_hook/scontrol.py, stdlib only and installed without
#: the package), which tests/unit/test_slurm_conf.py holds equal to this one.
DEFAULT_SLURM_CONFIGS = (
    "/etc/slurm/slurm.conf",
    "/etc/slurm-llnl/slurm.conf",
    "/run/slurm/conf/slurm.conf",
)
#: seconds ``scontrol show config`` may take (it is one RPC to slurmctld)
SHOW_CONFIG_TIMEOUT = 20.0

_SHOWN = re.compile(r"^(\w+)\s*=\s*(.*?)\s*$")


def slurm_conf_path() -> str | None:
    """The slurm.conf Slurm's clients read here: SLURM_CONF, else the first default that
    exists; None when there is none (SLURM_CONF naming a missing file, or configless by DNS)."""
    named = os.environ.get("SLURM_CONF")
    if named:
        return named if os.path.isfile(named) else None
    return next((path for path in DEFAULT_SLURM_CONFIGS if os.path.isfile(path)), None)


def conf_path() -> str:
    """The slurm.conf Slurm's client commands read here, for messages: the one found, else
    what SLURM_CONF names, else the first default."""
    return slurm_conf_path() or os.environ.get("SLURM_CONF") or DEFAULT_SLURM_CONFIGS[0]


def conf_value(key: str, path: str | None = None) -> str | None:
    """The value of ``key`` (case-insensitive) in a slurm.conf, None if not set or unreadable.
    ``Include``d files are not read."""
    path = path or slurm_conf_path()
    if path is None:
        return None
    wanted = key.lower()
    found = None
    try:
        with open(path, encoding="utf-8", errors="replace") as stream:
            for line in stream:
                name, sep, value = line.split("#", 1)[0].strip().partition("=")
                if sep and name.strip().lower() == wanted:
                    found = value.strip() or None  # the last line wins, as in Slurm
    except OSError:
        return None
    return found


def shown_config() -> dict[str, str]:
    """What slurmctld says its config is (``scontrol show config``), by key; empty when it
    cannot be asked.  Not asked when SLURM_CONF names a missing file (scontrol would retry
    for a minute)."""
    named = os.environ.get("SLURM_CONF")
    if named and not os.path.isfile(named):
        return {}
    try:
        proc = subprocess.run(
            ["scontrol", "show", "config"],
            capture_output=True,
            text=True,
            stdin=subprocess.DEVNULL,
            timeout=SHOW_CONFIG_TIMEOUT,
        )
    except (OSError, subprocess.TimeoutExpired):
        return {}
    if proc.returncode != 0:
        return {}
    shown: dict[str, str] = {}
    for line in proc.stdout.splitlines():
        match = _SHOWN.match(line)
        if match:
            shown.setdefault(match.group(1), match.group(2))
    return shown


def cluster_name(path: str | None = None) -> str | None:
    """``ClusterName`` of the Slurm that the client commands use (lower case, as Slurm stores
    it): from the slurm.conf they read (``/run/slurm/conf`` on a configless login node), else
    from slurmctld; None if neither tells."""
    name = conf_value("ClusterName", path)
    if name is None and path is None:
        name = shown_config().get("ClusterName")
    return name.lower() if name else None


def seconds(value: str | None) -> int | None:
    """``300 sec`` (scontrol) or ``300`` (slurm.conf) as seconds; None if it is neither."""
    match = re.fullmatch(r"\s*(\d+)\s*(?:sec)?\s*", value or "")
    return int(match.group(1)) if match else None


def min_job_age(shown: dict[str, str]) -> int | None:
    """Seconds slurmctld keeps a finished job (``MinJobAge``), from :func:`shown_config`."""
    return seconds(shown.get("MinJobAge"))


def has_accounting(shown: dict[str, str]) -> bool | None:
    """Whether slurmctld stores jobs in accounting, from :func:`shown_config`; None: unknown."""
    storage = shown.get("AccountingStorageType")
    if storage is None:
        return None
    return bool(storage) and storage.lower() not in ("(null)", "accounting_storage/none", "none")
