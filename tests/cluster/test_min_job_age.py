"""Without accounting and without the hook, slurmctld alone knows how a job ended, and only for
MinJobAge seconds: ``finish`` warns when it sees that it runs too seldom for that (a job that
ended longer ago than MinJobAge, or one Slurm forgot), and stays quiet where it runs often
enough."""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import USER, Actor, Cluster, _actor, assert_fsck_clean

WARNING = "slurmctld forgets a finished job MinJobAge"


@pytest.fixture(params=["root", USER])
def account(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def _without_hook(cluster: Cluster, account: str) -> Iterator[Actor]:
    """The CLI as ``account`` on ``cluster``, with no spool (and so no hook) configured."""
    user = _actor(account, Cluster(cluster.name, cluster.conf))
    try:
        yield user
    finally:
        for folder in user.made:
            subprocess.run(["chmod", "-R", "u+w", str(folder)], check=False)
            shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture
def on_short(short_cluster: Cluster, account: str) -> Iterator[Actor]:
    yield from _without_hook(short_cluster, account)


@pytest.fixture
def on_noacct(noacct_cluster: Cluster, account: str) -> Iterator[Actor]:
    yield from _without_hook(noacct_cluster, account)


def _scheduled_and_ended(user: Actor) -> tuple[Path, int]:
    assert not Path("/etc/datalad-slurm.conf").exists(), "a spool configured for everybody"
    ds = user.dataset()
    job = user.schedule(ds, "out", "sbatch", "--wrap", "echo hi > out/x")
    user.cluster.wait_done([job])
    return ds, job


def test_finish_warns_when_slurm_forgets_jobs_before_it_runs(on_short: Actor) -> None:
    """MinJobAge 2: a finish 5 s after the job ended finds it ended too long ago, or forgotten."""
    ds, job = _scheduled_and_ended(on_short)
    time.sleep(5)
    proc = on_short.datalad("finish", cwd=ds)
    assert "Traceback" not in proc.stderr, proc.stderr
    assert WARNING in proc.stderr and "(2 s here)" in proc.stderr, proc.stderr
    assert str(job) in proc.stderr.split(WARNING)[0], proc.stderr
    assert_fsck_clean(ds, on_short.user)


def test_finish_in_time_does_not_warn(on_noacct: Actor) -> None:
    """MinJobAge 300: a finish right after the job ended commits it and says nothing more."""
    ds, job = _scheduled_and_ended(on_noacct)
    proc = on_noacct.datalad("finish", cwd=ds)
    assert proc.returncode == 0 and "Traceback" not in proc.stderr, proc.stderr
    assert "MinJobAge" not in proc.stderr, proc.stderr
    assert (ds / "out" / "x").read_text() == "hi\n"
    assert (ds / f"slurm-{job}.out").exists()  # committed with the job
    assert_fsck_clean(ds, on_noacct.user)
