"""A job that runs in a scratch folder outside the dataset: ``schedule --alt-dir DIR``.

datalad-slurm 0.2.8's semantics: DIR mirrors the dataset's layout, the dataset's path ``p``
is ``DIR/p`` there.  ``schedule`` copies the job's inputs to their places in DIR and runs the
submit command in ``DIR/<pwd>``, so the job (and Slurm, for log names relative to its work
folder) writes there; ``finish`` brings the outputs and those logs back to the same places in
the dataset and commits them.

Nothing here loses the scratch copy before the commit exists: a job's files are *copied*
back (each into a file beside its place, then renamed over it, so that nothing is ever
written through an annex link, and a killed copy leaves no half file under the real name),
committed, and only then removed from DIR (:func:`clear`).  A ``finish`` killed at any
moment finds the scratch copy whole and copies again.  A job that failed, or is closed,
keeps its scratch files as they are.  No git here: the committer decides what is committed.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import stat
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from datalad_slurm.errors import DataladSlurmError
from datalad_slurm.globs import DOT, hits, in_git_dir, is_glob
from datalad_slurm.paths import overlaps

#: what the scratch folder is called in messages (the option that names it)
OPTION = "--alt-dir"
#: the temporary name of a file being copied back, beside its place (``.<name>`` + this)
TMP_SUFFIX = ".datalad-slurm-tmp"
#: bytes per read while copying
_BLOCK = 1 << 20


class AltDirError(DataladSlurmError, RuntimeError):
    """The scratch folder cannot be used, or a copy failed; the message says what to do."""


def scratch_root(given: str, dataset_path: str, cwd: str | None = None) -> str:
    """The scratch folder (resolved, absolute) for ``--alt-dir GIVEN``.

    It must exist (a typo must not create a folder somewhere) and lie outside the dataset,
    and the dataset must not lie inside it (the mirror would reach into the dataset)."""
    root = os.path.realpath(os.path.join(cwd or os.getcwd(), os.path.expanduser(given)))
    if not os.path.isdir(root):
        raise AltDirError(
            f"{OPTION} {given}: there is no such folder; create it first (a scratch folder "
            "outside the dataset)"
        )
    dataset = os.path.realpath(dataset_path)
    if _within(root, dataset) or _within(dataset, root):
        where = "lies inside" if _within(root, dataset) else "holds"
        raise AltDirError(
            f"{OPTION} {given} {where} the dataset at {dataset_path}: name a scratch folder "
            "outside the dataset that does not hold it"
        )
    return root


def _within(path: str, folder: str) -> bool:
    return path == folder or path.startswith(folder.rstrip("/") + "/")


def place(root: str, relative: str) -> str:
    """The scratch folder's place of a dataset-relative path (``.``: the folder itself)."""
    return root if relative in ("", DOT) else os.path.join(root, relative)


def to_dataset(path: str, root: str, dataset_path: str) -> str:
    """An absolute path as the dataset's: one inside the scratch folder is mapped to the
    same place in the dataset; any other is returned as it is."""
    normal = os.path.normpath(path)
    if normal == root:
        return dataset_path
    if normal.startswith(root.rstrip("/") + "/"):
        return os.path.join(dataset_path, normal[len(root.rstrip("/")) + 1 :])
    return path


def check_outputs(outputs: Sequence[str]) -> None:
    """Outputs a job run elsewhere may have: named paths, never the whole dataset (finish
    would bring the whole scratch folder into the dataset, then empty it)."""
    if DOT in outputs:
        raise AltDirError(
            f"with {OPTION} the outputs must be named: the whole dataset ('.') cannot be an "
            "output of a job that runs in a scratch folder; name the files or folders it writes"
        )


def holds_files(path: str) -> bool:
    """Anything but (nested) empty folders at ``path``."""
    if not os.path.lexists(path):
        return False
    if os.path.islink(path) or not os.path.isdir(path):
        return True
    for _folder, _subfolders, files in os.walk(path):
        if files:
            return True
    # a symlink to a folder counts as a file for os.walk: listed in subfolders, not followed
    return any(
        os.path.islink(os.path.join(folder, name))
        for folder, subfolders, _ in os.walk(path)
        for name in subfolders
    )


def left_over(root: str, outputs: Sequence[str], inputs: Sequence[str]) -> list[str]:
    """The outputs that the scratch folder holds files of already (an earlier job's, not
    copied back): the job would find them, and ``finish`` would take them for its own.  What
    is (in) an input, or holds one, is the input's copy."""
    found = []
    for output in outputs:
        if any(
            holds_files(place(root, candidate))
            and not any(overlaps(candidate, given) for given in inputs)
            for candidate in _in_scratch(root, output)
        ):
            found.append(output)
    return found


def _in_scratch(root: str, output: str) -> list[str]:
    """What a declared output stands for in the scratch folder: itself, a glob its hits."""
    if not is_glob(output):
        return [output]
    return [h.rstrip("/") for h in hits(output, root) if h.rstrip("/") and not in_git_dir(h)]


def make_folders(dataset_path: str, root: str, folders: Iterable[str]) -> None:
    """These folders of the dataset (dataset-relative; those it has) made in the scratch
    folder as well: Slurm does not make the folder of a log file, and the job finds the
    layout it would find in the dataset."""
    for folder in folders:
        if folder not in ("", DOT) and os.path.isdir(os.path.join(dataset_path, folder)):
            target = place(root, folder)
            try:
                os.makedirs(target, exist_ok=True)
            except OSError as exc:
                raise AltDirError(
                    f"the folder {target} cannot be made in the scratch folder ({exc.strerror}); "
                    "remove what is in its way"
                ) from exc


def copy_inputs(dataset_path: str, root: str, inputs: Sequence[str]) -> list[str]:
    """Copy each input (a dataset-relative path; a folder with all it holds, ``.git``
    left out) to its place in the scratch folder; returns the files copied.

    A file whose copy there has the same size and modification time is not copied again
    (``cp -u`` in 0.2.8).  An input without content here (an annexed file not obtained) is
    taken as ready if the scratch folder has it; otherwise it is an error.
    """
    copied: list[str] = []
    for relative in inputs:
        source = place(dataset_path, relative)
        target = place(root, relative)
        try:
            os.makedirs(os.path.dirname(target), exist_ok=True)
            _copy_in(source, target, relative, copied, set())
        except OSError as exc:
            raise AltDirError(
                f"input {relative!r} could not be copied to the scratch folder {root}: {exc}"
            ) from exc
    return copied


def _copy_in(source: str, target: str, relative: str, copied: list[str], seen: set[int]) -> None:
    try:
        info = os.stat(source)
    except FileNotFoundError:
        if os.path.lexists(target) and not os.path.isdir(target):
            return  # ready in the scratch folder already
        raise AltDirError(
            f"input {relative!r} has no content here (an annexed file not obtained, or a "
            "symlink to nothing) and the scratch folder has no copy of it: obtain it "
            "('datalad get'), or leave out --assume-ready"
        ) from None
    if stat.S_ISDIR(info.st_mode):
        if info.st_ino in seen:
            return  # a symlink loop
        seen = {*seen, info.st_ino}
        if os.path.islink(target) or (os.path.lexists(target) and not os.path.isdir(target)):
            raise AltDirError(
                f"the scratch folder holds a file at {target}, where the input folder "
                f"{relative!r} is to go; remove it"
            )
        os.makedirs(target, exist_ok=True)
        # the dataset's (or a subdataset's) git folder is no input
        for name in [n for n in _names(source) if n != ".git"]:
            _copy_in(
                os.path.join(source, name),
                os.path.join(target, name),
                name if relative in ("", DOT) else f"{relative}/{name}",
                copied,
                seen,
            )
        return
    if _same_file(info, target):
        return
    if _real_folder(target):
        raise AltDirError(
            f"the scratch folder holds a folder at {target}, where the input file "
            f"{relative!r} is to go; remove it"
        )
    _copy_file(source, info, target, f".{os.path.basename(target)}.{uuid.uuid4().hex}")
    copied.append(relative)


def _names(folder: str) -> list[str]:
    with os.scandir(folder) as entries:
        return sorted(entry.name for entry in entries)


def _real_folder(path: str) -> bool:
    """A folder, not a symlink to one."""
    return os.path.isdir(path) and not os.path.islink(path)


def _same_file(info: os.stat_result, target: str) -> bool:
    """Whether the copy at ``target`` is current: a file of the same size and time."""
    try:
        there = os.lstat(target)
    except FileNotFoundError:
        return False
    return (
        stat.S_ISREG(there.st_mode)
        and there.st_size == info.st_size
        and there.st_mtime_ns == info.st_mtime_ns
    )


def _copy_file(source: str, info: os.stat_result, target: str, temporary_name: str) -> None:
    """Copy the content of ``source`` into a new file beside ``target`` and rename it over
    ``target`` (a file or symlink there is replaced, never written through).

    The copy is writable by its owner (an annexed input's object is not), keeps the
    executable bits (under the umask) and the modification time."""
    temporary = os.path.join(os.path.dirname(target), temporary_name)
    with contextlib.suppress(FileNotFoundError):
        os.unlink(temporary)
    mode = 0o777 if info.st_mode & 0o111 else 0o666
    handle = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, mode)
    try:
        with os.fdopen(handle, "wb") as out, open(source, "rb") as stream:
            shutil.copyfileobj(stream, out, _BLOCK)
        os.utime(temporary, ns=(info.st_atime_ns, info.st_mtime_ns))
        os.rename(temporary, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)
        raise


@dataclass
class BroughtBack:
    """What :func:`bring_back` copied into the dataset."""

    #: dataset-relative paths copied back (an output or a glob's hit, a log file)
    paths: list[str] = field(default_factory=list)
    #: declared outputs of which the scratch folder held nothing (a glob: no hit there)
    missing: list[str] = field(default_factory=list)


def bring_back(
    dataset_path: str, root: str, outputs: Sequence[str], logs: Sequence[str]
) -> BroughtBack:
    """Copy the job's outputs (a glob: its hits in the scratch folder) and log files
    (dataset-relative paths) from the scratch folder to their places in the dataset.

    A folder is merged into the dataset's: files the job did not write stay.  Symlinks are
    followed (``cp -L`` in 0.2.8); one that points to nothing is copied as the link."""
    if not os.path.isdir(root):
        # not mounted here, or removed: nothing can be told about the outputs, the job waits
        raise AltDirError(
            f"its scratch folder {root} ({OPTION}) is not there; run 'datalad finish' where it "
            "is reachable (the job stays open)"
        )
    brought = BroughtBack()
    dataset = os.path.realpath(dataset_path)
    for output in outputs:
        found = [p for p in _in_scratch(root, output) if os.path.lexists(place(root, p))]
        if not found:
            brought.missing.append(output)
        for relative in found:
            _bring(dataset, root, relative, brought)
    for relative in logs:
        if relative not in brought.paths and os.path.lexists(place(root, relative)):
            _bring(dataset, root, relative, brought)
    return brought


def _bring(dataset: str, root: str, relative: str, brought: BroughtBack) -> None:
    source, target = place(root, relative), os.path.join(dataset, relative)
    parent = os.path.dirname(target)
    try:
        os.makedirs(parent, exist_ok=True)
        if not _within(os.path.realpath(parent), dataset):
            raise AltDirError(
                f"{relative!r} would be copied to {os.path.realpath(parent)}, outside the "
                f"dataset (a symlink on the way); replace the symlink by a folder"
            )
        _copy_out(source, target, relative, set())
    except OSError as exc:
        raise AltDirError(
            f"{relative!r} could not be copied back from the scratch folder {root}: {exc}; "
            "the scratch copy is left as it is"
        ) from exc
    brought.paths.append(relative)


def _copy_out(source: str, target: str, relative: str, seen: set[int]) -> None:
    try:
        info = os.stat(source)
    except FileNotFoundError:  # a symlink to nothing: the link itself
        _replace_with_link(os.readlink(source), target)
        return
    if stat.S_ISDIR(info.st_mode):
        if info.st_ino in seen:
            return
        seen = {*seen, info.st_ino}
        if os.path.islink(target) or (os.path.lexists(target) and not os.path.isdir(target)):
            os.unlink(target)  # a file (or link) of the dataset where the job made a folder
        os.makedirs(target, exist_ok=True)
        for name in _names(source):
            _copy_out(
                os.path.join(source, name), os.path.join(target, name), f"{relative}/{name}", seen
            )
        return
    if _real_folder(target):
        raise AltDirError(
            f"{relative!r} is a folder in the dataset and a file in the scratch folder; "
            f"remove the folder ('git rm -r {relative}'), then run 'datalad finish' again"
        )
    _copy_file(source, info, target, f".{os.path.basename(target)}{TMP_SUFFIX}")


def _replace_with_link(destination: str, target: str) -> None:
    temporary = os.path.join(os.path.dirname(target), f".{os.path.basename(target)}{TMP_SUFFIX}")
    with contextlib.suppress(FileNotFoundError):
        os.unlink(temporary)
    os.symlink(destination, temporary)
    os.rename(temporary, target)


def clear(root: str, paths: Iterable[str]) -> list[str]:
    """Remove these dataset-relative paths (a glob: its hits) from the scratch folder, once
    their commit exists; what could not be removed, each with why.  Never the scratch folder
    itself."""
    problems = []
    for path in paths:
        for relative in _in_scratch(root, path):
            if relative in ("", DOT) or relative.startswith("../") or relative == "..":
                continue
            target = place(root, relative)
            try:
                _remove(target)
            except OSError as exc:
                problems.append(f"{target}: {exc.strerror or exc}")
    return problems


def _remove(target: str) -> None:
    if not os.path.lexists(target):
        return
    if os.path.islink(target) or not os.path.isdir(target):
        os.unlink(target)
        return
    try:
        shutil.rmtree(target)
    except PermissionError:
        # a folder the job made read-only keeps its entries: open the folders up, try again
        _open_up(target)
        shutil.rmtree(target)


def _open_up(folder: str) -> None:
    mode = os.lstat(folder).st_mode
    if mode & 0o700 != 0o700:
        os.chmod(folder, stat.S_IMODE(mode) | 0o700)
    with os.scandir(folder) as entries:
        subfolders = [e.path for e in entries if e.is_dir(follow_symlinks=False)]
    for subfolder in subfolders:
        _open_up(subfolder)
