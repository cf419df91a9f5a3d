#!/usr/bin/env python3
"""benchmarks/finish_scale.py: datalad-slurm at 10,000 jobs on a private Slurm with accounting.

Measured by hand (issue 5, DESIGN.md scale targets), never in tests. Parts, each in a fresh
dataset (``datalad create``), every job tiny (``code/job.sh out/<n>`` writes
``out/<n>/result.txt``, its log is ``out/<n>/slurm-<id>.out``):

  list    N jobs submitted held (``--hold``) through ``datalad schedule --jobs-from`` (one
          process): the per-submission cost of that path, then ``datalad finish
          --list-open-jobs`` with N open jobs (target: under 2 s), then cancelled and closed.
  single  N jobs scheduled (one process), run, then ONE ``datalad finish`` commits them all
          (target: under 60 s end to end for N = 10,000).
  rounds  N jobs in R rounds: schedule N/R, run, finish; the per-job finish cost of each round
          as the repository grows (target: the last round no slower than 1.5x the first).
  bare    N/10 bare ``sbatch`` calls of the same script: the floor for a submission.

Usage (as root): benchmarks/finish_scale.py [--n 10000] [--rounds 10]
                 [--parts list,single,rounds,bare] [--out FILE] [--keep]
Cluster: contrib/slurm-local/start --accounting --state-dir /tmp/dls-bench-scale --port-base 6957
(ports 6957-6960; DATALAD_SLURM_BENCH_STATE_DIR / DATALAD_SLURM_BENCH_PORT_BASE move them), stopped
at the end. No hook, no spool: finish asks Slurm (squeue/sacct --json).
Results: markdown on stdout and in --out (default benchmarks/results/finish-scale-<date>.md).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
# the clone's venv; inside a test chroot (benchmarks/list_chroot.sh) the one running this
VENV_BIN = REPO / ".venv" / "bin"
if not (VENV_BIN / "datalad").exists():
    VENV_BIN = Path(sys.executable).parent
STATE_DIR = os.environ.get("DATALAD_SLURM_BENCH_STATE_DIR", "/tmp/dls-bench-scale")
PORT_BASE = os.environ.get("DATALAD_SLURM_BENCH_PORT_BASE", "6957")
WORK = Path("/tmp/dls-bench-scale-work")
#: what went wrong in a part (not all jobs listed, committed, closed): the run exits 1
FAILURES: list[str] = []
JOB_SCRIPT = """#!/bin/bash
# datalad-slurm scale benchmark: one small file into the output directory given as $1
echo "job ${SLURM_JOB_ID}" > "$1/result.txt"
"""


def code_version() -> str:
    """The commit measured: DATALAD_SLURM_BENCH_COMMIT (set by a wrapper that copied the
    clone), else the clone's HEAD, marked when the work tree differs from it."""
    given = os.environ.get("DATALAD_SLURM_BENCH_COMMIT")
    if given:
        return given
    head = subprocess.run(
        ["git", "-C", str(REPO), "describe", "--always", "--dirty"], capture_output=True, text=True
    )
    return head.stdout.strip() or "unknown (not a git clone)"


def log(message: str) -> None:
    print(f"{time.strftime('%H:%M:%S')} finish_scale: {message}", file=sys.stderr, flush=True)


def load() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


class Timed:
    """Wall and children's CPU seconds of one command."""

    def __init__(self, argv: list[str], cwd: Path, out: Path | None = None) -> None:
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        load_before = load()
        start = time.perf_counter()
        with open(out or os.devnull, "w") as stream:
            proc = subprocess.run(argv, cwd=cwd, stdout=stream, stderr=subprocess.STDOUT)
        self.wall = time.perf_counter() - start
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        self.cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
        self.rc = proc.returncode
        self.load = f"{load_before} -> {load()}"
        if self.rc:
            log(f"WARNING: {' '.join(argv[:3])} exited {self.rc} (see {out})")


def slurm(*argv: str) -> str:
    return subprocess.run(argv, capture_output=True, text=True, check=True, timeout=300).stdout


def wait_until_done(name: str) -> None:
    """No job of this name active in slurmctld any more."""
    while True:
        active = slurm("squeue", "-h", "-n", name, "-t", "PD,CF,R,CG,S,RQ", "-o", "%i")
        if not active.strip():
            return
        time.sleep(2)


def new_dataset(name: str) -> Path:
    path = WORK / name
    subprocess.run(
        [str(VENV_BIN / "datalad"), "create", str(path)], check=True, capture_output=True
    )
    (path / "code").mkdir()
    (path / "code" / "job.sh").write_text(JOB_SCRIPT)
    (path / "code" / "job.sh").chmod(0o755)
    subprocess.run(
        [str(VENV_BIN / "datalad"), "save", "-m", "job script", "code"],
        cwd=path,
        check=True,
        capture_output=True,
    )
    return path


def jobs_file(ds: Path, name: str, first: int, count: int, hold: bool) -> Path:
    spec = ds.parent / f"{ds.name}-{first}.jsonl"
    lines = []
    for n in range(first, first + count):
        (ds / "out" / str(n)).mkdir(parents=True, exist_ok=True)
        held = "--hold " if hold else ""
        cmd = f"sbatch {held}-J {name} -o out/{n}/slurm-%j.out code/job.sh out/{n}"
        lines.append(json.dumps({"cmd": cmd, "outputs": [f"out/{n}"]}))
    spec.write_text("\n".join(lines) + "\n")
    return spec


def datalad(*args: str) -> list[str]:
    return [str(VENV_BIN / "datalad"), *args]


def schedule_many(ds: Path, name: str, first: int, count: int, hold: bool = False) -> Timed:
    spec = jobs_file(ds, name, first, count, hold)
    timed = Timed(
        datalad("schedule", "--jobs-from", str(spec)), ds, WORK / f"{ds.name}-schedule.log"
    )
    log(
        f"  schedule --jobs-from: {count} jobs in {timed.wall:.1f} s "
        f"({timed.wall / count * 1000:.1f} ms/job, cpu {timed.cpu:.1f} s)"
    )
    return timed


def record_commits(ds: Path) -> int:
    out = subprocess.run(
        ["git", "log", "--format=%s"], cwd=ds, capture_output=True, text=True, check=True
    ).stdout
    return sum(1 for s in out.splitlines() if s.startswith("[DATALAD SLURM RUN]"))


def status_lines(ds: Path) -> int:
    out = subprocess.run(
        ["git", "status", "--porcelain"], cwd=ds, capture_output=True, text=True, check=True
    ).stdout
    return len(out.splitlines())


def part_list(n: int, rows: list[str]) -> None:
    log(f"[list] {n} held jobs")
    ds = new_dataset("list")
    name = "dls-scale-held"
    sched = schedule_many(ds, name, 0, n, hold=True)
    listed = Timed(datalad("finish", "--list-open-jobs"), ds, WORK / "list-output.txt")
    as_json = Timed(datalad("-f", "json", "finish", "--list-open-jobs"), ds, WORK / "list.json")
    listing = [
        json.loads(line)
        for line in (WORK / "list.json").read_text().splitlines()
        if line.startswith("{") and '"slurm_job_id"' in line
    ]
    shown = len(listing)
    states = {r.get("slurm_job_status") for r in listing}
    layouts = sorted({str(r.get("data_parser")) for r in listing})
    log(f"  list-open-jobs: {listed.wall:.2f} s (json {as_json.wall:.2f} s, {shown} jobs)")
    if shown != n or states != {"PENDING"}:
        FAILURES.append(f"list: {shown} of {n} held jobs listed, states {sorted(map(str, states))}")
    slurm("scancel", "-n", name)
    wait_until_done(name)
    closed = Timed(datalad("finish", "--close-failed-jobs"), ds, WORK / "list-close.log")
    left = Timed(datalad("-f", "json", "finish", "--list-open-jobs"), ds, WORK / "list-left.json")
    still_open = (WORK / "list-left.json").read_text().count('"slurm_job_id"')
    if still_open:
        FAILURES.append(f"list: {still_open} jobs still open after --close-failed-jobs")
    del left
    rows += [
        f"| list: schedule --jobs-from, {n} held jobs | {sched.wall:.1f} s | "
        f"{sched.wall / n * 1000:.1f} ms | cpu {sched.cpu:.1f} s, load {sched.load} |",
        f"| list: `finish --list-open-jobs`, {n} open (target < 2 s) | {listed.wall:.2f} s | | "
        f"cpu {listed.cpu:.2f} s, {'met' if listed.wall < 2 else 'NOT met'}; load {listed.load} |",
        f"| list: `-f json finish --list-open-jobs` | {as_json.wall:.2f} s | | "
        f"{shown} jobs listed, all {'/'.join(sorted(map(str, states)))}; "
        f"data_parser {', '.join(layouts)} |",
        f"| list: close {n} cancelled jobs (`--close-failed-jobs`) | {closed.wall:.1f} s | "
        f"{closed.wall / n * 1000:.2f} ms | |",
    ]


def part_single(n: int, rows: list[str]) -> None:
    log(f"[single] {n} jobs, one finish")
    ds = new_dataset("single")
    name = "dls-scale-single"
    sched = schedule_many(ds, name, 0, n)
    wait_until_done(name)
    finish = Timed(datalad("finish"), ds, WORK / "single-finish.log")
    commits, dirty = record_commits(ds), status_lines(ds)
    if commits != n or dirty:
        FAILURES.append(f"single: {commits} of {n} jobs committed, git status {dirty} lines")
    log(
        f"  finish: {finish.wall:.1f} s, cpu {finish.cpu:.1f} s, {commits} records, "
        f"{dirty} status lines"
    )
    rows += [
        f"| single: schedule --jobs-from, {n} jobs | {sched.wall:.1f} s | "
        f"{sched.wall / n * 1000:.1f} ms | cpu {sched.cpu:.1f} s |",
        f"| single: ONE `finish` of {n} completed jobs (target < 60 s) | {finish.wall:.1f} s | "
        f"{finish.wall / n * 1000:.2f} ms | cpu {finish.cpu:.1f} s; {commits} record commits; "
        f"git status {dirty} lines; {'met' if finish.wall < 60 else 'NOT met'}; "
        f"load {finish.load} |",
    ]


def part_rounds(n: int, rounds: int, rows: list[str]) -> None:
    per_round = n // rounds
    log(f"[rounds] {rounds} x {per_round} jobs")
    ds = new_dataset("rounds")
    costs: list[float] = []
    cpu_costs: list[float] = []
    for number in range(rounds):
        name = f"dls-scale-round-{number}"
        schedule_many(ds, name, number * per_round, per_round)
        wait_until_done(name)
        finish = Timed(datalad("finish"), ds, WORK / f"rounds-finish-{number}.log")
        costs.append(finish.wall / per_round * 1000)
        cpu_costs.append(finish.cpu / per_round * 1000)
        log(
            f"  round {number + 1}: finish {finish.wall:.1f} s = {costs[-1]:.2f} ms/job "
            f"(cpu {finish.cpu:.1f} s, load {finish.load})"
        )
    commits, dirty = record_commits(ds), status_lines(ds)
    if commits != per_round * rounds or dirty:
        FAILURES.append(
            f"rounds: {commits} of {per_round * rounds} jobs committed, git status {dirty} lines"
        )
    ratio = costs[-1] / costs[0]
    cpu_ratio = cpu_costs[-1] / cpu_costs[0]
    rows += [
        f"| rounds: finish per job, round {i + 1} of {rounds} ({per_round} jobs) | | {c:.2f} ms | "
        f"cpu {cpu:.2f} ms/job |"
        for i, (c, cpu) in enumerate(zip(costs, cpu_costs, strict=True))
    ]
    rows.append(
        f"| rounds: last / first (target <= 1.5) | {ratio:.2f} wall, {cpu_ratio:.2f} cpu | | "
        f"{'met' if ratio <= 1.5 else 'NOT met'} on wall time; {commits} record commits, "
        f"git status {dirty} lines |"
    )


def part_bare(n: int, rows: list[str]) -> None:
    count = max(n // 10, 10)
    log(f"[bare] {count} bare sbatch calls")
    folder = WORK / "bare"
    (folder / "code").mkdir(parents=True)
    (folder / "code" / "job.sh").write_text(JOB_SCRIPT)
    (folder / "code" / "job.sh").chmod(0o755)
    start = time.perf_counter()
    for k in range(count):
        (folder / "out" / str(k)).mkdir(parents=True)
        subprocess.run(
            [
                "sbatch",
                "-J",
                "dls-scale-bare",
                "-o",
                f"out/{k}/slurm-%j.out",
                "code/job.sh",
                f"out/{k}",
            ],
            cwd=folder,
            check=True,
            capture_output=True,
        )
    wall = time.perf_counter() - start
    wait_until_done("dls-scale-bare")
    rows.append(f"| bare `sbatch`, {count} calls | {wall:.1f} s | {wall / count * 1000:.1f} ms | |")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=10000)
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--parts", default="bare,list,single,rounds")
    parser.add_argument(
        "--out", type=Path, default=HERE / "results" / f"finish-scale-{time.strftime('%F')}.md"
    )
    parser.add_argument("--keep", action="store_true")
    args = parser.parse_args()
    parts = args.parts.split(",")
    if os.getuid() != 0:
        sys.exit("run as root (starts Slurm daemons)")
    os.environ.pop("DATALAD_SLURM_CONFIG", None)
    os.environ["DATALAD_UI_PROGRESSBAR"] = "none"
    for key, value in (
        ("GIT_AUTHOR_NAME", "dls-bench"),
        ("GIT_AUTHOR_EMAIL", "b@example.invalid"),
        ("GIT_COMMITTER_NAME", "dls-bench"),
        ("GIT_COMMITTER_EMAIL", "b@example.invalid"),
    ):
        os.environ.setdefault(key, value)
    shutil.rmtree(WORK, ignore_errors=True)
    WORK.mkdir(parents=True)
    start = [
        str(REPO / "contrib/slurm-local/start"),
        "--accounting",
        "--state-dir",
        STATE_DIR,
        "--port-base",
        PORT_BASE,
    ]
    log(" ".join(start))
    env_lines = subprocess.run(start, capture_output=True, text=True, check=True).stdout
    for line in env_lines.splitlines():
        key, _, value = line.removeprefix("export ").partition("=")
        if key == "SLURM_CONF":
            os.environ["SLURM_CONF"] = value.strip("'\"")
    rows: list[str] = []
    started = time.strftime("%F %H:%M")
    load_start = load()
    try:
        if "bare" in parts:
            part_bare(args.n, rows)
        if "list" in parts:
            part_list(args.n, rows)
        if "single" in parts:
            part_single(args.n, rows)
        if "rounds" in parts:
            part_rounds(args.n, args.rounds, rows)
    finally:
        subprocess.run(
            [str(REPO / "contrib/slurm-local/stop"), "--state-dir", STATE_DIR], capture_output=True
        )
    git_annex = subprocess.run(
        ["git", "annex", "version", "--raw"], capture_output=True, text=True
    ).stdout.strip()
    report = "\n".join(
        [
            f"# datalad-slurm at scale, {started}",
            "",
            f"Command: `benchmarks/finish_scale.py {' '.join(sys.argv[1:])}` "
            f"(as root, from {REPO}); code: {code_version()}.",
            f"Host: {os.cpu_count()} cores, load at start {load_start}, at end {load()}; "
            f"{slurm('sinfo', '-V').strip()} with slurmdbd "
            "(`contrib/slurm-local/start --accounting`), "
            f"git-annex {git_annex}. No hook: finish asks Slurm through the "
            f"{os.environ.get('DATALAD_SLURM_BACKEND', 'auto')} backend.",
            "",
            "| what | total | per job | notes |",
            "|---|---:|---:|---|",
            *rows,
            "",
        ]
    )
    if FAILURES:
        report += "\n**Correctness check FAILED:** " + "; ".join(FAILURES) + "\n"
    print(report)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(report)
    if not args.keep:
        shutil.rmtree(WORK, ignore_errors=True)
    return 1 if FAILURES else 0


if __name__ == "__main__":
    sys.exit(main())
