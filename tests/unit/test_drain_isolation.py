"""One job's odd outputs never block a drain, and what finish commits is what save would.

Issue 16, defects 6-8: a git repository made inside an output, a tracked file that became a
folder (or the reverse), a name that is not UTF-8, and a job whose files git cannot stage.
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
from datalad.api import Dataset, create

from datalad_slurm.commit import writer as commitwriter
from datalad_slurm.commit.batch import commit_jobs
from datalad_slurm.git.runner import GitError
from datalad_slurm.jobs.statedir import open_registry
from datalad_slurm.slurm.state import JobState, JobStatus, TaskState
from tests.conftest import owned_folder, python_as, unprivileged_user
from tests.unit.conftest import git

#: git and git-annex only: the host and forky-jsoncli tiers (tests/conftest.py, AGNOSTIC_TIERS)
pytestmark = pytest.mark.slurm_agnostic

#: what the scenarios share: datasets, jobs committed by commit_jobs as finish does, twins
#: committed by datalad save, and the facts the tests compare
_COMMON = r"""
import json, os, subprocess, sys
from datalad.api import Dataset, create
from datalad_slurm.commit.batch import commit_jobs
from datalad_slurm.commit.recovery import recover
from datalad_slurm.jobs.statedir import open_registry
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
        results = [o.result() for o in commit_jobs(Dataset(top), registry, batch)]
        return {
            str(r["slurm_job_id"]): [r["status"], r["message"]]
            for r in results
            if r["action"] == "finish" and "missing_output" not in r  # not the warnings
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

_NESTED = r"""
# job 1 makes a git repository with a commit in its output, job 2 one without, job 3 a file
def nested(top, path, commit):
    repository = os.path.join(top, path)
    run(top, "init", "-q", repository)
    write(os.path.join(repository, "f"), "in the nested repository\n")
    if commit:
        run(repository, "add", "f")
        run(repository, "commit", "-q", "-m", "nested")

for name in ("finished", "saved"):
    top = os.path.join(folder, name)
    dataset(top, kind)
    nested(top, "out1/nested", commit=True)
    write(os.path.join(top, "out1", "result"), "beside it\n")
    nested(top, "out2/empty", commit=False)
    write(os.path.join(top, "out3", "result"), "a plain job\n")
finished, saved = os.path.join(folder, "finished"), os.path.join(folder, "saved")
report["finish"] = finish(finished, {1: ["out1"], 2: ["out2"], 3: ["out3"]})
report["save"] = save(saved, ["out1", "out3"])
for name, top in (("finished", finished), ("saved", saved)):
    report[name] = tree(top, ["out1", "out3", ".gitmodules"])
    report[name + "_gitmodules"] = open(os.path.join(top, ".gitmodules")).read()
    report[name + "_config"] = run(top, "config", "--get-regexp", "^submodule").decode()
    report[name + "_clean"] = clean(top)
# job 2 is committed once its repository has a commit
run(os.path.join(finished, "out2", "empty"), "add", "f")
run(os.path.join(finished, "out2", "empty"), "commit", "-q", "-m", "now")
report["again"] = finish(finished, {2: ["out2"]})
report["again_tree"] = tree(finished, ["out2"])
report["again_clean"] = clean(finished)
report["status"] = run(finished, "status", "--porcelain").decode()
print(json.dumps(report))
"""

_NAMES = r"""
# job 1 writes a name that is not UTF-8, jobs 2 and 3 ordinary ones; with "sub", job 1
# touches a subdataset and goes through datalad save
top = os.path.join(folder, "finished")
ds = dataset(top, kind)
slow = case == "names-sub"
if slow:
    ds.create("sub", result_renderer="disabled")
bad = os.path.join(os.fsencode(top), b"out1", b"caf\xe9.txt")
write(bad, "a name in Latin-1\n")
write(os.path.join(top, "out1", "ok.txt"), "fine\n")
write(os.path.join(top, "out2", "r\u00e9sum\u00e9.txt"), "UTF-8\n")
write(os.path.join(top, "out3", "plain.txt"), "plain\n")
extra = ["sub"] if slow else []
jobs = {1: ["out1", *extra], 2: ["out2"], 3: ["out3"]}
report["finish"] = finish(top, jobs)
report["tree"] = tree(top, ["out"])
report["clean"] = clean(top)
# renamed, the job is committed by the next finish
os.rename(bad, os.path.join(os.fsencode(top), b"out1", "caf\u00e9.txt".encode()))
report["again"] = finish(top, {1: jobs[1]})
report["again_tree"] = tree(top, ["out1"])
report["again_clean"] = clean(top)
report["status"] = run(top, "status", "--porcelain").decode()
# datalad save cannot commit the name either
twin = os.path.join(folder, "saved")
dataset(twin, kind)
write(os.path.join(os.fsencode(twin), b"out1", b"caf\xe9.txt"), "a name in Latin-1\n")
try:
    report["save"] = save(twin, ["out1"])
except Exception as exc:  # datalad save of a plain git dataset fails outright
    report["save"] = [["save", type(exc).__name__]]
report["saved_tree"] = tree(twin, ["out1"])
print(json.dumps(report))
"""

_UNREADABLE = r"""
# job 2 of 3 has a file that its user cannot read: git add fails for it
top = os.path.join(folder, "finished")
dataset(top, kind)
for number in (1, 2, 3):
    write(os.path.join(top, f"out{number}", "result"), f"job {number}\n")
secret = os.path.join(top, "out2", "secret")
write(secret, "unreadable\n")
os.chmod(secret, 0)
jobs = {1: ["out1"], 2: ["out2"], 3: ["out3"]}
report["finish"] = finish(top, jobs)
report["tree"] = tree(top, ["out"])
os.chmod(secret, 0o644)
report["again"] = finish(top, {2: ["out2"]})
report["again_tree"] = tree(top, ["out2"])
report["clean"] = clean(top)
report["status"] = run(top, "status", "--porcelain").decode()
print(json.dumps(report))
"""

_SCENARIOS = {"swap": _SWAP, "nested": _NESTED, "names": _NAMES, "unreadable": _UNREADABLE}


@pytest.fixture(params=["self", "unprivileged"])
def user_folder(request: pytest.FixtureRequest) -> Iterator[tuple[pwd.struct_passwd | None, Path]]:
    """The test's own user, and an unprivileged one (when the test runs as root), each with
    a folder of their own."""
    user = unprivileged_user() if request.param == "unprivileged" else None
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
            *python_as(user),
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


# --- defect 6: a git repository made inside an output -----------------------------------------


@pytest.mark.parametrize("kind", ["annex", "git"])
def test_a_nested_repository_is_registered_as_datalad_save_registers_it(
    kind: str, user_folder: tuple[pwd.struct_passwd | None, Path]
) -> None:
    report = _scenario("nested", kind, user_folder)
    finish = report["finish"]
    assert finish["1"][0] == "ok" and finish["3"][0] == "ok", finish
    # a repository without a commit cannot be registered: the job says so, and stays open
    assert finish["2"][0] == "error", finish
    assert "job 2 " in finish["2"][1] and "out2/empty/" in finish["2"][1], finish["2"]
    assert "without a commit" in finish["2"][1]
    # the same gitlink, commit id and .gitmodules as datalad save's
    assert report["finished"]["out1/nested"].startswith("160000 commit ")
    assert report["finished"] == report["saved"]
    assert report["finished_gitmodules"] == report["saved_gitmodules"]
    assert '[submodule "out1/nested"]' in report["finished_gitmodules"]
    assert report["finished_config"] == report["saved_config"]
    _all_clean(report["finished_clean"], report["saved_clean"])
    assert report["again"]["2"][0] == "ok", report["again"]
    assert report["again_tree"]["out2/empty"].startswith("160000 commit ")
    _all_clean(report["again_clean"])
    assert report["status"] == ""


# --- defect 8: a name that is not UTF-8 -------------------------------------------------------


@pytest.mark.parametrize(
    ("case", "kind"), [("names", "annex"), ("names", "git"), ("names-sub", "annex")]
)
def test_a_name_that_is_not_utf8_holds_up_its_own_job_only(
    case: str, kind: str, user_folder: tuple[pwd.struct_passwd | None, Path]
) -> None:
    report = _scenario(case, kind, user_folder)
    finish = report["finish"]
    assert finish["2"][0] == "ok" and finish["3"][0] == "ok", finish
    assert finish["1"][0] == "error", finish
    message = finish["1"][1]
    assert "job 1 " in message and "out1/caf\\xe9.txt" in message, message
    assert "not valid UTF-8" in message
    assert "out2/r\u00e9sum\u00e9.txt" in report["tree"] and "out3/plain.txt" in report["tree"]
    assert not [name for name in report["tree"] if name.startswith("out1/")], report["tree"]
    _all_clean(report["clean"])
    assert report["again"]["1"][0] == "ok", report["again"]
    assert {"out1/caf\u00e9.txt", "out1/ok.txt"} <= set(report["again_tree"])
    _all_clean(report["again_clean"])
    assert report["status"] == ""
    # datalad save does not commit such a name either
    assert report["saved_tree"] == {}
    assert any(status != "ok" for _, status in report["save"]), report["save"]


# --- a failed stage of one job ---------------------------------------------------------------


def test_a_job_git_cannot_stage_holds_up_only_itself(
    user_folder: tuple[pwd.struct_passwd | None, Path],
) -> None:
    """As an unprivileged user, git add fails on a file its owner cannot read (root reads
    anything: its run shows that all three are committed)."""
    user, _folder = user_folder
    report = _scenario("unreadable", "git", user_folder)
    finish = report["finish"]
    assert finish["1"][0] == "ok" and finish["3"][0] == "ok", finish
    assert {"out1/result", "out3/result"} <= set(report["tree"])
    if user is None and os.geteuid() == 0:
        assert finish["2"][0] == "ok", finish
        return
    assert finish["2"][0] == "error", finish
    assert "job 2 " in finish["2"][1] and "out2/secret" in finish["2"][1], finish["2"]
    assert not [name for name in report["tree"] if name.startswith("out2/")]
    assert report["again"]["2"][0] == "ok", report["again"]
    assert {"out2/result", "out2/secret"} <= set(report["again_tree"])
    _all_clean(report["clean"])
    assert report["status"] == ""


def test_a_failed_stage_in_a_drain_of_many_is_that_jobs_alone(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The drain's staging fails (here git-annex's, made to fail for one job's files): the jobs
    are staged apart until the one that fails is found; the other six are committed."""
    top = tmp_path / "ds"
    create(str(top), result_renderer="disabled")
    for number in range(1, 8):
        (top / f"out{number}").mkdir()
        (top / f"out{number}" / "result").write_text(f"job {number}\n")
    real = commitwriter.annex_new_files
    calls: list[int] = []

    def failing(repo: str, untracked: Any, *args: Any) -> Any:
        calls.append(len(untracked))
        if "out5/result" in untracked:
            raise GitError("git update-index failed: out5/result is not to be staged")
        return real(repo, untracked, *args)

    monkeypatch.setattr(commitwriter, "annex_new_files", failing)
    with open_registry(str(top)) as registry:
        batch = []
        for number in range(1, 8):
            job = registry.reserve(
                cmd="sbatch job.sh", pwd=".", inputs=[], extra_inputs=[], outputs=[f"out{number}"]
            )
            job = registry.mark_submitted(job, number, None)
            task = TaskState(number, None, JobState.COMPLETED, exit_code=0, work_dir=str(top))
            batch.append((job, JobStatus(number, {task.label: task}, backend="test")))
        results = {
            r["slurm_job_id"]: r
            for r in (o.result() for o in commit_jobs(Dataset(str(top)), registry, batch))
            if r["action"] == "finish" and "missing_output" not in r  # not the warnings
        }
        states = {job.job_id: registry.get(job.id).state for job, _ in batch}
    assert {n: r["status"] for n, r in results.items()} == {
        n: "error" if n == 5 else "ok" for n in range(1, 8)
    }
    assert "job 5 " in results[5]["message"] and "out5/result" in results[5]["message"]
    assert states == {n: "open" if n == 5 else "finished" for n in range(1, 8)}
    assert len(calls) > 1  # staged apart after the drain's staging failed
    committed = git(top, "ls-tree", "-r", "--name-only", "HEAD").split()
    assert {f"out{n}/result" for n in range(1, 8) if n != 5} <= set(committed)
    assert "out5/result" not in committed
    fsck = subprocess.run(
        ["git", "annex", "fsck", "--json"], cwd=top, capture_output=True, text=True, check=True
    ).stdout.splitlines()
    assert fsck and all(json.loads(line)["success"] for line in fsck)
    git(top, "fsck", "--strict", "--no-dangling")
