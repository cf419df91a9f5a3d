#!/usr/bin/env python3
"""Record what Slurm's JSON commands and ``scontrol`` say about each kind of job, as unit fixtures.

Runs against a live cluster (``SLURM_CONF`` set; any release from 22.05 on), submits one job per
scenario, waits until it reaches the moment wanted, and writes for that moment
``OUT/<release>/<scenario>[-<moment>][-noacct].json``::

    {"release": "slurm 22.05.8", "recorded": true, "accounting": true,
     "scenario": ..., "moment": ..., "job_ids": [...],
     "command_outputs": {"squeue --json": {...}, "squeue --json --states=all --all": {...},
                         "sacct --json -j <ids>": {...} or "exit 1: <error text>"},
     "scontrol": {"12": "<scontrol show job -o line>", "13_2": "..."},
     "expected": {"12": {"state": "COMPLETED", "exit_code": 0, "signal": 0}}}

The JSON outputs keep only the scenario's jobs; ``expected`` comes from ``scontrol show job -o``
(``JobState=``, ``ExitCode=code:signal``), taken before and after the JSON commands so both agree.
The cluster's accounting is read from its config: without it the files get ``-noacct``.

The ``completing`` scenario (and a long ``requeued-requeue`` window) needs a slurmd ``Epilog`` that
keeps marked jobs COMPLETING for a while: ``conf DIR`` writes one and prints the path of a file for
``contrib/slurm-local/start --extra-conf``.  Usage (see tests/unit/fixtures/json/README.md)::

    python3 tests/tools/record_json_fixtures.py conf /tmp/json-fixtures-conf
    python3 tests/tools/record_json_fixtures.py record --out tests/unit/fixtures/json \\
        [--scratch /tmp/json-fixtures] [--scenarios plain,array,...]

Takes about two minutes: the ``timeout`` job (Slurm's time limits are whole minutes) runs while
the other scenarios run one after another.  Python 3.11+ standard library only.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import subprocess
import sys
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

SQUEUE = "squeue --json"
SQUEUE_ALL = "squeue --json --states=all --all"
SACCT = "sacct --json -j <ids>"

TERMINAL = frozenset(
    {
        "COMPLETED",
        "FAILED",
        "CANCELLED",
        "TIMEOUT",
        "NODE_FAIL",
        "OUT_OF_MEMORY",
        "BOOT_FAIL",
        "DEADLINE",
        "PREEMPTED",
    }
)

EPILOG_NAME = "linger-epilog.sh"
LINGER_SECONDS = 12

# Each job's script body (a /bin/sh script); MARKER is replaced by the linger marker path.
SCRIPTS: dict[str, str] = {
    "plain": "echo hello",
    "array": 'echo "task $SLURM_ARRAY_TASK_ID"',
    "failed": "exit 3",
    "exit130": "exit 130",
    "signalled": "kill -9 $$",
    "cancelled_pending": "echo never runs",
    "cancelled_running": "sleep 300",
    "timeout": "sleep 200",
    # The first run leaves the linger marker (so the requeue window lasts) and sleeps until
    # requeued; the run after the requeue ends at once.
    "requeued": (
        'if [ "${SLURM_RESTART_COUNT:-0}" -gt 0 ]; then echo second run; exit 0; fi\n'
        "touch MARKER\nsleep 300"
    ),
    "completing": "touch MARKER\necho done",
    "pending_held": "echo never runs",
    "pending_running": "sleep 300",
    # what the job was given and used: 60 MB held while the CPU counts for a few seconds
    "resources": (
        "x=$(head -c 60000000 /dev/zero | tr '\\0' a)\n"
        'i=0; while [ "$i" -lt 1000000 ]; do i=$((i + 1)); done\n'
        'echo "${#x} bytes, $i rounds"'
    ),
}

#: what the resources job asks for (the cluster needs --gpus and --real-memory, see the README)
RESOURCE_REQUEST = ("-c", "2", "--mem=200M", "--gres=gpu:1")

SCENARIOS = (
    "timeout",
    "plain",
    "array",
    "failed",
    "exit130",
    "signalled",
    "cancelled_pending",
    "cancelled_running",
    "completing",
    "requeued",
    "pending",
    "resources",
)

# Without accounting only finished jobs matter: squeue is then the only JSON that still has them.
NOACCT_SCENARIOS = tuple(s for s in SCENARIOS if s not in {"completing", "requeued", "pending"})

FIELD = re.compile(r"(?:^|\s)(JobId|ArrayJobId|ArrayTaskId|JobState|Reason|ExitCode)=(\S*)")


def log(message: str) -> None:
    print(
        f"{time.strftime('%H:%M:%S')} record_json_fixtures: {message}", file=sys.stderr, flush=True
    )


def run(cmd: list[str], cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=120, check=False)


def must(cmd: list[str], cwd: Path | None = None) -> str:
    done = run(cmd, cwd)
    if done.returncode != 0:
        raise SystemExit(f"{shlex.join(cmd)} failed ({done.returncode}): {done.stderr.strip()}")
    return done.stdout


# --------------------------------------------------------------------------------------------
# Reading Slurm
# --------------------------------------------------------------------------------------------


def scontrol_lines(job_id: int) -> list[str]:
    """``scontrol show job -o`` lines of a job (one per array task); [] once slurmctld forgot it."""
    done = run(["scontrol", "show", "job", "-o", str(job_id)])
    if done.returncode != 0:
        return []
    return [line.strip() for line in done.stdout.splitlines() if line.strip()]


def line_fields(line: str) -> dict[str, str]:
    return dict(FIELD.findall(line))


def label_of(fields: dict[str, str]) -> str:
    if fields.get("ArrayJobId") and fields.get("ArrayTaskId"):
        return f"{fields['ArrayJobId']}_{fields['ArrayTaskId']}"
    return fields.get("JobId", "?")


def expected_of(fields: dict[str, str]) -> dict[str, Any]:
    code, _, signal = fields.get("ExitCode", "0:0").partition(":")
    return {"state": fields.get("JobState", ""), "exit_code": int(code), "signal": int(signal or 0)}


def scontrol_view(ids: Iterable[int]) -> tuple[dict[str, str], dict[str, dict[str, Any]]]:
    lines: dict[str, str] = {}
    expected: dict[str, dict[str, Any]] = {}
    for job_id in ids:
        for line in scontrol_lines(job_id):
            fields = line_fields(line)
            label = label_of(fields)
            lines[label] = line
            expected[label] = expected_of(fields)
    return lines, expected


def states(job_id: int) -> set[str]:
    return {line_fields(line).get("JobState", "") for line in scontrol_lines(job_id)}


def sacct_text(ids: Iterable[int]) -> dict[str, dict[str, Any]]:
    """Reference values from sacct's text output, for jobs scontrol no longer knows."""
    done = run(
        ["sacct", "-n", "-X", "--parsable2", "-o", "JobID,State,ExitCode", "-j", joined(ids)]
    )
    result: dict[str, dict[str, Any]] = {}
    if done.returncode != 0:
        return result
    for row in done.stdout.splitlines():
        parts = row.split("|")
        if len(parts) != 3:
            continue
        code, _, signal = parts[2].partition(":")
        state = parts[1].split()[0] if parts[1].split() else ""
        result[parts[0]] = {"state": state, "exit_code": int(code), "signal": int(signal or 0)}
    return result


def joined(ids: Iterable[int]) -> str:
    return ",".join(str(i) for i in ids)


def number(value: Any) -> int | None:
    """An int from any layout: a plain int (22.05) or ``{"set", "number"}`` (23.02 on)."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, dict) and value.get("set", True) and isinstance(value.get("number"), int):
        return int(value["number"])
    return None


def belongs(job: dict[str, Any], ids: set[int]) -> bool:
    array = job.get("array")
    candidates = [
        job.get("job_id"),
        job.get("array_job_id"),
        array.get("job_id") if isinstance(array, dict) else None,
    ]
    return any(number(c) in ids for c in candidates)


BULKY = ("environment", "script")


def slim(value: Any) -> Any:
    """Drop bulky fields (the job's environment or script) that no reader needs."""
    if isinstance(value, dict):
        out: dict[str, Any] = {}
        for key, item in value.items():
            size = len(json.dumps(item))
            if key in BULKY and size > 400:
                out[key] = f"<dropped by record_json_fixtures.py: {size} characters>"
            else:
                out[key] = slim(item)
        return out
    if isinstance(value, list):
        return [slim(item) for item in value]
    return value


def json_output(cmd: list[str], ids: set[int]) -> Any:
    """The parsed output with only the scenario's jobs, or the error text if the command failed."""
    done = run(cmd)
    text = done.stdout.strip()
    try:
        parsed = json.loads(text) if done.returncode == 0 else None
    except json.JSONDecodeError:
        parsed = None
    if not isinstance(parsed, dict):
        detail = (done.stderr.strip() or text)[:2000]
        return f"exit {done.returncode}: {detail}"
    if isinstance(parsed.get("jobs"), list):
        parsed["jobs"] = [job for job in parsed["jobs"] if belongs(job, ids)]
    return slim(parsed)


def config_values(key: str) -> list[str]:
    """Values of KEY in ``scontrol show config`` (24.11 lists several Epilogs as ``Epilog[N]``)."""
    values = []
    for line in must(["scontrol", "show", "config"]).splitlines():
        name, sep, value = line.partition("=")
        if sep and re.fullmatch(re.escape(key) + r"(\[\d+\])?", name.strip()):
            values.append(value.strip())
    return values


# --------------------------------------------------------------------------------------------
# Recording
# --------------------------------------------------------------------------------------------


class Recorder:
    def __init__(self, out: Path, scratch: Path, wanted: list[str] | None) -> None:
        self.release = must(["sinfo", "--version"]).strip()
        self.dir = out / self.release.split()[-1]
        self.scratch = scratch
        # without accounting: "accounting_storage/none" (22.05) or "(null)" (24.11 on)
        storage = config_values("AccountingStorageType")
        self.accounting = any(
            v.startswith("accounting_storage/") and v != "accounting_storage/none" for v in storage
        )
        # 22.05 runs only the last Epilog= line; later releases run all of them
        epilogs = [v for v in config_values("Epilog") if v.endswith("/" + EPILOG_NAME)]
        self.marker_dir = Path(epilogs[-1]).parent if epilogs else None
        self.wanted = wanted or list(SCENARIOS if self.accounting else NOACCT_SCENARIOS)
        self.written: list[Path] = []

    # ---- jobs ----

    def sbatch(self, script: str, *options: str) -> int:
        path = self.scratch / f"{script}.sh"
        body = SCRIPTS[script].replace("MARKER", str(self.marker_dir) + "/linger-$SLURM_JOB_ID")
        path.write_text(f"#!/bin/sh\n{body}\n")
        out = must(["sbatch", "--parsable", "-J", script, *options, str(path)], cwd=self.scratch)
        job_id = int(out.strip().split(";")[0])
        log(f"{script}: job {job_id}")
        return job_id

    def wait(
        self, job_id: int, ok: Callable[[set[str]], bool], what: str, limit: float = 300
    ) -> set[str]:
        deadline = time.monotonic() + limit
        while True:
            seen = states(job_id)
            if seen and ok(seen):
                return seen
            if time.monotonic() > deadline:
                raise SystemExit(f"job {job_id} did not become {what} within {limit} s: {seen}")
            time.sleep(0.2)

    def wait_terminal(self, job_id: int, limit: float = 300) -> None:
        self.wait(job_id, lambda seen: seen <= TERMINAL, "finished", limit)

    def wait_state(self, job_id: int, state: str, limit: float = 300) -> None:
        self.wait(job_id, lambda seen: seen == {state}, state, limit)

    def wait_accounted(self, ids: list[int], limit: float = 30) -> None:
        """Accounting trails slurmctld: wait until sacct shows every job finished."""
        if not self.accounting:
            return
        deadline = time.monotonic() + limit
        while time.monotonic() < deadline:
            rows = sacct_text(ids)
            if rows and all(row["state"] in TERMINAL for row in rows.values()):
                return
            time.sleep(0.3)
        log(f"sacct does not show {ids} finished after {limit} s; recording anyway")

    # ---- snapshots ----

    def snapshot(
        self,
        scenario: str,
        ids: list[int],
        moment: str,
        *,
        in_name: bool = False,
        final: bool = False,
    ) -> None:
        """Write one fixture; MOMENT goes into the file name only with IN_NAME."""
        if final:
            self.wait_accounted(ids)
        id_set = set(ids)
        for _attempt in range(5):
            _, expected = scontrol_view(ids)
            outputs = {
                SQUEUE: json_output(["squeue", "--json"], id_set),
                SQUEUE_ALL: json_output(["squeue", "--json", "--states=all", "--all"], id_set),
                SACCT: json_output(["sacct", "--json", "-j", joined(ids)], id_set),
            }
            lines_after, expected_after = scontrol_view(ids)
            if expected_after == expected:
                break
            log(f"{scenario}: state changed while recording ({expected} -> {expected_after})")
        else:
            log(f"{scenario}: state kept changing; keeping the last attempt")
        record: dict[str, Any] = {
            "release": self.release,
            "recorded": True,
            "accounting": self.accounting,
            "scenario": scenario,
            "moment": moment,
            "job_ids": ids,
            "command_outputs": outputs,
            "scontrol": lines_after,
            "expected": expected_after,
        }
        missing = [i for i in ids if not any(k.split("_")[0] == str(i) for k in expected_after)]
        if missing:
            from_sacct = sacct_text(missing)
            record["expected"] = {**expected_after, **from_sacct}
            record["expected_from_sacct_text"] = sorted(from_sacct)
        name = scenario + (f"-{moment}" if in_name else "") + ("" if self.accounting else "-noacct")
        path = self.dir / f"{name}.json"
        path.write_text(json.dumps(record, indent=1, sort_keys=True) + "\n")
        self.written.append(path)
        log(f"wrote {path}: {record['expected']}")

    # ---- scenarios ----

    def simple(self, scenario: str, *options: str) -> None:
        job_id = self.sbatch(scenario, *options)
        self.wait_terminal(job_id)
        self.snapshot(scenario, [job_id], "finished", final=True)

    def cancelled_pending(self) -> None:
        job_id = self.sbatch("cancelled_pending", "--hold")
        self.wait_state(job_id, "PENDING")
        must(["scancel", str(job_id)])
        self.wait_terminal(job_id)
        self.snapshot("cancelled_pending", [job_id], "finished", final=True)

    def cancelled_running(self) -> None:
        job_id = self.sbatch("cancelled_running")
        self.wait_state(job_id, "RUNNING")
        must(["scancel", str(job_id)])
        self.wait_terminal(job_id)
        self.snapshot("cancelled_running", [job_id], "finished", final=True)

    def completing(self) -> None:
        if self.marker_dir is None:
            log("completing: skipped (the cluster has no Epilog from 'conf'; see --help)")
            return
        job_id = self.sbatch("completing")
        self.wait(job_id, lambda seen: "COMPLETING" in seen, "COMPLETING", 120)
        self.snapshot("completing", [job_id], "completing")
        self.wait_terminal(job_id)

    def requeued(self) -> None:
        job_id = self.sbatch("requeued", "--requeue")
        self.wait_state(job_id, "RUNNING")
        time.sleep(1)  # let the script leave its linger marker
        must(["scontrol", "requeue", str(job_id)])
        first = states(job_id)
        log(f"requeued: right after 'scontrol requeue': {first}")
        self.snapshot("requeued", [job_id], "requeue", in_name=True)
        if first != {"PENDING"}:
            self.wait_state(job_id, "PENDING", 120)
            self.snapshot("requeued", [job_id], "pending", in_name=True)
        # Slurm holds a requeued job back (22.05: BeginTime two minutes ahead) or, some releases,
        # holds it: let it run again now.
        reason = line_fields(" ".join(scontrol_lines(job_id))).get("Reason", "")
        if reason.startswith("JobHeld"):
            must(["scontrol", "release", str(job_id)])
        elif reason == "BeginTime":
            must(["scontrol", "update", f"JobId={job_id}", "StartTime=now"])
        self.wait_terminal(job_id)
        self.snapshot("requeued", [job_id], "finished", in_name=True, final=True)

    def pending(self) -> None:
        held = self.sbatch("pending_held", "--hold")
        running = self.sbatch("pending_running")
        self.wait_state(held, "PENDING")
        self.wait_state(running, "RUNNING")
        self.snapshot("pending", [held, running], "active")
        must(["scancel", str(held), str(running)])
        self.wait_terminal(held)
        self.wait_terminal(running)

    def record(self) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        self.scratch.mkdir(parents=True, exist_ok=True)
        log(f"{self.release}, accounting={self.accounting}, linger epilog={self.marker_dir}")
        timeout_id = None
        if "timeout" in self.wanted:
            # Slurm enforces time limits in whole minutes: this job runs beside all the others.
            timeout_id = self.sbatch("timeout", "--time=1")
            self.wait_state(timeout_id, "RUNNING")
        steps: dict[str, Callable[[], None]] = {
            "plain": lambda: self.simple("plain", "-o", "out-%j.txt"),
            "array": lambda: self.simple("array", "--array=0-3", "-o", "arr-%A_%a.out"),
            "failed": lambda: self.simple("failed"),
            "exit130": lambda: self.simple("exit130"),
            "signalled": lambda: self.simple("signalled"),
            "cancelled_pending": self.cancelled_pending,
            "cancelled_running": self.cancelled_running,
            "completing": self.completing,
            "requeued": self.requeued,
            "pending": self.pending,
            "resources": lambda: self.simple("resources", *RESOURCE_REQUEST),
        }
        for name, step in steps.items():
            if name in self.wanted:
                step()
        if timeout_id is not None:
            self.wait_terminal(timeout_id, 240)
            self.snapshot("timeout", [timeout_id], "finished", final=True)
        log(f"{len(self.written)} fixtures in {self.dir}")


def write_conf(directory: Path) -> Path:
    """The linger Epilog and the slurm.conf line for ``start --extra-conf``; returns the latter."""
    directory.mkdir(parents=True, exist_ok=True)
    directory.chmod(0o755)
    epilog = directory / EPILOG_NAME
    epilog.write_text(
        "#!/bin/sh\n"
        "# slurmd Epilog from tests/tools/record_json_fixtures.py: a job that left the marker\n"
        f"# {directory}/linger-<job id> stays COMPLETING for {LINGER_SECONDS} s (once).\n"
        f'marker="{directory}/linger-$SLURM_JOB_ID"\n'
        f'if [ -e "$marker" ]; then rm -f "$marker"; sleep {LINGER_SECONDS}; fi\n'
        "exit 0\n"
    )
    epilog.chmod(0o755)
    conf = directory / "extra.conf"
    conf.write_text(f"Epilog={epilog}\n")
    return conf


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    sub = parser.add_subparsers(dest="command", required=True)
    conf = sub.add_parser("conf", help="write the linger Epilog; print the --extra-conf file")
    conf.add_argument("directory", type=Path)
    rec = sub.add_parser("record", help="submit the scenario jobs and write the fixtures")
    rec.add_argument("--out", type=Path, required=True, help="fixtures root (json/)")
    rec.add_argument("--scratch", type=Path, default=Path("/tmp/json-fixtures"))
    rec.add_argument(
        "--scenarios",
        default="",
        help=f"comma-separated subset of {','.join(SCENARIOS)} (default: all of them; "
        f"without accounting: {','.join(NOACCT_SCENARIOS)})",
    )
    args = parser.parse_args(argv)
    if args.command == "conf":
        print(write_conf(args.directory.resolve()))
        return
    if not os.environ.get("SLURM_CONF"):
        raise SystemExit("SLURM_CONF is not set: start a cluster first (see the README)")
    wanted = [s for s in args.scenarios.split(",") if s]
    unknown = sorted(set(wanted) - set(SCENARIOS))
    if unknown:
        raise SystemExit(f"unknown scenarios: {unknown}; known: {', '.join(SCENARIOS)}")
    Recorder(args.out.resolve(), args.scratch.resolve(), wanted or None).record()


if __name__ == "__main__":
    main()
