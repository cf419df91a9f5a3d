"""The hook's settings: one frozen object, read once at start and passed to every part.

Two files make it:

- ``install.conf`` beside this module, written by ``epilog/install``: which config file the
  hook reads, and the folder that holds pyslurm for the hook's Python (empty: ``scontrol``
  only). A clone's copy names the defaults.
- that config file, shared with ``datalad finish`` (read by the spool module); the environment
  may name another (``DATALAD_SLURM_CONFIG``, as for ``finish``).

A problem with either is a :class:`SettingsError`: one line saying what is wrong and what to
do, and where the hook's log is, as far as the config could tell.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

from . import spool
from .log import SYSLOG

#: written by epilog/install; the clone's own names the defaults
INSTALL_FILE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "install.conf")
#: what install.conf may say
INSTALL_KEYS = ("config", "pyslurm_path")
#: names another config file, as for ``datalad finish``
CONFIG_VARIABLE = "DATALAD_SLURM_CONFIG"
REINSTALL = "run epilog/install (or datalad-slurm-hook install) again"


class SettingsError(Exception):
    """A setting is missing or wrong; the message is one line for the hook's log."""

    def __init__(self, message: str, log_target: str = SYSLOG) -> None:
        super().__init__(message)
        #: where to report it: the config's ``log`` where it could be read, else syslog
        self.log_target = log_target


@dataclass(frozen=True)
class Installed:
    """What ``epilog/install`` chose (``install.conf``)."""

    #: the config file shared with ``datalad finish``
    config: str
    #: the folder that holds pyslurm for the hook's Python; "" asks through scontrol only
    pyslurm_path: str = ""


@dataclass(frozen=True)
class Settings:
    """Everything the hook is configured with (see the config file's comments)."""

    #: the config file these values come from
    config: str
    spool: str
    #: the hook's account (SlurmUser): it alone makes the queue and lists the spool
    hook_user: str = "slurm"
    #: "syslog", an absolute file path, or anything else for no log
    log: str = SYSLOG
    #: seconds the hook waits for slurmctld when it resolves a job's final state
    query_timeout: float = 5.0
    #: the slurm.conf the hook's Slurm calls use ("" = Slurm's default)
    slurm_conf: str = ""
    #: the folder that holds pyslurm for the hook's Python ("" = scontrol only)
    pyslurm_path: str = ""


def read_installed(path: str = INSTALL_FILE) -> Installed:
    """``install.conf``; :class:`SettingsError` if it cannot be read or says something wrong."""
    try:
        with open(path, encoding="utf-8") as stream:
            text = stream.read(65536)
    except (OSError, UnicodeDecodeError) as exc:
        why = exc.strerror if isinstance(exc, OSError) else "not UTF-8"
        raise SettingsError(
            f"cannot read the hook's settings {path} ({why}): {REINSTALL}"
        ) from None
    values: dict[str, str] = {}
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        key, sep, value = line.partition("=")
        key = key.strip().lower()
        if not sep or key not in INSTALL_KEYS:
            raise SettingsError(
                f"{path}:{number}: expected 'config = PATH' or 'pyslurm_path = PATH', "
                f"got {raw.strip()!r}: {REINSTALL}"
            )
        values[key] = value.strip()
    for key in INSTALL_KEYS:
        value = values.get(key, "")
        if key == "config" and not value:
            raise SettingsError(f"{path} names no config file ('config = PATH'): {REINSTALL}")
        if value and not os.path.isabs(value):
            raise SettingsError(
                f"{path}: {key} must be an absolute path, got {value!r}: {REINSTALL}"
            )
    return Installed(values["config"], values.get("pyslurm_path", ""))


def read_settings(config_path: str, pyslurm_path: str = "") -> Settings:
    """The settings in the config file ``config_path``; :class:`SettingsError` if it cannot be
    read or does not parse (reported where its ``log`` line says, if it has one)."""
    try:
        config = spool.read_config(config_path)
    except spool.SpoolError as exc:
        raise SettingsError(str(exc), log_target_in(config_path)) from None
    return Settings(
        config=config_path,
        spool=config.spool,
        hook_user=config.hook_user,
        log=config.log,
        query_timeout=config.query_timeout,
        slurm_conf=config.slurm_conf,
        pyslurm_path=pyslurm_path,
    )


def load_settings(environ: Mapping[str, str], install_file: str = INSTALL_FILE) -> Settings:
    """The settings this installed hook runs with (see the module's doc)."""
    try:
        installed = read_installed(install_file)
    except SettingsError as exc:
        # the log is the config's: the default config's, as the install's is unknown
        config = environ.get(CONFIG_VARIABLE) or spool.DEFAULT_CONFIG
        raise SettingsError(str(exc), log_target_in(config)) from None
    return read_settings(environ.get(CONFIG_VARIABLE) or installed.config, installed.pyslurm_path)


def log_target_in(config_path: str) -> str:
    """The ``log`` a config file names, read line by line (the whole may not parse); syslog
    where it names none or cannot be read."""
    target = SYSLOG
    try:
        with open(config_path, encoding="utf-8", errors="replace") as stream:
            text = stream.read(65536)
    except OSError:
        return target
    for raw in text.splitlines():
        key, sep, value = raw.split("#", 1)[0].partition("=")
        if sep and key.strip().lower() == "log":
            target = value.strip()
    return target
