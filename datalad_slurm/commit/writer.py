"""Many commits at once: stage files in one go, then write one commit per job in one pack.

The files of every job of a drain are staged together (for an annex dataset
new files the annex takes as they are go in through :mod:`datalad_slurm.commit.annexing`,
the others through one ``git annex add``, so ``annex.largefiles`` and
``.gitattributes`` decide exactly as for ``datalad save``; ``git add`` for a
plain git dataset).  The index then says what changed; each job's commit gets
the changes under its own paths, on top of the previous job's commit, all
written as one pack by :mod:`datalad_slurm.git.trees` (``git fast-import`` in
SHA-256 repositories).  HEAD moves once, by compare-and-swap, to the last of
them.  Nothing here knows about jobs: callers pass paths and messages.
"""

from __future__ import annotations

import json
import logging
import os
import posixpath
import subprocess
import tempfile
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

from datalad_slurm.commit.annexing import annex_new_files
from datalad_slurm.git.pack import uses_sha1
from datalad_slurm.git.runner import GitError, fast_import, git_ident, run_git
from datalad_slurm.git.trees import Change, CommitChain, write_pack

lgr = logging.getLogger("datalad.slurm.commitwriter")

#: where fast-import builds the commits before HEAD moves to them
WORK_REF = "refs/datalad-slurm/finish"
#: bytes of paths per command line (well below Linux's 2 MiB ARG_MAX)
ARGV_BUDGET = 256 * 1024


@dataclass
class WorktreeChanges:
    """Files under some paths that differ from the index, as ``datalad status`` sees them."""

    #: untracked (not ignored) or modified files
    to_add: list[str]
    #: tracked files that are gone from the worktree
    deleted: list[str]
    #: those of ``to_add`` that git does not track yet
    untracked: list[str] = field(default_factory=list)


def chunked(paths: Sequence[str], budget: int = ARGV_BUDGET) -> Iterable[list[str]]:
    """Split paths into command-line sized groups."""
    chunk: list[str] = []
    size = 0
    for path in paths:
        if chunk and size + len(path) + 1 > budget:
            yield chunk
            chunk, size = [], 0
        chunk.append(path)
        size += len(path) + 1
    if chunk:
        yield chunk


#: a folder holding more of the paths than this stands for them in a pathspec
PATHSPEC_FANOUT = 16


def covering_paths(paths: Iterable[str], fanout: int = PATHSPEC_FANOUT) -> list[str]:
    """Few pathspecs that cover ``paths``, for git commands over many jobs' files.

    Git matches every index entry and every file found against every pathspec: 10,000 job
    folders as 10,000 pathspecs cost ``git ls-files`` and ``git diff-index`` seconds each,
    their common folder milliseconds. So paths inside another given path are dropped, and a
    folder (never the dataset's root) stands for its entries when it holds more than
    ``fanout`` of them. The folder may hold other files too: callers keep only what is theirs.
    """
    current = _outermost({path.rstrip("/") or "." for path in paths})
    while True:
        below: dict[str, int] = {}
        for path in current:
            parent = posixpath.dirname(path)
            while parent:
                below[parent] = below.get(parent, 0) + 1
                parent = posixpath.dirname(parent)
        crowded = [folder for folder, count in below.items() if count > fanout]
        if not crowded:
            return current
        # the deepest crowded folders first, so that a folder stands for no more than it must
        depth = max(folder.count("/") for folder in crowded)
        current = _outermost(
            {*current, *(folder for folder in crowded if folder.count("/") == depth)}
        )


def _outermost(paths: set[str]) -> list[str]:
    """The paths that lie in none of the others."""
    if "." in paths:
        return ["."]
    kept: set[str] = set()
    for path in sorted(paths, key=lambda p: p.count("/")):  # ancestors come first
        parent = posixpath.dirname(path)
        while parent and parent not in kept:
            parent = posixpath.dirname(parent)
        if not parent:
            kept.add(path)
    return sorted(kept)


def _git_over_paths(repo: str, args: Sequence[str], paths: Sequence[str]) -> str:
    return "".join(
        run_git(repo, "--literal-pathspecs", *args, "--", *chunk) for chunk in chunked(paths)
    )


def worktree_changes(repo: str, paths: Sequence[str]) -> WorktreeChanges:
    """Which files under ``paths`` must be added or removed to match the worktree."""
    listing = _git_over_paths(
        repo,
        ["ls-files", "-z", "-t", "--modified", "--others", "--deleted", "--exclude-standard"],
        paths,
    )
    changed: set[str] = set()
    deleted: set[str] = set()
    untracked: set[str] = set()
    for entry in listing.split("\0"):
        if not entry:
            continue
        tag, path = entry[0], entry[2:]
        if tag == "R" or (tag == "C" and _became_folder(repo, path)):
            deleted.add(path)  # a tracked file that is a folder now: its files are "others"
        else:
            changed.add(path)
        if tag == "?":
            untracked.add(path)
    return WorktreeChanges(sorted(changed - deleted), sorted(deleted), sorted(untracked))


def _became_folder(repo: str, path: str) -> bool:
    """A modified tracked file that is a folder now (not a subdataset's, which has a .git)."""
    folder = os.path.join(os.fsencode(repo), os.fsencode(path))
    return (
        os.path.isdir(folder)
        and not os.path.islink(folder)
        and not os.path.lexists(os.path.join(folder, b".git"))
    )


@dataclass
class StagingProblem:
    path: str
    message: str


def stage(
    repo: str, changes: WorktreeChanges, annex: bool, on_file: Callable[[], None] | None = None
) -> list[StagingProblem]:
    """Stage additions (through git-annex if ``annex``) and deletions; returns what failed.

    ``on_file`` is called as git-annex reports each file, for a progress bar.
    """
    problems: list[StagingProblem] = []
    # deletions first: a tracked file that became a folder (or the reverse) is gone from the
    # index before what replaced it comes in, or git refuses the new entries
    if changes.deleted:
        _git_over_paths(repo, ["rm", "--cached", "--quiet", "--ignore-unmatch"], changes.deleted)
    if changes.to_add and annex:
        fast = annex_new_files(repo, changes.untracked, on_file)
        problems.extend(StagingProblem(path, why) for path, why in fast.failed.items())
        done = {*fast.annexed, *fast.failed}
        for chunk in chunked([path for path in changes.to_add if path not in done]):
            problems.extend(_annex_add(repo, chunk, on_file or (lambda: None)))
    elif changes.to_add:
        _git_over_paths(repo, ["add"], changes.to_add)
    return problems


def _annex_add(
    repo: str, files: Sequence[str], on_file: Callable[[], None]
) -> list[StagingProblem]:
    # the options DataLad's save uses: dotfiles are annexed like any other file unless the
    # dataset's largefiles rules say otherwise
    command = [
        "git",
        "annex",
        "add",
        "-c",
        "annex.dotfiles=true",
        "--json",
        "--json-error-messages",
        "--",
        *files,
    ]
    problems = []
    reported = set()
    # a Popen, not git/runner: each JSON line moves the progress bar as git-annex writes it
    with (
        tempfile.TemporaryFile() as errors,
        subprocess.Popen(
            command,
            cwd=repo,
            stdout=subprocess.PIPE,
            stderr=errors,
            encoding="utf-8",
            errors="surrogateescape",
        ) as proc,
    ):
        assert proc.stdout is not None
        for line in proc.stdout:
            try:
                record = json.loads(line)
            except ValueError:
                continue
            on_file()
            reported.add(record.get("file"))
            if not record.get("success", False):
                message = "; ".join(record.get("error-messages") or []) or "git annex add failed"
                problems.append(StagingProblem(record.get("file") or "?", message))
        returncode = proc.wait()
        errors.seek(0)
        stderr = errors.read().decode(errors="replace").strip()
    if returncode != 0 and not problems:
        problems.extend(
            StagingProblem(path, stderr or "git annex add failed")
            for path in files
            if path not in reported
        )
    return problems


def staged_changes(repo: str, head: str, paths: Sequence[str]) -> list[Change]:
    """What the index holds under ``paths`` that HEAD does not."""
    return [change for _old_mode, change in staged_changes_from(repo, head, paths)]


def staged_changes_from(repo: str, head: str, paths: Sequence[str]) -> list[tuple[str, Change]]:
    """:func:`staged_changes`, each with the mode HEAD has for its path (``000000``: none)."""
    raw = _git_over_paths(repo, ["diff-index", "--cached", "-z", "--no-renames", head], paths)
    fields = raw.split("\0")
    changes = []
    for meta, path in zip(fields[0::2], fields[1::2], strict=False):
        if not meta:
            continue
        old_mode, new_mode, _old_sha, new_sha, status = meta.lstrip(":").split(" ")
        if status == "D":
            changes.append((old_mode, Change(path)))
        else:
            changes.append((old_mode, Change(path, new_mode, new_sha)))
    return changes


#: git's modes of a symlink (a locked annexed file) and of a file (an unlocked one's pointer)
LINK_MODE, FILE_MODES = "120000", ("100644", "100755")


def unlocked_since(changes: Sequence[tuple[str, Change]], touched: Iterable[str]) -> list[str]:
    """Files locked in HEAD whose index entry is an unlocked pointer, and that are not among
    ``touched`` (staged anew): outputs that schedule unlocked and the job left alone.

    ``datalad save`` locks them again (``git annex add`` of an unlocked file locks it).
    """
    skip = set(touched)
    return [
        change.path
        for old_mode, change in changes
        if old_mode == LINK_MODE and change.mode in FILE_MODES and change.path not in skip
    ]


def relock(
    repo: str, paths: Sequence[str], on_file: Callable[[], None] | None = None
) -> list[StagingProblem]:
    """Lock unlocked annexed files again, as ``datalad save`` does: ``git annex add``."""
    problems: list[StagingProblem] = []
    for chunk in chunked(paths):
        problems.extend(_annex_add(repo, chunk, on_file or (lambda: None)))
    return problems


def _quote(path: str) -> bytes:
    escaped = path.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    return b'"' + escaped.encode("utf-8", "surrogateescape") + b'"'


def commit_command(
    number: int,
    message: str,
    changes: Sequence[Change],
    idents: tuple[bytes, bytes],
    parent: str | None = None,
    merges: Sequence[str] = (),
) -> bytes:
    """One fast-import ``commit`` (mark ``number``) on :data:`WORK_REF`: its parent (None:
    the previous commit of the stream), further parents (``merges``: shas or ``:marks``) and
    its changes to the first parent's tree."""
    author, committer = idents
    text = message.encode("utf-8", "surrogateescape")
    parts = [
        b"commit %s\nmark :%d\nauthor %s\ncommitter %s\ndata %d\n%s\n"
        % (WORK_REF.encode(), number, author, committer, len(text), text)
    ]
    if parent is not None:
        parts.append(b"from %s\n" % parent.encode())
    parts += [b"merge %s\n" % merge.encode() for merge in merges]
    # removals first, as in write_pack: a file replaced by a folder, or the reverse
    for change in sorted(changes, key=lambda c: not c.deleted):
        if change.deleted:
            parts.append(b"D %s\n" % _quote(change.path))
        else:
            assert change.mode is not None and change.sha is not None
            parts.append(
                b"M %s %s %s\n" % (change.mode.encode(), change.sha.encode(), _quote(change.path))
            )
    parts.append(b"\n")
    return b"".join(parts)


def import_commits(repo: str, commands: Sequence[bytes]) -> list[str]:
    """Feed ``commit`` commands (marks 1 to N) to ``git fast-import``; their shas, in order.
    Nothing points at them afterwards."""
    with tempfile.TemporaryDirectory(prefix="datalad-slurm-") as tmp:
        marks = os.path.join(tmp, "marks")
        fast_import(repo, b"".join([*commands, b"done\n"]), f"--export-marks={marks}")
        with open(marks, encoding="ascii") as stream_in:
            by_mark = dict(line.split() for line in stream_in if line.strip())
    run_git(repo, "update-ref", "-d", WORK_REF, check=False)
    return [by_mark[f":{number}"] for number in range(1, len(commands) + 1)]


def write_commits(repo: str, parent: str, commits: CommitChain) -> list[str]:
    """Write the chain of commits (nothing points at them yet); returns their shas in order.

    In a SHA-1 repository through :mod:`datalad_slurm.git.trees`, whose cost per commit does
    not grow with the size of the folders it changes; otherwise through ``git fast-import``.
    """
    if not commits:
        return []
    author = git_ident(repo, "GIT_AUTHOR_IDENT")
    committer = git_ident(repo, "GIT_COMMITTER_IDENT")
    if uses_sha1(repo):
        return write_pack(repo, parent, commits, author, committer)
    return write_with_fast_import(repo, parent, commits, author, committer)


def write_with_fast_import(
    repo: str, parent: str, commits: CommitChain, author: bytes, committer: bytes
) -> list[str]:
    """:func:`write_commits` through ``git fast-import`` (any object format)."""
    return import_commits(
        repo,
        [
            commit_command(
                number, message, changes, (author, committer), parent if number == 1 else None
            )
            for number, (message, changes) in enumerate(commits, start=1)
        ],
    )


def advance_head(repo: str, old: str, new: str, reason: str) -> None:
    """Move HEAD (or the branch it names) from ``old`` to ``new``; fails if HEAD moved meanwhile."""
    run_git(repo, "update-ref", "-m", reason, "HEAD", new, old)


def run_auto_maintenance(repo: str) -> None:
    """What ``git commit`` does after every commit: ``git maintenance run --auto``.

    Commits written by plumbing (our pack, fast-import) skip it, so without this call a
    dataset finished by cron for months would gather one pack per drain and every loose object
    git-annex writes, and every git command would slow down. Git decides whether there is
    anything to do (``gc.auto``, ``gc.autoPackLimit``, ``maintenance.auto``) and, with
    ``gc.autoDetach`` (the default), does it in the background. A failure is reported as a
    warning, as git commit prints it; the commits stand.
    """
    try:
        run_git(repo, "maintenance", "run", "--auto", "--quiet")
    except GitError as exc:
        lgr.warning("%s (the commits are made; git's housekeeping was not)", exc)
