"""The scratch folder of ``schedule --alt-dir`` on real folders: which folders may be
one, what is copied in and brought back, what a leftover is, and a folder that is not there at
finish (issue 20, item 3)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from datalad.api import create

from datalad_slurm.jobs import altdir
from datalad_slurm.jobs.statedir import open_registry
from tests.unit.conftest import git
from tests.unit.test_parity_crashes import JOBS, _finish, _register, _states, no_spool

pytestmark = pytest.mark.usefixtures(no_spool.__name__)


def test_the_scratch_folder_must_exist_outside_the_dataset(tmp_path: Path) -> None:
    ds = tmp_path / "ds"
    (ds / "sub").mkdir(parents=True)
    (tmp_path / "scratch").mkdir()
    os.symlink(tmp_path / "scratch", tmp_path / "link")
    assert altdir.scratch_root("../link", str(ds), str(ds)) == str(tmp_path / "scratch")
    with pytest.raises(altdir.AltDirError, match="no such folder; create it first"):
        altdir.scratch_root("../typo", str(ds), str(ds))
    with pytest.raises(altdir.AltDirError, match="lies inside the dataset"):
        altdir.scratch_root("sub", str(ds), str(ds))
    with pytest.raises(altdir.AltDirError, match="holds the dataset"):
        altdir.scratch_root(str(tmp_path), str(ds), str(ds))
    with pytest.raises(altdir.AltDirError, match="the whole dataset"):
        altdir.check_outputs(["out", "."])


def test_inputs_are_copied_once_with_their_content(tmp_path: Path) -> None:
    ds, scratch = tmp_path / "ds", tmp_path / "scratch"
    (ds / "data" / "deep").mkdir(parents=True)
    (ds / "data" / "deep" / "a.txt").write_text("a\n")
    (ds / "object").write_text("content\n")
    (ds / "object").chmod(0o444)  # as an annex object is
    os.symlink("../object", ds / "data" / "link")
    (ds / "data" / ".git").mkdir()  # a subdataset's: no input
    (ds / "script.sh").write_text("#!/bin/sh\n")
    (ds / "script.sh").chmod(0o755)
    scratch.mkdir()
    copied = altdir.copy_inputs(str(ds), str(scratch), ["data", "script.sh"])
    assert sorted(copied) == ["data/deep/a.txt", "data/link", "script.sh"]
    assert (scratch / "data" / "link").read_text() == "content\n"
    assert not (scratch / "data" / "link").is_symlink()
    assert os.access(scratch / "data" / "link", os.W_OK)  # the job may change its copy
    assert os.access(scratch / "script.sh", os.X_OK)
    assert not (scratch / "data" / ".git").exists()
    # the same size and time: not copied again
    assert altdir.copy_inputs(str(ds), str(scratch), ["data", "script.sh"]) == []
    (ds / "data" / "deep" / "a.txt").write_text("changed\n")
    assert altdir.copy_inputs(str(ds), str(scratch), ["data"]) == ["data/deep/a.txt"]
    # content not here and no copy there: an error naming the input
    os.symlink("../.git/annex/objects/none", ds / "data" / "absent")
    with pytest.raises(altdir.AltDirError, match="input 'data/absent' has no content here"):
        altdir.copy_inputs(str(ds), str(scratch), ["data/absent"])


def test_leftovers_are_files_not_empty_folders(tmp_path: Path) -> None:
    (tmp_path / "out" / "empty" / "deeper").mkdir(parents=True)
    (tmp_path / "res").mkdir()
    (tmp_path / "res" / "r.txt").write_text("left\n")
    (tmp_path / "g1.txt").write_text("left\n")
    outputs = ["out/empty", "res", "*.txt", "new", "data/in"]
    assert altdir.left_over(str(tmp_path), outputs, ["data"]) == ["res", "*.txt"]


def test_a_folder_the_dataset_has_where_the_job_wrote_a_file_is_refused(tmp_path: Path) -> None:
    ds, scratch = tmp_path / "ds", tmp_path / "scratch"
    (ds / "out" / "x").mkdir(parents=True)
    (scratch / "out").mkdir(parents=True)
    (scratch / "out" / "x").write_text("a file now\n")
    with pytest.raises(altdir.AltDirError, match="'out/x' is a folder in the dataset"):
        altdir.bring_back(str(ds), str(scratch), ["out"], [])
    assert (scratch / "out" / "x").read_text() == "a file now\n"


def test_a_scratch_folder_that_is_not_there_keeps_the_job_open(tmp_path: Path) -> None:
    top = tmp_path / "ds"
    create(str(top), result_renderer="disabled")
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    _register(top, str(scratch))
    aside = tmp_path / "unmounted"
    scratch.rename(aside)
    head = git(top, "rev-parse", "HEAD").strip()
    results = [r for r in _finish(top) if r.get("action") == "finish"]
    assert [r["status"] for r in results] == ["error"] * len(JOBS), results
    assert f"its scratch folder {scratch} (--alt-dir) is not there" in results[0]["message"]
    assert git(top, "rev-parse", "HEAD").strip() == head
    assert {state for state, _ in _states(top).values()} == {"open"}
    aside.rename(scratch)
    assert [r["status"] for r in _finish(top) if r.get("action") == "finish"] == ["ok"] * len(JOBS)
    with open_registry(str(top)) as registry:
        assert all(job.state == "finished" for job in registry.jobs(states=("finished",)))
    assert [p for p in scratch.rglob("*") if not p.is_dir()] == []
