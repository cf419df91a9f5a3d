"""The few facts read from slurm.conf itself (no Slurm call needed)."""

from __future__ import annotations

import os

DEFAULT_SLURM_CONF = "/etc/slurm/slurm.conf"


def conf_path() -> str:
    """The slurm.conf that Slurm's client commands read."""
    return os.environ.get("SLURM_CONF") or DEFAULT_SLURM_CONF


def cluster_name(path: str | None = None) -> str | None:
    """``ClusterName`` of the slurm.conf that Slurm's client commands use (lower case, as
    Slurm stores it), or None if it cannot be read."""
    path = path or conf_path()
    try:
        with open(path, encoding="utf-8", errors="replace") as stream:
            for line in stream:
                key, sep, value = line.split("#", 1)[0].strip().partition("=")
                if sep and key.strip().lower() == "clustername":
                    return value.strip().lower() or None
    except OSError:
        return None
    return None
