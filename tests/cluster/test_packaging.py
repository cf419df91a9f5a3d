"""The package as an admin gets it: ``python -m build`` of the tree gives an sdist and a wheel
that carry the hook, its installer and the slurm.conf snippet; the wheel, installed alone in a
new virtual environment, installs the hook with ``datalad-slurm-hook install`` and passes its
``--check`` against the local Slurm.  The installer refuses a Python the hook cannot run on."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import Cluster

REPO = Path(__file__).resolve().parents[2]
TIER = os.environ.get("DATALAD_SLURM_TEST_TIER", "host")
#: the worker's modules and its settings (epilog/install copies them into PREFIX)
HOOK_PACKAGE = (
    *sorted(
        p.relative_to(REPO).as_posix() for p in (REPO / "epilog/datalad_slurm_hook").glob("*.py")
    ),
    "epilog/datalad_slurm_hook/install.conf",
)
#: what the sdist must carry besides the package (MANIFEST.in)
SDIST_FILES = (
    "LICENSE",
    "setup.py",
    "epilog/install",
    "epilog/datalad-slurm-epilog.sh",
    "epilog/datalad_slurm_epilog.py",
    *HOOK_PACKAGE,
    "contrib/slurm.conf.d/datalad-slurm.conf",
)
#: what the wheel must carry for `datalad-slurm-hook install` (setup.py)
WHEEL_FILES = (
    "datalad_slurm/hookcli.py",
    "datalad_slurm/spool.py",
    "datalad_slurm/_hook/epilog/install",
    "datalad_slurm/_hook/epilog/datalad-slurm-epilog.sh",
    "datalad_slurm/_hook/epilog/datalad_slurm_epilog.py",
    *(f"datalad_slurm/_hook/{name}" for name in HOOK_PACKAGE),
    "datalad_slurm/_hook/contrib/slurm.conf.d/datalad-slurm.conf",
)
#: never part of a build of the tree
NOT_SOURCE = (".git", ".venv", "build", "dist", "__pycache__", "*.egg-info", ".*_cache")


def _run(*command: str | Path, **kwargs: object) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(
        [str(c) for c in command], capture_output=True, text=True, timeout=600, **kwargs
    )
    assert proc.returncode == 0, (command, proc.stdout[-3000:], proc.stderr[-3000:])
    return proc


@pytest.fixture(scope="module")
def built() -> Iterator[Path]:
    """A folder everybody may read (the hook's account runs from it) with ``dist/`` (sdist and
    wheel built from a copy of the tree, as from a fresh clone) and ``venv/`` (a new virtual
    environment of the system's Python, holding the wheel and nothing else)."""
    root = Path(tempfile.mkdtemp(prefix="dls-packaging-", dir="/tmp"))
    root.chmod(0o755)
    try:
        tree = root / "tree"
        shutil.copytree(REPO, tree, ignore=shutil.ignore_patterns(*NOT_SOURCE))
        _run(sys.executable, "-m", "build", "--outdir", root / "dist", tree)
        _run("/usr/bin/python3", "-m", "venv", root / "venv")
        (wheel,) = (root / "dist").glob("datalad_slurm-*.whl")
        # alone: not even DataLad, which the hook and its installer do not need
        _run(root / "venv/bin/pip", "install", "--quiet", "--no-deps", wheel)
        shutil.rmtree(tree)
        yield root
    finally:
        shutil.rmtree(root, ignore_errors=True)


def _install(built: Path, root: Path, slurm_conf: str, *options: str) -> str:
    """``datalad-slurm-hook install`` from the new environment into ``root``; its stderr."""
    proc = _run(
        built / "venv/bin/datalad-slurm-hook",
        "install",
        "--prefix",
        root / "libexec",
        "--config",
        root / "datalad-slurm.conf",
        "--spool",
        root / "spool",
        "--log",
        root / "hook.log",
        "--slurm-conf",
        slurm_conf,
        *options,
        # the clone's installer is not on any path the installed one could fall back on
        cwd="/",
        env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin"},
    )
    return proc.stderr


def test_sdist_and_wheel_carry_the_hook(built: Path) -> None:
    (sdist,) = (built / "dist").glob("datalad_slurm-*.tar.gz")
    with tarfile.open(sdist) as tar:
        top = tar.getnames()[0].split("/")[0]
        names = {name.removeprefix(f"{top}/") for name in tar.getnames()}
        mode = tar.getmember(f"{top}/epilog/install").mode
    assert set(SDIST_FILES) <= names, set(SDIST_FILES) - names
    assert mode & 0o111, "epilog/install lost its executable bit in the sdist"
    (wheel,) = (built / "dist").glob("datalad_slurm-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        entry_points = next(n for n in names if n.endswith(".dist-info/entry_points.txt"))
        assert (
            "datalad-slurm-hook = datalad_slurm.hookcli:main" in archive.read(entry_points).decode()
        )
        licenses = [n for n in names if n.endswith("LICENSE")]
        assert licenses and b"MIT License" in archive.read(licenses[0])
    assert set(WHEEL_FILES) <= names, set(WHEEL_FILES) - names
    # the installed copies are the tree's, byte for byte
    site = next((built / "venv/lib").glob("python3*/site-packages"))
    for name in WHEEL_FILES[2:]:
        tree_name = name.removeprefix("datalad_slurm/_hook/")
        assert (site / name).read_bytes() == (REPO / tree_name).read_bytes(), name


def test_installed_wheel_installs_the_hook_and_passes_its_check(
    built: Path, hook_root: Path, noacct_cluster: Cluster
) -> None:
    hook_cmd = built / "venv/bin/datalad-slurm-hook"
    files = Path(_run(hook_cmd, "files").stdout.strip())
    assert files.parts[-2:] == ("datalad_slurm", "_hook") and (files / "epilog/install").is_file()
    helped = _run(hook_cmd, "install", "--help").stdout
    assert "--prefix DIR" in helped and "Usage: datalad-slurm-hook install" in helped
    assert "set -euo" not in helped and not helped.startswith("#!"), helped
    python = os.environ.get("DATALAD_SLURM_TEST_HOOK_PYTHON", "/usr/bin/python3")
    said = _install(built, hook_root, noacct_cluster.conf, "--python", python)
    prefix = hook_root / "libexec"
    # the spool module is the package's own; the hook and its entry point came from the wheel
    site = next((built / "venv/lib").glob("python3*/site-packages"))
    assert (prefix / "datalad_slurm_spool.py").read_bytes() == (
        site / "datalad_slurm/spool.py"
    ).read_bytes()
    assert (prefix / "datalad-slurm-epilog").stat().st_mode & 0o111
    # the worker's modules are the wheel's; its settings name this install's config
    modules = site / "datalad_slurm/_hook/epilog/datalad_slurm_hook"
    for module in modules.glob("*.py"):
        assert (prefix / "datalad_slurm_hook" / module.name).read_bytes() == module.read_bytes()
    assert (
        f"config = {hook_root / 'datalad-slurm.conf'}\n"
        in (prefix / "datalad_slurm_hook/install.conf").read_text()
    )
    # the slurm.conf snippet names this prefix, not the default one
    snippet = prefix / "slurm.conf.d" / "datalad-slurm.conf"
    lines = [x for x in snippet.read_text().splitlines() if x and not x.startswith("#")]
    assert lines == [f"EpilogSlurmctld={prefix}/datalad-slurm-epilog"]
    assert str(snippet) in said, said
    # the check, as root and as the hook's own account (SlurmUser), as Slurm would run it
    for account in ("root", "slurm"):
        proc = subprocess.run(
            ["runuser", "-u", account, "--", hook_cmd, "check", "--prefix", prefix],
            capture_output=True,
            text=True,
            timeout=120,
            cwd="/",
        )
        assert proc.returncode == 0, (account, proc.stdout, proc.stderr)
        assert "slurmctld answers" in proc.stdout, (account, proc.stdout)
        assert f"spool {hook_root / 'spool'}" in proc.stdout
        assert f"modules: {prefix / 'datalad_slurm_hook'}/ (entry, " in proc.stdout
        assert "WARNING" not in proc.stderr, proc.stderr  # the installed files are the package's
    # a module changed since (or an older install): check says which, and what to do
    with open(prefix / "datalad_slurm_hook/facts.py", "a") as stream:
        stream.write("# changed\n")
    warned = _run(hook_cmd, "check", "--prefix", prefix).stderr
    assert "WARNING: the hook in" in warned and "(datalad_slurm_hook/facts.py differ)" in warned
    assert f"run 'datalad-slurm-hook install --prefix {prefix}' again" in warned
    # and it says so when there is no hook where it looks
    missing = subprocess.run(
        [hook_cmd, "check", "--prefix", hook_root / "nothing"], capture_output=True, text=True
    )
    assert missing.returncode == 1 and "no installed hook" in missing.stderr, missing


def test_installer_refuses_what_is_no_python_for_the_hook(built: Path, hook_root: Path) -> None:
    """Refused with a message that names --python: a Python older than 3.9 (Debian installs
    none, so RHEL 8's /usr/bin/python3.6 is a two-line stand-in that answers the installer's
    question as it would), something that is no Python, and PyPy (on the host tier, where
    contrib/bootstrap installs Debian's pypy3), which lacks the os.O_PATH the hook needs."""
    old = hook_root / "python3.6"
    old.write_text('#!/bin/sh\necho "CPython 3 6"\n')
    old.chmod(0o755)
    refused: list[tuple[str | Path, str]] = [
        (old, "is Python 3.6; the hook needs Python 3.9 or newer"),
        ("/bin/true", "is not a Python interpreter"),
    ]
    if TIER == "host":
        assert Path("/usr/bin/pypy3").exists(), "contrib/bootstrap installs Debian's pypy3"
        refused.append(("/usr/bin/pypy3", "is PyPy; the hook needs CPython 3.9 or newer"))
    for python, says in refused:
        for command in (
            [built / "venv/bin/datalad-slurm-hook", "install"],
            [REPO / "epilog/install"],
        ):
            # every path in the test's folder: an installer that did not refuse writes there
            where = ["--prefix", hook_root / "libexec", "--config", hook_root / "c.conf"]
            where += ["--spool", hook_root / "spool"]
            proc = subprocess.run(
                [*command, *where, "--python", python],
                capture_output=True,
                text=True,
            )
            assert proc.returncode == 1 and says in proc.stderr, (command, proc.stderr)
            assert "--python" in proc.stderr and "Traceback" not in proc.stderr
            assert not (hook_root / "libexec").exists(), "it installed before refusing"
            assert not (hook_root / "c.conf").exists() and not (hook_root / "spool").exists()
