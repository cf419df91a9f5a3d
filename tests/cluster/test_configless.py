"""Configless Slurm: a login node without slurm.conf in /etc and without SLURM_CONF, whose
clients read the config a configless slurmd keeps in /run/slurm/conf
(``contrib/slurm-local/start --configless``).  Jobs are registered under the cluster's real
name there, not the placeholder ``_``; where no slurm.conf says, slurmctld is asked."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from datalad_slurm.slurm.conf import conf_value
from tests.conftest import (
    USER,
    Cluster,
    _actor,
    assert_fsck_clean,
    owned_folder,
    python_as,
    run_as,
    spare_cluster,
    unprivileged_user,
)

REPO = Path(__file__).resolve().parents[2]


def _install_hook(root: Path, slurm_conf: str) -> Path:
    """epilog/install into ``root``; the slurm.conf snippet it wrote."""
    options = ["--prefix", root / "libexec", "--config", root / "datalad-slurm.conf"]
    options += ["--spool", root / "spool", "--log", root / "hook.log"]
    options += ["--slurm-conf", slurm_conf, "--force"]
    proc = subprocess.run(
        [REPO / "epilog/install", *map(str, options)], capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stderr
    return root / "libexec/slurm.conf.d/datalad-slurm.conf"


@pytest.mark.parametrize("account", ["root", USER])
def test_a_configless_login_node_registers_jobs_under_the_cluster_name(
    hook_root: Path, account: str
) -> None:
    # the snippet first (the cluster includes it), the config's slurm.conf once it exists
    snippet = _install_hook(hook_root, "/nonexistent/slurm.conf")
    with spare_cluster("--configless", "--extra-conf", str(snippet)) as cluster:
        _install_hook(hook_root, cluster.conf)
        name = conf_value("ClusterName", cluster.conf)
        assert name and name != "_"
        login = Path(cluster.conf).parents[1] / "login"
        # the login node: no slurm.conf in /etc, no SLURM_CONF, configless slurmd's copy
        seen = subprocess.run(
            [login, "sh", "-c", "ls /etc/slurm; echo ${SLURM_CONF-unset}; ls /run/slurm/conf"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.split()
        assert seen == ["unset", "slurm.conf"], seen
        user = _actor(account, Cluster("spare", cluster.conf, str(hook_root)))
        user.login = str(login)
        try:
            ds = user.dataset()
            job = user.schedule(ds, "out", "sbatch", "--wrap", "echo hi > out/x")
            listed = user.ok("-f", "json", "finish", "--list-open-jobs", cwd=ds)
            (row,) = [json.loads(x) for x in listed.splitlines() if '"slurm_job_id"' in x]
            assert (row["slurm_job_id"], row["cluster"]) == (job, name), row
            uid = user.user.pw_uid if user.user else os.getuid()
            folder = hook_root / "spool" / str(uid)
            assert (folder / "jobs" / f"{name}.{job}").exists(), list(folder.glob("jobs/*"))
            deadline = time.monotonic() + 120
            while not list((folder / "events").glob("*.event")):
                assert time.monotonic() < deadline, (hook_root / "hook.log").read_text()[-2000:]
                time.sleep(0.2)
            (event,) = [json.loads(p.read_text()) for p in (folder / "events").glob("*.event")]
            assert (event["job_id"], event["cluster"], event["state"]) == (job, name, "COMPLETED")
            done = [json.loads(x) for x in user.ok("-f", "json", "finish", cwd=ds).splitlines()]
            assert [r["status"] for r in done if r.get("slurm_job_id") == job] == ["ok"], done
            assert (ds / "out" / "x").read_text() == "hi\n"
            as_user = run_as(user.user)  # the dataset's owner, with a git identity
            record = subprocess.run(
                [*as_user, "git", "log", "-1", "--format=%B"],
                cwd=ds,
                capture_output=True,
                text=True,
            ).stdout
            assert f'"slurm_cluster": "{name}"' in record, record
            assert_fsck_clean(ds, user.user)
        finally:
            for made in user.made:
                subprocess.run(["chmod", "-R", "u+w", str(made)], check=False)
                shutil.rmtree(made, ignore_errors=True)


@pytest.mark.parametrize("account", ["root", USER])
def test_the_cluster_name_comes_from_slurmctld_where_slurm_conf_does_not_say(
    noacct_cluster: Cluster, account: str
) -> None:
    """A slurm.conf that takes ClusterName from an Include (not read by datalad-slurm):
    slurmctld says it (``scontrol show config``)."""
    user = unprivileged_user() if account == USER else None
    name = conf_value("ClusterName", noacct_cluster.conf)
    assert name
    with owned_folder(user) as folder:
        lines = Path(noacct_cluster.conf).read_text().splitlines()
        kept = [x for x in lines if not x.lower().startswith("clustername")]
        (folder / "cluster.conf").write_text(f"ClusterName={name}\n")
        conf = folder / "slurm.conf"
        conf.write_text("\n".join([f"Include {folder / 'cluster.conf'}", *kept, ""]))
        folder.chmod(0o755)
        code = "from datalad_slurm.slurm.conf import cluster_name; print(cluster_name())"
        proc = subprocess.run(
            [*python_as(user), "-c", code],
            env={**os.environ, "SLURM_CONF": str(conf)},
            capture_output=True,
            text=True,
        )
        assert proc.returncode == 0, proc.stderr
        assert proc.stdout.strip() == name, (proc.stdout, proc.stderr)
