#!/usr/bin/env python3
"""benchmarks/commit_steps.py: the committer's steps as a dataset grows, without Slurm.

Separates what finish's git work costs from what asking Slurm costs (finish_scale.py measures
both together). In a fresh DataLad dataset, R rounds of N synthetic jobs, each writing what a
finished job leaves (``out/<n>/result.txt``, ``out/<n>/slurm-<n>.out``,
``out/<n>/slurm-job-<n>.env.json``); per round the same calls finish makes, timed one by one:
``worktree_changes``, ``stage`` (fast annexing and ``git annex add`` for the rest),
``staged_changes``, ``write_commits`` (one commit per job), ``advance_head``,
``run_auto_maintenance``.

Usage: benchmarks/commit_steps.py [--jobs 1000] [--rounds 10] [--out FILE] [--keep]
Results: a markdown table on stdout (and in --out).
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from datalad.api import create  # noqa: E402

from datalad_slurm.commit.writer import (  # noqa: E402
    advance_head,
    run_auto_maintenance,
    stage,
    staged_changes,
    worktree_changes,
    write_commits,
)
from datalad_slurm.git.runner import run_git  # noqa: E402

STEPS = (
    "worktree_changes",
    "stage",
    "staged_changes",
    "write_commits",
    "advance_head",
    "maintenance",
)


def cpu() -> float:
    own = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def one_round(path: Path, first: int, jobs: int) -> dict[str, tuple[float, float]]:
    folders = []
    for n in range(first, first + jobs):
        folder = path / "out" / str(n)
        folder.mkdir(parents=True)
        (folder / "result.txt").write_text(f"job {n}\n")
        (folder / f"slurm-{n}.out").write_text(f"job {n} says hello\n")
        (folder / f"slurm-job-{n}.env.json").write_text(f'{{"SLURM_JOB_ID": "{n}"}}\n')
        folders.append(f"out/{n}")
    times: dict[str, tuple[float, float]] = {}

    def timed(step: str, call):  # type: ignore[no-untyped-def]
        wall, used = time.perf_counter(), cpu()
        value = call()
        times[step] = (time.perf_counter() - wall, cpu() - used)
        return value

    repo = str(path)
    head = run_git(repo, "rev-parse", "HEAD").strip()
    changes = timed("worktree_changes", lambda: worktree_changes(repo, folders))
    problems = timed("stage", lambda: stage(repo, changes, annex=True))
    assert problems == [], problems
    staged = timed("staged_changes", lambda: staged_changes(repo, head, folders))
    by_folder: dict[str, list] = {folder: [] for folder in folders}
    for change in staged:
        by_folder["/".join(change.path.split("/")[:2])].append(change)
    commits = [(f"[DATALAD SLURM RUN] Slurm job {f}: Completed", by_folder[f]) for f in folders]
    shas = timed("write_commits", lambda: write_commits(repo, head, commits))
    timed("advance_head", lambda: advance_head(repo, head, shas[-1], "bench"))
    timed("maintenance", lambda: run_auto_maintenance(repo))
    return times


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--jobs", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--out")
    parser.add_argument("--keep", action="store_true")
    parser.add_argument("--work", default="/tmp/dls-bench-commit-steps")
    args = parser.parse_args()
    work = Path(args.work)
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    path = work / "ds"
    create(str(path), result_renderer="disabled")
    rows = []
    for number in range(args.rounds):
        times = one_round(path, number * args.jobs, args.jobs)
        total = sum(wall for wall, _ in times.values())
        rows.append((number + 1, times, total))
        print(
            f"round {number + 1}: {total:.2f} s "
            + " ".join(f"{step}={times[step][0]:.2f}" for step in STEPS),
            file=sys.stderr,
            flush=True,
        )
    status = run_git(str(path), "status", "--porcelain")
    load = " ".join(f"{value:.2f}" for value in os.getloadavg())
    lines = [
        "# The committer's steps as the dataset grows (no Slurm)",
        "",
        f"Command: `benchmarks/commit_steps.py --jobs {args.jobs} --rounds {args.rounds}`"
        f" ({time.strftime('%Y-%m-%d %H:%M')}, load {load}).",
        f"Three files per job, all annexed; `git status` after: {len(status.splitlines())} lines.",
        "",
        "| round | files in the dataset before | "
        + " | ".join(f"{step} s" for step in STEPS)
        + " | all s | ms per job |",
        "|---:|---:|" + "---:|" * (len(STEPS) + 2),
    ]
    for number, times, total in rows:
        lines.append(
            f"| {number} | {3 * args.jobs * (number - 1)} | "
            + " | ".join(f"{times[step][0]:.2f}" for step in STEPS)
            + f" | {total:.2f} | {1000 * total / args.jobs:.2f} |"
        )
    first, last = rows[0][2], rows[-1][2]
    lines += ["", f"last / first: {last / first:.2f}", ""]
    text = "\n".join(lines)
    print(text)
    if args.out:
        Path(args.out).write_text(text)
    if not args.keep:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
