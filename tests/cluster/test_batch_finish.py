"""finish commits all completed jobs of a drain in one go (issue 5): one commit per job, only
its own files, each file in the annex or in git exactly as ``datalad save`` would put it."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest

from datalad_slurm.jobs.statedir import open_registry
from tests.conftest import Cluster, call, finish_by_job, git, only, subjects, write_script

#: the subject is the batch committer (annex rules, files of a drain); Slurm only runs the
#: jobs: host and forky-jsoncli only (tests/conftest.py, AGNOSTIC_TIERS)
pytestmark = pytest.mark.slurm_agnostic


def _annexed(ds: Any, path: str) -> bool:
    """Is the committed file an annex key (symlink or pointer), not a blob of its content?"""
    proc = subprocess.run(
        ["git", "annex", "lookupkey", path], cwd=ds.path, capture_output=True, text=True
    )
    return proc.returncode == 0 and bool(proc.stdout.strip())


def _job_files(ds: Any, job: int) -> list[str]:
    sha = git(ds, "log", "-1", "--format=%H", "-F", f"--grep=Slurm job {job}:").strip()
    assert sha, f"no commit for job {job}"
    names = git(ds, "-c", "core.quotePath=false", "show", "-z", "--name-only", "--format=", sha)
    return sorted(n for n in names.strip("\n").split("\0") if n)


def test_many_jobs_one_drain_files_and_annex_rules(
    slurm: Cluster, dataset: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ds = dataset
    # text files go to git, everything else to the annex: what 'datalad save' would do
    attributes = Path(ds.path, ".gitattributes")
    attributes.write_text(attributes.read_text() + "*.txt annex.largefiles=nothing\n")
    ds.save(message="largefiles rule", result_renderer="disabled")
    monkeypatch.chdir(ds.path)
    script = write_script(
        ds,
        "job.sh",
        'mkdir -p "$1" && echo text > "$1/r.txt" && head -c 3000 /dev/urandom > "$1/r.bin"\n'
        'echo hidden > "$1/.dot"\n',
    )
    Path(ds.path, "seed").mkdir()
    Path(ds.path, "seed", "old.bin").write_text("to be replaced\n")
    Path(ds.path, "seed", "gone.txt").write_text("to be deleted\n")
    ds.save(message="seed", result_renderer="disabled")
    names = [f'out {n} "q"' for n in range(6)]
    jobs = []
    for name in names:
        Path(ds.path, name).mkdir()
        result = call(
            ds, "schedule", f"sbatch -o '{name}/slurm-%j.out' {script} '{name}'", outputs=[name]
        )
        jobs.append(result[0]["slurm_job_id"])
    changer = call(
        ds,
        "schedule",
        "sbatch -o seed/slurm-%j.out --wrap 'rm seed/gone.txt; echo new > seed/old.bin'",
        outputs=["seed"],
    )[0]["slurm_job_id"]
    slurm.wait_done([*jobs, changer])

    results = finish_by_job(ds)
    assert {j: results[j]["status"] for j in [*jobs, changer]} == dict.fromkeys(
        [*jobs, changer], "ok"
    )
    for name, job in zip(names, jobs, strict=True):
        expected = sorted(
            f"{name}/{f}"
            for f in ["r.txt", "r.bin", ".dot", f"slurm-{job}.out", f"slurm-job-{job}.env.json"]
        )
        assert _job_files(ds, job) == expected
        assert not _annexed(ds, f"{name}/r.txt"), "*.txt goes to git by .gitattributes"
        assert _annexed(ds, f"{name}/r.bin")
        assert _annexed(ds, f"{name}/.dot"), "dotfiles are annexed, as datalad save does"
        assert (
            results[job]["commit"]
            == git(ds, "log", "-1", "--format=%H", "-F", f"--grep=Slurm job {job}:").strip()
        )
    assert _job_files(ds, changer) == sorted(
        [
            "seed/gone.txt",
            "seed/old.bin",
            f"seed/slurm-{changer}.out",
            f"seed/slurm-job-{changer}.env.json",
        ]
    )
    assert not Path(ds.path, "seed/gone.txt").exists()
    assert git(ds, "cat-file", "-e", "HEAD:seed/old.bin") == ""
    assert "gone.txt" not in git(ds, "ls-files", "seed")
    # one commit per job, in a chain on top of what was there
    log = git(ds, "log", "--format=%s", "-n", str(len(jobs) + 1)).splitlines()
    assert sorted(log) == sorted(
        f"[DATALAD SLURM RUN] Slurm job {j}: Completed" for j in [*jobs, changer]
    )
    # nothing left behind, for git and for datalad
    assert git(ds, "status", "--porcelain").strip() == ""
    leftovers = [
        r
        for r in ds.status(result_renderer="disabled", return_type="list")
        if r.get("state") != "clean"
    ]
    assert leftovers == []
    assert "refs/datalad-slurm" not in git(ds, "for-each-ref")
    # the records are complete: reschedule reads them back
    record = git(ds, "log", "-1", "--format=%B", "-F", f"--grep=Slurm job {jobs[0]}:")
    block = json.loads(record.split("=== Do not change lines below ===")[1].split("^^^")[0])
    assert block["slurm_job_id"] == jobs[0] and block["outputs"][0] == names[0]


def test_batch_beside_a_subdataset_job(
    slurm: Cluster, dataset: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A job writing into a subdataset takes the save path; the others still go in one batch."""
    ds = dataset
    sub = ds.create("sub", result_renderer="disabled")
    monkeypatch.chdir(ds.path)
    Path(sub.path, "out").mkdir()
    Path(ds.path, "a").mkdir()
    Path(ds.path, "b").mkdir()
    in_sub = call(
        ds,
        "schedule",
        "sbatch -o sub/out/slurm-%j.out --wrap 'echo 1 > sub/out/r'",
        outputs=["sub/out"],
    )[0]["slurm_job_id"]
    plain = [
        call(ds, "schedule", f"sbatch -o {d}/slurm-%j.out --wrap 'echo 2 > {d}/r'", outputs=[d])[0][
            "slurm_job_id"
        ]
        for d in ("a", "b")
    ]
    slurm.wait_done([in_sub, *plain])
    results = finish_by_job(ds)
    assert all(results[j]["status"] == "ok" for j in [in_sub, *plain]), results
    assert git(sub, "log", "-1", "--format=%s").strip() == (
        f"[DATALAD SLURM RUN] Slurm job {in_sub}: Completed"
    )
    assert _job_files(ds, plain[0]) == sorted(
        ["a/r", f"a/slurm-{plain[0]}.out", f"a/slurm-job-{plain[0]}.env.json"]
    )
    assert git(ds, "status", "--porcelain").strip() == ""
    assert git(sub, "status", "--porcelain").strip() == ""


def test_plain_git_dataset(slurm: Cluster, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from datalad.api import Dataset

    ds = Dataset(str(tmp_path / "plain")).create(annex=False, result_renderer="disabled")
    monkeypatch.chdir(ds.path)
    Path(ds.path, "o").mkdir()
    job = call(ds, "schedule", "sbatch -o o/slurm-%j.out --wrap 'echo 3 > o/r'", outputs=["o"])[0][
        "slurm_job_id"
    ]
    slurm.wait_done([job])
    assert finish_by_job(ds)[job]["status"] == "ok"
    assert _job_files(ds, job) == sorted(
        ["o/r", f"o/slurm-{job}.out", f"o/slurm-job-{job}.env.json"]
    )
    assert git(ds, "show", "HEAD:o/r") == "3\n"
    assert git(ds, "status", "--porcelain").strip() == ""


def _packs(ds: Any) -> list[str]:
    """The packs of reachable objects: newer git's gc (2.41+) also writes a cruft pack (with an
    .mtimes file) for the unreachable ones, which gc.autoPackLimit does not count either."""
    packs = Path(ds.path, ".git", "objects", "pack").glob("*.pack")
    return sorted(p.name for p in packs if not p.with_suffix(".mtimes").exists())


def test_finish_lets_git_maintain_the_repository_as_a_commit_would(
    slurm: Cluster, dataset: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """fast-import commits skip git's auto maintenance; finish runs it, or a dataset finished by
    cron would gather one pack per drain and every loose object, and slow down for good."""
    ds = dataset
    monkeypatch.chdir(ds.path)
    # gc as soon as there are more than two packs, and in the foreground, to see it here
    git(ds, "config", "gc.autoPackLimit", "2")
    git(ds, "config", "gc.autoDetach", "false")
    for n in range(3):
        Path(ds.path, f"seed{n}").write_text(f"{n}\n")
        ds.save(message=f"seed {n}", result_renderer="disabled")
        git(ds, "-c", "gc.auto=0", "repack", "-d", "-q")  # a pack per round, as fast-import makes
    assert len(_packs(ds)) >= 3
    Path(ds.path, "o").mkdir()
    job = call(ds, "schedule", "sbatch -o o/slurm-%j.out --wrap 'echo 3 > o/r'", outputs=["o"])[0][
        "slurm_job_id"
    ]
    slurm.wait_done([job])
    assert finish_by_job(ds)[job]["status"] == "ok"
    assert len(_packs(ds)) == 1, _packs(ds)
    assert _job_files(ds, job) == sorted(
        ["o/r", f"o/slurm-{job}.out", f"o/slurm-job-{job}.env.json"]
    )
    assert git(ds, "status", "--porcelain").strip() == ""


def test_schedule_many_from_one_file(
    slurm: Cluster, dataset: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ds = dataset
    monkeypatch.chdir(ds.path)
    script = write_script(ds, "job.sh", 'mkdir -p "$1" && echo "$1" > "$1/r"\n')
    specs = [
        {"cmd": f"sbatch -o out/{n}/slurm-%j.out {script} out/{n}", "outputs": [f"out/{n}"]}
        for n in range(5)
    ]
    specs.append({"cmd": ["sbatch", "--no-such-option", script], "outputs": "broken"})
    specs.append({"cmd": f"sbatch --hold {script} out/0", "outputs": ["out/0/r"]})  # conflict
    jobs_file = tmp_path / "jobs.jsonl"
    jobs_file.write_text(
        "# five jobs, one bad submission, one conflict\n\n"
        + "\n".join(json.dumps(s) for s in specs)
        + "\n"
    )
    for n in range(5):
        Path(ds.path, "out", str(n)).mkdir(parents=True)
    results = only(call(ds, "schedule", jobs_from=str(jobs_file)), "schedule")
    assert [r["status"] for r in results] == ["ok"] * 5 + ["error", "error"]
    assert "job 6" in results[5]["message"] and "--no-such-option" in results[5]["message"]
    assert "job 7" in results[6]["message"] and "overlaps" in results[6]["message"]
    jobs = [r["slurm_job_id"] for r in results[:5]]
    # what slurmctld said at submission is kept, for when it has forgotten the job
    with open_registry(ds.path) as registry:
        facts = {j.job_id: j.submission_facts for j in registry.jobs()}
    assert facts[jobs[2]]["stdout"] == f"{ds.path}/out/2/slurm-%j.out"
    assert facts[jobs[2]]["name"] == "job.sh"
    listed = only(call(ds, "finish", list_open_jobs=True), "finish")
    assert sorted(r["slurm_job_id"] for r in listed) == sorted(jobs)
    slurm.wait_done(jobs)
    done = finish_by_job(ds)
    assert all(done[j]["status"] == "ok" for j in jobs)

    # a bad line stops everything before the first submission, naming file and line
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"cmd": "sbatch x", "outputs": ["new"]}) + "\n{oops\n")
    before = git(ds, "rev-parse", "HEAD")
    proc = subprocess.run(
        ["datalad", "schedule", "--jobs-from", str(bad)],
        cwd=ds.path,
        capture_output=True,
        text=True,
    )
    assert proc.returncode != 0
    assert f"{bad} line 2" in proc.stdout + proc.stderr
    assert "nothing was submitted" in proc.stdout + proc.stderr
    listed = only(call(ds, "finish", list_open_jobs=True), "finish")
    assert [r["message"] for r in listed] == ["there are no open jobs"]
    assert git(ds, "rev-parse", "HEAD") == before


def test_files_of_no_job_in_a_crowded_folder_stay_as_they_are(
    slurm: Cluster, dataset: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """20 jobs in one folder: git is asked about the folder, and only the jobs' files move."""
    ds = dataset
    monkeypatch.chdir(ds.path)
    script = write_script(ds, "job.sh", 'echo "$1" > "$1/r"\n')
    Path(ds.path, "many").mkdir()
    Path(ds.path, "many", "tracked.txt").write_text("before\n")
    ds.save(message="a file of nobody's", to_git=True, result_renderer="disabled")
    specs = [
        {"cmd": f"sbatch -o many/{n}/slurm-%j.out {script} many/{n}", "outputs": [f"many/{n}"]}
        for n in range(20)
    ]
    (tmp_path / "jobs.jsonl").write_text("".join(json.dumps(s) + "\n" for s in specs))
    for n in range(20):
        Path(ds.path, "many", str(n)).mkdir()
    results = only(call(ds, "schedule", jobs_from=str(tmp_path / "jobs.jsonl")), "schedule")
    jobs = [r["slurm_job_id"] for r in results]
    Path(ds.path, "many", "notes.txt").write_text("nobody's, untracked\n")
    Path(ds.path, "many", "tracked.txt").write_text("changed by hand\n")
    Path(ds.path, "many", "5", "stray").mkdir()  # an empty folder inside a job's output
    slurm.wait_done(jobs)

    done = finish_by_job(ds)
    assert all(done[j]["status"] == "ok" for j in jobs)
    for n, job in enumerate(jobs):
        assert _job_files(ds, job) == sorted(
            [f"many/{n}/r", f"many/{n}/slurm-{job}.out", f"many/{n}/slurm-job-{job}.env.json"]
        )
    status = git(ds, "status", "--porcelain", "--untracked-files=all").splitlines()
    assert sorted(status) == [" M many/tracked.txt", "?? many/notes.txt"]


def _on_a_terminal(argv: list[str], cwd: str) -> bytes:
    """Run a command on a pseudo-terminal 120 columns wide; everything it wrote."""
    import fcntl
    import os
    import pty
    import struct
    import termios

    pid, fd = pty.fork()
    if pid == 0:  # the child
        os.chdir(cwd)
        os.execvp(argv[0], argv)
    fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 120, 0, 0))
    out = b""
    while True:
        try:
            data = os.read(fd, 65536)
        except OSError:  # the child closed the terminal
            break
        if not data:
            break
        out += data
    os.waitpid(pid, 0)
    return out


def test_progress_bar_on_a_terminal_only(slurm: Cluster, tmp_path: Path) -> None:
    from datalad.api import Dataset

    outputs = {}
    for where in ("tty", "pipe"):
        ds = Dataset(str(tmp_path / where)).create(result_renderer="disabled")
        specs = tmp_path / f"{where}.jsonl"
        specs.write_text(
            "".join(
                json.dumps(
                    {
                        "cmd": f"sbatch -o o{n}/slurm-%j.out --wrap 'echo {n} > o{n}/r'",
                        "outputs": [f"o{n}"],
                    }
                )
                + "\n"
                for n in range(12)
            )
        )
        for n in range(12):
            Path(ds.path, f"o{n}").mkdir()
        jobs = [r["slurm_job_id"] for r in call(ds, "schedule", jobs_from=str(specs))]
        slurm.wait_done(jobs)
        if where == "tty":
            outputs[where] = _on_a_terminal(["datalad", "finish"], ds.path).decode(errors="replace")
        else:
            proc = subprocess.run(
                ["datalad", "finish"], cwd=ds.path, capture_output=True, text=True
            )
            outputs[where] = proc.stdout + proc.stderr
        assert len([s for s in subjects(ds) if "SLURM RUN" in s]) == 12
    assert "Committing 12 Slurm jobs" in outputs["tty"]
    assert "Committing" not in outputs["pipe"]
    assert "save(ok)" in outputs["pipe"] and "save" in outputs["tty"]
