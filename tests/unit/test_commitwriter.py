"""The batch commit writer on real git repositories (no Slurm, no DataLad)."""

from __future__ import annotations

from pathlib import Path

import pytest

from datalad_slurm.commit.writer import (
    Change,
    advance_head,
    chunked,
    covering_paths,
    run_auto_maintenance,
    stage,
    staged_changes,
    worktree_changes,
    write_commits,
)
from datalad_slurm.git.runner import GitError
from tests.unit.conftest import git

#: git only: the host and forky-jsoncli tiers (tests/conftest.py, AGNOSTIC_TIERS)
pytestmark = pytest.mark.slurm_agnostic


def test_chunked_respects_the_budget_and_keeps_order() -> None:
    paths = [f"p{n:03d}" for n in range(100)]
    chunks = list(chunked(paths, budget=50))
    assert [p for chunk in chunks for p in chunk] == paths
    assert all(sum(len(p) + 1 for p in chunk) <= 50 for chunk in chunks)
    assert len(chunks) > 1


def test_one_commit_per_group_with_only_its_paths(repo: Path) -> None:
    head = git(repo, "rev-parse", "HEAD").strip()
    odd = ['a b/"quoted" file', "ü/ñ.txt", "back\\slash", "new\nline"]
    for name in ["job1/r", "job2/r", *odd]:
        (repo / name).parent.mkdir(parents=True, exist_ok=True)
        (repo / name).write_text(name + "\n")
    (repo / "job1" / "ignored.tmp").write_text("not for git\n")
    (repo / "kept").write_text("new\n")
    (repo / "gone").unlink()
    paths = ["job1", "job2", "kept", "gone", *odd]
    changes = worktree_changes(str(repo), paths)
    assert "job1/ignored.tmp" not in changes.to_add
    assert changes.deleted == ["gone"]
    assert stage(str(repo), changes, annex=False) == []
    staged = {c.path: c for c in staged_changes(str(repo), head, paths)}
    assert staged["gone"].deleted and not staged["kept"].deleted
    groups = [
        ("first\n\nbody one", [staged["job1/r"], staged["gone"]]),
        ("second", [staged["job2/r"], staged["kept"], *[staged[p] for p in odd]]),
        ("third, empty", []),
    ]
    shas = write_commits(str(repo), head, groups)
    assert len(shas) == 3
    advance_head(str(repo), head, shas[-1], "test")
    assert git(repo, "rev-parse", "HEAD").strip() == shas[-1]
    assert git(repo, "log", "--format=%s", f"{head}..HEAD").splitlines() == [
        "third, empty",
        "second",
        "first",
    ]
    assert git(repo, "show", "--name-status", "--format=", shas[0]).split() == [
        "D",
        "gone",
        "A",
        "job1/r",
    ]
    names = git(
        repo, "-c", "core.quotePath=false", "show", "-z", "--name-only", "--format=", shas[1]
    ).split("\0")
    assert sorted(n for n in names if n) == sorted(["job2/r", "kept", *odd])
    assert git(repo, "show", "--name-only", "--format=", shas[2]).strip() == ""
    # the index now matches HEAD: nothing staged, nothing but the ignored file left over
    assert git(repo, "status", "--porcelain").strip() == ""
    assert not (repo / ".git" / "refs" / "datalad-slurm" / "finish").exists()


def test_advance_head_refuses_when_head_moved(repo: Path) -> None:
    head = git(repo, "rev-parse", "HEAD").strip()
    (repo / "x").write_text("x\n")
    stage(str(repo), worktree_changes(str(repo), ["x"]), annex=False)
    [sha] = write_commits(str(repo), head, [("x", staged_changes(str(repo), head, ["x"]))])
    git(repo, "commit", "-q", "--allow-empty", "-m", "someone else")
    with pytest.raises(GitError):
        advance_head(str(repo), head, sha, "test")
    assert git(repo, "log", "-1", "--format=%s").strip() == "someone else"


def test_auto_maintenance_packs_as_after_a_commit_and_warns_when_git_fails(
    repo: Path, caplog: pytest.LogCaptureFixture
) -> None:
    def packs() -> list[Path]:  # of reachable objects (git 2.41+ gc adds a cruft pack)
        found = (repo / ".git" / "objects" / "pack").glob("*.pack")
        return [p for p in found if not p.with_suffix(".mtimes").exists()]

    git(repo, "config", "gc.autoPackLimit", "2")
    git(repo, "config", "gc.autoDetach", "false")
    for n in range(3):  # three packs, as three drains' fast-imports leave them
        (repo / f"f{n}").write_text(f"{n}\n")
        git(repo, "add", f"f{n}")
        git(repo, "-c", "maintenance.auto=false", "commit", "-q", "-m", f"{n}")
        git(repo, "repack", "-d", "-q")
    assert len(packs()) == 3
    run_auto_maintenance(str(repo))
    assert len(packs()) == 1
    assert not caplog.records
    git(repo, "config", "gc.auto", "not-a-number")
    run_auto_maintenance(str(repo))  # does not raise: the commits are made
    assert "housekeeping" in caplog.text and "maintenance" in caplog.text


def test_changes_outside_the_paths_are_left_alone(repo: Path) -> None:
    head = git(repo, "rev-parse", "HEAD").strip()
    (repo / "mine").write_text("1\n")
    (repo / "theirs").write_text("2\n")
    git(repo, "add", "theirs")  # staged by the user, not ours to commit
    stage(str(repo), worktree_changes(str(repo), ["mine"]), annex=False)
    changes = staged_changes(str(repo), head, ["mine"])
    assert changes == [Change("mine", "100644", changes[0].sha)]
    shas = write_commits(str(repo), head, [("mine", changes)])
    advance_head(str(repo), head, shas[0], "test")
    assert git(repo, "status", "--porcelain").strip() == "A  theirs"


def test_covering_paths_are_few_and_cover_every_path() -> None:
    jobs = [f"out/{n}" for n in range(100)]
    logs = [f"out/{n}/slurm-{n}.out" for n in range(100)]
    assert covering_paths([*jobs, *logs, "x/a", "x/b", "out10/z"]) == [
        "out",
        "out10/z",
        "x/a",
        "x/b",
    ]
    # nested paths fold into the outer one; "out/1" does not cover "out/10"
    assert covering_paths(["a/b/", "a/b/c", "a/bc", "z"]) == ["a/b", "a/bc", "z"]
    assert covering_paths(["a/b", "."]) == ["."]
    # the deepest crowded folder, not its parent: e/0 stands for its 20 entries
    deep = [f"e/{i}/{j}" for i in range(3) for j in range(20)]
    assert covering_paths([*deep, "e/x"]) == ["e/0", "e/1", "e/2", "e/x"]
    # crowded only through its subfolders
    assert covering_paths([f"d/{i}/{j}" for i in range(20) for j in range(3)]) == ["d"]
    # never the dataset's root
    assert covering_paths([f"f{i}" for i in range(40)]) == sorted(f"f{i}" for i in range(40))
