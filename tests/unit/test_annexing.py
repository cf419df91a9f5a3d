"""The fast annexing path against ``datalad save`` on twin datasets (real DataLad and git-annex)."""

from __future__ import annotations

import errno
import json
import os
import stat
import subprocess
from pathlib import Path

import pytest
from datalad.api import Dataset, create

from datalad_slurm.commit import annexing, locationlog
from datalad_slurm.commit.annexing import annex_new_files
from datalad_slurm.commit.writer import stage, worktree_changes
from tests.unit.conftest import git

#: git and git-annex only: the host and forky-jsoncli tiers (tests/conftest.py, AGNOSTIC_TIERS)
pytestmark = pytest.mark.slurm_agnostic

ATTRIBUTES = (
    "*.csv annex.backend=SHA256E\n"
    "*.tiny annex.largefiles=(largerthan=1kb)\n"
    "*.md annex.largefiles=nothing\n"
    "*.all annex.largefiles=anything\n"
)

#: name -> content; the rules send every one of them to the annex as they are
FAST = {
    "a.txt": "alpha\n",
    "b.tar.gz": "tarball-ish\n",
    "noext": "no extension\n",
    ".hidden": "dotfile\n",
    "dir with space/ü.dat": "unicode\n",
    "x.verylongextension": "long extension\n",
    "weird.e1.e2.e3": "three extensions\n",
    "under_score.t_x": "underscores\n",
    "empty": "",
    "dup1.txt": "same content\n",
    "deep/dup2.txt": "same content\n",
    "known.txt": "already in the annex\n",
    "table.csv": "a,b\n1,2\n",
    "x.all": "anything\n",
    "job 7/out/result-7.nii.gz": "image\n",
}
#: name -> content; git-annex decides these (rules with an expression, git-only files)
SLOW = {
    "small.tiny": "by size\n",
    "notes.md": "to git\n",
    ".gitsomething": "the .git* rule of DataLad\n",
}


def _dataset(path: Path) -> Path:
    create(str(path), result_renderer="disabled")
    (path / ".gitattributes").write_text((path / ".gitattributes").read_text() + ATTRIBUTES)
    (path / "known-before.txt").write_text("already in the annex\n")
    Dataset(str(path)).save(message="base", result_renderer="disabled")
    for name, content in {**FAST, **SLOW}.items():
        (path / name).parent.mkdir(parents=True, exist_ok=True)
        (path / name).write_text(content)
    (path / "link").symlink_to("a.txt")
    (path / "hard1").write_text("hard linked\n")
    os.link(path / "hard1", path / "hard2")
    return path


def _tree(path: Path) -> dict[str, tuple[str, str]]:
    out = git(path, "ls-tree", "-r", "-z", "HEAD")
    tree = {}
    for entry in out.split("\0"):
        if entry:
            meta, name = entry.split("\t", 1)
            mode, _kind, sha = meta.split()
            tree[name] = (mode, sha)
    return tree


def _loose_objects(path: Path) -> set[str]:
    objects = path / ".git" / "objects"
    return {f"{d.name}{f.name}" for d in objects.glob("[0-9a-f][0-9a-f]") for f in d.iterdir()}


def _json_lines(path: Path, *args: str) -> list[dict]:
    out = subprocess.run(
        ["git", "annex", *args, "--json"], cwd=path, capture_output=True, text=True, check=True
    ).stdout
    return [json.loads(line) for line in out.splitlines() if line.strip()]


def _annex_dirs_modes(path: Path, name: str) -> tuple[int, int]:
    content = (path / name).resolve()
    return stat.S_IMODE(content.stat().st_mode), stat.S_IMODE(content.parent.stat().st_mode)


def test_files_land_as_datalad_save_puts_them(tmp_path: Path) -> None:
    saved = _dataset(tmp_path / "saved")
    fast = _dataset(tmp_path / "fast")
    Dataset(str(saved)).save(message="outputs", result_renderer="disabled")

    changes = worktree_changes(str(fast), ["."])
    loose_before = _loose_objects(fast)
    result = annex_new_files(str(fast), changes.untracked)
    assert sorted(result.annexed) == sorted(FAST)
    assert sorted(result.rest) == sorted([*SLOW, "link", "hard1", "hard2"])
    # the links are staged with their stat data (git sees them unchanged) and their blobs sit
    # in a pack, not one loose object each
    staged = git(fast, "ls-files", "-s", "-z", "--", *FAST).split("\0")
    link_blobs = {entry.split()[1] for entry in staged if entry}
    assert len(link_blobs) == len({os.readlink(fast / name) for name in FAST})
    assert not link_blobs & (_loose_objects(fast) - loose_before)
    for sha in link_blobs:
        assert git(fast, "cat-file", "-t", sha).strip() == "blob"
    assert git(fast, "ls-files", "-m", "--", *FAST) == ""
    assert stage(str(fast), worktree_changes(str(fast), ["."]), annex=True) == []
    git(fast, "commit", "-q", "-m", "outputs")

    # the same blobs (symlink targets name the same keys), modes and git/annex split; only
    # the dataset ids differ
    fast_tree, saved_tree = _tree(fast), _tree(saved)
    assert fast_tree.pop(".datalad/config") != saved_tree.pop(".datalad/config")
    assert fast_tree == saved_tree
    assert git(fast, "status", "--porcelain") == ""
    status = subprocess.run(
        ["datalad", "status", "--annex", "basic"], cwd=fast, capture_output=True, text=True
    )
    assert status.returncode == 0 and "untracked" not in status.stdout, status.stdout
    assert "modified" not in status.stdout, status.stdout
    # git-annex agrees the content is here and intact, and where its records say
    fsck = _json_lines(fast, "fsck")
    assert fsck and all(item["success"] for item in fsck), fsck
    whereis = {item["file"]: item for item in _json_lines(fast, "whereis", *FAST)}
    uuid = git(fast, "config", "annex.uuid").strip()
    for name in FAST:
        assert [where["uuid"] for where in whereis[name]["whereis"]] == [uuid], name
    for name in FAST:
        assert _annex_dirs_modes(fast, name) == _annex_dirs_modes(saved, name), name
    # nothing left behind: no scratch links, no work refs, no journal
    assert os.listdir(fast / ".git" / "datalad-slurm" / "links") == []
    assert git(fast, "for-each-ref", "refs/datalad-slurm") == ""
    # and git-annex goes on with the branch: drop and get back through git-annex alone
    subprocess.run(["git", "annex", "unlock", "a.txt"], cwd=fast, check=True, capture_output=True)
    assert (fast / "a.txt").read_text() == "alpha\n"


def test_interrupted_before_the_log_is_taken_up_by_the_next_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fast = _dataset(tmp_path / "fast")
    names = ["a.txt", "noext", "deep/dup2.txt"]

    def killed(*_args: object, **_kwargs: object) -> None:
        raise KeyboardInterrupt  # as SIGKILL would: after the links, before the log

    monkeypatch.setattr(annexing, "record_present", killed)
    with pytest.raises(KeyboardInterrupt):
        annex_new_files(str(fast), names)
    monkeypatch.undo()
    assert all((fast / name).is_symlink() for name in names)
    assert git(fast, "diff", "--cached", "--name-only") == ""

    untracked = worktree_changes(str(fast), names).untracked
    assert sorted(untracked) == sorted(names)
    assert sorted(annex_new_files(str(fast), untracked).annexed) == sorted(names)
    git(fast, "commit", "-q", "-m", "after the crash")
    fsck = _json_lines(fast, "fsck", *names)
    assert len(fsck) == 3 and all(item["success"] for item in fsck), fsck
    whereis = _json_lines(fast, "whereis", *names)
    assert all(item["whereis"] for item in whereis), whereis


def test_keys_git_annex_knows_of_go_through_git_annex(tmp_path: Path) -> None:
    fast = _dataset(tmp_path / "fast")
    uuid = git(fast, "config", "annex.uuid").strip()
    key = git(fast, "annex", "calckey", "--backend", "MD5E", "a.txt").strip()
    # news git-annex has not committed yet: a journal entry that says "not here"
    subprocess.run(
        ["git", "annex", "setpresentkey", key, uuid, "0"], cwd=fast, check=True, capture_output=True
    )
    journal = os.listdir(fast / ".git" / "annex" / "journal")
    assert any(key in name for name in journal)
    before = git(fast, "rev-parse", "git-annex").strip()
    assert annex_new_files(str(fast), ["a.txt", "noext"]).annexed == ["a.txt", "noext"]
    git(fast, "commit", "-q", "-m", "two")
    whereis = {item["file"]: item for item in _json_lines(fast, "whereis", "a.txt", "noext")}
    assert [w["uuid"] for w in whereis["a.txt"]["whereis"]] == [uuid]
    assert [w["uuid"] for w in whereis["noext"]["whereis"]] == [uuid]
    assert git(fast, "rev-parse", "git-annex").strip() != before


def test_switched_off_or_refused_leaves_every_file_to_git_annex_add(tmp_path: Path) -> None:
    fast = _dataset(tmp_path / "fast")
    git(fast, "config", "datalad.slurm.fast-annex", "false")
    assert annex_new_files(str(fast), ["a.txt"]).rest == ["a.txt"]
    git(fast, "config", "--unset", "datalad.slurm.fast-annex")
    git(fast, "config", "annex.largefiles", "largerthan=1kb")
    assert annex_new_files(str(fast), ["a.txt"]).rest == ["a.txt"]
    git(fast, "config", "--unset", "annex.largefiles")
    git(fast, "config", "annex.addunlocked", "true")
    assert annex_new_files(str(fast), ["a.txt"]).rest == ["a.txt"]
    git(fast, "config", "annex.addunlocked", "false")
    assert annex_new_files(str(fast), ["a.txt"]).annexed == ["a.txt"]


def test_a_file_that_cannot_be_linked_goes_to_git_annex_add(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fast = _dataset(tmp_path / "fast")
    real_link = os.link

    def link(source: str, target: str) -> None:
        if str(source).endswith("noext"):
            raise OSError(errno.EXDEV, "Invalid cross-device link")
        real_link(source, target)

    monkeypatch.setattr(annexing.os, "link", link)
    result = annex_new_files(str(fast), ["a.txt", "noext"])
    monkeypatch.undo()
    assert (result.annexed, result.rest) == (["a.txt"], ["noext"])
    assert (fast / "noext").is_file() and not (fast / "noext").is_symlink()
    key = git(fast, "annex", "calckey", "--backend", "MD5E", "noext").strip()
    place = git(fast, "annex", "examinekey", "--format", "${objectpath}", key)
    assert not (fast / place).parent.exists(), "an empty key folder was left behind"
    assert stage(str(fast), worktree_changes(str(fast), ["noext"]), annex=True) == []
    git(fast, "commit", "-q", "-m", "both")
    whereis = _json_lines(fast, "whereis", "a.txt", "noext")
    assert len(whereis) == 2 and all(item["whereis"] for item in whereis), whereis


def test_a_git_annex_branch_moved_meanwhile_is_built_upon(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fast = _dataset(tmp_path / "fast")
    uuid = git(fast, "config", "annex.uuid").strip()
    other = "MD5E-s5--0123456789abcdef0123456789abcdef.dat"
    real_branch_files = locationlog._branch_files
    calls = []

    def branch_files_then_git_annex_writes(repo: locationlog.AnnexedRepo) -> set[str]:
        listing = real_branch_files(repo)
        if not calls:  # git-annex commits its own news right after we looked
            git(fast, "annex", "setpresentkey", other, uuid, "1")
            git(fast, "annex", "merge")
        calls.append(len(listing))
        return listing

    monkeypatch.setattr(locationlog, "_branch_files", branch_files_then_git_annex_writes)
    before = git(fast, "rev-parse", "git-annex").strip()
    assert annex_new_files(str(fast), ["a.txt", "noext"]).annexed == ["a.txt", "noext"]
    assert len(calls) == 2, "the compare-and-swap should have failed once and been retried"
    git(fast, "commit", "-q", "-m", "two")
    # both writers' news are on the branch, ours on top of git-annex's
    history = git(fast, "rev-list", f"{before}..git-annex").split()
    assert len(history) == 2
    whereis = _json_lines(fast, "whereis", "a.txt", "noext")
    assert all([w["uuid"] for w in item["whereis"]] == [uuid] for item in whereis), whereis
    assert uuid in git(fast, "annex", "whereis", "--key", other)
