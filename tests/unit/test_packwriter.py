"""The pack writer against git fast-import: the same commits, sha for sha, on real repositories."""

from __future__ import annotations

import random
import subprocess
from pathlib import Path

import pytest

from datalad_slurm.commit.writer import write_commits, write_with_fast_import
from datalad_slurm.git import trees as packwriter
from datalad_slurm.git.runner import GitError, git_ident
from datalad_slurm.git.trees import Change, write_pack
from tests.unit.conftest import git

#: git only: the host and forky-jsoncli tiers (tests/conftest.py, AGNOSTIC_TIERS)
pytestmark = pytest.mark.slurm_agnostic


def _blobs(repo: Path, count: int) -> list[str]:
    """``count`` distinct blobs written into the repository's object store."""
    proc = subprocess.run(
        ["git", "hash-object", "-w", "--stdin-paths"],
        cwd=repo,
        input="".join(f"{_content(repo, n)}\n" for n in range(count)),
        capture_output=True,
        text=True,
        check=True,
    )
    return proc.stdout.split()


def _content(repo: Path, number: int) -> str:
    path = repo.parent / "blobs" / str(number)
    path.parent.mkdir(exist_ok=True)
    path.write_text(f"content {number}\n")
    return str(path)


def _random_history(repo: Path, seed: int, commits: int) -> list[tuple[str, list[Change]]]:
    """Commits that add, change and remove files in nested and crowded folders, replace files
    by folders and the reverse, and empty folders; every path a job could write."""
    rng = random.Random(seed)
    blobs = _blobs(repo, 64)
    names = ["a", "a.b", "a-b", "ab", "b", "ü", "x y", 'q"uote', "new\nline", "z" * 80]
    tracked: dict[str, str] = {"kept": "100644", "gone": "100644"}
    history = []
    for number in range(commits):
        changes: list[Change] = []
        for _ in range(rng.randint(0, 6)):
            action = rng.random()
            if action < 0.25 and tracked:
                path = rng.choice(sorted(tracked))
                del tracked[path]
                changes.append(Change(path))
            elif action < 0.5:
                # one crowded folder every commit touches, as a study's out/ folder
                path = f"out/job{rng.randint(0, 400)}/{rng.choice(names)}"
                if any(p.startswith(path + "/") or path.startswith(p + "/") for p in tracked):
                    continue
                mode = rng.choice(["100644", "100755", "120000"])
                tracked[path] = mode
                changes.append(Change(path, mode, rng.choice(blobs)))
            else:
                depth = rng.randint(1, 3)
                path = "/".join(rng.choice(names) for _ in range(depth))
                # a path where a folder or file of the same name is: take it away first
                for clash in [p for p in tracked if p.startswith(path + "/")]:
                    del tracked[clash]
                    changes.append(Change(clash))
                parts = path.split("/")
                for cut in range(1, len(parts)):
                    prefix = "/".join(parts[:cut])
                    if prefix in tracked:
                        del tracked[prefix]
                        changes.append(Change(prefix))
                tracked[path] = "100644"
                changes.append(Change(path, "100644", rng.choice(blobs)))
        # one change per path and commit, as git diff-index reports them
        unique = {change.path: change for change in changes}
        history.append((f"commit {number}\n\nseed {seed}", list(unique.values())))
    return history


@pytest.mark.parametrize(
    ("seed", "block"), [(1, packwriter.BLOCK), (2, packwriter.BLOCK), (3, 2), (4, 1)]
)
def test_the_same_commits_as_fast_import(
    repo: Path, seed: int, block: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(packwriter, "BLOCK", block)  # small blocks: many splits and removals
    head = git(repo, "rev-parse", "HEAD").strip()
    history = _random_history(repo, seed, commits=160)  # > 3 full versions of out/
    author = git_ident(str(repo), "GIT_AUTHOR_IDENT")
    committer = git_ident(str(repo), "GIT_COMMITTER_IDENT")
    expected = write_with_fast_import(str(repo), head, history, author, committer)
    packs_before = set((repo / ".git" / "objects" / "pack").glob("*.pack"))
    # the same commits again from a repository without them: our pack must bring them all
    clone = repo.parent / "clone"
    git(repo.parent, "clone", "-q", "--no-local", str(repo), str(clone))
    _blobs(clone, 64)  # the blobs the index would hold; the trees and commits are ours to write
    got = write_pack(str(clone), head, history, author, committer)
    assert got == expected
    assert set((repo / ".git" / "objects" / "pack").glob("*.pack")) == packs_before
    git(clone, "update-ref", "refs/heads/check", got[-1])
    git(clone, "fsck", "--strict", "--no-dangling")
    # our index says what git's would: every object's sha, offset and CRC-32 checked
    for index in (clone / ".git" / "objects" / "pack").glob("*.idx"):
        git(clone, "verify-pack", str(index))


def test_a_folder_written_many_times_is_delta_then_whole_again(repo: Path) -> None:
    head = git(repo, "rev-parse", "HEAD").strip()
    blobs = _blobs(repo, 3)
    history = [
        (f"{n}", [Change(f"out/job{n:04d}/result", "100644", blobs[n % 3])]) for n in range(300)
    ]
    author = git_ident(str(repo), "GIT_AUTHOR_IDENT")
    shas = write_pack(str(repo), head, history, author, author)
    verify = git(repo, "verify-pack", "-v", *map(str, (repo / ".git/objects/pack").glob("*.idx")))
    chains = [line for line in verify.splitlines() if line.startswith("chain length")]
    assert chains, verify
    longest = max(int(line.split("=")[1].split(":")[0]) for line in chains)
    assert longest <= packwriter.MAX_DELTA_DEPTH
    git(repo, "update-ref", "refs/heads/check", shas[-1])
    git(repo, "fsck", "--strict", "--no-dangling")
    out_entries = git(repo, "ls-tree", f"{shas[-1]}:out").splitlines()
    assert len(out_entries) == 300
    assert git(repo, "rev-list", "--count", f"{head}..{shas[-1]}").strip() == "300"


def test_removing_the_last_file_of_a_folder_removes_the_folder(repo: Path) -> None:
    head = git(repo, "rev-parse", "HEAD").strip()
    [blob] = _blobs(repo, 1)
    author = git_ident(str(repo), "GIT_AUTHOR_IDENT")
    shas = write_pack(
        str(repo),
        head,
        [
            ("add", [Change("d/e/f", "100644", blob), Change("d/g", "100644", blob)]),
            ("remove", [Change("d/e/f"), Change("d/g"), Change("kept"), Change("nothing/here")]),
        ],
        author,
        author,
    )
    assert git(repo, "ls-tree", "-r", "--name-only", shas[0]).split() == [
        ".gitignore",
        "d/e/f",
        "d/g",
        "gone",
        "kept",
    ]
    assert git(repo, "ls-tree", "-r", "-t", "--name-only", shas[1]).split() == [
        ".gitignore",
        "gone",
    ]


def test_a_shared_repository_gets_its_pack_from_index_pack(repo: Path) -> None:
    git(repo, "config", "core.sharedRepository", "0640")
    head = git(repo, "rev-parse", "HEAD").strip()
    [blob] = _blobs(repo, 1)
    author = git_ident(str(repo), "GIT_AUTHOR_IDENT")
    [sha] = write_pack(str(repo), head, [("x", [Change("x", "100644", blob)])], author, author)
    [pack] = (repo / ".git" / "objects" / "pack").glob("*.pack")
    assert pack.stat().st_mode & 0o777 == 0o440  # as git makes them for this setting
    assert git(repo, "ls-tree", "--name-only", sha).split() == [".gitignore", "gone", "kept", "x"]


def test_a_missing_parent_is_an_error(repo: Path) -> None:
    author = git_ident(str(repo), "GIT_AUTHOR_IDENT")
    with pytest.raises(GitError, match="missing"):
        write_pack(str(repo), "1" * 40, [("x", [])], author, author)


def test_a_sha256_repository_is_written_by_fast_import(tmp_path: Path) -> None:
    repo = tmp_path / "sha256"
    repo.mkdir()
    git(repo, "init", "-q", "--object-format=sha256")
    git(repo, "config", "user.name", "T")
    git(repo, "config", "user.email", "t@example.org")
    (repo / "f").write_text("f\n")
    git(repo, "add", "f")
    git(repo, "commit", "-q", "-m", "base")
    head = git(repo, "rev-parse", "HEAD").strip()
    (repo / "g").write_text("g\n")
    blob = git(repo, "hash-object", "-w", "g").strip()
    [sha] = write_commits(str(repo), head, [("g", [Change("g", "100644", blob)])])
    assert len(sha) == 64
    assert git(repo, "ls-tree", "--name-only", sha).split() == ["f", "g"]
