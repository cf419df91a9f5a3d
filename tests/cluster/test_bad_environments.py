"""A broken environment is an error result that names the path and says what to do (issue 17,
item 9), never a traceback; nothing is committed twice; and the first run after the fault is
fixed commits everything.

One row per fault: a corrupt, a truncated and a newer registry; a read-only ``.git``; ``sbatch``
missing from PATH; a full disk during finish (a small tmpfs); a dataset moved after scheduling;
slurmctld stopped during schedule and during finish; slurmdbd stopped.  Each runs the ``datalad``
command line (no 'Traceback' on stderr, a non-zero exit, an error line naming the path and the
remedy) and the Python API (``on_failure='ignore'`` hands over the error result, the default
raises ``IncompleteResultsError``), as root and as the unprivileged ``dlstest`` (the read-only
``.git`` as ``dlstest`` only: root ignores file modes).  After each fix: every job committed
exactly once with its output, log and env.json, no open job, a clean worktree, ``git fsck
--strict`` and ``git annex fsck`` clean.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import sqlite3
import subprocess
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from datalad_slurm.jobs.schema import SCHEMA_VERSION
from tests.conftest import UNPRIVILEGED, Actor, Cluster, acting, spare_cluster

ACCOUNTS = ["root", UNPRIVILEGED]
SUBJECT = re.compile(r"(?m)^\[DATALAD SLURM RUN\] Slurm job (\d+): Completed$")

#: a DataLad command through the Python API as the test's account: first with
#: on_failure='ignore' (the results), then with DataLad's default (what it raises)
_API = """
import json, sys
import datalad.api as dl
from datalad.support.exceptions import IncompleteResultsError
command, dataset, kwargs = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
answer = {}
call = getattr(dl, command)
try:
    answer["results"] = call(
        dataset=dataset, on_failure="ignore", return_type="list", result_renderer="disabled",
        **kwargs
    )
except Exception as exc:
    answer["raised"] = repr(exc)
else:
    try:
        call(dataset=dataset, result_renderer="disabled", **kwargs)
        answer["default"] = "nothing raised"
    except IncompleteResultsError:
        answer["default"] = "IncompleteResultsError"
    except Exception as exc:
        answer["default"] = repr(exc)
print(json.dumps(answer, default=str))
"""


def _write(output: str) -> list[str]:
    """A submit command whose job writes ``<output>/result`` (its log: slurm-<id>.out)."""
    return ["sbatch", "--wrap", f"mkdir -p {output} && echo done > {output}/result"]


def _refused(
    actor: Actor, ds: Path, args: Sequence[str], needles: Sequence[str], **env: str
) -> None:
    """``datalad ARGS`` fails as a DataLad error result that names every needle, no traceback."""
    proc = actor.datalad(*args, cwd=ds, env=env or None)
    shown = f"datalad {' '.join(args)}:\n{proc.stdout}\n{proc.stderr}"
    assert proc.returncode != 0, shown
    assert "Traceback" not in proc.stderr, shown
    errors = [line for line in proc.stdout.splitlines() if "(error)" in line]
    assert any(all(n in line for n in needles) for line in errors), (needles, shown)


def _api_refused(
    actor: Actor,
    ds: Path,
    command: str,
    needles: Sequence[str],
    env: dict[str, str] | None = None,
    **kwargs: Any,
) -> None:
    """The Python API: an error result naming every needle; IncompleteResultsError by default."""
    proc = actor.python(_API, command, str(ds), json.dumps(kwargs), cwd=ds, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    answer = json.loads(proc.stdout.splitlines()[-1])
    assert "raised" not in answer, answer
    errors = [r for r in answer["results"] if r.get("status") in ("error", "impossible")]
    assert any(all(n in str(r.get("message")) for n in needles) for r in errors), (needles, answer)
    assert answer["default"] == "IncompleteResultsError", answer


def _slurm_jobs(cluster: Cluster) -> set[str]:
    """Every job id slurmctld holds (ended ones too)."""
    return set(cluster.run("squeue", "-h", "-t", "all", "-o", "%i").stdout.split())


def _head(actor: Actor, ds: Path) -> str:
    return actor.run("git", "rev-parse", "HEAD", cwd=ds).stdout.strip()


def _settled(actor: Actor, ds: Path, jobs: dict[int, str]) -> None:
    """Each job committed exactly once with its output, log and env.json; nothing open or left."""
    log = actor.run("git", "log", "--format=%s", cwd=ds).stdout
    assert Counter(int(j) for j in SUBJECT.findall(log)) == Counter(list(jobs)), log
    tracked = set(actor.run("git", "ls-files", cwd=ds).stdout.splitlines())
    for job, output in jobs.items():
        wanted = {f"{output}/result", f"slurm-{job}.out", f"slurm-job-{job}.env.json"}
        assert wanted <= tracked, (job, sorted(wanted - tracked))
    assert "there are no open jobs" in actor.ok("finish", "--list-open-jobs", cwd=ds)
    status = actor.run("git", "status", "--porcelain", cwd=ds)
    assert status.returncode == 0 and not status.stdout.strip(), status
    sound = actor.run("git", "fsck", "--strict", "--no-dangling", "--no-progress", cwd=ds)
    assert sound.returncode == 0 and not sound.stdout.strip(), sound
    fsck = actor.run("git", "annex", "fsck", "--json", cwd=ds)
    records = [json.loads(line) for line in fsck.stdout.splitlines() if line.strip()]
    assert fsck.returncode == 0 and records and all(r["success"] for r in records), fsck


def _registry(ds: Path) -> Path:
    return ds / ".git" / "datalad-slurm" / "registry.sqlite"


def _corrupt(path: Path) -> None:
    """Another program wrote over the file's header."""
    with open(path, "r+b") as stream:
        stream.write(b"this is no database at all, sorry" * 3)


def _truncate(path: Path) -> None:
    """A copy cut short (a full disk, a killed rsync)."""
    os.truncate(path, path.stat().st_size // 2)


def _newer(path: Path) -> None:
    """What a newer datalad-slurm would leave: a schema version this one does not know."""
    conn = sqlite3.connect(path)
    conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    conn.close()


REGISTRY_FAULTS: dict[str, tuple[Callable[[Path], None], list[str]]] = {
    "corrupt": (_corrupt, ["is damaged", "mv "]),
    "truncated": (_truncate, ["is damaged", "mv "]),
    "newer-schema": (_newer, ["newer than this datalad-slurm", "upgrade datalad-slurm"]),
}


@pytest.mark.slurm_agnostic  # the registry file, not Slurm: host and forky-jsoncli only
@pytest.mark.parametrize("fault", sorted(REGISTRY_FAULTS))
def test_a_bad_registry_is_an_error_until_it_is_put_back(actor: Actor, fault: str) -> None:
    """schedule, finish and --list-open-jobs refuse a registry they cannot read, naming it and
    the remedy; nothing is submitted or committed meanwhile.  Putting the good file back (for
    the newer schema: what upgrading datalad-slurm would do) lets the next runs commit all."""
    damage, needles = REGISTRY_FAULTS[fault]
    ds = actor.dataset()
    first = actor.schedule(ds, "out-a", *_write("out-a"))
    actor.cluster.wait_done([first])
    registry = _registry(ds)
    good = registry.read_bytes()
    damage(registry)
    head, submitted = _head(actor, ds), _slurm_jobs(actor.cluster)
    named = [str(registry), *needles]
    _refused(actor, ds, ["schedule", "-o", "out-b", *_write("out-b")], named)
    _refused(actor, ds, ["finish"], named)
    _refused(actor, ds, ["finish", "--list-open-jobs"], named)
    _api_refused(actor, ds, "finish", named)
    _api_refused(actor, ds, "schedule", named, cmd=_write("out-b"), outputs=["out-b"])
    assert _slurm_jobs(actor.cluster) == submitted, "a refused schedule submitted a job"
    assert _head(actor, ds) == head
    # no hot journal: SQLite would play it back into the good file put back below
    assert not Path(f"{registry}-journal").exists()

    registry.write_bytes(good)  # in place: the file stays the account's
    second = actor.schedule(ds, "out-b", *_write("out-b"))
    actor.cluster.wait_done([second])
    actor.ok("finish", cwd=ds)
    _settled(actor, ds, {first: "out-a", second: "out-b"})


@pytest.mark.slurm_agnostic  # file modes of .git, not Slurm: host and forky-jsoncli only
def test_a_read_only_git_folder_is_an_error_until_it_is_writable(
    spooled_acct: Cluster,
) -> None:
    """``.git`` read-only for its unprivileged owner (root would write anyway): schedule and
    finish name our state folder and say it must be writable; with the modes back, all
    commits."""
    with acting(UNPRIVILEGED, spooled_acct) as actor:
        ds = actor.dataset()
        first = actor.schedule(ds, "out-a", *_write("out-a"))
        actor.cluster.wait_done([first])
        head, submitted = _head(actor, ds), _slurm_jobs(actor.cluster)
        modes = {}
        for folder, _dirs, files in os.walk(ds / ".git"):
            for path in [folder, *(os.path.join(folder, f) for f in files)]:
                modes[path] = os.lstat(path).st_mode
        for path, mode in modes.items():
            if not os.path.islink(path):
                os.chmod(path, mode & ~0o222)
        try:
            named = [str(ds / ".git" / "datalad-slurm"), "writable"]
            _refused(actor, ds, ["schedule", "-o", "out-b", *_write("out-b")], named)
            _refused(actor, ds, ["finish"], named)
            _api_refused(actor, ds, "finish", named)
            _api_refused(actor, ds, "schedule", named, cmd=_write("out-b"), outputs=["out-b"])
        finally:
            for path, mode in modes.items():
                if not os.path.islink(path):
                    os.chmod(path, mode & 0o7777)
        assert _slurm_jobs(actor.cluster) == submitted, "a refused schedule submitted a job"
        assert _head(actor, ds) == head

        second = actor.schedule(ds, "out-b", *_write("out-b"))
        actor.cluster.wait_done([second])
        actor.ok("finish", cwd=ds)
        _settled(actor, ds, {first: "out-a", second: "out-b"})


@contextmanager
def _path_without_sbatch(actor: Actor) -> Iterator[str]:
    """The account's PATH with every folder holding ``sbatch`` replaced by a folder of links to
    all its other commands."""
    base = actor.run("sh", "-c", 'echo "$PATH"', cwd="/").stdout.strip()
    shadow = Path(tempfile.mkdtemp(prefix="dls-no-sbatch-", dir="/tmp"))
    shadow.chmod(0o755)
    try:
        folders = []
        for folder in base.split(":"):
            if not os.path.exists(os.path.join(folder, "sbatch")):
                folders.append(folder)
                continue
            copy = shadow / str(len(folders))
            copy.mkdir()
            for name in os.listdir(folder):
                if name != "sbatch":
                    (copy / name).symlink_to(os.path.join(folder, name))
            folders.append(str(copy))
        assert folders != base.split(":"), f"no sbatch on {base}"
        yield ":".join(folders)
    finally:
        shutil.rmtree(shadow)


@pytest.mark.slurm_agnostic  # the user's PATH, not Slurm: host and forky-jsoncli only
def test_sbatch_missing_from_path_is_an_error_that_says_so(actor: Actor) -> None:
    """The submit command's shell finds no sbatch: the error says to put it on PATH, nothing is
    registered; with sbatch back the job schedules and everything commits."""
    ds = actor.dataset()
    first = actor.schedule(ds, "out-a", *_write("out-a"))
    submitted = _slurm_jobs(actor.cluster)
    with _path_without_sbatch(actor) as path:
        command = ["schedule", "-o", "out-b", *_write("out-b")]
        named = ["sbatch", "not found", "on PATH"]
        _refused(actor, ds, command, named, PATH=path)
        kwargs = {"cmd": _write("out-b"), "outputs": ["out-b"]}
        _api_refused(actor, ds, "schedule", named, env={"PATH": path}, **kwargs)
    assert _slurm_jobs(actor.cluster) == submitted, "a job was submitted without sbatch"
    second = actor.schedule(ds, "out-b", *_write("out-b"))
    actor.cluster.wait_done([first, second])
    actor.ok("finish", cwd=ds)
    _settled(actor, ds, {first: "out-a", second: "out-b"})


def test_a_dataset_moved_after_scheduling_is_an_error_until_it_is_back(actor: Actor) -> None:
    """Moved after its job ran, the dataset holds the job's log at another place than Slurm
    wrote it: finish refuses (committing without the log would lose it), naming where the
    job ran; moved back, the job commits with its log."""
    ds = actor.dataset()
    job = actor.schedule(ds, "out-a", *_write("out-a"))
    actor.cluster.wait_done([job])
    head = _head(actor, ds)
    moved = ds.with_name("moved")
    ds.rename(moved)
    try:
        named = [f"ran in {ds}", f"move the dataset back to {ds}"]
        _refused(actor, moved, ["finish"], named)
        _api_refused(actor, moved, "finish", named)
        assert _head(actor, moved) == head
    finally:
        moved.rename(ds)
    actor.ok("finish", cwd=ds)
    _settled(actor, ds, {job: "out-a"})


@contextmanager
def _tmpfs(actor: Actor, size: str) -> Iterator[Path]:
    """A small file system of its own (tmpfs), owned by the account."""
    mount = Path(tempfile.mkdtemp(prefix="dls-full-", dir="/tmp"))
    subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size},mode=0755", "tmpfs", str(mount)], check=True
    )
    try:
        if actor.user is not None:
            os.chown(mount, actor.user.pw_uid, actor.user.pw_gid)
        yield mount
    finally:
        subprocess.run(["umount", str(mount)], check=True)
        mount.rmdir()


def _used(mount: Path) -> int:
    info = os.statvfs(mount)
    return (info.f_blocks - info.f_bfree) * info.f_frsize


def _fill(mount: Path, leave: int) -> Path:
    """Take all the space of the file system but ``leave`` bytes."""
    info = os.statvfs(mount)
    filler = mount / "filler"
    with open(filler, "wb") as stream:
        os.posix_fallocate(stream.fileno(), 0, max(info.f_bavail * info.f_frsize - leave, 1))
    return filler


@pytest.mark.slurm_agnostic  # a full file system, not Slurm: host and forky-jsoncli only
def test_a_full_disk_during_finish_is_an_error_until_there_is_space(actor: Actor) -> None:
    """finish on a full disk, with as much space left as a run needs, in steps: each attempt
    either commits or fails with errors naming the path and 'free space' (no traceback,
    nothing committed twice, also where HEAD moved before the registry failed); with space
    again, the next finish commits every job once."""
    with _tmpfs(actor, "32m") as mount:
        ds = actor.dataset(mount)
        jobs = {actor.schedule(ds, f"out-{n}", *_write(f"out-{n}")): f"out-{n}" for n in "abc"}
        actor.cluster.wait_done(list(jobs))
        pristine = actor.folder() / "pristine"
        subprocess.run(["cp", "-a", str(ds), str(pristine)], check=True)

        def fresh() -> None:
            shutil.rmtree(ds)
            subprocess.run(["cp", "-a", str(pristine), str(ds)], check=True)
            # the copy's files have new inodes: without this, git would hash every tracked
            # file again through git-annex's filter, which restarts for each file on a full
            # disk (minutes); the dataset had no such work before it was copied
            actor.run("git", "update-index", "-q", "--refresh", cwd=ds)

        # what a finish of these jobs takes on this disk
        fresh()
        before = _used(mount)
        actor.ok("finish", cwd=ds)
        needed = _used(mount) - before
        assert needed > 0
        felt = 0
        for step in range(17):  # up to twice what the finish left used: its peak is higher
            leave = needed * step // 8
            fresh()
            filler = _fill(mount, leave)
            proc = actor.datalad("finish", cwd=ds)
            shown = f"{leave} bytes left: {proc.stdout}\n{proc.stderr}"
            assert "Traceback" not in proc.stderr, shown
            if proc.returncode != 0:
                felt += 1
                errors = [line for line in proc.stdout.splitlines() if "(error)" in line]
                assert errors, shown
                for line in errors:
                    assert str(mount) in line and "free space" in line, (line, shown)
            filler.unlink()
            actor.ok("finish", cwd=ds)
            _settled(actor, ds, jobs)
        assert felt, "the disk was never full enough to fail a finish"
        assert felt < 17, "no finish succeeded: the steps never left it enough space"


def _quick_to_give_up(folder: Path) -> str:
    """A slurm.conf addition for the spare cluster whose slurmctld a test stops: Slurm's
    clients retry a slurmctld that does not answer for MessageTimeout (default 10 s: ~9 s a
    call, and a refused schedule or finish makes several); 3 s gives the same answers sooner
    (measured on 22.05: the test's 95 s became 32 s) and is plenty for an idle one-node cluster
    that answers in milliseconds.  (sacct gives up on a stopped slurmdbd as quickly with or
    without it.)"""
    conf = folder / "message-timeout.conf"
    conf.write_text("MessageTimeout=3\n")
    return str(conf)


@contextmanager
def _stopped(cluster: Cluster, daemon: str) -> Iterator[None]:
    """The spare cluster's slurmctld or slurmdbd stopped, and started again after."""
    stopped = cluster.stop_daemon(daemon)
    try:
        yield
    finally:
        cluster.start_daemon(stopped)


def _finish_waits_for_slurm(actor: Actor, ds: Path, cluster: Cluster) -> None:
    """Slurm does not answer: finish names the Slurm config, says the jobs stay open, and
    commits nothing."""
    head = _head(actor, ds)
    named = [cluster.conf, "the jobs stay open", "run the command again"]
    _refused(actor, ds, ["finish"], named)
    _api_refused(actor, ds, "finish", named)
    assert _head(actor, ds) == head


@pytest.mark.parametrize("account", ACCOUNTS)
def test_slurmctld_stopped_during_schedule_and_finish(account: str, tmp_path: Path) -> None:
    """slurmctld down: schedule fails as sbatch does, registering nothing; finish names the
    Slurm config and leaves the jobs open.  slurmctld stopped right after sbatch took a job:
    the job, submitted held, cannot have its logs reserved, so it is refused, stays held and is
    registered nowhere; the error says to cancel it.  With slurmctld back, every job scheduled
    again commits once."""
    quick = _quick_to_give_up(tmp_path)
    with spare_cluster("--extra-conf", quick) as cluster, acting(account, cluster) as actor:
        ds = actor.dataset()
        first = actor.schedule(ds, "out-a", *_write("out-a"))
        cluster.wait_done([first])
        with _stopped(cluster, "slurmctld"):
            _refused(
                actor,
                ds,
                ["schedule", "-o", "out-b", *_write("out-b")],
                ["Unable to contact slurm controller", "nothing was registered", "schedule again"],
            )
            _finish_waits_for_slurm(actor, ds, cluster)
        assert "there are no open jobs" not in actor.ok("finish", "--list-open-jobs", cwd=ds)

        # slurmctld stops while schedule runs, after sbatch took the job: the submit command
        # waits until the test stopped it
        flags = actor.folder()
        script = (
            "sbatch --parsable --wrap 'mkdir -p out-b && echo done > out-b/result' && "
            f"touch {flags}/submitted && until [ -e {flags}/go ]; do sleep 0.1; done"
        )
        with ThreadPoolExecutor(1) as pool:
            running = pool.submit(
                actor.datalad, "-f", "json", "schedule", "-o", "out-b", script, cwd=ds
            )
            deadline = time.monotonic() + 120
            while not (flags / "submitted").exists() and not running.done():
                assert time.monotonic() < deadline, "the submit command did not run"
                time.sleep(0.1)
            with _stopped(cluster, "slurmctld"):
                (flags / "go").touch()
                proc = running.result(timeout=300)
        # sbatch submitted the job held (its log files are reserved before it may start), and
        # nobody could say where it writes them: refused, registered nowhere, still held
        assert proc.returncode != 0 and "Traceback" not in proc.stderr, proc
        refused = json.loads(proc.stdout.splitlines()[-1])
        second = int(refused["slurm_job_id"])
        assert refused["status"] == "error", refused
        for words in (f"scancel {second}", "held", "nothing was registered"):
            assert words in refused["message"], refused
        assert f"\n{second} " not in actor.ok("finish", "--list-open-jobs", cwd=ds)
        # with slurmctld back the job is still held, it never ran; the user cancels it as told
        # and schedules again
        held = cluster.run("squeue", "-h", "-j", str(second), "-o", "%T %r").stdout.split()
        assert held[:1] == ["PENDING"] and "Held" in held[1], held
        assert not (ds / "out-b" / "result").exists()
        cluster.run("scancel", str(second))
        third = actor.schedule(ds, "out-b", *_write("out-b"))
        cluster.wait_done([third])
        actor.ok("finish", cwd=ds)
        _settled(actor, ds, {first: "out-a", third: "out-b"})


@pytest.mark.parametrize("account", ACCOUNTS)
def test_slurmdbd_stopped_is_an_error_until_it_answers(account: str) -> None:
    """A job only accounting knows (slurmctld forgot it), slurmdbd down: finish names the Slurm
    config, commits nothing and turns no job UNKNOWN; with slurmdbd back, the job commits."""
    with spare_cluster("--accounting") as cluster, acting(account, cluster) as actor:
        ds = actor.dataset()
        job = actor.schedule(ds, "out-a", *_write("out-a"))
        cluster.wait_done([job])
        cluster.wait_accounted([job])
        cluster.forget_finished([job])
        with _stopped(cluster, "slurmdbd"):
            _finish_waits_for_slurm(actor, ds, cluster)
        actor.ok("finish", cwd=ds)
        _settled(actor, ds, {job: "out-a"})
