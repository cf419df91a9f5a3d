"""The hook's queue of a cluster, ``<spool>/.hook/<cluster>/``: pending files the entry point
writes, claims of the workers, the serving worker's pid file, and whether a worker is alive.
The entry point (``datalad-slurm-epilog.sh``) writes the same names and fields."""

from __future__ import annotations

import os
import time

from .event import uid_of, well_formed
from .log import log
from .settings import Settings

#: the hook's own folder in the spool, owned by the hook's account, mode 0700
HOOK_DIR = ".hook"
#: a claim this old is taken over even if its worker seems alive (another host, a hung worker)
STALE_CLAIM_AGE = 600.0
#: the environment fields a pending file carries (what the worker needs besides scontrol)
PENDING_KEYS = (
    "SLURM_JOB_ID",
    "SLURM_JOB_UID",
    "SLURM_CLUSTER_NAME",
    "SLURM_ARRAY_JOB_ID",
    "SLURM_ARRAY_TASK_ID",
    "SLURM_JOB_USER",
    "SLURM_JOB_EXIT_CODE2",
    "SLURM_JOB_WORK_DIR",
)
PENDING_END = "."


def queue_name(cluster: str) -> str:
    """The cluster's folder under .hook; the entry point derives the same name."""
    allowed = set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._-")
    if not cluster or cluster.startswith(".") or not set(cluster) <= allowed:
        return "_"
    return cluster


def process_start(pid: int) -> str | None:
    """The start time (/proc/PID/stat field 22) of a live, non-zombie process, else None."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as stream:
            stat = stream.read()
    except OSError:
        return None
    fields = stat[stat.rfind(")") + 2 :].split()
    if len(fields) < 20 or fields[0] == "Z":
        return None
    return fields[19]


def is_alive(pid: int, start: str) -> bool:
    """Whether the process PID is alive and is the one that started at ``start``."""
    return pid > 0 and process_start(pid) == start


class Queue:
    """``<spool>/.hook/<cluster>/``: pending/, claimed/ and the serving worker's pid file."""

    def __init__(self, root: str) -> None:
        self.root = root
        self.pending = os.path.join(root, "pending")
        self.claimed = os.path.join(root, "claimed")
        self.pid_file = os.path.join(root, "worker.pid")
        #: this worker as the pid file names it: [PID, STARTTIME]
        self.pid_line = [str(os.getpid()), process_start(os.getpid()) or "0"]
        self.me = f"{'@'.join(self.pid_line)}@{os.uname().nodename}"

    # the pid file

    def announce(self) -> None:
        """Write the pid file (temporary file + rename): the entry point now starts no worker."""
        temporary = f"{self.pid_file}.{self.pid_line[0]}.tmp"
        _write_new_file(temporary, " ".join(self.pid_line) + "\n")
        os.rename(temporary, self.pid_file)

    def _named(self) -> list[str]:
        """The pid file's "PID STARTTIME", split ([] without a pid file)."""
        try:
            with open(self.pid_file, encoding="ascii") as stream:
                return stream.read().split()
        except OSError:
            return []

    def names_me(self) -> bool:
        return self._named() == self.pid_line

    def served_by_another(self) -> bool:
        """Whether the pid file names another live worker.

        Two jobs that end at the same moment may both find no worker, and their
        entry points start one each; only the first names its worker in the
        pid file. The second worker leaves at once: the first one sees the
        second job's pending file, written before that entry point looked, even
        if it is leaving (it looks at the queue once more after removing the
        pid file).
        """
        named = self._named()
        return (
            len(named) == 2
            and named != self.pid_line
            and named[0].isdigit()
            and is_alive(int(named[0]), named[1])
        )

    def retire(self) -> None:
        """Remove the pid file if it still names this worker."""
        if self.names_me():
            _unlink_quietly(self.pid_file)

    # pending and claimed files

    def pending_names(self) -> list[str]:
        try:
            return sorted(name for name in os.listdir(self.pending) if not name.startswith("."))
        except OSError:
            return []

    def has_backlog(self) -> bool:
        """Complete pending files or orphaned claims (a file still being written does not
        count: its entry point has yet to look at the pid file, and will start a worker)."""
        return any(self.read_pending(name) for name in self.pending_names()) or bool(
            self.orphaned_claims()
        )

    def claim(self, name: str) -> str | None:
        """Rename a pending file to a claim of this worker; None if another worker was faster."""
        claimed = f"{name}@{self.me}"
        try:
            os.rename(os.path.join(self.pending, name), os.path.join(self.claimed, claimed))
        except FileNotFoundError:
            return None
        os.utime(os.path.join(self.claimed, claimed))  # the claim's age starts now
        return claimed

    def orphaned_claims(self) -> list[str]:
        """Claims of workers that died (or, on another host, that are very old)."""
        try:
            names = os.listdir(self.claimed)
        except OSError:
            return []
        host = os.uname().nodename
        orphaned = []
        for name in names:
            parts = name.split("@")
            if len(parts) != 4 or "@".join(parts[1:]) == self.me:
                continue
            if self._claimant_gone(parts[1:], host) or (
                self._age(os.path.join(self.claimed, name)) > STALE_CLAIM_AGE
            ):
                orphaned.append(name)
        return sorted(orphaned)

    @staticmethod
    def _claimant_gone(claimant: list[str], host: str) -> bool:
        """Whether a worker of this host named by ``[pid, start, host]`` is dead."""
        pid, start, claimant_host = claimant
        return claimant_host == host and not (pid.isdigit() and is_alive(int(pid), start))

    def take_over(self, claimed: str) -> str | None:
        """Claim an orphaned claim for this worker; None if another worker was faster."""
        name = claimed.split("@", 1)[0]
        mine = f"{name}@{self.me}"
        try:
            os.rename(os.path.join(self.claimed, claimed), os.path.join(self.claimed, mine))
        except FileNotFoundError:
            return None
        os.utime(os.path.join(self.claimed, mine))
        return mine

    def read_claim(self, claimed: str) -> dict[str, str] | None:
        return read_pending_file(os.path.join(self.claimed, claimed))

    def read_pending(self, name: str) -> dict[str, str] | None:
        return read_pending_file(os.path.join(self.pending, name))

    def pending_age(self, name: str) -> float:
        return self._age(os.path.join(self.pending, name))

    def drop_pending(self, name: str) -> None:
        _unlink_quietly(os.path.join(self.pending, name))

    def done(self, claimed: str) -> None:
        _unlink_quietly(os.path.join(self.claimed, claimed))

    @staticmethod
    def _age(path: str) -> float:
        try:
            return time.time() - os.lstat(path).st_mtime
        except OSError:
            return 0.0


def _write_new_file(path: str, text: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    try:
        os.write(fd, text.encode())
    finally:
        os.close(fd)


def _unlink_quietly(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


def read_pending_file(path: str) -> dict[str, str] | None:
    """The job's Slurm environment from a pending file; None while it is incomplete."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK)
    except OSError:
        return None
    try:
        text = os.read(fd, 65536).decode("utf-8", errors="replace")
    finally:
        os.close(fd)
    lines = text.split("\n")
    if len(lines) < 2 or lines[-2] != PENDING_END or lines[-1] != "":
        return None
    env: dict[str, str] = {}
    for line in lines[:-2]:
        key, sep, value = line.partition("=")
        if sep and key in PENDING_KEYS:
            env[key] = value
    return env if well_formed(env) else None


def open_queue(settings: Settings, cluster: str) -> Queue | None:
    """The cluster's queue, if .hook is a real folder of this account (see the entry point)."""
    hook = os.path.join(settings.spool, HOOK_DIR)
    try:
        info = os.lstat(hook)
    except OSError:
        return None
    if not _is_private_dir(info):
        return None
    root = os.path.join(hook, queue_name(cluster))
    for path in (root, os.path.join(root, "pending"), os.path.join(root, "claimed")):
        try:
            os.mkdir(path, 0o700)
        except FileExistsError:
            if not _is_private_dir(os.lstat(path)):
                return None
    return Queue(root)


def _is_private_dir(info: os.stat_result) -> bool:
    import stat

    return (
        stat.S_ISDIR(info.st_mode)
        and info.st_uid == os.getuid()
        and not info.st_mode & (stat.S_IWGRP | stat.S_IWOTH)
    )


def prepare_queue(settings: Settings, cluster: str) -> None:
    """A worker for one job (the queue was not usable) readies the queue for the next hooks.

    Only as the hook's account: a queue made by root (slurmd's Epilog) would be
    of no use to the hook running as SlurmUser.
    """
    if os.getuid() != uid_of(settings.hook_user):
        return
    hook = os.path.join(settings.spool, HOOK_DIR)
    try:
        os.mkdir(hook, 0o700)
    except FileExistsError:
        pass
    except OSError as exc:
        log(settings.log, f"cannot create the hook's queue {hook}: {exc.strerror}")
        return
    queue = open_queue(settings, cluster)
    if queue is None:
        log(
            settings.log,
            f"the hook's queue {hook} is not a private folder of this account; "
            "every job starts its own worker (slower)",
        )
    elif not os.access(queue.pending, os.W_OK):
        log(
            settings.log,
            f"the hook's queue {queue.pending} is not writable; "
            "every job starts its own worker (slower)",
        )
