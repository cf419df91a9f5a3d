"""Globs in declared paths: what they hold in the registry, and what they stand for, held
against DataLad's own ``GlobbedPaths`` and Python's ``glob`` on a real tree."""

from __future__ import annotations

import glob
import os
import sqlite3
from pathlib import Path

import pytest
from datalad.support.globbedpaths import GlobbedPaths

from datalad_slurm.globs import (
    expand,
    hits,
    matches,
    output_paths,
    reserved_path,
    reserved_paths,
    unmatched,
)
from datalad_slurm.jobs.registry import Registry
from datalad_slurm.jobs.reservations import OutputConflictError
from datalad_slurm.usecases.jobspecs import parse_job_spec
from datalad_slurm.usecases.request import ScheduleError, input_paths, normalise_all

#: files (and, ending in "/", empty folders) of the tree every case globs in
TREE = [
    "out/g1",
    "out/g2.txt",
    "out/h1",
    "out/.hidden",
    "out/sub/g3",
    "out/sub/deep/g4.txt",
    "out/.dot/g5",
    "out/empty/",
    "data[1].txt",
    "data1.txt",
    "a b/c d.txt",
    "top.txt",
    ".gitattributes",
    "res1/",
    "res2/x",
]

PATTERNS = [
    "out/g*",
    "out/*",
    "out/*/",
    "out/**",
    "out/**/*.txt",
    "out/**/g?",
    "out/.*",
    "out/sub/*/g4.txt",
    "out/[gh]1",
    "out/[!g]*",
    "*.txt",
    "*",
    "**/g*",
    "data[1].txt",
    "a b/*",
    "res*/",
    "res*/x",
    "res*/missing",
    "nothing*",
    "out/none*/deeper",
    "out/sub",
    "top.txt",
    "missing.txt",
    ".",
]


@pytest.fixture(scope="module")
def tree(tmp_path_factory: pytest.TempPathFactory) -> str:
    root = tmp_path_factory.mktemp("globs")
    for entry in TREE:
        path = root / entry
        if entry.endswith("/"):
            path.mkdir(parents=True, exist_ok=True)
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(entry)
    (root / ".git").mkdir()
    (root / ".git" / "config").write_text("")
    return str(root)


@pytest.mark.parametrize(
    ("pattern", "held"),
    [
        ("out/g*", "out"),
        ("out/sub/file?.txt", "out/sub"),
        ("out/*/x", "out"),
        ("out/a[12]/x", "out"),
        ("out/**/x.txt", "out"),
        ("out/*/", "out"),
        ("*.txt", "."),
        ("**", "."),
        ("[ab]/c", "."),
        ("out/plain", "out/plain"),
        ("out", "out"),
        (".", "."),
    ],
)
def test_a_glob_holds_its_fixed_leading_folder(pattern: str, held: str) -> None:
    assert reserved_path(pattern) == held


def test_reserved_paths_keep_order_without_repeats() -> None:
    assert reserved_paths(["out/g*", "out/h*", "x", "out"]) == ["out", "x"]


@pytest.mark.parametrize("pattern", PATTERNS)
def test_expansion_is_datalad_runs(tree: str, pattern: str) -> None:
    """expand/hits give exactly what GlobbedPaths gives in the same folder."""
    ours = [pattern, "top.txt"]
    theirs = GlobbedPaths(ours, pwd=tree)
    assert expand(ours, tree) == theirs.expand()
    assert expand(ours, tree, dot=False) == theirs.expand(dot=False)
    if pattern != ".":
        assert hits(pattern, tree) == GlobbedPaths([pattern], pwd=tree).expand_strict()


def test_expansion_from_a_subfolder_and_of_absolute_patterns(tree: str) -> None:
    pwd = os.path.join(tree, "out")
    patterns = ["g*", os.path.join(tree, "res*/"), "./sub/*", "../*.txt", "."]
    assert expand(patterns, pwd) == GlobbedPaths(patterns, pwd=pwd).expand()


@pytest.mark.parametrize("pattern", [p for p in PATTERNS if p != "."])
def test_matches_agrees_with_glob_on_every_path(tree: str, pattern: str) -> None:
    """``matches`` (used for paths gone from disk) says yes exactly where glob lists."""
    listed = {hit.rstrip("/") for hit in glob.glob(pattern, root_dir=tree, recursive=True)}
    every: set[str] = set()
    for folder, dirs, files in os.walk(tree):
        # a pattern ending in / lists folders only
        for name in dirs if pattern.endswith("/") else [*dirs, *files]:
            every.add(os.path.relpath(os.path.join(folder, name), tree))
    assert listed <= every
    assert {path for path in every if matches(pattern, path)} == listed


def test_output_paths_of_globs_and_plain_paths(tree: str) -> None:
    outputs = ["out/g*", "top.txt", "missing.txt", "data[1].txt", ".g*", "out/sub/g*", "res*/"]
    gone = {"out/g9", "out/h9", "out/sub/g8", "elsewhere/g7", "res3/y", "res4"}
    assert output_paths(tree, outputs, gone) == [
        "out/g1",
        "out/g2.txt",
        "out/g9",  # tracked, deleted by the job: it belongs to the commit
        "top.txt",
        "missing.txt",  # a plain path stands for itself, as before
        "data1.txt",  # the glob's hit ...
        "data[1].txt",  # ... and the file of that very name
        ".gitattributes",  # .g* matches it, and never .git
        "out/sub/g3",
        "out/sub/g8",
        "res1",
        "res2",
        "res3/y",  # in a folder the glob matched, which the job removed
    ]


def test_unmatched_names_missing_paths_and_empty_globs(tree: str) -> None:
    outputs = ["out/g*", "nothing*", "out/none*/deeper", "top.txt", "missing.txt", "res*/", "."]
    assert unmatched(tree, outputs) == ["nothing*", "out/none*/deeper", "missing.txt"]
    # a glob whose only hit would be inside .git matches nothing
    assert unmatched(tree, [".gi?"]) == [".gi?"]


def test_input_globs_are_obtained_by_their_hits(tree: str) -> None:
    paths, empty = input_paths(tree, ["out/g*", "top.txt", "out/g1", "nothing*", "res*/"])
    assert paths == ["out/g1", "out/g2.txt", "top.txt", "res1", "res2"]
    assert empty == ["nothing*"]


def test_normalising_keeps_a_globs_trailing_slash(tree: str) -> None:
    given = ["./out/*/", "out/sub/", "out/../res*/", "out//g*"]
    assert normalise_all(given, tree, tree, "output") == ["out/*/", "out/sub", "res*/", "out/g*"]


def _reserve(registry: Registry, *outputs: str, expand: str | None = None) -> object:
    return registry.reserve(
        cmd="sbatch job.sh",
        pwd=".",
        inputs=[],
        extra_inputs=[],
        outputs=list(outputs),
        expand=expand,
    )


@pytest.mark.parametrize(
    ("held", "wanted"),
    [
        ("out/g*", "out/g1"),
        ("out/g1", "out/g*"),
        ("out/g*", "out/h*"),
        ("out/sub/*.txt", "out"),
        ("*.txt", "anything"),
        ("out/x", "*/x"),
    ],
)
def test_globs_conflict_by_their_folder_and_say_so(tmp_path: Path, held: str, wanted: str) -> None:
    registry = Registry(str(tmp_path / "registry.sqlite"))
    first = _reserve(registry, held, expand="both")
    registry.mark_submitted(first, 7, None)  # type: ignore[arg-type]
    with pytest.raises(OutputConflictError) as info:
        _reserve(registry, wanted)
    message = str(info.value)
    assert "job 7" in message
    for declared in (held, wanted):
        if "*" in declared:
            assert f"(held for the glob {declared!r})" in message
    # a read-only look (schedule --dry-run) sees the same
    assert [c[:2] for c in registry.conflicts([wanted])] == [c[:2] for c in info.value.conflicts]
    [job] = registry.jobs()
    assert job.outputs == [held] and job.expand == "both"
    assert registry.reservations(job) == [reserved_path(held)]


def test_neighbours_of_a_glob_are_free(tmp_path: Path) -> None:
    registry = Registry(str(tmp_path / "registry.sqlite"))
    _reserve(registry, "out/sub/g*")
    for free in ("out/other", "out/subx", "res/*", "outx/g*"):
        _reserve(registry, free)
    assert len(registry.jobs()) == 5


def test_the_expand_column_is_added_to_an_older_registry(tmp_path: Path) -> None:
    path = tmp_path / "registry.sqlite"
    Registry(str(path)).close()
    conn = sqlite3.connect(path)
    # back to schema 3: the columns of migration 4 (expand) and of the later ones go
    for column in ("expand", "depends_on", "dependency", "alt_dir"):
        conn.execute(f"ALTER TABLE jobs DROP COLUMN {column}")
    conn.execute("PRAGMA user_version = 3")
    conn.commit()
    conn.close()
    with Registry(str(path)) as registry:
        job = _reserve(registry, "out/*", expand="outputs")
        assert registry.jobs()[0].expand == "outputs"
        assert job.expand == "outputs"  # type: ignore[attr-defined]


def test_a_jobs_file_line_may_say_expand(tmp_path: Path) -> None:
    line = '{"cmd": "sbatch j.sh", "outputs": "out/*", "expand": "both"}'
    assert parse_job_spec(line, "f line 1", str(tmp_path)).expand == "both"
    with pytest.raises(ScheduleError, match="'expand' must be one of inputs, outputs, both"):
        parse_job_spec(line.replace("both", "all"), "f line 1", str(tmp_path))
