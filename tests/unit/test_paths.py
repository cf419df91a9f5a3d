from __future__ import annotations

import os
from pathlib import Path

import pytest

from datalad_slurm.paths import (
    PathOutsideDatasetError,
    ancestors,
    collapse,
    normalise,
    overlaps,
)


@pytest.mark.parametrize(
    ("given", "cwd", "expected"),
    [
        ("x", "", "x"),
        ("./x", "", "x"),
        ("sub/../x", "", "x"),
        ("a//b", "", "a/b"),
        ("a/b/", "", "a/b"),
        (".", "", "."),
        ("./", "", "."),
        ("x", "sub", "sub/x"),
        ("../x", "sub", "x"),
        ("..", "sub", "."),
    ],
)
def test_normalise_relative(tmp_path: Path, given: str, cwd: str, expected: str) -> None:
    (tmp_path / "sub").mkdir()
    assert normalise(given, str(tmp_path), str(tmp_path / cwd)) == expected


def test_normalise_absolute_and_symlinked_root(tmp_path: Path) -> None:
    real = tmp_path / "real"
    (real / "d").mkdir(parents=True)
    link = tmp_path / "link"
    link.symlink_to(real)
    assert normalise(str(real / "d" / "f"), str(real)) == "d/f"
    # the dataset was opened through the link, the path given through the real one
    assert normalise(str(real / "d" / "f"), str(link)) == "d/f"
    # and the other way round
    assert normalise(str(link / "d" / "f"), str(real)) == "d/f"
    # run from a subdirectory reached through the link
    assert normalise("f", str(real), str(link / "d")) == "d/f"


def test_normalise_keeps_last_component_symlink(tmp_path: Path) -> None:
    (tmp_path / ".git" / "annex").mkdir(parents=True)
    target = tmp_path / ".git" / "annex" / "key"
    target.write_text("x")
    os.symlink(".git/annex/key", tmp_path / "annexed")
    assert normalise("annexed", str(tmp_path), str(tmp_path)) == "annexed"


@pytest.mark.parametrize("given", ["/elsewhere/x", "../outside", ".git/config", ".git"])
def test_normalise_refuses_outside(tmp_path: Path, given: str) -> None:
    ds = tmp_path / "ds"
    ds.mkdir()
    with pytest.raises(PathOutsideDatasetError, match=repr(given)):
        normalise(given, str(ds), str(ds))


def test_normalise_refuses_empty(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="empty"):
        normalise("", str(tmp_path))


@pytest.mark.parametrize(
    ("first", "second", "expected"),
    [
        ("a", "a", True),
        ("a", "a/b", True),
        ("a/b", "a", True),
        (".", "anything/deep", True),
        ("a", "ab", False),
        ("a/b", "a/c", False),
        ("a-b", "a/b", False),
    ],
)
def test_overlaps(first: str, second: str, expected: bool) -> None:
    assert overlaps(first, second) is expected
    assert overlaps(second, first) is expected


def test_ancestors_and_collapse() -> None:
    assert list(ancestors("a/b/c")) == ["a/b", "a", "."]
    assert list(ancestors(".")) == []
    assert collapse(["a/b", "a", "c", "c", "ab"]) == ["a", "ab", "c"]
    assert collapse([".", "a"]) == ["."]
