"""Globs in declared inputs and outputs, read as ``datalad run`` reads them.

``datalad run`` (datalad/support/globbedpaths.py, ``GlobbedPaths``) passes every
declared path to Python's ``glob.glob(..., recursive=True)`` in the directory the
command runs in: the hits of a pattern come sorted, a folder's trailing slash kept.
A pattern without hits stands for the hits of its longest leading folder that has
any (a subdataset not yet installed), and otherwise for itself, as given; the
dataset itself, ``.``, is never globbed. What a run record keeps is the patterns
as given, or with ``--expand`` these expansions (the inputs' before the command
runs, the outputs' after it).

Here the same rules work on dataset-relative patterns (``paths.normalise``), and
:func:`reserved_path` gives the path a pattern holds in the registry while its job
is open: its fixed leading folder, the components before the first one with a glob
character (``out/g*`` holds ``out``; ``*.txt`` holds the whole dataset, ``.``).
"""

from __future__ import annotations

import fnmatch
import glob
import os
from collections.abc import Collection, Iterable, Sequence

#: a declared path that names the dataset itself
DOT = "."


def is_glob(path: str) -> bool:
    """True when ``glob.glob`` would read ``path`` as a pattern (``*``, ``?`` or ``[``)."""
    return glob.has_magic(path)


def reserved_path(path: str) -> str:
    """The dataset-relative path a declared output holds: a glob's fixed leading folder
    (``.`` when its first component is a glob), any other path itself."""
    if not is_glob(path):
        return path
    fixed: list[str] = []
    for component in path.rstrip("/").split("/"):
        if is_glob(component):
            break
        fixed.append(component)
    return "/".join(fixed) or DOT


def reserved_paths(paths: Iterable[str]) -> list[str]:
    """:func:`reserved_path` of each, in order, without repeats."""
    result: list[str] = []
    for path in paths:
        reserved = reserved_path(path)
        if reserved not in result:
            result.append(reserved)
    return result


def _shown(hit: str, pwd: str) -> str:
    """A hit as ``datalad run`` lists it: normalised, a folder's trailing slash kept, a
    leading ``./`` the pattern had kept."""
    folder = "" if os.path.basename(hit) else os.sep
    normal = os.path.relpath(os.path.join(pwd, hit), pwd) + folder
    return hit if hit == os.curdir + os.sep + normal else normal


def _leading_patterns(pattern: str) -> list[str]:
    """The pattern's leading folders that still hold a glob, longest first (where
    ``datalad run`` looks when the whole pattern has no hit)."""
    head, tail = os.path.split(pattern)
    if not tail:
        head, tail = os.path.split(head)
    found: list[str] = []
    magic = is_glob(tail)
    while head:
        parent, tail = os.path.split(head)
        if magic and not is_glob(head):
            break
        if not magic and is_glob(tail):
            magic = True
        if magic:
            found.append(head + os.sep)
        head = parent
    return found


def hits(pattern: str, pwd: str) -> list[str]:
    """What the pattern matches in ``pwd``, sorted, relative to it (``expand_strict``)."""
    return sorted(_shown(hit, pwd) for hit in glob.glob(pattern, root_dir=pwd, recursive=True))


def _expand_one(pattern: str, pwd: str) -> list[str]:
    for candidate in (pattern, *_leading_patterns(pattern)):
        found = hits(candidate, pwd)
        if found:
            return found
    return [pattern]


def expand(patterns: Sequence[str], pwd: str, dot: bool = True) -> list[str]:
    """``GlobbedPaths(patterns, pwd).expand(dot=dot)``: each pattern's hits, else its
    leading folder's, else itself; ``.`` (first, once) only with ``dot``."""
    dots = [p for p in patterns if p.strip() == DOT]
    paths = [DOT] if dot and dots else []
    for given in patterns:
        if given.strip() == DOT:
            continue
        pattern = os.path.relpath(given, start=pwd) if os.path.isabs(given) else given
        paths.extend(_expand_one(pattern, pwd))
    return paths


def matches(pattern: str, path: str) -> bool:
    """Whether ``glob.glob(pattern, recursive=True)`` would list ``path`` if it existed
    (as a folder, for a pattern ending in ``/``).

    Component by component, as glob walks: ``fnmatch`` within a component, ``**`` for
    any number of folders, and names starting with ``.`` only for a component that does
    too. For paths that are gone from disk (a tracked file the job deleted).
    """
    return _match(pattern.rstrip("/").split("/"), path.rstrip("/").split("/"))


def _match(patterns: list[str], names: list[str]) -> bool:
    if not patterns:
        return not names
    first, rest = patterns[0], patterns[1:]
    if first == "**":
        for skip in range(len(names) + 1):
            if skip and names[skip - 1].startswith("."):
                return False
            if _match(rest, names[skip:]):
                return True
        return False
    if not names:
        return False
    name = names[0]
    if not is_glob(first):
        same = first == name
    else:
        hidden = name.startswith(".") and not first.startswith(".")
        same = not hidden and fnmatch.fnmatchcase(name, first)
    return same and _match(rest, names[1:])


def _covers(pattern: str, path: str) -> bool:
    """Whether a file that is gone was the pattern's, or inside a folder that was."""
    parts = path.split("/")
    within = ["/".join(parts[:end]) for end in range(1, len(parts) + 1)]
    if pattern.endswith("/"):
        within.pop()  # the file itself is no folder
    return any(matches(pattern, candidate) for candidate in within)


def in_git_dir(path: str) -> bool:
    """A dataset-relative path inside ``.git`` (which ``.g*`` would match too)."""
    return path == ".git" or path.startswith(".git/")


def output_paths(root: str, outputs: Sequence[str], gone: Collection[str] = ()) -> list[str]:
    """The dataset-relative paths a job's declared outputs stand for at finish: a path as
    it is; a glob's hits (``expand_strict``), a file whose very name is the pattern, and
    the tracked files gone from disk (``gone``: the job deleted them) that it matched, or
    that lay in a folder it matched.
    """
    found: list[str] = []
    for output in outputs:
        if not is_glob(output):
            candidates = [output]
        else:
            candidates = [hit.rstrip("/") for hit in hits(output, root)]
            literal = output.rstrip("/")
            if os.path.lexists(os.path.join(root, literal)):
                candidates.append(literal)
            candidates += sorted(path for path in gone if _covers(output, path))
        for path in candidates:
            if path and not in_git_dir(path) and path not in found:
                found.append(path)
    return found


def unmatched(root: str, outputs: Sequence[str]) -> list[str]:
    """The declared outputs that name nothing on disk: a path that does not exist, a glob
    without a hit (and no file of that very name)."""
    return [
        output
        for output in outputs
        if not os.path.lexists(os.path.join(root, output.rstrip("/") or DOT))
        and not (is_glob(output) and any(not in_git_dir(h) for h in hits(output, root)))
    ]
