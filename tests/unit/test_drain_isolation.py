"""One job's odd outputs never block a drain, and what finish commits is what save would.

Issue 16, defect 7: a tracked file that became a folder (or the reverse).
Each scenario runs with real DataLad and git-annex as the test's user and, through
``runuser``, as an unprivileged one; its twin dataset is committed by ``datalad save``.
"""

from __future__ import annotations

import json
import os
import pwd
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.unit.test_annex_integrity import _python_for, _unprivileged, owned_folder

#: what the scenarios share: datasets, jobs committed by commit_jobs as finish does, twins
#: committed by datalad save, and the facts the tests compare
_COMMON = r"""
import json, os, subprocess, sys
from datalad.api import Dataset, create
from datalad_slurm.committer import commit_jobs, recover
from datalad_slurm.gitlock import open_registry
from datalad_slurm.slurm.state import JobState, JobStatus, TaskState

# the same commit ids in both twins' nested repositories
os.environ.update(GIT_AUTHOR_DATE="1700000000 +0000", GIT_COMMITTER_DATE="1700000000 +0000")


def run(top, *args, check=True):
    return subprocess.run(["git", *args], cwd=top, capture_output=True, check=check).stdout


def dataset(top, kind):
    if kind == "git-sha256":
        run(os.path.dirname(top), "init", "-q", "--object-format=sha256", top)
        create(top, annex=False, force=True, result_renderer="disabled")
    else:
        create(top, annex=kind != "git", result_renderer="disabled")
    if kind == "annex-slow":  # every file through git annex add
        run(top, "config", "annex.largefiles", "anything")
    return Dataset(top)


def finish(top, outputs_by_id):
    # one completed job per entry, registered at the first call, committed as finish does
    with open_registry(top) as registry:
        recover(top, registry)
        known = {job.job_id: job for job in registry.jobs(states=("open",))}
        batch = []
        for job_id, outputs in outputs_by_id.items():
            job = known.get(job_id)
            if job is None:
                job = registry.reserve(
                    cmd="sbatch job.sh", pwd=".", inputs=[], extra_inputs=[], outputs=outputs
                )
                job = registry.mark_submitted(job, job_id, None)
            task = TaskState(job_id, None, JobState.COMPLETED, exit_code=0, work_dir=top)
            batch.append((job, JobStatus(job_id, {task.label: task}, backend="test")))
        results = commit_jobs(Dataset(top), registry, batch)
        return {
            str(r["slurm_job_id"]): [r["status"], r["message"]]
            for r in results
            if r["action"] == "finish"
        }


def save(top, paths):
    # the twin: datalad save of each job's paths, as a user would
    return [
        [r["action"], r["status"]]
        for path in paths
        for r in Dataset(top).save(
            path=os.path.join(top, path), message=path, on_failure="ignore",
            return_type="list", result_renderer="disabled",
        )
    ]


def tree(top, under):
    entries = {}
    for entry in run(top, "ls-tree", "-r", "-z", "HEAD").split(b"\0"):
        if entry:
            meta, name = entry.split(b"\t", 1)
            if any(name.startswith(prefix.encode()) for prefix in under):
                entries[name.decode("utf-8", "backslashreplace")] = meta.decode()
    return entries


def clean(top):
    fsck = subprocess.run(
        ["git", "annex", "fsck", "--json"], cwd=top, capture_output=True, text=True
    ).stdout
    return {
        "annex_fsck": all(json.loads(line)["success"] for line in fsck.splitlines()),
        "git_fsck": subprocess.run(
            ["git", "fsck", "--strict", "--no-dangling"], cwd=top, capture_output=True
        ).returncode == 0,
    }


def write(path, text="content\n"):
    path = os.fsencode(path)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as stream:
        stream.write(text)


case, folder, kind = sys.argv[1:4]
report = {}
"""

_SWAP = r"""
# each twin: out1/x a file that becomes a folder, out2/y a folder that becomes a file, out3 new
for name in ("finished", "saved"):
    top = os.path.join(folder, name)
    ds = dataset(top, kind)
    write(os.path.join(top, "out1", "x"), "a file\n")
    write(os.path.join(top, "out2", "y", "z"), "in a folder\n")
    ds.save(message="base", result_renderer="disabled")
    os.unlink(os.path.join(top, "out1", "x"))
    write(os.path.join(top, "out1", "x", "inner"), "now in a folder\n")
    subprocess.run(["rm", "-r", os.path.join(top, "out2", "y")], check=True)
    write(os.path.join(top, "out2", "y"), "now a file\n")
    write(os.path.join(top, "out3", "new"), "new\n")
jobs = {1: ["out1"], 2: ["out2"], 3: ["out3"]}
report["finish"] = finish(os.path.join(folder, "finished"), jobs)
report["later"] = finish(os.path.join(folder, "finished"), {4: ["out4"]})
report["save"] = save(os.path.join(folder, "saved"), ["out1", "out2", "out3"])
for name in ("finished", "saved"):
    top = os.path.join(folder, name)
    report[name] = tree(top, ["out"])
    report[name + "_clean"] = clean(top)
report["status"] = run(os.path.join(folder, "finished"), "status", "--porcelain").decode()
print(json.dumps(report))
"""

_SCENARIOS = {"swap": _SWAP}


@pytest.fixture(params=["self", "unprivileged"])
def user_folder(request: pytest.FixtureRequest) -> Iterator[tuple[pwd.struct_passwd | None, Path]]:
    """The test's own user, and an unprivileged one (when the test runs as root), each with
    a folder of their own."""
    user = _unprivileged() if request.param == "unprivileged" else None
    if request.param == "unprivileged" and user is None and os.geteuid() != 0:
        pytest.skip("the test's user is unprivileged already: the 'self' run covers it")
    with owned_folder(user) as folder:
        yield user, folder


def _scenario(
    case: str, kind: str, user_folder: tuple[pwd.struct_passwd | None, Path]
) -> dict[str, Any]:
    user, folder = user_folder
    proc = subprocess.run(
        [
            *_python_for(user),
            "-c",
            _COMMON + _SCENARIOS[case.split("-")[0]],
            case,
            str(folder),
            kind,
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    report: dict[str, Any] = json.loads(proc.stdout.splitlines()[-1])
    return report


def _all_clean(*facts: dict[str, bool]) -> None:
    for fact in facts:
        assert fact == {"annex_fsck": True, "git_fsck": True}, fact


# --- defect 7: a tracked file that became a folder, or the reverse ----------------------------


@pytest.mark.parametrize("kind", ["annex", "annex-slow", "git", "git-sha256"])
def test_file_folder_swaps_are_committed_as_datalad_save_commits_them(
    kind: str, user_folder: tuple[pwd.struct_passwd | None, Path]
) -> None:
    report = _scenario("swap", kind, user_folder)
    assert {job: status for job, (status, _) in report["finish"].items()} == {
        "1": "ok",
        "2": "ok",
        "3": "ok",
    }, report["finish"]
    assert report["later"]["4"][0] == "ok", report["later"]
    assert [status for _, status in report["save"]] == ["ok"] * len(report["save"])
    assert report["finished"] == report["saved"]
    assert {"out1/x/inner", "out2/y", "out3/new"} <= set(report["finished"])
    assert not {"out1/x", "out2/y/z"} & set(report["finished"])
    assert report["status"] == ""
    _all_clean(report["finished_clean"], report["saved_clean"])
