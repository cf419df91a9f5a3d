"""The spool: where the Slurm hook leaves completion events for ``datalad finish``.

One file of about 700 lines, over the package's ~400, on purpose: it is the contract between
the two sides, and the hook installs it alone (``epilog/install`` copies it as
``datalad_slurm_spool.py``, docs/admin.md lists it), so the config, the layout, the event
format and the safe walk that writes and reads events stay in one module the hook can import
without the package; split, the parts would have to be installed and kept in step one by one.

Standard library only: the epilog hook imports this very file (installed
beside it as ``datalad_slurm_spool.py``) under the system Python.  It owns the
layout, the versioned event format, the atomic write and the validation.

Layout under the configured spool directory (created by the admin, mode 1733
or 1777, owned by the hook's account or root, see docs/admin.md)::

    <spool>/<uid>/              owned by the user, 0755, made by ``schedule``
    <spool>/<uid>.<32 hex>/     the same, where somebody else made ``<uid>`` first: a random
                                name nobody else can learn (only the spool's owner, the hook's
                                account, can list the spool), kept in the user's
                                ``~/.config/datalad-slurm/spool-folder-*``; the hook lists the
                                spool to find it and writes only into folders owned by the uid
    <spool>/<uid>/jobs/         registrations: ``<cluster>.<jobid>`` (user writes, hook reads)
    <spool>/<uid>/inflight/     one file per ``schedule`` between sbatch and registration
    <spool>/<uid>/events/       owned by the user, mode 1733: the hook writes
                                ``*.event`` files, ``finish`` reads and removes them

Every path below ``<spool>`` is opened component by component with
``O_NOFOLLOW`` relative to its parent's descriptor, so a symlink planted by a
user is never followed, and nothing is written outside the spool.  ``finish``
accepts only regular files owned by the hook's account (or root) whose ``uid``
is the folder's user: a user can write into their own events folder, but not
with the hook's uid.
"""

from __future__ import annotations

import errno
import json
import os
import stat
import time
from dataclasses import dataclass

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (the hook starts faster)
if TYPE_CHECKING:
    from typing import Any

EVENT_VERSION = 1
EVENT_SUFFIX = ".event"
MAX_EVENT_BYTES = 65536
DEFAULT_CONFIG = "/etc/datalad-slurm.conf"
DEFAULT_SPOOL = "/var/spool/datalad-slurm"
#: an in-flight marker this old was left by a ``schedule`` that died between sbatch and
#: registration (one sbatch call takes seconds); ``schedule`` and ``finish`` remove it
STALE_INFLIGHT_SECONDS = 600.0

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
#: for walking through directories we may not list (the spool is mode 1733)
_PATH_FLAGS = getattr(os, "O_PATH", os.O_RDONLY) | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


class SpoolError(RuntimeError):
    """The spool is missing, unsafe or not usable; the message says why."""


# -- configuration ------------------------------------------------------------------


@dataclass
class SpoolConfig:
    """The one setting file shared by the hook and ``datalad finish``."""

    spool: str = DEFAULT_SPOOL
    hook_user: str = "slurm"
    #: "syslog", a file path, or "" for no log
    log: str = "syslog"
    #: seconds the hook may wait for Slurm when resolving a state
    query_timeout: float = 5.0
    #: the slurm.conf the hook's Slurm calls use ("" = Slurm's default)
    slurm_conf: str = ""


def read_config(path: str) -> SpoolConfig:
    """Read ``key = value`` lines; ``#`` starts a comment. Missing file: SpoolError."""
    try:
        with open(path, encoding="utf-8") as stream:
            text = stream.read(65536)
    except OSError as exc:
        raise SpoolError(f"cannot read the datalad-slurm config {path}: {exc.strerror}") from exc
    config = SpoolConfig()
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        key, sep, value = line.partition("=")
        if not sep:
            raise SpoolError(f"{path}:{number}: expected 'key = value', got {raw.strip()!r}")
        key, value = key.strip().lower(), value.strip()
        if key == "spool":
            config.spool = value
        elif key == "hook_user":
            config.hook_user = value
        elif key == "log":
            config.log = value
        elif key == "slurm_conf":
            config.slurm_conf = value
        elif key == "query_timeout":
            try:
                config.query_timeout = float(value)
            except ValueError as exc:
                raise SpoolError(f"{path}:{number}: query_timeout must be a number") from exc
        # any other key is a newer release's: ignored, so that an older hook or finish reads on
    if not os.path.isabs(config.spool):
        raise SpoolError(f"{path}: spool must be an absolute path, got {config.spool!r}")
    return config


# -- safe directory access ------------------------------------------------------------


def _open_spool_root(path: str, owners: set[int] | None = None) -> int:
    """Open the configured spool (the admin's path: a symlink there is the admin's choice).

    With ``owners``, the spool must belong to one of them, and if everybody may
    write to it, it must have the sticky bit, as /tmp has.
    """
    fd = os.open(path, (_PATH_FLAGS & ~os.O_NOFOLLOW))
    if owners is not None:
        info = os.fstat(fd)
        if info.st_uid not in owners or (
            info.st_mode & stat.S_IWOTH and not info.st_mode & stat.S_ISVTX
        ):
            os.close(fd)
            raise SpoolError(
                f"the spool {path} must belong to root or the hook's account and, if "
                "world-writable, have the sticky bit (mode 1733 or 1777)"
            )
    return fd


def _open_child(parent_fd: int, name: str, owner: int | None = None, listable: bool = True) -> int:
    fd = os.open(name, _DIR_FLAGS if listable else _PATH_FLAGS, dir_fd=parent_fd)
    if owner is not None:
        info = os.fstat(fd)
        if info.st_uid != owner:
            os.close(fd)
            raise SpoolError(f"{name} in the spool belongs to uid {info.st_uid}, not {owner}")
    return fd


def _ensure_child(parent_fd: int, name: str, mode: int) -> int:
    try:
        os.mkdir(name, mode, dir_fd=parent_fd)
        # mkdir obeys the umask; the mode is part of the contract
        fd = _open_child(parent_fd, name)
        os.fchmod(fd, mode)
        return fd
    except FileExistsError:
        return _open_child(parent_fd, name, owner=os.getuid())


#: a user's folder other than ``<uid>`` is ``<uid>.<this many random bytes in hex>``
ROUTED_NAME_BYTES = 16
#: what opening a squatted ``<uid>`` fails with: a symlink, a file, another user's 0700 folder
_SQUATTED_ERRNOS = (errno.ELOOP, errno.ENOTDIR, errno.EACCES, errno.EPERM)


def is_routed_name(name: str, uid: int) -> bool:
    """Whether ``name`` is a folder ``schedule`` makes when ``<uid>`` is another user's."""
    prefix, dot, suffix = name.partition(".")
    return (
        dot == "."
        and prefix == str(uid)
        and len(suffix) == 2 * ROUTED_NAME_BYTES
        and all(c in "0123456789abcdef" for c in suffix)
    )


def default_memo(spool: str) -> str:
    """Where a user keeps the name of their folder in ``spool`` if ``<uid>`` was taken."""
    import hashlib

    base = os.environ.get("XDG_CONFIG_HOME") or os.path.join(os.path.expanduser("~"), ".config")
    digest = hashlib.sha256(spool.encode("utf-8", "surrogateescape")).hexdigest()[:16]
    return os.path.join(base, "datalad-slurm", f"spool-folder-{digest}")


def _read_memo(path: str) -> str | None:
    try:
        with open(path, encoding="utf-8") as stream:
            return stream.read(256).strip() or None
    except (OSError, UnicodeDecodeError):
        return None


def _write_memo(path: str, name: str) -> None:
    os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
    temporary = f"{path}.{os.getpid()}.tmp"
    with open(temporary, "w", encoding="utf-8") as stream:
        stream.write(name + "\n")
    os.replace(temporary, path)


def registration_name(cluster: str | None, job_id: int | str) -> str:
    return f"{cluster or '_'}.{job_id}"


# -- the user's side: registration and draining ------------------------------------------


class UserSpool:
    """The calling user's part of the spool, as ``schedule`` and ``finish`` see it."""

    def __init__(self, spool: str, uid: int | None = None, memo: str | None = None) -> None:
        self.spool = spool
        self.uid = os.getuid() if uid is None else uid
        #: where the name of a folder used instead of a squatted ``<uid>`` is kept
        self.memo = memo or default_memo(spool)
        #: the folder in use, once opened: ``<uid>``, or ``<uid>.<hex>`` if ``<uid>`` was taken
        self.folder = str(self.uid)

    @property
    def path(self) -> str:
        return os.path.join(self.spool, self.folder)

    def _dirs(self) -> _UserDirs:
        """The user's folders, opened (and created on first use); use in ``with``."""
        try:
            spool_fd = _open_spool_root(self.spool)
        except OSError as exc:
            raise SpoolError(
                f"the spool {self.spool} cannot be opened ({exc.strerror}); ask your admin to "
                "create it (docs/admin.md)"
            ) from exc
        try:
            # once routed around a squatted <uid>, always there: registrations and events stay
            # together (the hook writes into the folder that holds the job's registration)
            remembered = self._remembered(spool_fd)
            if remembered is not None:
                user_fd = remembered
            else:
                try:
                    user_fd = _ensure_child(spool_fd, str(self.uid), 0o755)
                    self.folder = str(self.uid)
                except (SpoolError, OSError) as exc:
                    if isinstance(exc, OSError) and exc.errno not in _SQUATTED_ERRNOS:
                        raise
                    # somebody else made <uid> first: a folder nobody else can know the name of
                    user_fd = self._routed_around(spool_fd)
        finally:
            os.close(spool_fd)
        try:
            jobs = _ensure_child(user_fd, "jobs", 0o755)
            inflight = _ensure_child(user_fd, "inflight", 0o755)
            events = _ensure_child(user_fd, "events", 0o1733)
        except BaseException:
            os.close(user_fd)
            raise
        return _UserDirs(user_fd, jobs, inflight, events)

    def _remembered(self, spool_fd: int) -> int | None:
        """The ``<uid>.<hex>`` folder named in :attr:`memo`, if there is one of this user's."""
        remembered = _read_memo(self.memo)
        if remembered is None or not is_routed_name(remembered, self.uid):
            return None
        try:
            fd = _ensure_child(spool_fd, remembered, 0o755)
        except (SpoolError, OSError):
            return None
        self.folder = remembered
        return fd

    def _routed_around(self, spool_fd: int) -> int:
        """Make ``<uid>.<32 random hex digits>`` and remember its name in :attr:`memo`.

        Nobody else can list the spool (mode 1733), so nobody else can learn
        the name and make it first; the hook finds it by listing the spool as
        its owner (docs/admin.md, "The spool and its security").
        """
        import secrets

        for _ in range(8):
            name = f"{self.uid}.{secrets.token_hex(ROUTED_NAME_BYTES)}"
            try:
                os.mkdir(name, 0o755, dir_fd=spool_fd)
            except FileExistsError:
                continue
            fd = _open_child(spool_fd, name, owner=self.uid)
            os.fchmod(fd, 0o755)
            try:
                _write_memo(self.memo, name)
            except OSError as exc:
                os.close(fd)
                raise SpoolError(
                    f"{self.path} belongs to another user, and the name of the folder used "
                    f"instead cannot be kept in {self.memo} ({exc.strerror}); ask your admin "
                    f"to remove {self.path}"
                ) from exc
            self.folder = name
            return fd
        raise SpoolError(f"no folder of your own could be made in the spool {self.spool}")

    def begin_submission(self, token: str) -> None:
        """Mark a submission in flight: the hook reports this user's jobs meanwhile."""
        with self._dirs() as dirs:
            _touch(dirs.inflight, token)

    def end_submission(self, token: str) -> None:
        with self._dirs() as dirs:
            _unlink_quietly(dirs.inflight, token)

    def register(self, cluster: str | None, job_id: int, token: str | None = None) -> None:
        with self._dirs() as dirs:
            _touch(dirs.jobs, registration_name(cluster, job_id))
            if token:
                _unlink_quietly(dirs.inflight, token)

    def unregister(self, cluster: str | None, job_id: int) -> None:
        with self._dirs() as dirs:
            _unlink_quietly(dirs.jobs, registration_name(cluster, job_id))
            _unlink_quietly(dirs.jobs, registration_name(None, job_id))

    def read_events(self, trusted_uids: set[int]) -> tuple[list[Event], list[Rejected]]:
        """Every valid event in the user's events folder, and every rejected file."""
        events: list[Event] = []
        rejected: list[Rejected] = []
        with self._dirs() as dirs:
            events_fd = dirs.events
            for name in sorted(os.listdir(events_fd)):
                if not name.endswith(EVENT_SUFFIX):
                    continue
                try:
                    events.append(_read_event(events_fd, name, trusted_uids, self.uid))
                except EventError as exc:
                    rejected.append(Rejected(name, str(exc)))
        return events, rejected

    def remove_events(self, names: list[str]) -> None:
        with self._dirs() as dirs:
            for name in names:
                _unlink_quietly(dirs.events, name)

    def set_aside(self, name: str) -> None:
        """Keep a rejected event for inspection, out of the next drain's way."""
        with self._dirs() as dirs:
            try:
                os.rename(name, name + ".rejected", src_dir_fd=dirs.events, dst_dir_fd=dirs.events)
            except FileNotFoundError:
                pass

    def clean_inflight(self, older_than: float = STALE_INFLIGHT_SECONDS) -> None:
        """Remove in-flight markers of submissions that died: while one is there, the hook
        reports every job of this user."""
        with self._dirs() as dirs:
            now = time.time()
            for name in os.listdir(dirs.inflight):
                try:
                    info = os.stat(name, dir_fd=dirs.inflight, follow_symlinks=False)
                except FileNotFoundError:
                    continue
                if now - info.st_mtime > older_than:
                    _unlink_quietly(dirs.inflight, name)


def _touch(dir_fd: int, name: str) -> None:
    fd = os.open(
        name, os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644, dir_fd=dir_fd
    )
    os.close(fd)


def _unlink_quietly(dir_fd: int, name: str) -> None:
    try:
        os.unlink(name, dir_fd=dir_fd)
    except FileNotFoundError:
        pass


class _UserDirs:
    """Open descriptors of a user's spool folders, closed on leaving ``with``."""

    def __init__(self, user: int, jobs: int, inflight: int, events: int) -> None:
        self.user, self.jobs, self.inflight, self.events = user, jobs, inflight, events

    def __enter__(self) -> _UserDirs:
        return self

    def __exit__(self, *exc: object) -> None:
        for fd in (self.events, self.inflight, self.jobs, self.user):
            os.close(fd)


# -- events -----------------------------------------------------------------------------


class EventError(ValueError):
    """A file in the spool that is not a valid event (the message says why)."""


@dataclass
class Rejected:
    name: str
    reason: str


_INT_FIELDS = (
    "job_id",
    "array_job_id",
    "array_task_id",
    "uid",
    "exit_code",
    "signal",
    "derived_exit_code",
    "start_time",
    "end_time",
    "restarts",
)
_STR_FIELDS = (
    "cluster",
    "user",
    "state",
    "work_dir",
    "stdout",
    "stderr",
    "resolved_by",
    "reason",
    # what the job was given, as slurmctld told the hook (optional: events of older hooks
    # lack them, and older finishes ignore them)
    "run_time",
    "req_tres",
    "alloc_tres",
    "nodes",
    "partition",
    "account",
    "qos",
)


@dataclass
class Event:
    """One job or array task that ended, as the hook saw it."""

    job_id: int
    state: str
    cluster: str | None = None
    array_job_id: int | None = None
    array_task_id: int | None = None
    uid: int | None = None
    user: str | None = None
    exit_code: int | None = None
    signal: int | None = None
    derived_exit_code: int | None = None
    start_time: int | None = None
    end_time: int | None = None
    restarts: int | None = None
    work_dir: str | None = None
    stdout: str | None = None
    stderr: str | None = None
    reason: str | None = None
    resolved_by: str | None = None
    #: scontrol's ``RunTime`` (``00:01:02``; seconds where pyslurm answered the hook)
    run_time: str | None = None
    #: TRES as scontrol writes them (``cpu=2,mem=100M,node=1``): requested and allocated
    req_tres: str | None = None
    alloc_tres: str | None = None
    #: the nodes the job ran on, its partition, account and QOS
    nodes: str | None = None
    partition: str | None = None
    account: str | None = None
    qos: str | None = None
    written_at: float = 0.0
    #: the file it was read from (not part of the format)
    name: str = ""

    @property
    def owner_job_id(self) -> int:
        """The id ``schedule`` registered: the array job's for an array task."""
        return self.array_job_id if self.array_job_id is not None else self.job_id

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {"version": EVENT_VERSION, "written_at": self.written_at}
        for key in (*_INT_FIELDS, *_STR_FIELDS):
            value = getattr(self, key)
            if value is not None:
                data[key] = value
        return data

    @classmethod
    def from_json(cls, data: Any) -> Event:
        if not isinstance(data, dict):
            raise EventError("not a JSON object")
        if data.get("version") != EVENT_VERSION:
            raise EventError(f"unknown event version {data.get('version')!r}")
        values: dict[str, Any] = {}
        for key in _INT_FIELDS:
            value = data.get(key)
            if value is not None and (not isinstance(value, int) or isinstance(value, bool)):
                raise EventError(f"{key} must be an integer")
            values[key] = value
        for key in _STR_FIELDS:
            value = data.get(key)
            if value is not None and not isinstance(value, str):
                raise EventError(f"{key} must be a string")
            values[key] = value
        if values["job_id"] is None or values["state"] is None:
            raise EventError("job_id and state are required")
        written = data.get("written_at", 0.0)
        if not isinstance(written, (int, float)) or isinstance(written, bool):
            raise EventError("written_at must be a number")
        return cls(written_at=float(written), **values)

    def file_name(self) -> str:
        task = f"_{self.array_task_id}" if self.array_task_id is not None else ""
        unique = f"{time.time_ns()}.{os.getpid()}"
        return (
            f"{self.cluster or '_'}.{self.owner_job_id}{task}.{self.job_id}.{unique}{EVENT_SUFFIX}"
        )


def _read_event(dir_fd: int, name: str, trusted_uids: set[int], uid: int) -> Event:
    """The event in ``name``, if the hook wrote it, and for a job of ``uid`` (the folder's)."""
    try:
        fd = os.open(
            name, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK, dir_fd=dir_fd
        )
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise EventError("is a symlink") from exc
        raise EventError(f"cannot be opened: {exc.strerror}") from exc
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise EventError("is not a regular file")
        if info.st_uid not in trusted_uids:
            raise EventError(
                f"was written by uid {info.st_uid}, not by the hook's account; "
                "only the Slurm hook may write events"
            )
        if info.st_size > MAX_EVENT_BYTES:
            raise EventError(f"is too large ({info.st_size} bytes)")
        raw = os.read(fd, MAX_EVENT_BYTES + 1)
    finally:
        os.close(fd)
    try:
        data = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise EventError(f"is not valid JSON: {exc}") from exc
    event = Event.from_json(data)
    if event.uid != uid:
        raise EventError(
            f"is about a job of uid {event.uid}, not of {uid} whose events folder it is in"
        )
    event.name = name
    return event


# -- the hook's side ----------------------------------------------------------------------


def is_registered(spool: str, uid: int, cluster: str | None, job_id: int | str) -> bool:
    """Whether the hook should report this job: a stat or two, no more.

    True for a registered job, and for any job of a user with a submission in
    flight (a job may end before its registration is written).  The user's
    folder is ``<uid>``, or, where somebody else took that name,
    ``<uid>.<hex>`` (found by listing the spool, which the hook's account owns).
    """
    names = (registration_name(cluster, job_id), registration_name(None, job_id))
    if _registered_in(os.path.join(spool, str(uid)), names):
        return True
    # listed only now: the spool may hold a folder for every user
    return any(
        _registered_in(os.path.join(spool, folder), names) for folder in routed_folders(spool, uid)
    )


def _registered_in(base: str, names: tuple[str, ...]) -> bool:
    """Whether the user folder ``base`` registers one of ``names`` or has a submission in
    flight."""
    for name in names:
        try:
            os.lstat(os.path.join(base, "jobs", name))
            return True
        except OSError:
            continue
    try:
        with os.scandir(os.path.join(base, "inflight")) as entries:
            return any(True for _ in entries)
    except OSError:
        return False


def routed_folders(spool: str, uid: int) -> list[str]:
    """The user's ``<uid>.<hex>`` folders (none unless ``<uid>`` is another user's)."""
    try:
        names = os.listdir(spool)
    except OSError:
        return []  # a spool the hook cannot list (an older install's): <uid> only
    return sorted(name for name in names if is_routed_name(name, uid))


def _open_user_dir(spool_fd: int, uid: int, event: Event) -> int:
    """The user's folder that holds the job's registration (see :func:`is_registered`).

    ``<uid>`` if it is the user's and holds the registration (or a submission
    in flight); else the ``<uid>.<hex>`` folder of the user's that does; else
    ``<uid>`` if it is the user's, else any ``<uid>.<hex>`` folder of theirs.
    """
    wanted = (
        registration_name(event.cluster, event.owner_job_id),
        registration_name(None, event.owner_job_id),
    )
    home: int | None = None
    first: Exception | None = None
    try:
        home = _open_child(spool_fd, str(uid), owner=uid, listable=False)
    except (SpoolError, OSError) as exc:
        if isinstance(exc, OSError) and exc.errno not in (*_SQUATTED_ERRNOS, errno.ENOENT):
            raise
        first = exc
    if home is not None and _holds_job(home, wanted):
        return home
    others = _routed_dirs(spool_fd, uid)
    chosen = next((fd for fd in others if _holds_job(fd, wanted)), None)
    if chosen is None:
        chosen = home if home is not None else (others[0] if others else None)
    for fd in [home, *others]:
        if fd is not None and fd != chosen:
            os.close(fd)
    if chosen is None:
        assert first is not None
        raise first
    return chosen


def _routed_dirs(spool_fd: int, uid: int) -> list[int]:
    """The user's ``<uid>.<hex>`` folders, opened; none if the spool cannot be listed."""
    try:
        list_fd = os.open(".", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC, dir_fd=spool_fd)
    except OSError:
        return []
    try:
        names = sorted(name for name in os.listdir(list_fd) if is_routed_name(name, uid))
    finally:
        os.close(list_fd)
    opened = []
    for name in names:
        try:
            opened.append(_open_child(spool_fd, name, owner=uid, listable=False))
        except (SpoolError, OSError):
            continue
    return opened


def _holds_job(user_fd: int, wanted: tuple[str, ...]) -> bool:
    return _holds(user_fd, "jobs", wanted) or _holds(user_fd, "inflight", None)


def _holds(user_fd: int, folder: str, names: tuple[str, ...] | None) -> bool:
    """Whether the user's ``folder`` has one of ``names`` (None: anything)."""
    try:
        fd = os.open(folder, _DIR_FLAGS, dir_fd=user_fd)
    except OSError:
        return False
    try:
        present = os.listdir(fd) if names is None else [n for n in names if _exists(fd, n)]
        return bool(present)
    finally:
        os.close(fd)


def _exists(dir_fd: int, name: str) -> bool:
    try:
        os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
        return True
    except OSError:
        return False


def write_event(spool: str, uid: int, event: Event, spool_owners: set[int] | None = None) -> str:
    """Write one event atomically into the user's events folder; returns its name.

    Runs as the hook's account.  Each path component is opened without
    following symlinks and must belong to the expected owner.
    """
    spool_fd = _open_spool_root(spool, spool_owners)
    fds = [spool_fd]
    try:
        user_fd = _open_user_dir(spool_fd, uid, event)
        fds.append(user_fd)
        events_fd = _open_child(user_fd, "events", owner=uid, listable=False)
        fds.append(events_fd)
        event.written_at = time.time()
        name = event.file_name()
        temporary = "." + name + ".tmp"
        payload = json.dumps(event.to_json(), sort_keys=True).encode("utf-8")
        fd = os.open(
            temporary,
            os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
            0o644,
            dir_fd=events_fd,
        )
        try:
            view = memoryview(payload)
            while view:
                written = os.write(fd, view)
                view = view[written:]
            os.fsync(fd)
        except BaseException:
            os.close(fd)
            _unlink_quietly(events_fd, temporary)
            raise
        os.close(fd)
        os.rename(temporary, name, src_dir_fd=events_fd, dst_dir_fd=events_fd)
        return name
    finally:
        for fd in reversed(fds):
            os.close(fd)
