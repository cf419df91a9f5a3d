#!/usr/bin/env python3
"""The race an EpilogSlurmctld runs against slurmd's Epilog, seen in the kernel's process events.

Slurm 22.05 starts a scheduling pass when slurmd reports that its Epilog ended, but not when an
EpilogSlurmctld ends (contrib/slurm-local/HOOK-NOTES.md, section 4). Both reports leave 10 ms after
their script exited (slurmscriptd and slurmd each kill the script's process group, sleep 10 ms and
kill it again before they report). A hook reported after the node's epilog is "late": the CPUs its
job freed wait for the next scheduling event, unless another job's end starts one meanwhile. How
long the hook runs (exec to exit) is the only part of this race a hook controls.

This records the scheduler's fork/exec/exit tracepoints (tracefs, as root) while a batch runs and
reports, per batch, the hooks' run time and how many were late:

    hook_race.py start                 # mount tracefs if needed, clear, enable, start
    hook_race.py stop FILE             # stop, save the trace to FILE, disable the events
    hook_race.py report FILE           # "hooks median_ms p90_ms late late_pct margin_median_ms"

A hook is a process forked by a slurmscriptd thread; the node's epilog is a process forked by a
slurmd thread that is not slurmstepd. A script is reported when the thread that forked it exits.
Hooks and epilogs are paired by the nearest fork time (within 30 ms): both start at the job's end.
"""

from __future__ import annotations

import bisect
import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass

TRACEFS = "/sys/kernel/tracing"
EVENTS = ("sched_process_fork", "sched_process_exec", "sched_process_exit")
LINE = re.compile(
    r"^\s*.+?-(?P<pid>\d+)\s+\[\d+\]\s+\S+\s+(?P<time>[\d.]+): (?P<event>\w+): (?P<rest>.*)$"
)
PAIRING_WINDOW = 0.03


@dataclass
class Script:
    """One hook or epilog process: when it was forked, exec'd and exited, and by which thread."""

    forked: float
    thread: int
    parent: str
    started: float | None = None
    program: str = ""
    exited: float | None = None
    reported: float | None = None


def _write(name: str, value: str) -> None:
    with open(os.path.join(TRACEFS, name), "w") as control:
        control.write(value)


def start() -> None:
    if not os.path.exists(os.path.join(TRACEFS, "trace")):
        subprocess.run(["mount", "-t", "tracefs", "nodev", TRACEFS], check=True)
    _write("tracing_on", "0")
    _write("buffer_size_kb", "32768")
    _write("trace", "")
    for event in EVENTS:
        _write(f"events/sched/{event}/enable", "1")
    _write("tracing_on", "1")


def stop(path: str) -> None:
    _write("tracing_on", "0")
    with open(os.path.join(TRACEFS, "trace")) as trace, open(path, "w") as out:
        shutil.copyfileobj(trace, out)
    for event in EVENTS:
        _write(f"events/sched/{event}/enable", "0")
    _write("trace", "")


def _fields(rest: str) -> dict[str, str]:
    return dict(item.split("=", 1) for item in rest.split() if "=" in item)


def read_scripts(path: str) -> tuple[list[Script], list[Script]]:
    """Hooks and epilogs in a trace, in fork order (pids are reused: read as a stream)."""
    alive: dict[int, Script] = {}
    awaiting_thread: dict[int, list[Script]] = {}
    hooks: list[Script] = []
    epilogs: list[Script] = []
    with open(path, errors="replace") as trace:
        for line in trace:
            match = LINE.match(line)
            if not match:
                continue
            when = float(match["time"])
            fields = _fields(match["rest"])
            event = match["event"]
            if event == "sched_process_fork":
                child = int(fields["child_pid"])
                alive[child] = Script(forked=when, thread=int(fields["pid"]), parent=fields["comm"])
            elif event == "sched_process_exec":
                script = alive.get(int(fields["pid"]))
                if script and script.started is None:
                    script.started, script.program = when, fields["filename"]
            elif event == "sched_process_exit":
                pid = int(fields["pid"])
                for waiting in awaiting_thread.pop(pid, []):
                    waiting.reported = when
                script = alive.pop(pid, None)
                if script is None or script.started is None:
                    continue
                script.exited = when
                if script.parent == "slurmscriptd":
                    hooks.append(script)
                elif script.parent == "slurmd" and not script.program.endswith("slurmstepd"):
                    epilogs.append(script)
                else:
                    continue
                awaiting_thread.setdefault(script.thread, []).append(script)
    return (
        sorted((s for s in hooks if s.reported), key=lambda s: s.forked),
        sorted((s for s in epilogs if s.reported), key=lambda s: s.forked),
    )


def _quantile(values: list[float], q: float) -> float:
    return values[min(len(values) - 1, int(len(values) * q))] if values else float("nan")


def report(path: str) -> str:
    hooks, epilogs = read_scripts(path)
    run_ms = sorted((h.exited - h.started) * 1000 for h in hooks if h.exited and h.started)
    epilog_forks = [e.forked for e in epilogs]
    margins: list[float] = []
    for hook in hooks:
        at = bisect.bisect_left(epilog_forks, hook.forked)
        near = [epilogs[i] for i in range(at - 3, at + 3) if 0 <= i < len(epilogs)]
        if not near:
            continue
        epilog = min(near, key=lambda e: abs(e.forked - hook.forked))
        if abs(epilog.forked - hook.forked) <= PAIRING_WINDOW and epilog.reported and hook.reported:
            margins.append((epilog.reported - hook.reported) * 1000)
    margins.sort()
    late = sum(1 for margin in margins if margin < 0)
    share = 100 * late / len(margins) if margins else float("nan")
    return (
        f"{len(hooks)} {_quantile(run_ms, 0.5):.2f} {_quantile(run_ms, 0.9):.2f} "
        f"{late} {share:.1f} {_quantile(margins, 0.5):.2f}"
    )


def main(argv: list[str]) -> int:
    if len(argv) == 1 and argv[0] == "start":
        start()
    elif len(argv) == 2 and argv[0] == "stop":
        stop(argv[1])
    elif len(argv) == 2 and argv[0] == "report":
        print(report(argv[1]))
    else:
        print(__doc__, file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
