"""The hook's own logic, without Slurm: parsing, the state decision, every exit path."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from datalad_slurm.spool import UserSpool
from tests.unit.hook_modules import entry
from tests.unit.hook_modules import facts as hook_facts


def test_parse_scontrol_line_keeps_spaces_in_values() -> None:
    line = (
        "JobId=7 JobName=my job UserId=root(0) JobState=COMPLETING Reason=None "
        "ExitCode=0:15 WorkDir=/data/with space StdOut=/data/with space/o-7.out"
    )
    fields = hook_facts.parse_scontrol_line(line)
    assert fields["JobName"] == "my job"
    assert fields["WorkDir"] == "/data/with space"
    assert fields["StdOut"] == "/data/with space/o-7.out"
    assert fields["ExitCode"] == "0:15"


@pytest.mark.parametrize(
    ("fields", "env_exit", "state"),
    [
        # after the job left COMPLETING: scontrol names the final state (HOOK-NOTES.md)
        ({"JobState": "COMPLETED", "Reason": "None", "ExitCode": "0:0"}, "0:0", "COMPLETED"),
        ({"JobState": "CANCELLED", "Reason": "None", "ExitCode": "0:15"}, "0:0", "CANCELLED"),
        ({"JobState": "TIMEOUT", "Reason": "TimeLimit", "ExitCode": "0:15"}, "0:0", "TIMEOUT"),
        ({"JobState": "FAILED", "Reason": "NonZeroExitCode", "ExitCode": "3:0"}, "3:0", "FAILED"),
        ({"JobState": "PENDING", "Reason": "BeginTime", "EndTime": "Unknown"}, "0:0", "PENDING"),
        # still COMPLETING when the worker gave up waiting: the decision table
        ({"JobState": "COMPLETING", "Reason": "TimeLimit", "ExitCode": "0:15"}, "0:0", "TIMEOUT"),
        ({"JobState": "COMPLETING", "Reason": "NodeDown", "ExitCode": "0:0"}, "0:0", "NODE_FAIL"),
        (
            {"JobState": "COMPLETING", "Reason": "NonZeroExitCode", "ExitCode": "3:0"},
            "3:0",
            "FAILED",
        ),
        (
            {"JobState": "COMPLETING", "Reason": "JobLaunchFailure", "ExitCode": "0:9"},
            "0:0",
            "FAILED",
        ),
        ({"JobState": "COMPLETING", "Reason": "None", "ExitCode": "0:15"}, "0:0", "CANCELLED"),
        ({"JobState": "COMPLETING", "Reason": "None", "EndTime": "Unknown"}, "0:0", "REQUEUED"),
        # looks successful, may be a cancel whose script trapped SIGTERM: never COMPLETED
        ({"JobState": "COMPLETING", "Reason": "None", "ExitCode": "0:0"}, "0:0", "UNKNOWN"),
    ],
)
def test_decide_state(fields: dict[str, str], env_exit: str, state: str) -> None:
    assert hook_facts.decide_state(fields, {"SLURM_JOB_EXIT_CODE2": env_exit}) == state


@pytest.mark.parametrize(
    ("answered_by", "slurm_exit", "env_exit", "exit_code"),
    [
        # pyslurm says 2 for a job that exited 130: the environment knows better
        ("pyslurm", "2:0", "130:0", 130),
        ("pyslurm", "2:0", "2:0", 2),
        # a cancelled job's shell (143) reads as 15; the environment says 0:0 then: lost
        ("pyslurm", "15:0", "0:0", 15),
        ("pyslurm", "0:9", "0:9", 0),
        # scontrol tells the exit status as it is
        ("scontrol", "2:0", "130:0", 2),
        ("scontrol", "143:0", "0:0", 143),
    ],
)
def test_pyslurm_exit_codes_from_128_up(
    answered_by: str, slurm_exit: str, env_exit: str, exit_code: int
) -> None:
    fields = {hook_facts.ANSWERED_BY: answered_by, "JobState": "FAILED", "ExitCode": slurm_exit}
    facts = hook_facts.facts_from_slurm(fields, {"SLURM_JOB_EXIT_CODE2": env_exit})
    assert facts["exit_code"] == exit_code


def _config(tmp_path: Path, spool: Path) -> Path:
    config = tmp_path / "hook.conf"
    config.write_text(
        f"spool = {spool}\nlog = {tmp_path / 'hook.log'}\nquery_timeout = 2\n"
        f"slurm_conf = {tmp_path / 'no-slurm.conf'}\n"
    )
    return config


def _env(config: Path, job: str = "11", uid: str | None = None) -> dict[str, str]:
    return {
        "DATALAD_SLURM_CONFIG": str(config),
        "SLURM_JOB_ID": job,
        "SLURM_JOB_UID": uid or str(os.getuid()),
        "SLURM_CLUSTER_NAME": "c",
        "SLURM_JOB_EXIT_CODE2": "0:0",
        "SLURM_JOB_USER": "someone",
    }


def test_unregistered_job_writes_nothing(tmp_path: Path, spool: Path) -> None:
    assert entry.main(_env(_config(tmp_path, spool))) == 0
    assert not (spool / str(os.getuid())).exists()


def test_registered_job_without_slurm_answer(tmp_path: Path, spool: Path) -> None:
    UserSpool(str(spool)).register("c", 11)
    assert entry.main(_env(_config(tmp_path, spool))) == 0
    [event_file] = (spool / str(os.getuid()) / "events").glob("*.event")
    event = json.loads(event_file.read_text())
    # Slurm could not be asked and the environment cannot tell a cancel from a success
    assert event["state"] == "UNKNOWN" and event["resolved_by"] == "environment"
    assert event["job_id"] == 11 and event["cluster"] == "c"


@pytest.mark.parametrize(
    "env_change",
    [
        {"SLURM_JOB_UID": "x"},
        {"SLURM_JOB_ID": ""},
        {"DATALAD_SLURM_CONFIG": "/nonexistent"},
        {"SLURM_JOB_UID": "4242"},
    ],
)
def test_every_bad_path_exits_0(tmp_path: Path, spool: Path, env_change: dict[str, str]) -> None:
    UserSpool(str(spool)).register("c", 11)
    env = {**_env(_config(tmp_path, spool)), **env_change}
    assert entry.main(env) == 0


def test_failures_are_logged_not_raised(tmp_path: Path, spool: Path) -> None:
    UserSpool(str(spool)).register("c", 11)
    events = spool / str(os.getuid()) / "events"
    events.rmdir()
    events.write_text("not a folder")
    assert entry.main(_env(_config(tmp_path, spool))) == 0
    assert "job 11: no event written" in (tmp_path / "hook.log").read_text()


def _recorded_scontrol_lines() -> list[tuple[str, str, str, dict[str, object]]]:
    """(fixture, label, scontrol line, expected) from the real clusters' recordings."""
    found = []
    for path in sorted((Path(__file__).parent / "fixtures" / "json").glob("*/*.json")):
        fixture = json.loads(path.read_text())
        if not fixture.get("recorded"):
            continue
        for label, line in (fixture.get("scontrol") or {}).items():
            if label in fixture.get("expected", {}):
                found.append((path.parent.name, path.stem, line, fixture["expected"][label]))
    return found


@pytest.mark.parametrize(
    ("release", "scenario", "line", "expected"),
    _recorded_scontrol_lines(),
    ids=lambda v: v if isinstance(v, str) and len(v) < 40 else "",
)
def test_the_hook_reads_every_releases_scontrol(
    release: str, scenario: str, line: str, expected: dict[str, object]
) -> None:
    """22.05, 24.11 and 26.05 as recorded: the state, exit code and logs the hook takes."""
    fields = hook_facts.parse_scontrol_line(line.strip())
    facts = hook_facts.facts_from_slurm(fields, {})
    assert (facts["exit_code"], facts["signal"]) == (expected["exit_code"], expected["signal"])
    state = str(expected["state"])
    if state in ("COMPLETING", "EXPEDITING"):
        assert hook_facts.still_completing(fields)  # waited out, never taken as the end
    elif state not in ("RUNNING", "CONFIGURING"):
        assert facts["state"] == state
    # 26.05 leaves StdErr blank without -e: no log name is made up, and stdout is kept
    assert facts["stdout"] == (fields.get("StdOut") or None)
    assert facts["stderr"] == (fields.get("StdErr") or None)
    if fields.get("StdErr") == "":
        assert facts["stderr"] is None and facts["stdout"]


def test_recordings_of_every_release_reach_the_hook_test() -> None:
    releases = {release for release, *_ in _recorded_scontrol_lines()}
    assert {r[:5] for r in releases} >= {"22.05", "24.11", "26.05"}
