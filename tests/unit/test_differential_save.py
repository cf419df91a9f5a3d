"""finish commits exactly what ``datalad save`` commits: twin datasets, one matrix of settings.

For each configuration one dataset is made and copied (``cp -a``: the same dataset id and
annex uuid, so trees and ``whereis`` compare without translation). The same job runs in both
copies: new files of many kinds, deletions, modifications of locked and unlocked files. In one
copy ``finish`` commits the job (the real drain, a recording backend in place of Slurm), in
the other ``datalad save`` commits the same paths, with finish's env.json copied over. The two
HEAD trees must be identical, path by path: mode, blob, and for annexed files their key.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import subprocess
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from datalad.api import Dataset, create

from datalad_slurm import settings
from datalad_slurm.commit.message import registration_token
from datalad_slurm.jobs.job import Job
from datalad_slurm.jobs.statedir import open_registry
from datalad_slurm.slurm.state import JobState, JobStatus, TaskState
from datalad_slurm.usecases.finish import finish
from datalad_slurm.usecases.finish_request import FinishRequest
from tests.unit.conftest import git
from tests.unit.test_events import RecordingBackend

#: git and git-annex only: the host and forky-jsoncli tiers (tests/conftest.py, AGNOSTIC_TIERS)
pytestmark = pytest.mark.slurm_agnostic

JOB_ID = 42
LOG = f"slurm-{JOB_ID}.out"
ENV_JSON = f"slurm-job-{JOB_ID}.env.json"
#: what the job declares; its log and env.json go beside the dataset's top
OUTPUTS = ["out"]


#: files in the dataset before the job: path -> content (all under the job's output folder)
def _bytes(seed: int, size: int) -> bytes:
    return random.Random(seed).randbytes(size)


#: files in the dataset before the job (under its output folder); binary and larger than every
#: largefiles rule of the matrix, so annexed in each, but for the small text
BEFORE = {
    "out/locked-changed.dat": _bytes(10, 12 * 1024),
    "out/unlocked-changed.dat": _bytes(11, 12 * 1024),
    "out/deleted.dat": _bytes(12, 12 * 1024),
    "out/kept.dat": _bytes(13, 12 * 1024),
    "out/kept-in-git.txt": b"small text, rewritten\n",
}


#: what the job writes: path -> content (symlinks and modes are made separately)
WRITTEN = {
    "out/small.txt": b"hello\n",
    "out/empty": b"",
    "out/.hidden": b"a dotfile\n",
    "out/blob.bin": _bytes(1, 3000),
    "out/large.dat": _bytes(2, 64 * 1024),
    "out/with space/\u00fcn\u00efc\u00f8d\u00e9 name.txt": "unicode \u2603\n".encode(),
    "out/deep/er/nested.txt": b"nested\n",
    "out/run.sh": b"#!/bin/sh\necho hi\n",
    # a locked file becomes small text (text2git and largefiles send it to git), an unlocked
    # one stays binary; its size changes (the same size within the same second as the commit
    # before would be racily clean for git and git-annex: save would miss it too)
    "out/locked-changed.dat": b"rewritten by the job\n",
    "out/unlocked-changed.dat": _bytes(21, 13 * 1024),
    "out/kept-in-git.txt": b"small text, rewritten by the job\n",
    LOG: b"the job's log\n",
}
EXECUTABLE = ["out/run.sh"]
#: link -> target
LINKS = {
    "out/link-to-small": "small.txt",
    "out/deep/link-up": "../blob.bin",
    "out/link-dangling": "../nowhere",
}
DELETED = ["out/deleted.dat"]


@dataclass
class Setup:
    """One configuration of the matrix."""

    name: str
    #: made the dataset at the path
    make: Callable[[Path], None]
    #: after the files of BEFORE are saved
    after_save: Callable[[Path], None] = lambda _top: None
    #: unlock the outputs before the job, as schedule does
    unlock_outputs: bool = False
    #: expectations that show the configuration is in force: path -> "git" / "annex"
    expected: dict[str, str] = field(default_factory=dict)


def _datalad_create(*options: str) -> Callable[[Path], None]:
    def make(top: Path) -> None:
        create(str(top), cfg_proc=list(options) or None, result_renderer="disabled")

    return make


def _git_then_datalad(*init: str, annex_init: tuple[str, ...] = ()) -> Callable[[Path], None]:
    """``git init`` and ``git annex init`` with options, then a dataset made of them."""

    def make(top: Path) -> None:
        subprocess.run(["git", "init", "-q", *init, str(top)], check=True)
        subprocess.run(["git", *annex_init, "annex", "init", "-q"], cwd=top, check=True)
        create(str(top), force=True, result_renderer="disabled")

    return make


def _with_attributes(lines: str, *git_config: tuple[str, str]) -> Callable[[Path], None]:
    def make(top: Path) -> None:
        create(str(top), result_renderer="disabled")
        with open(top / ".gitattributes", "a") as stream:
            stream.write(lines)
        for name, value in git_config:
            git(top, "config", name, value)
        Dataset(str(top)).save(
            path=[str(top / ".gitattributes")], message="settings", result_renderer="disabled"
        )

    return make


def _backend_from_git_config(backend: str) -> Callable[[Path], None]:
    """No ``annex.backend`` attribute (DataLad's MD5E): git config's ``annex.backend`` rules."""

    def make(top: Path) -> None:
        create(str(top), result_renderer="disabled")
        attributes = (top / ".gitattributes").read_text().splitlines(keepends=True)
        kept = [line for line in attributes if "annex.backend" not in line]
        assert len(kept) < len(attributes)
        (top / ".gitattributes").write_text("".join(kept))
        git(top, "config", "annex.backend", backend)
        Dataset(str(top)).save(
            path=[str(top / ".gitattributes")], message="settings", result_renderer="disabled"
        )

    return make


def _adjust_unlocked(top: Path) -> None:
    git(top, "annex", "adjust", "--unlock")


SETUPS = [
    Setup(
        "default",
        _datalad_create(),
        expected={"out/small.txt": "annex:MD5E-", "out/large.dat": "annex:MD5E-"},
    ),
    Setup(
        "text2git",
        _datalad_create("text2git"),
        expected={"out/small.txt": "git", "out/blob.bin": "annex", "out/empty": "git"},
    ),
    Setup(
        "largefiles-attributes",
        _with_attributes("* annex.largefiles=largerthan=10kb\n*.sh annex.largefiles=nothing\n"),
        expected={"out/blob.bin": "git", "out/large.dat": "annex", "out/run.sh": "git"},
    ),
    Setup(
        "largefiles-git-config",
        _with_attributes("", ("annex.largefiles", "largerthan=2kb")),
        expected={"out/small.txt": "git", "out/blob.bin": "annex"},
    ),
    Setup(
        "SHA256E",
        _with_attributes("* annex.backend=SHA256E\n"),
        expected={"out/small.txt": "annex:SHA256E-", "out/large.dat": "annex:SHA256E-"},
    ),
    Setup(
        "backend-from-git-config",
        _backend_from_git_config("SHA1"),
        expected={"out/small.txt": "annex:SHA1-", "out/large.dat": "annex:SHA1-"},
    ),
    Setup(
        "tuned-annex",
        _git_then_datalad(
            annex_init=(
                "-c",
                "annex.tune.objecthashlower=true",
                "-c",
                "annex.tune.branchhash1=true",
            )
        ),
        expected={"out/small.txt": "annex"},
    ),
    Setup(
        "sha256-repository",
        _git_then_datalad("--object-format=sha256"),
        expected={"out/small.txt": "annex"},
    ),
    Setup(
        "adjusted-unlocked",
        _datalad_create(),
        after_save=_adjust_unlocked,
        expected={"out/small.txt": "annex", "out/kept.dat": "annex"},
    ),
    Setup(
        "unlocked-outputs",
        _datalad_create(),
        unlock_outputs=True,
        expected={"out/kept.dat": "annex", "out/small.txt": "annex"},
    ),
]


def _write(top: Path, path: str, content: bytes) -> None:
    target = top / path
    target.parent.mkdir(parents=True, exist_ok=True)
    if target.is_symlink():  # a locked file: the job replaces it
        target.unlink()
    target.write_bytes(content)


def _base(setup: Setup, top: Path) -> None:
    """The dataset before the job: BEFORE saved, one file unlocked and saved so."""
    setup.make(top)
    for path, content in BEFORE.items():
        _write(top, path, content)
    ds = Dataset(str(top))
    ds.save(message="before the job", result_renderer="disabled")
    ds.unlock(path=[str(top / "out" / "unlocked-changed.dat")], result_renderer="disabled")
    # datalad save leaves an unlocked file that did not change as it is: git commits the unlock
    git(top, "commit", "-q", "-m", "one file unlocked", "out/unlocked-changed.dat")
    assert _tree(top)["out/unlocked-changed.dat"][0] == "100644"
    setup.after_save(top)
    assert git(top, "status", "--porcelain") == ""


def _run_job(setup: Setup, top: Path) -> None:
    """What the job (and schedule before it) does to the dataset."""
    if setup.unlock_outputs:
        Dataset(str(top)).unlock(path=[str(top / p) for p in OUTPUTS], result_renderer="disabled")
    for path, content in WRITTEN.items():
        _write(top, path, content)
    for path in EXECUTABLE:
        os.chmod(top / path, 0o755)
    for link, target in LINKS.items():
        (top / link).symlink_to(target)
    for path in DELETED:
        (top / path).unlink()


def _status(top: Path) -> JobStatus:
    task = TaskState(
        JOB_ID,
        None,
        JobState.COMPLETED,
        exit_code=0,
        end_time=1_700_000_000,
        stdout=str(top / LOG),
        work_dir=str(top),
    )
    return JobStatus(JOB_ID, {task.label: task}, backend="recording")


def register_job(top: Path, outputs: list[str]) -> Job:
    """A job submitted from HEAD as schedule registers it: Slurm's id JOB_ID."""
    with open_registry(str(top)) as registry:
        job = registry.reserve(
            cmd="sbatch job.sh",
            pwd=".",
            inputs=[],
            extra_inputs=[],
            outputs=outputs,
            submitted_from=git(top, "rev-parse", "HEAD").strip(),
        )
        return registry.mark_submitted(job, JOB_ID, None)


def finish_with(top: Path, status: JobStatus) -> list[dict[str, Any]]:
    """The whole of ``datalad finish`` (lock, recovery, drain), Slurm answering ``status``."""
    return list(finish(Dataset(str(top)), FinishRequest(), RecordingBackend({JOB_ID: status})))


def _finish(top: Path) -> list[dict[str, Any]]:
    return finish_with(top, _status(top))


def _tree(top: Path, revision: str = "HEAD") -> dict[str, tuple[str, str]]:
    """path -> (mode, blob) of a commit."""
    tree = {}
    for entry in git(top, "ls-tree", "-r", "-z", revision).split("\0"):
        if entry:
            meta, name = entry.split("\t", 1)
            mode, _kind, sha = meta.split()
            tree[name] = (mode, sha)
    return tree


def _kinds(top: Path) -> dict[str, str]:
    """path -> "annex:<key>" for annexed files of the worktree, "git" for the others."""
    annexed = {}
    out = git(top, "annex", "find", "--include=*", "--format=${file}\\t${key}\\n")
    for line in out.splitlines():
        name, _, key = line.partition("\t")
        annexed[name] = key
    return {name: f"annex:{annexed[name]}" if name in annexed else "git" for name in _tree(top)}


def _whereis(top: Path) -> list[dict[str, Any]]:
    # not checked: whereis fails when a file has no copy, which the assertions then show
    out = subprocess.run(
        ["git", "annex", "whereis", "--json"], cwd=top, capture_output=True, text=True, check=False
    ).stdout
    return sorted((json.loads(line) for line in out.splitlines()), key=lambda r: r["file"])


def corresponding_branch(top: Path) -> str | None:
    branch = git(top, "symbolic-ref", "--short", "HEAD").strip()
    if branch.startswith("adjusted/"):
        return branch[len("adjusted/") :].split("(", 1)[0]
    return None


@pytest.fixture(autouse=True)
def no_spool(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """No shared config: finish asks the backend alone."""
    monkeypatch.delenv("DATALAD_SLURM_CONFIG", raising=False)
    monkeypatch.setattr(settings, "DEFAULT_CONFIG", str(tmp_path / "no-such.conf"))


@pytest.mark.parametrize("setup", SETUPS, ids=[s.name for s in SETUPS])
def test_finish_commits_what_datalad_save_commits(setup: Setup, tmp_path: Path) -> None:
    fin, saved = tmp_path / "finished", tmp_path / "saved"
    _base(setup, fin)
    shutil.copytree(fin, saved, symlinks=True)
    branch = corresponding_branch(fin)
    assert (branch is not None) == (setup.name == "adjusted-unlocked")
    before = {top: git(top, "rev-parse", branch or "HEAD").strip() for top in (fin, saved)}
    for top in (fin, saved):
        _run_job(setup, top)

    job = register_job(fin, OUTPUTS)
    results = _finish(fin)
    finished = [r for r in results if r.get("action") == "finish"]
    assert [r["status"] for r in finished] == ["ok"], results
    shutil.copyfile(fin / ENV_JSON, saved / ENV_JSON)
    Dataset(str(saved)).save(
        path=[str(saved / p) for p in [*OUTPUTS, LOG, ENV_JSON]],
        message="datalad save of the job's files",
        result_renderer="disabled",
    )

    # one commit on the branch save commits to, holding the job's record, closing the job
    ref = branch or "HEAD"
    new = git(fin, "rev-list", f"{before[fin]}..{ref}").split()
    assert len(new) == 1, new
    assert registration_token(git(fin, "log", "-1", "--format=%B", new[0])) == job.token
    assert finished[0]["commit"] == new[0]
    with open_registry(str(fin)) as registry:
        assert registry.get(job.id).state == "finished"
        assert registry.get(job.id).commit_sha == new[0]
    assert len(git(saved, "rev-list", f"{before[saved]}..{ref}").split()) == 1

    # the same trees: modes, blobs (for annexed files the key is in the blob), git vs annex
    assert _tree(fin) == _tree(saved)
    if branch is not None:
        assert _tree(fin, branch) == _tree(saved, branch)
    kinds = _kinds(fin)
    assert kinds == _kinds(saved)
    changed = set(git(fin, "diff", "--name-only", "-z", before[fin], ref).split("\0")) - {""}
    job_paths = {*WRITTEN, *LINKS, *DELETED, ENV_JSON}
    assert changed == job_paths
    for path, kind in setup.expected.items():
        assert kinds[path].startswith(kind), (path, kinds[path])
    # on the branch the commit went to, the executable bit is kept where git holds the file
    assert _tree(fin, ref)["out/run.sh"][0] in ("100755", "120000")

    # what git and git-annex say of the finished copy; whereis first: annex fsck would mend
    # a location log it finds wrong
    whereis = _whereis(fin)
    assert whereis == _whereis(saved)
    assert {r["file"] for r in whereis} == {p for p, k in kinds.items() if k.startswith("annex")}
    assert all([copy["here"] for copy in r["whereis"]] == [True] for r in whereis), whereis
    git(fin, "fsck", "--strict", "--no-progress")
    fsck = git(fin, "annex", "fsck", "--json")
    checked = [json.loads(line) for line in fsck.splitlines()]
    assert checked and all(item["success"] for item in checked), checked
    assert "fixing location log" not in fsck, fsck
    # on an adjusted branch git-annex's unlocked copy of an annexed file loses its executable
    # bit (``M out/run.sh`` on both sides); elsewhere nothing is left over
    assert git(fin, "status", "--porcelain") == git(saved, "status", "--porcelain")
    if branch is None:
        assert git(fin, "status", "--porcelain") == ""

    # a second finish finds nothing to do
    head = git(fin, "rev-parse", "HEAD").strip()
    assert _finish(fin) == []
    assert git(fin, "rev-parse", "HEAD").strip() == head
