"""No fault of finish ever damages an annex object, and what it commits is what save would.

Real DataLad datasets and git-annex; scenarios that depend on file modes also run as an
unprivileged user (root ignores modes), through ``runuser``.
"""

from __future__ import annotations

import json
import os
import pwd
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from datalad.api import Dataset, create

from datalad_slurm.commit import annexing
from datalad_slurm.commit.annexing import annex_new_files
from datalad_slurm.commit.batch import commit_jobs
from datalad_slurm.commit.record import prepare_commit
from datalad_slurm.commit.recovery import recover
from datalad_slurm.commit.writer import (
    advance_head,
    stage,
    staged_changes,
    worktree_changes,
    write_commits,
)
from datalad_slurm.git.pack import TMP_PACK_PREFIX
from datalad_slurm.jobs.job import Job
from datalad_slurm.jobs.statedir import clear_interrupted_writes, open_registry
from datalad_slurm.slurm.state import JobState, JobStatus, TaskState
from tests.conftest import owned_folder, python_as, unprivileged_user
from tests.unit.conftest import git

#: git and git-annex only: the host and forky-jsoncli tiers (tests/conftest.py, AGNOSTIC_TIERS)
pytestmark = pytest.mark.slurm_agnostic

REPO = Path(__file__).resolve().parents[2]


def _job(pwd_: str = ".", outputs: tuple[str, ...] = ("out",)) -> Job:
    return Job(
        id=1,
        token="tok",
        job_id=42,
        cluster=None,
        state="open",
        cmd="sbatch job.sh",
        pwd=pwd_,
        inputs=[],
        extra_inputs=[],
        outputs=list(outputs),
        chain=[],
        message=None,
        dsid=None,
        submitted_from=None,
        submitted_at=0.0,
        submission_facts={},
    )


def _status(top: Path, backend: str, end_time: int) -> JobStatus:
    task = TaskState(
        42,
        None,
        JobState.COMPLETED,
        exit_code=0,
        end_time=end_time,
        stdout=str(top / "slurm-42.out"),
        work_dir=str(top),
    )
    return JobStatus(42, {task.label: task}, backend=backend)


def _dataset(path: Path) -> Path:
    create(str(path), result_renderer="disabled")
    return path


def _fsck(path: Path, *args: str) -> list[dict[str, Any]]:
    out = subprocess.run(
        ["git", "annex", "fsck", "--json", *args], cwd=path, capture_output=True, text=True
    ).stdout
    return [json.loads(line) for line in out.splitlines() if line.strip()]


# --- 1. never write through a link ------------------------------------------------------------


def test_a_retried_finish_replaces_the_env_json_link_and_never_writes_its_object(
    tmp_path: Path,
) -> None:
    """Squeue answered first, sacct second: the facts differ, the first object stays intact."""
    top = _dataset(tmp_path / "ds")
    (top / "slurm-42.out").write_text("log\n")
    first = prepare_commit(str(top), _job(), _status(top, "squeue", 100))
    env_json = top / first.files.env_json
    # a finish killed after annexing, before HEAD moved: env.json is an annex symlink now
    assert annex_new_files(str(top), [first.files.env_json]).annexed == [first.files.env_json]
    assert env_json.is_symlink()
    annexed = env_json.resolve()
    content = annexed.read_bytes()
    assert b'"squeue"' in content

    prepare_commit(str(top), _job(), _status(top, "sacct", 200))
    assert annexed.read_bytes() == content, "the annex object was written through its link"
    assert not env_json.is_symlink()
    assert b'"sacct"' in env_json.read_bytes()
    assert _fsck(top, "--key", annexed.name)[0]["success"]

    # a hard link to the object (a run killed between linking and swapping in the symlink)
    env_json.unlink()
    os.link(annexed, env_json)
    prepare_commit(str(top), _job(), _status(top, "slurmdbd", 300))
    assert annexed.read_bytes() == content, "the annex object was written through a hard link"
    assert os.stat(env_json).st_nlink == 1 and b'"slurmdbd"' in env_json.read_bytes()
    assert not [name for name in os.listdir(top) if name.endswith("datalad-slurm-tmp")]


@pytest.fixture
def user_folder() -> Iterator[tuple[pwd.struct_passwd | None, Path]]:
    """A folder the unprivileged user owns (pytest's tmp_path is root's own)."""
    user = unprivileged_user()
    with owned_folder(user) as folder:
        yield user, folder


#: one job, committed by commit_jobs as finish does; its outputs' folder is read-only at first
_READ_ONLY_SCENARIO = """
import json, os, subprocess, sys
from datalad.api import Dataset, create
from datalad_slurm.commit.batch import commit_jobs
from datalad_slurm.commit.recovery import recover
from datalad_slurm.jobs.statedir import open_registry
from datalad_slurm.slurm.state import JobState, JobStatus, TaskState
from tests.unit.conftest import git

top = sys.argv[1]
create(top, result_renderer="disabled")
ds = Dataset(top)
registry = open_registry(top)
job = registry.reserve(cmd="sbatch job.sh", pwd=".", inputs=[], extra_inputs=[], outputs=["out"])
job = registry.mark_submitted(job, 42, None)
os.mkdir(os.path.join(top, "out"))
result = os.path.join(top, "out", "result.txt")
with open(result, "w") as stream:
    stream.write("the job's result\\n")
with open(os.path.join(top, "slurm-42.out"), "w") as stream:
    stream.write("log\\n")
os.chmod(os.path.join(top, "out"), 0o555)


def finish(end):
    task = TaskState(42, None, JobState.COMPLETED, exit_code=0, end_time=end,
                     stdout=os.path.join(top, "slurm-42.out"), work_dir=top)
    results = commit_jobs(ds, registry, [(registry.get(job.id), JobStatus(42, {"42": task}))])
    return [r["status"] for r in (o.result() for o in results) if r["action"] == "finish"]


report = {"first": finish(100)}
info = os.stat(result)
report["after_first"] = [info.st_nlink, oct(info.st_mode & 0o777), os.path.islink(result)]
os.chmod(os.path.join(top, "out"), 0o755)
report["second"] = finish(200)
report["state"] = registry.get(job.id).state
report["committed"] = subprocess.run(
    ["git", "ls-tree", "-r", "--name-only", "HEAD"], cwd=top, capture_output=True, text=True
).stdout.split()
fsck = subprocess.run(["git", "annex", "fsck", "--json"], cwd=top, capture_output=True, text=True)
report["fsck"] = [json.loads(line)["success"] for line in fsck.stdout.splitlines()]
report["status"] = subprocess.run(
    ["git", "status", "--porcelain"], cwd=top, capture_output=True, text=True
).stdout
print(json.dumps(report))
"""


def test_a_job_in_a_read_only_folder_commits_once_the_folder_is_fixed(
    user_folder: tuple[pwd.struct_passwd | None, Path],
) -> None:
    """As an ordinary user: the output cannot be annexed, the job stays open, its file is left
    as it was (not hard-linked to an object, not read-only), and once the user makes the folder
    writable the next finish commits it, env.json and all."""
    user, folder = user_folder
    proc = subprocess.run(
        [*python_as(user), "-c", _READ_ONLY_SCENARIO, str(folder / "ds")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(proc.stdout.splitlines()[-1])
    assert report["first"] == ["error"]
    assert report["after_first"] == [1, "0o644", False]
    assert report["second"] == ["ok"], report
    assert report["state"] == "finished"
    assert {"out/result.txt", "slurm-42.out", "slurm-job-42.env.json"} <= set(report["committed"])
    assert report["fsck"] and all(report["fsck"]), report
    assert report["status"] == ""


# --- 10. packs a killed finish was writing --------------------------------------------------

_KILLED_IN_INSTALL_PACK = """
import os, sys
from datalad_slurm.git import pack as packwriter
from datalad_slurm.jobs.statedir import git_writes

def fsync_then_die(fd):
    os.kill(os.getpid(), 9)

packwriter.os.fsync = fsync_then_die
with git_writes(sys.argv[1]):
    packwriter.write_blobs(sys.argv[1], [b"some link target"])
"""


def test_packs_a_killed_finish_was_writing_are_removed_by_the_next(tmp_path: Path) -> None:
    top = tmp_path / "repo"
    git(tmp_path, "init", "-q", str(top))
    pack_dir = top / ".git" / "objects" / "pack"
    # git's own temporary packs, and ours of a writer that was not killed, are not ours to take
    (pack_dir / "tmp_pack_Xy12").write_bytes(b"git's")
    without_marker = pack_dir / f"{TMP_PACK_PREFIX}old"
    without_marker.write_bytes(b"")
    assert clear_interrupted_writes(str(top)) == []
    assert without_marker.exists()
    without_marker.unlink()

    proc = subprocess.run([sys.executable, "-c", _KILLED_IN_INSTALL_PACK, str(top)], check=False)
    assert proc.returncode == -9
    left = [name for name in os.listdir(pack_dir) if name.startswith(TMP_PACK_PREFIX)]
    assert len(left) == 1
    assert clear_interrupted_writes(str(top)) == [f"objects/pack/{left[0]}"]
    assert sorted(os.listdir(pack_dir)) == ["tmp_pack_Xy12"]
    git(top, "fsck", "--strict")


# --- 2. location logs where git-annex reads them ----------------------------------------------


def test_location_logs_follow_annex_tune_branchhash1(tmp_path: Path) -> None:
    top = tmp_path / "tuned"
    git(tmp_path, "init", "-q", str(top))
    git(top, "config", "user.name", "T")
    git(top, "config", "user.email", "t@example.org")
    git(top, "-c", "annex.tune.branchhash1=true", "annex", "init", "-q")
    (top / "result.txt").write_text("result\n")
    assert annex_new_files(str(top), ["result.txt"]).annexed == ["result.txt"]
    git(top, "commit", "-q", "-m", "result")
    key = (top / "result.txt").resolve().name
    logs = git(top, "ls-tree", "-r", "--name-only", "git-annex").split()
    assert [name for name in logs if name.endswith(f"{key}.log")] == [
        git(top, "annex", "examinekey", "--format", "${hashdirlower}", key).split("/")[0]
        + f"/{key}.log"
    ]
    whereis = json.loads(git(top, "annex", "whereis", "--json", "result.txt"))
    assert len(whereis["whereis"]) == 1, whereis
    fsck = _fsck(top)
    assert fsck and all(item["success"] for item in fsck), fsck


# --- 3. links the job made itself -------------------------------------------------------------


def _tree(path: Path) -> dict[str, tuple[str, str]]:
    tree = {}
    for entry in git(path, "ls-tree", "-r", "-z", "HEAD").split("\0"):
        if entry:
            meta, name = entry.split("\t", 1)
            mode, _kind, sha = meta.split()
            tree[name] = (mode, sha)
    tree.pop(".datalad/config")  # the dataset ids differ
    return tree


def _commit_as_finish(top: Path, paths: list[str]) -> None:
    """Stage and commit as the committer does: plumbing, so no pre-commit hook of git-annex's
    (which would fix links) runs."""
    assert stage(str(top), worktree_changes(str(top), paths), annex=True) == []
    head = git(top, "rev-parse", "HEAD").strip()
    changes = staged_changes(str(top), head, paths)
    (sha,) = write_commits(str(top), head, [("finish", changes)])
    advance_head(str(top), head, sha, "test")


def _twin(path: Path) -> Path:
    top = _dataset(path)
    (top / "data.bin").write_text("annexed before the job\n")
    subprocess.run(
        ["datalad", "save", "-m", "data", "data.bin"], cwd=top, capture_output=True, check=True
    )
    return top


def test_links_the_job_made_into_the_annex_are_committed_as_datalad_save_would(
    tmp_path: Path,
) -> None:
    saved, fast = _twin(tmp_path / "saved"), _twin(tmp_path / "fast")
    paths = ["absolute", "deep/er/absolute", "deep/detour"]
    for top in (saved, fast):
        content = (top / "data.bin").resolve()
        (top / "deep" / "er").mkdir(parents=True)
        (top / "absolute").symlink_to(content)
        (top / "deep" / "er" / "absolute").symlink_to(content)
        detour = os.path.relpath(content, top / "deep").replace("/annex/", "/annex/../annex/", 1)
        (top / "deep" / "detour").symlink_to(detour)
    subprocess.run(["datalad", "save", "-m", "links", *paths], cwd=saved, check=True)
    _commit_as_finish(fast, paths)
    assert _tree(fast) == _tree(saved)
    for path in paths:
        assert os.readlink(fast / path) == os.readlink(saved / path), path
    assert git(fast, "status", "--porcelain") == ""
    fsck = _fsck(fast)
    assert fsck and all(item["success"] for item in fsck), fsck


# --- 5. outputs schedule unlocked and the job left alone --------------------------------------


def _finish(top: Path, outputs: list[str]) -> list[dict[str, Any]]:
    """One completed job with these outputs, committed by commit_jobs as finish does."""
    with open_registry(str(top)) as registry:
        recover(str(top), registry)  # as finish does first: a killed run's job is open again
        jobs = registry.jobs(states=("open",))
        if jobs:
            job = jobs[0]
        else:
            job = registry.reserve(
                cmd="sbatch job.sh", pwd=".", inputs=[], extra_inputs=[], outputs=outputs
            )
            job = registry.mark_submitted(job, 42, None)
        task = TaskState(42, None, JobState.COMPLETED, exit_code=0, work_dir=str(top))
        status = JobStatus(42, {task.label: task}, backend="test")
        return [o.result() for o in commit_jobs(Dataset(str(top)), registry, [(job, status)])]


def test_outputs_unlocked_by_schedule_and_left_alone_are_locked_again(tmp_path: Path) -> None:
    saved, fast = _dataset(tmp_path / "saved"), _dataset(tmp_path / "fast")
    for top in (saved, fast):
        (top / "out").mkdir()
        (top / "out" / "kept.dat").write_text("from an earlier run\n")
        (top / "out" / "changed.dat").write_text("to be rewritten\n")
        Dataset(str(top)).save(message="earlier", result_renderer="disabled")
        # what schedule does with existing outputs; the job rewrites one, adds one
        Dataset(str(top)).unlock(path=str(top / "out"), result_renderer="disabled")
        (top / "out" / "changed.dat").write_text("rewritten\n")
        (top / "out" / "new.dat").write_text("new\n")
    Dataset(str(saved)).save(path=str(saved / "out"), message="job", result_renderer="disabled")
    results = _finish(fast, ["out"])
    assert [r["status"] for r in results if r["action"] == "finish"] == ["ok"]

    def outputs(top: Path) -> dict[str, tuple[str, str]]:
        return {name: entry for name, entry in _tree(top).items() if name.startswith("out/")}

    assert outputs(fast) == outputs(saved)
    assert outputs(fast)["out/kept.dat"][0] == "120000"
    assert (fast / "out" / "kept.dat").is_symlink()
    assert git(fast, "status", "--porcelain") == ""
    fsck = _fsck(fast)
    assert fsck and all(item["success"] for item in fsck), fsck


# --- 9. killed before the location logs, then the slow path -----------------------------------


def test_links_of_a_finish_killed_before_the_logs_are_recorded_by_the_slow_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The next finish goes through git annex add (the dataset's rules changed meanwhile), which
    adds a link that the rules call small to git as it is, without a location log."""
    top = _dataset(tmp_path / "ds")
    (top / "out").mkdir()
    (top / "out" / "result.dat").write_text("result\n")

    def killed(*_args: object, **_kwargs: object) -> None:
        raise KeyboardInterrupt  # as SIGKILL would: after the links, before the logs

    monkeypatch.setattr(annexing, "record_present", killed)
    with pytest.raises(KeyboardInterrupt):
        _finish(top, ["out"])
    monkeypatch.undo()
    assert (top / "out" / "result.dat").is_symlink()
    git(top, "config", "annex.largefiles", "largerthan=1kb")

    results = _finish(top, ["out"])
    assert [r["status"] for r in results if r["action"] == "finish"] == ["ok"]
    names = ["out/result.dat", "slurm-job-42.env.json"]
    whereis = subprocess.run(
        ["git", "annex", "whereis", "--json"], cwd=top, capture_output=True, text=True
    ).stdout
    copies = {item["file"]: len(item["whereis"]) for item in map(json.loads, whereis.splitlines())}
    assert copies.get("out/result.dat") == 1, copies
    assert set(names) <= set(git(top, "ls-files").split())
    fsck = _fsck(top)
    assert fsck and all(item["success"] for item in fsck), fsck


def test_a_reused_job_id_leaves_the_earlier_jobs_env_json_intact(tmp_path: Path) -> None:
    """Logs outside the dataset put env.json in the job's pwd: the second job with the same id
    replaces the committed link, it does not write into the first job's object."""
    top = _dataset(tmp_path / "ds")
    (top / "out").mkdir()
    (top / "out" / "first.dat").write_text("first\n")
    assert [r["status"] for r in _finish(top, ["out"]) if r["action"] == "finish"] == ["ok"]
    first = (top / "slurm-job-42.env.json").resolve()
    content = first.read_bytes()
    (top / "out2").mkdir()
    (top / "out2" / "second.dat").write_text("second\n")
    assert [r["status"] for r in _finish(top, ["out2"]) if r["action"] == "finish"] == ["ok"]
    assert first.read_bytes() == content
    assert (top / "slurm-job-42.env.json").resolve() != first
    fsck = _fsck(top, "--all")
    assert fsck and all(item["success"] for item in fsck), fsck


def test_a_file_that_changed_while_annexed_is_left_as_it_was(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Changed after its key was computed: it goes to git annex add, writable, one link."""
    top = _dataset(tmp_path / "ds")
    (top / "grows.dat").write_text("still being written\n")
    monkeypatch.setattr(annexing, "_same_file", lambda *_args: False)
    assert annex_new_files(str(top), ["grows.dat"]).rest == ["grows.dat"]
    info = os.stat(top / "grows.dat")
    assert (info.st_nlink, info.st_mode & 0o777) == (1, 0o644)


def test_a_hard_link_left_by_a_kill_is_annexed_by_the_next_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Killed between linking the content into the annex and swapping in the symlink."""
    top = _dataset(tmp_path / "ds")
    (top / "out").mkdir()
    (top / "out" / "result.dat").write_text("result\n")

    def killed(*_args: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(annexing, "_replace_by_link", killed)
    with pytest.raises(KeyboardInterrupt):
        _finish(top, ["out"])
    monkeypatch.undo()
    assert os.stat(top / "out" / "result.dat").st_nlink == 2
    results = _finish(top, ["out"])
    assert [r["status"] for r in results if r["action"] == "finish"] == ["ok"]
    assert (top / "out" / "result.dat").is_symlink()
    assert git(top, "status", "--porcelain") == ""
    fsck = _fsck(top)
    assert fsck and all(item["success"] for item in fsck), fsck
