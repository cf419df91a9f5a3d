"""Fixtures shared by the test tiers.

Cluster tests need the real local Slurm that ``tests/run`` starts; it passes
the clusters' configs in ``DATALAD_SLURM_TEST_ACCT_CONF`` (with slurmdbd) and
``DATALAD_SLURM_TEST_NOACCT_CONF`` (without).  A missing cluster FAILS the
test: it never turns into a skip.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import re
import shutil
import subprocess
import sys
import sysconfig
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parent.parent
#: the unprivileged account that tests needing file modes (root ignores them) run as
USER = "dlstest"

#: the tiers of tests/run that run the tests marked ``slurm_agnostic`` (their subject is git,
#: git-annex, the committer, packaging or the documents; Slurm only supplies their jobs): the
#: host (Debian 12: the oldest git, git-annex and Python) and forky-jsoncli (Debian forky: the
#: newest); trixie and forky-pyslurm deselect them.  Outside tests/run (no tier named) all run.
AGNOSTIC_TIERS = ("host", "forky-jsoncli")


def _tier() -> str | None:
    return os.environ.get("DATALAD_SLURM_TEST_TIER") or None


def pytest_report_header(config: pytest.Config) -> str | None:
    tier = _tier()
    if tier is None or tier in AGNOSTIC_TIERS:
        return None
    return (
        f"tier {tier}: the tests marked slurm_agnostic are deselected "
        f"(they run in the tiers {', '.join(AGNOSTIC_TIERS)})"
    )


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Deselect (never skip) the ``slurm_agnostic`` tests outside :data:`AGNOSTIC_TIERS`."""
    tier = _tier()
    if tier is None or tier in AGNOSTIC_TIERS:
        return
    dropped = [item for item in items if item.get_closest_marker("slurm_agnostic")]
    if dropped:
        config.hook.pytest_deselected(items=dropped)
        items[:] = [item for item in items if not item.get_closest_marker("slurm_agnostic")]


CLUSTER_ENV = {
    "acct": "DATALAD_SLURM_TEST_ACCT_CONF",
    "noacct": "DATALAD_SLURM_TEST_NOACCT_CONF",
    "short": "DATALAD_SLURM_TEST_SHORT_CONF",
}


def hook_asks_through() -> str:
    """How the tier's installed hook asks slurmctld: pyslurm in the pyslurm tier, else scontrol.

    tests/cluster-suite installs it with the tier's Python (DATALAD_SLURM_TEST_HOOK_PYTHON);
    epilog/install finds pyslurm there or not.
    """
    return (
        "pyslurm"
        if os.environ.get("DATALAD_SLURM_TEST_EXPECT_BACKEND") == "pyslurm"
        else "scontrol"
    )


@dataclass
class Cluster:
    name: str
    conf: str
    #: where tests/run installed the hook for this cluster (config, spool, log)
    hook: str = ""

    @property
    def accounting(self) -> bool:
        return self.name in ("acct", "spare-acct")

    @property
    def hook_config(self) -> str:
        return os.path.join(self.hook, "datalad-slurm.conf")

    @property
    def spool(self) -> str:
        return os.path.join(self.hook, "spool")

    @property
    def hook_log(self) -> str:
        return os.path.join(self.hook, "hook.log")

    def events_dir(self, uid: int | None = None) -> Path:
        return Path(self.spool, str(os.getuid() if uid is None else uid), "events")

    def events(self, uid: int | None = None) -> list[dict[str, Any]]:
        """Every event file in a user's events folder, parsed."""
        import json

        folder = self.events_dir(uid)
        if not folder.exists():
            return []
        return [json.loads(p.read_text()) for p in sorted(folder.glob("*.event"))]

    def gone(self, job_id: int, timeout: float = 90) -> None:
        """Wait until slurmctld no longer knows the job (MinJobAge passed)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            # every job and task slurmctld holds, finished ones too: job id, array job id
            held = self.run("squeue", "-h", "-t", "all", "-o", "%A %F").stdout.split()
            if str(job_id) not in held:
                return
            time.sleep(1)
        raise AssertionError(f"job {job_id} is still in slurmctld after {timeout} s")

    def run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        env = {**os.environ, "SLURM_CONF": self.conf}
        return subprocess.run(list(args), env=env, capture_output=True, text=True, check=check)

    def submit(self, *args: str, cwd: str | Path) -> int:
        env = {**os.environ, "SLURM_CONF": self.conf}
        out = subprocess.run(
            ["sbatch", "--parsable", *args],
            env=env,
            cwd=cwd,
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        return int(out.strip().split(";")[0])

    def state(self, job_id: int | str) -> str:
        """The state squeue shows for a job or array task (``N`` or ``N_T``), '' if gone."""
        out = self.run(
            "squeue", "-h", "-t", "all", "-j", str(job_id), "-o", "%i %T", check=False
        ).stdout
        for line in out.splitlines():
            label, _, state = line.partition(" ")
            if label == str(job_id):
                return state.strip()
        return ""

    def wait_state(self, job_id: int | str, wanted: Sequence[str], timeout: float = 60) -> str:
        deadline = time.monotonic() + timeout
        state = ""
        while time.monotonic() < deadline:
            state = self.state(job_id)
            if state in wanted:
                return state
            time.sleep(0.2)
        raise AssertionError(
            f"job {job_id} did not reach {wanted} in {timeout} s (last: {state!r})"
        )

    def wait_done(self, job_ids: Sequence[int], timeout: float = 120) -> None:
        """Wait until squeue shows no job (or array task) of these ids as active."""
        active = {
            "PENDING",
            "RUNNING",
            "CONFIGURING",
            "COMPLETING",
            "REQUEUED",
            "SUSPENDED",
            "RESIZING",
            "SIGNALING",
            "STAGE_OUT",
            "EXPEDITING",
        }
        deadline = time.monotonic() + timeout
        ids = ",".join(str(j) for j in job_ids)
        while time.monotonic() < deadline:
            out = self.run("squeue", "-h", "-t", "all", "-j", ids, "-o", "%T", check=False).stdout
            if not (set(out.split()) & active):
                return
            time.sleep(0.2)
        raise AssertionError(f"jobs {ids} still active after {timeout} s")

    def scancel(self, *job_ids: int | str) -> None:
        self.run("scancel", *[str(j) for j in job_ids])

    def wait_accounted(self, job_ids: Sequence[int], timeout: float = 120) -> None:
        """Wait until slurmdbd holds a final state for every one of these jobs."""
        deadline = time.monotonic() + timeout
        ids = ",".join(str(j) for j in job_ids)
        states: dict[str, str] = {}
        while time.monotonic() < deadline:
            out = self.run("sacct", "-n", "-X", "-P", "-o", "JobID,State", "-j", ids).stdout
            states = dict(line.split("|", 1) for line in out.splitlines() if "|" in line)
            if all(states.get(str(j)) == "COMPLETED" for j in job_ids):
                return
            time.sleep(0.5)
        raise AssertionError(f"accounting lacks {sorted(set(map(str, job_ids)) - set(states))}")

    def forget_finished(self, job_ids: Sequence[int], timeout: float = 120) -> None:
        """Make slurmctld drop these finished jobs now, as MinJobAge does in time: slurmctld is
        restarted with MinJobAge=2, which purges them, then restarted with its old value.

        Only for a cluster of the test's own (spare_cluster): it edits the slurm.conf.  A
        restart, not ``scontrol reconfigure``: from 23.11 a reconfigure makes slurmctld start
        a new process of itself, which ``contrib/slurm-local/stop`` would not know.
        """
        conf = Path(self.conf)
        text = conf.read_text()
        assert "\nMinJobAge=" in text, f"{conf} names no MinJobAge"
        conf.write_text(re.sub(r"(?m)^MinJobAge=.*$", "MinJobAge=2", text))
        try:
            self._restart_slurmctld()
            deadline = time.monotonic() + timeout
            held = set(job_ids)
            while held and time.monotonic() < deadline:
                time.sleep(0.5)
                out = self.run("squeue", "-h", "-t", "all", "-o", "%A").stdout.split()
                held = set(job_ids) & {int(j) for j in out}
            assert not held, f"slurmctld still holds {sorted(held)} after {timeout} s"
        finally:
            conf.write_text(text)
            self._restart_slurmctld()

    def _restart_slurmctld(self, timeout: float = 60) -> None:
        """Stop this cluster's slurmctld and start it again with the same command line and
        environment; it saves and reloads its jobs."""
        self.start_daemon(self.stop_daemon("slurmctld", timeout), timeout)

    def stop_daemon(self, name: str, timeout: float = 60) -> Daemon:
        """Stop this cluster's ``slurmctld`` (found by its ``-f <slurm.conf>``) or ``slurmdbd``
        (found by ``SLURM_CONF`` in its environment: it has no config option) with SIGTERM;
        returns how to start it again (:meth:`start_daemon`).  Only for a cluster of the
        test's own (spare_cluster)."""
        wanted = self.conf.encode()
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            try:
                if Path(f"/proc/{entry}/comm").read_text().strip() != name:
                    continue
                argv = Path(f"/proc/{entry}/cmdline").read_bytes().split(b"\0")[:-1]
                environ = Path(f"/proc/{entry}/environ").read_bytes().split(b"\0")
            except OSError:
                continue
            if wanted in argv or b"SLURM_CONF=" + wanted in environ:
                pid = int(entry)
                break
        else:
            raise AssertionError(f"no {name} runs with {self.conf}")
        env = dict(item.decode().split("=", 1) for item in environ if b"=" in item)
        os.kill(pid, 15)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:  # gone, or a zombie of the daemon that started it
                if Path(f"/proc/{pid}/stat").read_text().split(") ", 1)[1][0] == "Z":
                    break
            except (FileNotFoundError, IndexError):
                break
            time.sleep(0.2)
        else:
            raise AssertionError(f"{name} {pid} ignored SIGTERM")
        return Daemon(name, [a.decode() for a in argv], env)

    def start_daemon(self, daemon: Daemon, timeout: float = 60) -> None:
        """Start a daemon :meth:`stop_daemon` stopped; return once it answers."""
        subprocess.run(
            daemon.argv,
            env=daemon.env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            check=True,
            timeout=60,
        )
        # slurmctld answers scontrol ping; slurmdbd answers sacct (which fails while it is down)
        ask = ("scontrol", "ping") if daemon.name == "slurmctld" else ("sacct", "-n", "-X")
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            answer = self.run(*ask, check=False)
            if answer.returncode == 0 and (daemon.name != "slurmctld" or "is UP" in answer.stdout):
                return
            time.sleep(0.5)
        raise AssertionError(f"{daemon.name} of {self.conf} did not come back")


@dataclass
class Daemon:
    """A Slurm daemon stopped by :meth:`Cluster.stop_daemon`: how to start it again."""

    name: str
    argv: list[str]
    env: dict[str, str]


@contextlib.contextmanager
def spare_cluster(*options: str) -> Iterator[Cluster]:
    """A throw-away cluster on the spare port, started with these options; purged after."""
    # munged wants a socket path everybody may traverse: not under pytest's 0700 tmp_path
    state = Path(tempfile.mkdtemp(prefix="dls-spare-", dir="/tmp"))
    state.chmod(0o755)
    port = os.environ.get("DATALAD_SLURM_TEST_SPARE_PORT", "6897")
    start = subprocess.run(
        [REPO / "contrib/slurm-local/start", "--state-dir", state, "--port-base", port, *options],
        capture_output=True,
        text=True,
        timeout=240,
    )
    try:
        assert start.returncode == 0, start.stderr[-3000:]
        yield Cluster(
            "spare-acct" if "--accounting" in options else "spare", str(state / "etc/slurm.conf")
        )
    finally:
        subprocess.run(
            [str(REPO / "contrib/slurm-local/stop"), "--state-dir", str(state), "--purge"],
            capture_output=True,
            timeout=120,
        )


@pytest.fixture
def hook_root() -> Iterator[Path]:
    """A folder for a hook that the test installs itself (prefix, config, spool, log), readable
    by everybody (the hook runs as SlurmUser); its ``hook.log`` is SlurmUser's."""
    root = Path(tempfile.mkdtemp(prefix="dls-hook-", dir="/tmp"))
    root.chmod(0o755)
    log = root / "hook.log"
    log.touch()
    shutil.chown(log, "slurm")
    try:
        yield root
    finally:
        subprocess.run(["chmod", "-R", "u+w", str(root)], check=False)
        shutil.rmtree(root, ignore_errors=True)


def unprivileged_user() -> pwd.struct_passwd | None:
    """The account to run as: None when we are not root (then we are unprivileged already)."""
    if os.geteuid() != 0:
        return None
    try:
        return pwd.getpwnam(USER)
    except KeyError:
        subprocess.run(["useradd", "-m", USER], check=True)
        return pwd.getpwnam(USER)


def run_as(user: pwd.struct_passwd | None) -> list[str]:
    """A command line prefix that runs a command as ``user`` (None: as we are), with this
    checkout and its packages on the path and a git identity.

    ``setpriv`` execs in place: the process started is the command itself, so a signal to its
    process group reaches everything it started.
    """
    paths = [str(REPO), sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]]
    env = [
        f"PYTHONPATH={os.pathsep.join(paths)}",
        f"PATH={os.path.dirname(sys.executable)}:/usr/bin:/bin",
        "GIT_AUTHOR_NAME=T",
        "GIT_AUTHOR_EMAIL=t@example.org",
        "GIT_COMMITTER_NAME=T",
        "GIT_COMMITTER_EMAIL=t@example.org",
    ]
    if user is None:
        return ["env", *env]
    return [
        "setpriv",
        f"--reuid={user.pw_uid}",
        f"--regid={user.pw_gid}",
        "--init-groups",
        "env",
        f"HOME={user.pw_dir}",
        f"USER={user.pw_name}",
        f"LOGNAME={user.pw_name}",
        *env,
    ]


def python_as(user: pwd.struct_passwd | None) -> list[str]:
    """:func:`run_as` for an interpreter that ``user`` may run."""
    python = sys.executable
    if user is not None:
        # the venv's interpreter may live in root's home; Debian's is the same version
        system = shutil.which("python3", path="/usr/bin:/bin")
        if system:
            version = subprocess.run(
                [system, "-c", "import sys; print(sys.version_info[:2])"],
                capture_output=True,
                text=True,
                check=True,
            ).stdout.strip()
            if version == str(sys.version_info[:2]):
                python = system
    return [*run_as(user), python]


def assert_fsck_clean(path: str | Path, user: pwd.struct_passwd | None) -> None:
    """``git fsck --strict`` and ``git annex fsck`` find nothing, run as the dataset's owner."""
    for check in (["fsck", "--strict", "--no-progress"], ["annex", "fsck", "--fast", "--quiet"]):
        proc = subprocess.run(
            [*run_as(user), "git", *check], cwd=path, capture_output=True, text=True
        )
        assert proc.returncode == 0, (check, proc.stdout[-2000:], proc.stderr[-2000:])


@contextlib.contextmanager
def owned_folder(user: pwd.struct_passwd | None) -> Iterator[Path]:
    """A folder under /tmp that ``user`` owns (pytest's tmp_path is root's own, mode 0700)."""
    folder = Path(tempfile.mkdtemp(prefix="datalad-slurm-test-"))
    if user is not None:
        os.chown(folder, user.pw_uid, user.pw_gid)
    try:
        yield folder
    finally:
        subprocess.run(["chmod", "-R", "u+w", str(folder)], check=False)
        shutil.rmtree(folder, ignore_errors=True)


def _cluster(name: str) -> Cluster:
    variable = CLUSTER_ENV[name]
    conf = os.environ.get(variable)
    if not conf or not os.path.exists(conf):
        pytest.fail(
            f"{variable} is not set to a running local Slurm's config: "
            "run the suite with tests/run, which starts the clusters"
        )
    hook = os.environ.get(variable.replace("_CONF", "_HOOK"), "")
    return Cluster(name, conf, hook)


@pytest.fixture(scope="session")
def short_cluster() -> Cluster:
    """No accounting, MinJobAge 2: finished jobs leave slurmctld within seconds."""
    return _cluster("short")


@pytest.fixture(scope="session")
def acct_cluster() -> Cluster:
    return _cluster("acct")


@pytest.fixture(scope="session")
def noacct_cluster() -> Cluster:
    return _cluster("noacct")


@pytest.fixture(params=["acct", "noacct"])
def any_cluster(request: pytest.FixtureRequest) -> Cluster:
    return _cluster(request.param)


def _use(cluster: Cluster, monkeypatch: pytest.MonkeyPatch, spool: bool) -> Cluster:
    """Point this test's Slurm clients (and, with ``spool``, finish) at one cluster."""
    monkeypatch.setenv("SLURM_CONF", cluster.conf)
    if spool:
        monkeypatch.setenv("DATALAD_SLURM_CONFIG", cluster.hook_config)
    return cluster


@pytest.fixture
def slurm(acct_cluster: Cluster, monkeypatch: pytest.MonkeyPatch) -> Cluster:
    """The accounting cluster, with SLURM_CONF pointing at it for this test."""
    return _use(acct_cluster, monkeypatch, spool=False)


@pytest.fixture
def slurm_any(any_cluster: Cluster, monkeypatch: pytest.MonkeyPatch) -> Cluster:
    """Each cluster in turn (accounting on and off), SLURM_CONF set."""
    return _use(any_cluster, monkeypatch, spool=False)


@pytest.fixture
def spooled(any_cluster: Cluster, monkeypatch: pytest.MonkeyPatch) -> Cluster:
    """Each of the acct and noacct clusters, with the hook's spool configured for finish."""
    return _use(any_cluster, monkeypatch, spool=True)


@pytest.fixture
def spooled_acct(acct_cluster: Cluster, monkeypatch: pytest.MonkeyPatch) -> Cluster:
    """The accounting cluster with the hook's spool configured for finish."""
    return _use(acct_cluster, monkeypatch, spool=True)


@pytest.fixture
def short(short_cluster: Cluster, monkeypatch: pytest.MonkeyPatch) -> Cluster:
    """The short-memory cluster with the spool configured."""
    return _use(short_cluster, monkeypatch, spool=True)


@pytest.fixture
def dataset(tmp_path: Path) -> Iterator[Any]:
    """A fresh DataLad dataset with a committed ``code/`` folder for job scripts."""
    from datalad.api import Dataset

    ds = Dataset(str(tmp_path / "ds")).create(result_renderer="disabled")
    (Path(ds.path) / "code").mkdir()
    yield ds


def write_script(ds: Any, name: str, body: str, save: bool = True) -> str:
    """A job script under code/, committed; returns its dataset-relative path."""
    path = Path(ds.path) / "code" / name
    path.write_text("#!/bin/bash\n" + body.lstrip("\n"))
    path.chmod(0o755)
    if save:
        ds.save(path=str(path), message=f"add {name}", to_git=True, result_renderer="disabled")
    return f"code/{name}"


def call(ds: Any, command: str, *args: Any, **kwargs: Any) -> list[dict[str, Any]]:
    """Run one of our commands through the Python API and return all results."""
    method = getattr(ds, command)
    return list(
        method(*args, on_failure="ignore", return_type="list", result_renderer="disabled", **kwargs)
    )


def only(results: list[dict[str, Any]], action: str) -> list[dict[str, Any]]:
    return [r for r in results if r.get("action") == action]


def git(ds: Any, *args: str) -> str:
    return subprocess.run(
        ["git", *args], cwd=ds.path, capture_output=True, text=True, check=True
    ).stdout


def subjects(ds: Any) -> list[str]:
    return git(ds, "log", "--format=%s").splitlines()


def schedule_ok(ds: Any, cmd: str | list[str], output: str = "out") -> int:
    """Schedule one job with one output folder (made first); it must succeed."""
    Path(ds.path, output).mkdir(parents=True, exist_ok=True)
    results = call(ds, "schedule", cmd, outputs=[output])
    assert [r["status"] for r in results] == ["ok"], results
    return int(results[0]["slurm_job_id"])


def finish_by_job(ds: Any, **kwargs: Any) -> dict[Any, dict[str, Any]]:
    """finish's own results, by Slurm job id."""
    return {r.get("slurm_job_id"): r for r in only(call(ds, "finish", **kwargs), "finish")}


#: the unprivileged account that cluster tests run the CLI as too (root ignores file modes)
UNPRIVILEGED = "dlstest"

_CLI = "import sys; from datalad.cli.main import main; sys.argv[0] = 'datalad'; main()"


@dataclass
class Actor:
    """Who runs the ``datalad`` command line in a test: root, or an unprivileged account."""

    name: str
    user: pwd.struct_passwd | None
    cluster: Cluster

    #: the folders made for this account (removed after the test)
    made: list[Path] = field(default_factory=list)
    #: a configless cluster's login node (``start --configless``'s ``login``): the command runs
    #: there, where Slurm's clients find their config without SLURM_CONF
    login: str | None = None

    def folder(self) -> Path:
        """A folder in /tmp this account owns (pytest's tmp_path is root's, under 0700)."""
        folder = Path(tempfile.mkdtemp(prefix="dls-actor-", dir="/tmp"))
        self.made.append(folder)
        if self.user is not None:
            os.chown(folder, self.user.pw_uid, self.user.pw_gid)
        return folder

    def datalad(
        self, *args: str, cwd: str | Path, env: dict[str, str] | None = None
    ) -> subprocess.CompletedProcess[str]:
        """``datalad ARGS`` as this account, with the cluster and its hook's spool (a cluster
        without the hook: none); ``env`` adds to or replaces the environment."""
        return self.python(_CLI, *args, cwd=cwd, env=env)

    def command(self, *args: str, env: dict[str, str] | None = None) -> list[str]:
        """The command line of ``datalad ARGS`` as this account (for a process of its own)."""
        return self.command_line(self._python(), "-c", _CLI, *args, env=env)

    def _python(self) -> str:
        # the venv's interpreter may live in root's home; Debian's is the same version
        return sys.executable if self.user is None else "/usr/bin/python3"

    def python(
        self, code: str, *args: str, cwd: str | Path, env: dict[str, str] | None = None
    ) -> subprocess.CompletedProcess[str]:
        """``python -c CODE ARGS`` as this account, in the environment of :meth:`datalad`."""
        return self.run(self._python(), "-c", code, *args, cwd=cwd, env=env)

    def run(
        self, *argv: str, cwd: str | Path, env: dict[str, str] | None = None
    ) -> subprocess.CompletedProcess[str]:
        """A command as this account, in the environment of :meth:`datalad`."""
        return subprocess.run(
            self.command_line(*argv, env=env),
            cwd=cwd,
            capture_output=True,
            text=True,
            stdin=subprocess.DEVNULL,
        )

    def command_line(self, *argv: str, env: dict[str, str] | None = None) -> list[str]:
        """The command line that runs ARGV as this account, in the environment of
        :meth:`datalad`."""
        env = {
            "PATH": f"{os.path.dirname(sys.executable)}:/usr/sbin:/usr/bin:/sbin:/bin",
            "HOME": self.user.pw_dir if self.user else os.environ.get("HOME", "/root"),
            **({} if self.login else {"SLURM_CONF": self.cluster.conf}),
            # a cluster without the hook: finish asks Slurm alone
            **({"DATALAD_SLURM_CONFIG": self.cluster.hook_config} if self.cluster.hook else {}),
            "GIT_AUTHOR_NAME": "T",
            "GIT_AUTHOR_EMAIL": "t@example.org",
            "GIT_COMMITTER_NAME": "T",
            "GIT_COMMITTER_EMAIL": "t@example.org",
            **(env or {}),
        }
        if self.user is not None:
            paths = [str(REPO), sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]]
            env["PYTHONPATH"] = os.pathsep.join(paths)
        command = ["env", "-i", *[f"{k}={v}" for k, v in env.items()], *argv]
        if self.user is not None:
            command = ["runuser", "-u", self.user.pw_name, "--", *command]
        if self.login:
            command = [self.login, *command]
        return command

    def ok(self, *args: str, cwd: str | Path) -> str:
        """``datalad ARGS`` that must succeed without a traceback; its standard output."""
        proc = self.datalad(*args, cwd=cwd)
        assert proc.returncode == 0 and "Traceback" not in proc.stderr, (proc.stdout, proc.stderr)
        return proc.stdout

    def dataset(self, parent: Path | None = None) -> Path:
        """A new dataset this account owns, with a committed ``code/job.sh`` (``exit $1``):
        ``ds`` in ``parent`` (a folder it may write), by default in a new folder of its own."""
        path = (parent or self.folder()) / "ds"
        self.ok("create", str(path), cwd=path.parent)
        self.write(path / "code" / "job.sh", "#!/bin/bash\nexit ${1:-0}\n")
        self.ok("save", "-m", "job script", "--to-git", "code", cwd=path)
        return path

    def write(self, path: Path, text: str) -> None:
        """Write a file (and its missing folders) as this account's own."""
        missing = [p for p in reversed(path.parents) if not p.exists()]
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        if self.user is not None:
            for item in [*missing, path]:
                os.chown(item, self.user.pw_uid, self.user.pw_gid)

    def schedule(self, ds: Path, output: str, *cmd: str) -> int:
        """Schedule ``cmd`` with one output folder (made first); returns the job id."""
        import json

        (ds / output).mkdir(parents=True, exist_ok=True)
        if self.user is not None:
            os.chown(ds / output, self.user.pw_uid, self.user.pw_gid)
        out = self.ok("-f", "json", "schedule", "-o", output, *cmd, cwd=ds)
        return int(json.loads(out.splitlines()[-1])["slurm_job_id"])


def _actor(name: str, cluster: Cluster) -> Actor:
    if name == "root" or os.geteuid() != 0:
        return Actor("root" if os.geteuid() == 0 else "self", None, cluster)
    try:
        user = pwd.getpwnam(UNPRIVILEGED)
    except KeyError:
        subprocess.run(["useradd", "-m", UNPRIVILEGED], check=True)
        user = pwd.getpwnam(UNPRIVILEGED)
    return Actor(name, user, cluster)


@contextlib.contextmanager
def acting(name: str, cluster: Cluster) -> Iterator[Actor]:
    """An :class:`Actor` (``root`` or :data:`UNPRIVILEGED`) on a cluster; its folders are
    removed after."""
    actor = _actor(name, cluster)
    try:
        yield actor
    finally:
        for folder in actor.made:
            subprocess.run(["chmod", "-R", "u+w", str(folder)], check=False)
            shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture(params=["root", UNPRIVILEGED])
def actor(request: pytest.FixtureRequest, spooled_acct: Cluster) -> Iterator[Actor]:
    """The CLI as root and as the unprivileged account, on the accounting cluster with its hook."""
    with acting(request.param, spooled_acct) as actor:
        yield actor
