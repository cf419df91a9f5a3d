#!/usr/bin/env python3
"""Scheduling stalls in a slurmctld log: freed CPUs left idle while jobs were waiting.

A job's end ("_job_complete: JobId=N done") normally lets the next waiting job start within
some 20 ms ("sched: Allocate JobId=..." or "sched/backfill: _start_job: Started JobId=...").
Slurm 22.05 starts no scheduling pass when an EpilogSlurmctld ends after the node's epilog
(contrib/slurm-local/HOOK-NOTES.md, section 4): the CPUs then stay idle until the next
scheduling event, up to bf_interval. This counts such stalls, which is what a hook installed
as EpilogSlurmctld costs in throughput: a gap counts when the job allocated next had been
submitted before the end, and the gap is longer than --threshold.

Usage: sched_gaps.py LOG [--offset BYTES] [--threshold SECONDS]
Prints one line: "ends stalls stall_seconds median_ms p95_ms" (turnaround from a job's end to the
next start, over the ends that had a job waiting).
"""

from __future__ import annotations

import argparse
import bisect
import re
from datetime import datetime

LINE = re.compile(r"\[(?P<time>[0-9T:.-]+)\] (?P<text>.*)")
SUBMIT = re.compile(r"_slurm_rpc_submit_batch_job: JobId=(?P<id>\d+) ")
END = re.compile(r"_job_complete: JobId=(?P<id>[0-9_()]+) done")
START = re.compile(
    r"(?:sched: Allocate|sched/backfill: _start_job: Started) JobId=(?P<id>[0-9_()]+)"
)
Events = tuple[dict[str, float], list[float], list[tuple[float, str]]]


def submitted_id(job: str) -> str:
    """The id a job was submitted under: an array task's array job id, else its own."""
    return re.split(r"[_(]", job, maxsplit=1)[0]


def read_events(path: str, offset: int) -> Events:
    """Submissions (id -> time), job ends (times) and starts (time, submitted id), in log order."""
    submits: dict[str, float] = {}
    ends: list[float] = []
    starts: list[tuple[float, str]] = []
    with open(path, "rb") as log:
        log.seek(offset)
        for raw in log:
            match = LINE.match(raw.decode("utf-8", "replace"))
            if not match:
                continue
            text = match["text"]
            when = datetime.fromisoformat(match["time"]).timestamp()
            if found := SUBMIT.search(text):
                submits[found["id"]] = when
            elif found := END.search(text):
                ends.append(when)
            elif found := START.search(text):
                starts.append((when, submitted_id(found["id"])))
    return submits, ends, starts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("log")
    parser.add_argument("--offset", type=int, default=0, help="read the log from this byte on")
    parser.add_argument("--threshold", type=float, default=0.2, help="seconds (default 0.2)")
    args = parser.parse_args()
    submits, ends, starts = read_events(args.log, args.offset)
    start_times = [when for when, _ in starts]
    turnarounds: list[float] = []
    for end in ends:
        following = bisect.bisect_right(start_times, end)
        if following == len(starts):
            continue
        when, job = starts[following]
        submitted = submits.get(job)
        if submitted is None or submitted > end:
            continue  # nothing was waiting: the next job came later
        turnarounds.append(when - end)
    stalls = [gap for gap in turnarounds if gap > args.threshold]
    turnarounds.sort()
    if turnarounds:
        median = turnarounds[len(turnarounds) // 2] * 1000
        p95 = turnarounds[min(len(turnarounds) - 1, int(len(turnarounds) * 0.95))] * 1000
    else:
        median = p95 = 0.0
    print(f"{len(ends)} {len(stalls)} {sum(stalls):.2f} {median:.0f} {p95:.0f}")


if __name__ == "__main__":
    main()
