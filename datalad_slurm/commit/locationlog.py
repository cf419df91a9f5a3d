"""The git-annex branch for the fast annexing path: "present here" recorded in the location logs
of new keys in one commit on the branch (compare-and-swap), and ``git annex setpresentkey``
for keys git-annex already knows or has journal news about; the facts of the repository
(:class:`AnnexedRepo`) and git-annex's batch commands (:func:`annex_batch`), which
:mod:`datalad_slurm.commit.annexing` uses too."""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from datalad_slurm.git.catfile import read_objects
from datalad_slurm.git.runner import GitError, fast_import, git_bytes, git_ident, run_git
from datalad_slurm.jobs.schema import REGISTRY_DIRNAME

lgr = logging.getLogger("datalad.slurm.annexing")

#: where fast-import builds the git-annex branch's commit before the branch moves to it
ANNEX_WORK_REF = "refs/datalad-slurm/git-annex"
ANNEX_BRANCH = "refs/heads/git-annex"


@dataclass
class AnnexedRepo:
    """The facts of a repository the fast path runs in."""

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


def annex_batch(
    top: str, command: Sequence[str], lines: Iterable[str], separator: str = "\n"
) -> list[str]:
    """One git-annex batch process over ``lines``; its answers, one per line."""
    items = list(lines)
    what = f"git annex {command[0]}"
    out = git_bytes(
        top,
        ["annex", *command],
        "".join(item + separator for item in items).encode("utf-8", "surrogateescape"),
        what=what,
    )
    answers = out.decode("utf-8", "surrogateescape").split("\n")
    if len(answers) < len(items):
        raise GitError(f"{what} failed in {top}: it answered {len(answers)} of {len(items)}")
    return answers[: len(items)]


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


def _branch_files(repo: AnnexedRepo) -> set[str]:
    listing = run_git(repo.top, "ls-tree", "-r", "-z", "--name-only", ANNEX_BRANCH, check=False)
    return set(listing.split("\0"))


def _read_branch_files(repo: AnnexedRepo, paths: Sequence[str]) -> dict[str, str]:
    """The contents of some files of the git-annex branch, through one ``git cat-file --batch``."""
    found = read_objects(repo.top, [f"{ANNEX_BRANCH}:{path}" for path in paths])
    prefix = len(ANNEX_BRANCH) + 1
    return {name[prefix:]: content.decode(errors="replace") for name, content in found.items()}


def record_present(repo: AnnexedRepo, logs: dict[str, str], attempts: int = 3) -> None:
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
        set_present(repo, sorted(through_git_annex))


def set_present(repo: AnnexedRepo, keys: Iterable[str]) -> None:
    """``git annex setpresentkey`` for the keys: one batch process."""
    answers = annex_batch(
        repo.top, ["setpresentkey", "--batch"], (f"{k} {repo.uuid} 1" for k in keys)
    )
    failed = [answer for answer in answers if not answer.endswith(" ok")]
    if failed:
        raise GitError(f"git annex setpresentkey failed in {repo.top}: {failed[0]}")


def _commit_new_logs(repo: AnnexedRepo, old: str, new: dict[str, str]) -> bool:
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
