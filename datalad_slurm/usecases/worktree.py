"""The dataset's worktree made ready for a job, as ``datalad run`` makes it: the inputs
obtained (``datalad get``; a glob by its hits) and the outputs that hold what git tracks
unlocked (under the dataset's write lock); and, for a dry run, what that would get and unlock
and which inputs are missing or have no copy anywhere (``git annex find`` / ``whereis``).
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Sequence
from typing import Any

from datalad_slurm.git.runner import git_dir, run_git
from datalad_slurm.globs import output_paths
from datalad_slurm.jobs.statedir import clear_interrupted_writes, git_lock, git_writes
from datalad_slurm.paths import lies_in
from datalad_slurm.usecases.request import ScheduleError


def prepare_worktree(ds: Any, inputs: Sequence[str], outputs: Sequence[str]) -> None:
    """Obtain inputs (globs by their hits) and unlock outputs that exist (globs: what
    they match now), as ``datalad run`` does."""
    root = str(ds.path)
    if inputs:
        results = ds.get(
            path=[os.path.join(root, p) for p in inputs],
            on_failure="ignore",
            return_type="list",
            result_renderer="disabled",
        )
        failed = [r for r in results if r.get("status") in ("error", "impossible")]
        if failed:
            details = "; ".join(f"{r.get('path')}: {r.get('message')}" for r in failed)
            raise ScheduleError(f"could not obtain input(s): {details}")
    existing = [os.path.join(root, p) for p in outputs_to_unlock(ds, outputs)]
    if existing:
        with git_lock(root):
            clear_interrupted_writes(root)
            with git_writes(root):
                results = ds.unlock(
                    path=existing,
                    on_failure="ignore",
                    return_type="list",
                    result_renderer="disabled",
                )
        failed = [r for r in results if r.get("status") == "error"]
        if failed:
            details = "; ".join(f"{r.get('path')}: {r.get('message')}" for r in failed)
            raise ScheduleError(f"could not unlock output(s): {details}")


def outputs_to_unlock(ds: Any, outputs: Sequence[str]) -> list[str]:
    """The outputs that exist and hold what git tracks: those schedule unlocks."""
    root = str(ds.path)
    existing = [
        os.path.join(root, p)
        for p in output_paths(root, outputs)
        if _may_hold_files(os.path.join(root, p))
    ]
    # only what git tracks can be (and needs to be) unlocked
    tracked = run_git(root, "ls-files", "-z", "--", *existing).split("\0") if existing else []
    return [os.path.relpath(path, root) for path in existing if _holds_tracked(root, path, tracked)]


def _may_hold_files(path: str) -> bool:
    """Anything there that git could track (a missing path or an empty folder holds nothing)?"""
    if os.path.isdir(path) and not os.path.islink(path):
        with os.scandir(path) as entries:
            return any(True for _ in entries)
    return os.path.lexists(path)


def _holds_tracked(root: str, path: str, tracked: Sequence[str]) -> bool:
    relative = os.path.relpath(path, root)
    if relative == ".":
        return any(tracked)
    return any(lies_in(t, relative) for t in tracked if t)


def inputs_to_get(ds: Any, inputs: Sequence[str]) -> tuple[list[str], list[str], list[str]]:
    """Inputs as ``datalad get`` would meet them: (missing, content to get, content nowhere).

    An input inside a subdataset that is not installed counts as there (get installs it).
    """
    if not inputs:
        return [], [], []
    root = str(ds.path)
    absent = [
        os.path.relpath(r["path"], root)
        for r in ds.subdatasets(
            state="absent", on_failure="ignore", return_type="list", result_renderer="disabled"
        )
        if r.get("path")
    ]
    missing: list[str] = []
    present: list[str] = []
    for path in inputs:
        if any(lies_in(path, a) for a in absent):
            continue
        (present if os.path.lexists(os.path.join(root, path)) else missing).append(path)
    if not present or not os.path.exists(os.path.join(git_dir(root), "annex")):
        return missing, [], []
    absent_content = _annex_json(root, "find", ["--not", "--in=here"], present)
    whereis = _annex_json(root, "whereis", [], absent_content) if absent_content else {}
    nowhere = [f for f in absent_content if not whereis.get(f)]
    return missing, [f for f in absent_content if f not in nowhere], nowhere


def _annex_json(root: str, command: str, options: Sequence[str], paths: Sequence[str]) -> Any:
    """``git annex find`` (the files) or ``whereis`` (file -> its copies) as JSON."""
    proc = subprocess.run(
        ["git", "annex", command, *options, "--json", "--", *paths],
        cwd=root,
        capture_output=True,
        text=True,
        check=False,
    )
    records = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    if command == "find":
        return [r["file"] for r in records if "file" in r]
    return {r["file"]: r.get("whereis") or [] for r in records if "file" in r}
