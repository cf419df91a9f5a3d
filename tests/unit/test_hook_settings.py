"""The hook's typed settings: ``install.conf`` beside its modules and the shared config. A
setting that is missing or wrong is one line in the hook's log and exit 0, never a traceback;
``--check`` says it and exits 1. Run as installed: the worker and its modules copied into a
prefix the way epilog/install lays them out, started with ``-IS``."""

from __future__ import annotations

import dataclasses
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from datalad_slurm.spool import UserSpool
from tests.unit.hook_modules import EPILOG, entry, settings

REPO = EPILOG.parent


def _install_conf(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


@pytest.mark.parametrize(
    ("text", "says"),
    [
        (None, "cannot read the hook's settings"),
        ("pyslurm_path =\n", "names no config file ('config = PATH')"),
        ("config = etc/datalad-slurm.conf\n", "config must be an absolute path"),
        ("config = /etc/x.conf\npyslurm_path = lib\n", "pyslurm_path must be an absolute path"),
        ("config = /etc/x.conf\nspool = /var/spool\n", ":2: expected 'config = PATH'"),
        ("config /etc/x.conf\n", ":1: expected 'config = PATH'"),
    ],
)
def test_bad_install_conf_is_one_line_saying_what_to_do(
    tmp_path: Path, text: str | None, says: str
) -> None:
    path = tmp_path / "install.conf"
    if text is not None:
        path.write_text(text)
    with pytest.raises(settings.SettingsError) as raised:
        settings.read_installed(str(path))
    message = str(raised.value)
    assert says in message and str(path) in message
    assert "\n" not in message and message.endswith(
        "run epilog/install (or datalad-slurm-hook install) again"
    )


def test_the_clones_install_conf_names_the_defaults() -> None:
    assert settings.read_installed() == settings.Installed("/etc/datalad-slurm.conf", "")
    assert Path(settings.INSTALL_FILE) == EPILOG / "datalad_slurm_hook" / "install.conf"


def test_settings_come_from_the_config_install_conf_names(tmp_path: Path) -> None:
    config = tmp_path / "shared.conf"
    config.write_text(
        "spool = /srv/spool\nhook_user = root\nlog = /var/log/hook.log\nquery_timeout = 2.5\n"
        "slurm_conf = /etc/slurm/slurm.conf\nunknown_to_the_hook = 1\n"
    )
    install = _install_conf(
        tmp_path / "install.conf", f"# comment\nconfig = {config}\npyslurm_path = /opt/lib\n"
    )
    loaded = settings.load_settings({}, str(install))
    assert loaded == settings.Settings(
        config=str(config),
        spool="/srv/spool",
        hook_user="root",
        log="/var/log/hook.log",
        query_timeout=2.5,
        slurm_conf="/etc/slurm/slurm.conf",
        pyslurm_path="/opt/lib",
    )
    with pytest.raises(dataclasses.FrozenInstanceError):
        loaded.spool = "/elsewhere"  # type: ignore[misc]
    # DATALAD_SLURM_CONFIG names another config, as for finish; pyslurm stays the install's
    other = tmp_path / "other.conf"
    other.write_text("spool = /srv/other\n")
    env = {"DATALAD_SLURM_CONFIG": str(other)}
    overridden = settings.load_settings(env, str(install))
    assert (overridden.config, overridden.spool) == (str(other), "/srv/other")
    assert (overridden.log, overridden.pyslurm_path) == ("syslog", "/opt/lib")


@pytest.mark.parametrize(
    ("config_text", "says"),
    [
        ("query_timeout = soon\n", ":3: query_timeout must be a number"),
        ("spool = relative/spool\n", "spool must be an absolute path, got 'relative/spool'"),
        ("just words\n", ":3: expected 'key = value'"),
    ],
)
def test_a_config_that_does_not_parse_is_logged_where_its_log_line_says(
    tmp_path: Path, spool: Path, config_text: str, says: str
) -> None:
    UserSpool(str(spool)).register("c", 11)
    log = tmp_path / "hook.log"
    config = tmp_path / "hook.conf"
    config.write_text(f"spool = {spool}\nlog = {log}\n{config_text}")
    env = {"DATALAD_SLURM_CONFIG": str(config), "SLURM_JOB_ID": "11"}
    env["SLURM_JOB_UID"] = str(os.getuid())
    assert entry.main(env) == 0
    [line] = log.read_text().splitlines()
    assert f"job 11: {config}" in line and says in line and line.endswith("; no event written")
    assert not list((spool / str(os.getuid()) / "events").iterdir())


def _installed(tmp_path: Path) -> Path:
    """The worker, its modules and its spool module as epilog/install lays them out."""
    prefix = tmp_path / "libexec"
    shutil.copytree(
        EPILOG / "datalad_slurm_hook",
        prefix / "datalad_slurm_hook",
        ignore=shutil.ignore_patterns("__pycache__"),
    )
    shutil.copy(EPILOG / "datalad_slurm_epilog.py", prefix)
    shutil.copy(REPO / "datalad_slurm" / "spool.py", prefix / "datalad_slurm_spool.py")
    return prefix


def _run(prefix: Path, env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-IS", str(prefix / "datalad_slurm_epilog.py"), *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_installed_worker_with_bad_settings_logs_one_line_and_exits_0(
    tmp_path: Path, spool: Path
) -> None:
    prefix = _installed(tmp_path)
    UserSpool(str(spool)).register("c", 11)
    log = tmp_path / "hook.log"
    config = tmp_path / "hook.conf"
    config.write_text(f"spool = {spool}\nhook_user = root\nlog = {log}\n")
    job = {"SLURM_JOB_ID": "11", "SLURM_JOB_UID": str(os.getuid()), "SLURM_CLUSTER_NAME": "c"}
    install_conf = prefix / "datalad_slurm_hook" / "install.conf"
    install_conf.write_text("config = relative.conf\n")
    env = {**job, "DATALAD_SLURM_CONFIG": str(config)}  # where the log is

    direct = _run(prefix, env, "--direct", "c")
    (spool / ".hook").mkdir(mode=0o700)
    served = _run(prefix, env, "--serve", "c")
    checked = _run(prefix, env, "--check")

    assert (direct.returncode, served.returncode) == (0, 0), (direct, served)
    first, second = log.read_text().splitlines()
    assert f"job 11: {install_conf}: config must be an absolute path" in first
    assert first.endswith("again; no event written")
    assert second.endswith("; the jobs queued for cluster 'c' wait for a fix")
    assert "Traceback" not in direct.stderr + served.stderr + checked.stdout + checked.stderr
    assert checked.returncode == 1 and "settings: " in checked.stdout, checked
    assert not list((spool / str(os.getuid()) / "events").iterdir())
    # fixed: the same job gets its event
    install_conf.write_text(f"config = {config}\n")
    assert _run(prefix, job, "--direct", "c").returncode == 0
    assert len(list((spool / str(os.getuid()) / "events").glob("*.event"))) == 1


def test_installed_worker_without_a_module_says_so(tmp_path: Path, spool: Path) -> None:
    prefix = _installed(tmp_path)
    (prefix / "datalad_slurm_hook" / "queue.py").unlink()
    config = tmp_path / "hook.conf"
    config.write_text(f"spool = {spool}\nlog = {tmp_path / 'hook.log'}\n")
    env = {"DATALAD_SLURM_CONFIG": str(config), "SLURM_JOB_ID": "11", "SLURM_JOB_UID": "0"}
    checked = _run(prefix, env, "--check")
    assert checked.returncode == 1 and "Traceback" not in checked.stdout + checked.stderr
    [line] = checked.stdout.splitlines()
    assert f"the hook's modules in {prefix} did not load" in line
    assert "datalad_slurm_hook.queue" in line and line.endswith("install) again")
    hooked = _run(prefix, env, "--direct", "_")
    assert hooked.returncode == 0 and not hooked.stderr


def test_check_names_every_module_and_where_it_came_from(tmp_path: Path, spool: Path) -> None:
    from datalad_slurm_hook import MODULES

    package = EPILOG / "datalad_slurm_hook"
    assert sorted(MODULES) == sorted(p.stem for p in package.glob("*.py") if p.stem != "__init__")
    prefix = _installed(tmp_path)
    config = tmp_path / "hook.conf"
    config.write_text(f"spool = {spool}\nlog = {tmp_path / 'hook.log'}\n")
    (prefix / "datalad_slurm_hook" / "install.conf").write_text(f"config = {config}\n")
    checked = _run(prefix, {}, "--check")
    lines = checked.stdout.splitlines()
    assert lines[0] == (
        f"modules: {prefix / 'datalad_slurm_hook'}/ ({', '.join(MODULES)}); "
        f"spool module {prefix / 'datalad_slurm_spool.py'}"
    )
    assert lines[1] == (
        f"settings {prefix / 'datalad_slurm_hook' / 'install.conf'}: config {config}, no pyslurm"
    )
    assert f"config {config}: spool {spool}, hook user slurm" in lines


def test_package_check_names_the_installed_files_that_are_not_its_own(tmp_path: Path) -> None:
    from datalad_slurm.hookcli import installed_differences

    prefix = _installed(tmp_path)
    worker = prefix / "datalad_slurm_epilog.py"
    # the installer's interpreter line and install.conf are the install's own
    worker.write_text("#!/opt/python3.11 -IS\n" + worker.read_text().split("\n", 1)[1])
    (prefix / "datalad_slurm_hook" / "install.conf").write_text("config = /etc/site.conf\n")
    assert installed_differences(prefix) == []
    with open(prefix / "datalad_slurm_hook" / "worker.py", "a") as stream:
        stream.write("# changed\n")
    (prefix / "datalad_slurm_spool.py").unlink()
    assert installed_differences(prefix) == [
        "datalad_slurm_hook/worker.py",
        "datalad_slurm_spool.py",
    ]
    # a single-file hook, from before the worker's modules
    shutil.rmtree(prefix / "datalad_slurm_hook")
    worker.write_text("#!/usr/bin/python3 -IS\nCONFIG_PATH = '/etc/datalad-slurm.conf'\n")
    shutil.copy(REPO / "datalad_slurm" / "spool.py", prefix / "datalad_slurm_spool.py")
    assert installed_differences(prefix) == ["datalad_slurm_epilog.py", "datalad_slurm_hook/"]


def test_installer_refuses_a_config_path_install_conf_cannot_hold(tmp_path: Path) -> None:
    """install.conf's lines end at a '#': such a config path would be cut short."""
    where = ["--prefix", tmp_path / "libexec", "--spool", tmp_path / "spool"]
    proc = subprocess.run(
        [REPO / "epilog" / "install", *where, "--config", f"{tmp_path}/site#1.conf"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 1 and "use a path without '#'" in proc.stderr, proc
    assert not (tmp_path / "libexec").exists()
