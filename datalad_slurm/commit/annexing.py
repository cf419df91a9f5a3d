"""Annexing new files of a drain without ``git annex add`` for each: the fast path.

``git annex add`` costs 2.4-3 ms per small file on the reference machine, and more as the
dataset grows: for every new key it looks up the key's location log on the git-annex branch
(docs/benchmarks.md). For the common case, a new regular file that the dataset's rules send
to the annex, this module does what ``git annex add`` does, and asks git-annex itself for
everything that decides where a file lands:

- the key: ``git annex calckey --backend B`` (B from ``.gitattributes``, else
  ``annex.backend``, as ``git annex add`` chooses it; calckey alone ignores the attribute),
- where its content lives: ``git annex examinekey`` (``${objectpath}``, ``${hashdirlower}``).

It then moves the content into ``.git/annex/objects`` (read-only, in a read-only folder, as
git-annex leaves it), replaces the file by the relative symlink git-annex writes, records
"present here" for all new keys in one commit on the git-annex branch (which git-annex picks
up as it does a branch updated by a push), and stages the links with one
``git update-index --info-only`` (the links' blobs in one pack of ours, not one loose object
each).

Whatever git-annex might treat differently goes to ``git annex add`` as before: files whose
``annex.largefiles`` is set (git-annex evaluates the expression), modified tracked files,
symlinks and hard-linked files, backends that put more than a hash into the key, keys the
git-annex journal has uncommitted news about, and whole datasets whose settings change what
``add`` does (``annex.largefiles``/``annex.addunlocked`` in git config or ``git annex
config``, ``annex.genmetadata``, shared or crippled repositories, freeze commands, private
repositories). ``git config datalad.slurm.fast-annex false`` sends everything to
``git annex add``.

Order, for crash safety: content and links first, then the location log, then the links'
blobs, then the index. A
finish killed in between leaves links to content that is in the annex; the next finish finds
them as untracked links to their own objects and takes them from where they are.
"""

from __future__ import annotations

import logging
import os
import re
import stat
import subprocess
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

from datalad_slurm.git.pack import uses_sha1, write_blobs
from datalad_slurm.git.runner import GitError, fast_import, git_dir, git_ident, run_git
from datalad_slurm.jobs.schema import REGISTRY_DIRNAME

lgr = logging.getLogger("datalad.slurm.annexing")

#: where fast-import builds the git-annex branch's commit before the branch moves to it
ANNEX_WORK_REF = "refs/datalad-slurm/git-annex"
ANNEX_BRANCH = "refs/heads/git-annex"
#: the switch (git config) that sends every file to ``git annex add``
FAST_ANNEX_KEY = "datalad.slurm.fast-annex"
#: backends whose keys hold nothing but size, hash and extension (no file name, no mtime)
_HASH_BACKEND = re.compile(
    r"(SHA(1|224|256|384|512)|SHA3_(224|256|384|512)|SKEIN(256|512)|BLAKE2(B|BP|S|SP)\d+|MD5)E?"
)
#: git config settings that change what ``git annex add`` does, with their harmless values
_SETTINGS_THAT_CHANGE_ADD = {
    "annex.largefiles": (),
    "annex.addunlocked": ("false", "no", "off", "0"),
    "annex.genmetadata": ("false", "no", "off", "0"),
    "annex.crippledfilesystem": ("false", "no", "off", "0"),
    "annex.private": ("false", "no", "off", "0"),
    "annex.freezecontent-command": (),
    "annex.thawcontent-command": (),
    "core.sharedrepository": ("false", "no", "off", "0", "umask"),
}
_ANNEX_VERSIONS = ("8", "9", "10")
_FALSE = ("false", "no", "off", "0")


@dataclass
class _Repo:
    top: str
    git_dir: str
    uuid: str
    default_backend: str
    #: ``annex.tune.branchhash1``: the git-annex branch keeps its logs one folder deep
    branch_hash1: bool = False
    #: object folders known to exist (a makedirs per file is a tenth of the work)
    made: set[str] = field(default_factory=set)

    @property
    def scratch(self) -> str:
        """Where links wait before they replace their file."""
        return os.path.join(self.git_dir, REGISTRY_DIRNAME, "links")


@dataclass
class _File:
    """One file (or a link left by an interrupted finish) on its way into the annex."""

    path: str
    before: os.stat_result
    backend: str = ""
    key: str = ""
    object_path: str = ""
    log_path: str = ""
    leftover_link: bool = False


@dataclass
class FastAnnexResult:
    #: files now annexed and staged
    annexed: list[str] = field(default_factory=list)
    #: files left for ``git annex add``
    rest: list[str] = field(default_factory=list)
    #: files that could not be annexed, and why (left as they were)
    failed: dict[str, str] = field(default_factory=dict)


class _NotReplaceable(OSError):
    """The file could not be swapped for its link (a read-only folder): ``raise ... from``."""


def annex_new_files(
    top: str, untracked: Sequence[str], on_file: Callable[[], None] | None = None
) -> FastAnnexResult:
    """Annex and stage those of ``untracked`` that need nothing but what git-annex's add does."""
    result = FastAnnexResult()
    repo = _fast_path_repo(os.path.abspath(top)) if untracked else None
    if repo is None:
        _record_leftover_links(os.path.abspath(top), untracked)
        result.rest.extend(untracked)
        return result
    os.makedirs(repo.scratch, exist_ok=True)
    for litter in os.listdir(repo.scratch):  # callers hold the dataset's lock: a killed run's
        os.unlink(os.path.join(repo.scratch, litter))
    candidates = _classify(repo, untracked, result.rest)
    _compute_keys(repo, [c for c in candidates if not c.leftover_link], result.rest)
    candidates = [c for c in candidates if c.key]
    _locate(repo, candidates)
    placed = []
    for candidate in candidates:
        try:
            fits = _place(repo, candidate)
        except _NotReplaceable as exc:
            # git annex add would fail the same way, and leave the file hard-linked to its
            # object, read-only: the file stays as it is and the caller reports it
            result.failed[candidate.path] = (
                f"could not be replaced by its annex link ({exc.__cause__}); make its folder "
                "writable"
            )
            continue
        except OSError as exc:  # another file system, no hard links, ...: git-annex copes
            lgr.debug("%s goes through git annex add: %s", candidate.path, exc)
            fits = False
        if fits:
            placed.append(candidate)
        else:
            result.rest.append(candidate.path)
    if not placed:
        return result
    record_present(repo, {c.key: c.log_path for c in placed})
    _stage_links(repo, [c.path for c in placed])
    for candidate in placed:
        result.annexed.append(candidate.path)
        if on_file is not None:
            on_file()
    return result


def _git_config(top: str) -> dict[str, str]:
    listing = run_git(top, "config", "-z", "--list")
    config: dict[str, str] = {}
    for entry in listing.split("\0"):
        name, _, value = entry.partition("\n")
        if name:
            config[name.lower()] = value
    return config


def _fast_path_repo(top: str) -> _Repo | None:
    """The repository's facts if the fast path may run in it at all, else None (and why, logged)."""
    config = _git_config(top)

    def refuse(why: str) -> None:
        lgr.debug("every new file goes through git annex add in %s: %s", top, why)

    if config.get(FAST_ANNEX_KEY.lower(), "true").lower() in _FALSE:
        refuse(f"{FAST_ANNEX_KEY} is false")
        return None
    if config.get("annex.version") not in _ANNEX_VERSIONS or not config.get("annex.uuid"):
        refuse("not a git-annex repository of version 8-10")
        return None
    for name, harmless in _SETTINGS_THAT_CHANGE_ADD.items():
        if name in config and config[name].strip().lower() not in harmless:
            refuse(f"{name} is set")
            return None
    git_folder = git_dir(top)
    dot_git = os.path.join(top, ".git")
    if os.path.islink(dot_git) or not os.path.isdir(dot_git):
        refuse(".git is not a folder in the worktree")
        return None
    if os.path.realpath(dot_git) != os.path.realpath(git_folder):
        refuse("the git folder is not the worktree's .git")
        return None
    if os.path.exists(os.path.join(git_folder, "annex", "journal", "config.log")):
        refuse("git-annex has uncommitted configuration")
        return None
    if not run_git(top, "rev-parse", "--verify", "-q", ANNEX_BRANCH, check=False).strip():
        refuse("there is no git-annex branch yet")
        return None
    repo_wide = run_git(top, "cat-file", "-p", f"{ANNEX_BRANCH}:config.log", check=False)
    if re.search(r"\sannex\.(largefiles|addunlocked) ", repo_wide):
        refuse("git annex config sets annex.largefiles or annex.addunlocked")
        return None
    backend = config.get("annex.backend") or (config.get("annex.backends") or "").split(" ")[0]
    return _Repo(
        top,
        git_folder,
        config["annex.uuid"],
        backend or "SHA256E",
        branch_hash1=config.get("annex.tune.branchhash1", "false").lower() not in _FALSE,
    )


def _classify(repo: _Repo, untracked: Sequence[str], rest: list[str]) -> list[_File]:
    """Regular files with one link, and links to objects an interrupted finish made."""
    files: list[_File] = []
    links: list[_File] = []
    for path in untracked:
        try:
            info = os.lstat(os.path.join(repo.top, path))
        except OSError:
            rest.append(path)
            continue
        if stat.S_ISREG(info.st_mode) and info.st_nlink == 1:
            files.append(_File(path, info))
        elif stat.S_ISLNK(info.st_mode) and (key := _annex_link_key(repo, path)):
            links.append(_File(path, info, key=key, leftover_link=True))
        else:
            rest.append(path)
    backends = _attributes(repo, [f.path for f in files])
    kept = []
    for candidate in files:
        largefiles, backend = backends.get(candidate.path, ("unspecified", "unspecified"))
        if largefiles not in ("unspecified", "anything"):
            rest.append(candidate.path)
            continue
        chosen = repo.default_backend if backend == "unspecified" else backend
        if not _HASH_BACKEND.fullmatch(chosen):
            rest.append(candidate.path)
            continue
        candidate.backend = chosen
        kept.append(candidate)
    return kept + links


def _annex_link_key(repo: _Repo, path: str) -> str:
    """The key a symlink points to if it is a link into this annex with its content present."""
    try:
        target = os.readlink(os.path.join(repo.top, path))
    except OSError:
        return ""
    parts = target.split("/")
    if len(parts) < 6 or parts[-1] != parts[-2] or "annex/objects" not in target:
        return ""
    resolved = os.path.normpath(os.path.join(repo.top, os.path.dirname(path), target))
    if not resolved.startswith(os.path.join(repo.top, ".git", "annex", "objects") + os.sep):
        return ""
    return parts[-1] if os.path.isfile(resolved) else ""


def _record_leftover_links(top: str, untracked: Sequence[str]) -> None:
    """Record "here" for the links into the annex that a killed fast path left, when this run
    takes the slow path: ``git annex add`` adds a link the rules call small to git as it is
    and writes no location log (``whereis`` would say 0 copies)."""
    links = [path for path in untracked if os.path.islink(os.path.join(top, path))]
    uuid = run_git(top, "config", "annex.uuid", check=False).strip() if links else ""
    if not uuid:
        return
    repo = _Repo(top, git_dir(top), uuid, "")
    keys = sorted({key for path in links if (key := _annex_link_key(repo, path))})
    if keys:
        _set_present(repo, keys)


def _attributes(repo: _Repo, paths: Sequence[str]) -> dict[str, tuple[str, str]]:
    """``annex.largefiles`` and ``annex.backend`` of each path, from ``.gitattributes``."""
    if not paths:
        return {}
    out = run_git(
        repo.top,
        "check-attr",
        "-z",
        "--stdin",
        "annex.largefiles",
        "annex.backend",
        stdin="\0".join(paths) + "\0",
    )
    fields = out.split("\0")
    values: dict[str, dict[str, str]] = {}
    for path, attribute, value in zip(fields[0::3], fields[1::3], fields[2::3], strict=False):
        values.setdefault(path, {})[attribute] = value
    return {
        path: (
            found.get("annex.largefiles", "unspecified"),
            found.get("annex.backend", "unspecified"),
        )
        for path, found in values.items()
    }


def _batch(
    top: str, command: Sequence[str], lines: Iterable[str], separator: str = "\n"
) -> list[str]:
    """One git-annex batch process over ``lines``; its answers, one per line."""
    items = list(lines)
    proc = subprocess.run(
        ["git", "annex", *command],
        cwd=top,
        input=("".join(item + separator for item in items)).encode("utf-8", "surrogateescape"),
        capture_output=True,
        check=False,
    )
    answers = proc.stdout.decode("utf-8", "surrogateescape").split("\n")
    if proc.returncode != 0 or len(answers) < len(items):
        why = proc.stderr.decode(errors="replace").strip()
        raise GitError(f"git annex {command[0]} failed in {top}: {why}")
    return answers[: len(items)]


def _compute_keys(repo: _Repo, files: Sequence[_File], rest: list[str]) -> None:
    """Each file's key, as ``git annex add`` would compute it; a file without one goes to rest."""
    by_backend: dict[str, list[_File]] = {}
    for candidate in files:
        by_backend.setdefault(candidate.backend, []).append(candidate)
    for backend, group in sorted(by_backend.items()):
        keys = _batch(
            repo.top,
            ["calckey", "--backend", backend, "--batch", "-z"],
            (c.path for c in group),
            separator="\0",
        )
        for candidate, key in zip(group, keys, strict=True):
            if key.startswith(backend + "-"):
                candidate.key = key
            else:
                rest.append(candidate.path)


def _locate(repo: _Repo, files: Sequence[_File]) -> None:
    keys = sorted({c.key for c in files})
    answers = _batch(
        repo.top, ["examinekey", "--batch", "--format", "${objectpath}\t${hashdirlower}\n"], keys
    )
    places = dict(zip(keys, (answer.split("\t") for answer in answers), strict=True))
    for candidate in files:
        candidate.object_path, hash_dirs = places[candidate.key]
        candidate.log_path = _log_path(repo, candidate.key, hash_dirs)


def _log_path(repo: _Repo, key: str, hash_dirs: str) -> str:
    """Where the git-annex branch keeps a key's location log.

    ``${hashdirlower}`` is always two levels (``aaa/bbb/``); with ``annex.tune.branchhash1``
    git-annex uses the first level alone (``aaa/KEY.log``). The other tunings are about the
    object store, which ``${objectpath}`` follows.
    """
    if repo.branch_hash1:
        hash_dirs = hash_dirs.split("/", 1)[0] + "/"
    return f"{hash_dirs}{key}.log"


def _identity(info: os.stat_result) -> tuple[int, int, int, int]:
    return info.st_ino, info.st_dev, info.st_size, info.st_mtime_ns


def _same_file(a: os.stat_result, b: os.stat_result) -> bool:
    """The same file, unchanged (its key was computed from this content)."""
    return _identity(a) == _identity(b)


def _without_write_bits(path: str) -> None:
    os.chmod(path, stat.S_IMODE(os.lstat(path).st_mode) & ~0o222)


def _place(repo: _Repo, candidate: _File) -> bool:
    """Move the content into the annex and leave git-annex's symlink; False: leave it to add."""
    worktree_file = os.path.join(repo.top, candidate.path)
    content = os.path.join(repo.top, candidate.object_path)
    if candidate.leftover_link:
        # a link of ours, or one the job made (absolute, or by another way into the annex):
        # committed as git-annex's relative link, as git annex add rewrites it
        if not os.path.isfile(content):
            return False
        target = os.path.relpath(content, os.path.dirname(worktree_file))
        if os.readlink(worktree_file) != target:
            _replace_by_link(repo, worktree_file, target)
        return True
    key_dir = os.path.dirname(content)
    linked = False
    if os.path.lexists(content):
        # the same content is in the annex already: git-annex drops the new copy
        if os.lstat(content).st_size != candidate.before.st_size:
            return False
    else:
        hash_dir = os.path.dirname(key_dir)
        if hash_dir not in repo.made:
            os.makedirs(hash_dir, exist_ok=True)
            repo.made.add(hash_dir)
        try:
            os.mkdir(key_dir)
        except FileExistsError:
            os.chmod(key_dir, stat.S_IMODE(os.lstat(key_dir).st_mode) | stat.S_IWUSR)
        try:
            os.link(worktree_file, content)
        except OSError:
            os.rmdir(key_dir)
            raise
        linked = True
        try:
            _without_write_bits(content)
            _without_write_bits(key_dir)
        except OSError:
            _unlink_content(content, candidate.before)
            raise
    if not _same_file(os.lstat(worktree_file), candidate.before):
        # changed since its key was computed: let git-annex look at it
        if linked:
            _unlink_content(content, candidate.before)
        return False
    try:
        _replace_by_link(
            repo, worktree_file, os.path.relpath(content, os.path.dirname(worktree_file))
        )
    except OSError as exc:
        # the file stays as it was (a read-only folder, ...): not hard-linked to an object,
        # nor read-only, so that it can be written and annexed on the next try
        if linked:
            _unlink_content(content, candidate.before)
        raise _NotReplaceable(str(exc)) from exc
    return True


def _unlink_content(content: str, before: os.stat_result) -> None:
    """Undo the hard link of a work-tree file into the annex: the file gets its mode back
    (the object's write bits were its own) and the object and its key folder go."""
    os.chmod(content, stat.S_IMODE(before.st_mode))
    key_dir = os.path.dirname(content)
    os.chmod(key_dir, stat.S_IMODE(os.lstat(key_dir).st_mode) | stat.S_IWUSR)
    os.unlink(content)
    os.rmdir(key_dir)


def _replace_by_link(repo: _Repo, worktree_file: str, target: str) -> None:
    """Swap the file for a symlink in one rename, so a crash leaves one or the other."""
    link = os.path.join(repo.scratch, f"{os.getpid()}-{time.monotonic_ns()}")
    os.symlink(target, link)
    try:
        os.rename(link, worktree_file)
    except OSError:
        os.unlink(link)
        raise


def _stage_links(repo: _Repo, paths: Sequence[str]) -> None:
    """Stage the links; their blobs go into one pack of ours first (not one loose object each),
    then ``update-index --info-only`` records them with their stat data, writing no object."""
    options = ["--add", "-z", "--stdin"]
    if uses_sha1(repo.top):
        top = os.fsencode(repo.top)
        write_blobs(repo.top, (os.readlink(os.path.join(top, os.fsencode(p))) for p in paths))
        options.insert(0, "--info-only")
    run_git(repo.top, "update-index", *options, stdin="\0".join(paths) + "\0")


# --- the location log ------------------------------------------------------------------------


def _journal_name(log_path: str) -> str:
    """The journal file git-annex keeps for a branch file it has not committed yet."""
    return log_path.replace("_", "__").replace("/", "_")


def _in_journal(key: str, log_path: str, journal: set[str]) -> bool:
    """Does git-annex hold uncommitted news about this key? (Also any journal file naming it.)"""
    return bool(journal) and (
        _journal_name(log_path) in journal or any(key in name for name in journal)
    )


def _newest_status(log: str, uuid: str) -> str | None:
    newest: tuple[float, str] | None = None
    for line in log.splitlines():
        parts = line.split()
        if len(parts) != 3 or parts[2] != uuid:
            continue
        try:
            when = float(parts[0].rstrip("s"))
        except ValueError:
            continue
        if newest is None or when >= newest[0]:
            newest = (when, parts[1])
    return newest[1] if newest else None


def _branch_files(repo: _Repo) -> set[str]:
    listing = run_git(repo.top, "ls-tree", "-r", "-z", "--name-only", ANNEX_BRANCH, check=False)
    return set(listing.split("\0"))


def _read_branch_files(repo: _Repo, paths: Sequence[str]) -> dict[str, str]:
    """The contents of some files of the git-annex branch, through one ``git cat-file --batch``."""
    if not paths:
        return {}
    proc = subprocess.run(
        ["git", "cat-file", "--batch"],
        cwd=repo.top,
        input="".join(f"{ANNEX_BRANCH}:{path}\n" for path in paths).encode(),
        capture_output=True,
        check=True,
    )
    contents: dict[str, str] = {}
    data = proc.stdout
    position = 0
    for path in paths:
        end = data.index(b"\n", position)
        header = data[position:end].split()
        position = end + 1
        if len(header) == 3:
            size = int(header[2])
            contents[path] = data[position : position + size].decode(errors="replace")
            position += size + 1
    return contents


def record_present(repo: _Repo, logs: dict[str, str], attempts: int = 3) -> None:
    """Record in the location log of each key (``{key: log path}``) that this repository has it.

    New keys get their log in one commit on the git-annex branch, which moves by
    compare-and-swap; keys that git-annex already knows about are left as they are if the log
    says "here" already, and otherwise go through ``git annex setpresentkey``, as do keys the
    journal holds news about.
    """
    journal_dir = os.path.join(repo.git_dir, "annex", "journal")
    journal = set(os.listdir(journal_dir)) if os.path.isdir(journal_dir) else set()
    for _ in range(attempts):
        old = run_git(repo.top, "rev-parse", "--verify", "-q", ANNEX_BRANCH, check=False).strip()
        existing = _branch_files(repo) if old else set()
        through_git_annex = {key for key, log in logs.items() if _in_journal(key, log, journal)}
        known = [k for k, log in logs.items() if log in existing and k not in through_git_annex]
        current = _read_branch_files(repo, [logs[k] for k in known])
        through_git_annex |= {
            key for key in known if _newest_status(current.get(logs[key], ""), repo.uuid) != "1"
        }
        new = {
            key: log
            for key, log in logs.items()
            if log not in existing and key not in through_git_annex
        }
        if not new or _commit_new_logs(repo, old, new):
            break
    else:
        lgr.debug("the git-annex branch kept moving; recording through git-annex")
        through_git_annex = set(logs)
    if through_git_annex:
        _set_present(repo, sorted(through_git_annex))


def _set_present(repo: _Repo, keys: Iterable[str]) -> None:
    """``git annex setpresentkey`` for the keys: one batch process."""
    answers = _batch(repo.top, ["setpresentkey", "--batch"], (f"{k} {repo.uuid} 1" for k in keys))
    failed = [answer for answer in answers if not answer.endswith(" ok")]
    if failed:
        raise GitError(f"git annex setpresentkey failed in {repo.top}: {failed[0]}")


def _commit_new_logs(repo: _Repo, old: str, new: dict[str, str]) -> bool:
    """One commit on the git-annex branch with a log for each new key; False if the branch moved."""
    now = time.time_ns()
    line = f"{now // 10**9}.{now % 10**9:09d}s 1 {repo.uuid}\n".encode()
    ident = git_ident(repo.top, "GIT_COMMITTER_IDENT")
    parts = [
        b"commit %s\ncommitter %s\ndata 6\nupdate\n" % (ANNEX_WORK_REF.encode(), ident),
        b"from %s\n" % old.encode() if old else b"",
    ]
    for log in sorted(set(new.values())):
        parts.append(b"M 100644 inline %s\ndata %d\n%s\n" % (log.encode(), len(line), line))
    parts.append(b"\ndone\n")
    fast_import(repo.top, b"".join(parts))
    commit = run_git(repo.top, "rev-parse", ANNEX_WORK_REF).strip()
    run_git(repo.top, "update-ref", "-d", ANNEX_WORK_REF, check=False)
    try:
        run_git(repo.top, "update-ref", "-m", "datalad-slurm: finish", ANNEX_BRANCH, commit, old)
    except GitError:
        return False
    return True
