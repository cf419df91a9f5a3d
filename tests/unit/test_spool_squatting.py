"""Spool squatting (issue 16): one user makes ``<spool>/<uid>`` of another first.

Two real unprivileged accounts, ``dlsa`` (the squatter) and ``dlsb`` (the
victim), each running the installed spool module under the system Python, as
the hook does; root plays the hook's account.  No Slurm.
"""

from __future__ import annotations

import json
import os
import pwd
import re
import shutil
import stat
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

import datalad_slurm.spool as spool_module
from datalad_slurm.spool import Event, is_registered, write_event

REPO = Path(__file__).resolve().parents[2]
SQUATTER, VICTIM = "dlsa", "dlsb"

pytestmark = pytest.mark.skipif(
    os.getuid() != 0 or shutil.which("runuser") is None,
    reason="needs root and runuser to act as two users",
)


def _account(name: str) -> pwd.struct_passwd:
    try:
        return pwd.getpwnam(name)
    except KeyError:
        subprocess.run(["useradd", "-m", name], check=True, capture_output=True)
        return pwd.getpwnam(name)


@pytest.fixture
def site() -> Iterator[Path]:
    """A world-readable folder with the spool (root's, 1733) and the hook's spool module."""
    base = Path(tempfile.mkdtemp(prefix="dls-squat-", dir="/tmp"))
    try:
        base.chmod(0o755)
        shutil.copy(spool_module.__file__, base / "datalad_slurm_spool.py")
        (base / "datalad_slurm_spool.py").chmod(0o644)
        (base / "spool").mkdir()
        (base / "spool").chmod(0o1733)
        yield base
    finally:
        shutil.rmtree(base)


def as_user(user: str, site: Path, code: str) -> subprocess.CompletedProcess[str]:
    """Run ``code`` (with ``spool``, ``os``, ``json`` at hand) as ``user`` under the system
    Python with the installed spool module, as the hook runs."""
    account = _account(user)
    prelude = (
        "import json, os, sys\n"
        f"sys.path.insert(0, {str(site)!r})\n"
        "import datalad_slurm_spool as spool\n"
        f"SPOOL = {str(site / 'spool')!r}\n"
    )
    python = "/usr/bin/python3" if os.path.exists("/usr/bin/python3") else sys.executable
    return subprocess.run(
        [
            "runuser",
            "-u",
            user,
            "--",
            "env",
            f"HOME={account.pw_dir}",
            "XDG_CONFIG_HOME=",
            python,
            "-IS",
            "-c",
            prelude + code,
        ],
        capture_output=True,
        text=True,
        check=False,
        cwd="/",
        timeout=60,
    )


def _ok(proc: subprocess.CompletedProcess[str]) -> str:
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.strip()


def victim_reads(site: Path) -> list[list[object]]:
    """What the victim's finish reads: ``[job, state, "ok"]`` per event, ``[name, "rejected"]``."""
    code = (
        "events, rejected = spool.UserSpool(SPOOL).read_events({0})\n"
        "print(json.dumps([[e.job_id, e.state, 'ok'] for e in events]"
        " + [[r.name, 'rejected'] for r in rejected]))"
    )
    return json.loads(_ok(as_user(VICTIM, site, code)))  # type: ignore[no-any-return]


SQUATS = {
    # a folder the victim can enter, one it cannot, a symlink to the squatter's own folder
    "folder": "os.mkdir(p, 0o755); os.mkdir(p + '/jobs'); os.mkdir(p + '/events', 0o777)",
    "private folder": "os.mkdir(p, 0o700)",
    "symlink": "os.symlink('/tmp', p)",
}


@pytest.mark.parametrize("squat", sorted(SQUATS))
def test_a_squatted_user_folder_is_routed_around(site: Path, squat: str) -> None:
    victim = _account(VICTIM).pw_uid
    spool = site / "spool"
    memo = Path(_account(VICTIM).pw_dir) / ".config" / "datalad-slurm"
    shutil.rmtree(memo, ignore_errors=True)
    # the squatter takes the victim's name first
    _ok(as_user(SQUATTER, site, f"p = SPOOL + '/{victim}'\n" + SQUATS[squat]))
    # ...and may not list the spool, so cannot learn any other name either
    listing = as_user(SQUATTER, site, "print(os.listdir(SPOOL))")
    assert listing.returncode != 0 and "PermissionError" in listing.stderr

    # the victim schedules: registered in a folder of their own
    folder = _ok(
        as_user(
            VICTIM,
            site,
            "user = spool.UserSpool(SPOOL)\nuser.register('c', 42)\nprint(user.folder)",
        )
    )
    assert re.fullmatch(rf"{victim}\.[0-9a-f]{{32}}", folder), folder
    info = os.lstat(spool / folder)
    assert info.st_uid == victim and stat.S_IMODE(info.st_mode) == 0o755
    assert (spool / folder / "jobs" / "c.42").exists()
    # the next schedule finds the same folder again
    again = _ok(
        as_user(
            VICTIM,
            site,
            "user = spool.UserSpool(SPOOL)\nuser.register('c', 43)\nprint(user.folder)",
        )
    )
    assert again == folder

    # the hook (root here) finds the registration and writes the event there
    assert is_registered(str(spool), victim, "c", 42)
    assert not is_registered(str(spool), victim, "c", 44)
    event = Event(job_id=42, state="COMPLETED", cluster="c", uid=victim, exit_code=0)
    name = write_event(str(spool), victim, event, {0})
    assert (spool / folder / "events" / name).is_file()
    if squat == "folder":
        assert os.listdir(spool / str(victim) / "events") == []

    # the victim's finish reads it; nothing is rejected
    assert victim_reads(site) == [[42, "COMPLETED", "ok"]]
    # the squatter can neither read it nor forge one the victim would take
    peek = as_user(SQUATTER, site, f"print(os.listdir(SPOOL + '/{folder}/events'))")
    assert peek.returncode != 0 and "PermissionError" in peek.stderr
    _ok(
        as_user(
            SQUATTER,
            site,
            f"p = SPOOL + '/{folder}/events/forged.event'\n"
            "open(p, 'w').write(json.dumps({'version': 1, 'job_id': 43, 'state': 'COMPLETED', "
            f"'uid': {victim}}}))",
        )
    )
    assert victim_reads(site) == [[42, "COMPLETED", "ok"], ["forged.event", "rejected"]]

    # the squatter gives up the name: the victim stays in their folder, where the hook looks
    _ok(
        as_user(
            SQUATTER,
            site,
            f"import shutil\np = SPOOL + '/{victim}'\n"
            "os.unlink(p) if os.path.islink(p) else shutil.rmtree(p)",
        )
    )
    code = "user = spool.UserSpool(SPOOL)\nuser.register('c', 45)\nprint(user.folder)"
    assert _ok(as_user(VICTIM, site, code)) == folder
    assert is_registered(str(spool), victim, "c", 45)
    event = Event(job_id=45, state="COMPLETED", cluster="c", uid=victim, exit_code=0)
    assert (spool / folder / "events" / write_event(str(spool), victim, event, {0})).is_file()


def test_the_entry_point_finds_a_routed_folder(site: Path, tmp_path: Path) -> None:
    """The shell entry point (builtins only) starts a worker for a job registered in a
    ``<uid>.<hex>`` folder, and for none that nobody registered."""
    victim = _account(VICTIM).pw_uid
    spool = site / "spool"
    shutil.rmtree(Path(_account(VICTIM).pw_dir) / ".config" / "datalad-slurm", ignore_errors=True)
    _ok(as_user(SQUATTER, site, f"os.mkdir(SPOOL + '/{victim}', 0o700)"))
    _ok(as_user(VICTIM, site, "spool.UserSpool(SPOOL).register('c', 42)"))
    started = tmp_path / "started"
    worker = tmp_path / "worker"
    worker.write_text(f'#!/bin/sh\necho "$@" >> {started}\n')
    worker.chmod(0o755)
    config = tmp_path / "conf"
    config.write_text(f"spool = {spool}\n")
    script = (REPO / "epilog" / "datalad-slurm-epilog.sh").read_text()
    script = (
        script.replace("@CONFIG@", str(config))
        .replace("@PYTHON@", str(worker))
        .replace("@PREFIX@", str(tmp_path / "none"))
        .replace("@SPOOL@", str(spool))
    )
    entry = tmp_path / "entry.sh"
    entry.write_text(script)
    for job, expected in ((44, False), (42, True)):
        env = {
            "SLURM_JOB_UID": str(victim),
            "SLURM_JOB_ID": str(job),
            "SLURM_CLUSTER_NAME": "c",
            "PATH": "/usr/bin:/bin",
        }
        subprocess.run(["sh", str(entry)], env=env, check=True, timeout=30)
        for _ in range(100):
            if started.exists() or not expected:
                break
            time.sleep(0.05)
        assert started.exists() is expected, job
