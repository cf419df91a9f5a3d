"""Every Slurm JSON layout (data_parser v0.0.38-v0.0.45) read the way scontrol reads the same job.

The fixtures in ``fixtures/json/`` are answers of ``squeue --json`` and ``sacct
--json``: recorded on real clusters (22.05, 24.11, 26.05; ``"recorded": true``)
or built from Slurm's data_parser source where no real cluster of that release
can run here (v0.0.39, v0.0.40; ``"recorded": false``).  Each names what
``scontrol show job`` said of the same jobs (``expected``): this is a
differential test against Slurm's own reading.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest

from datalad_slurm.slurm.backend import live_then_accounting, merge_tasks
from datalad_slurm.slurm.jsoncli import SQUEUE_COMMAND, describe_layouts
from datalad_slurm.slurm.jsonlayout import ExitStatus, data_parser_version, exit_status, log_name
from datalad_slurm.slurm.jsonrecords import sacct_tasks, squeue_tasks
from datalad_slurm.slurm.state import JobState, JobStatus, TaskState

FIXTURES = Path(__file__).parent / "fixtures" / "json"
#: layouts whose sacct exit code is 0 for every normal exit (a Slurm bug fixed in 23.11)
ACCOUNTING_EXIT_UNTRUSTED = {"v0.0.38", "v0.0.39"}


def _fixture_files() -> list[Path]:
    return sorted(p for p in FIXTURES.rglob("*.json") if p.is_file())


def _answers(fixture: Mapping[str, Any]) -> Iterator[tuple[str, Mapping[str, Any]]]:
    for command, answer in (fixture.get("command_outputs") or {}).items():
        if isinstance(answer, Mapping) and isinstance(answer.get("jobs"), list):
            yield command, answer


def _wanted(expected: Mapping[str, Any]) -> set[int]:
    return {int(label.split("_")[0]) for label in expected}


def _read(command: str, answer: Mapping[str, Any], wanted: set[int]) -> dict[int, JobStatus]:
    reader = sacct_tasks if command.startswith("sacct") else squeue_tasks
    statuses: dict[int, JobStatus] = {}
    merge_tasks(statuses, reader(answer, wanted), command)
    return statuses


def _tasks(statuses: Mapping[int, JobStatus]) -> dict[str, TaskState]:
    return {label: task for status in statuses.values() for label, task in status.tasks.items()}


def test_there_are_fixtures_of_every_kind() -> None:
    kinds = {json.loads(p.read_text()).get("recorded") for p in _fixture_files()}
    layouts = {json.loads(p.read_text()).get("data_parser") for p in _fixture_files()}
    assert False in kinds and {"v0.0.39", "v0.0.40"} <= layouts


#: the layout each release's --json defaults to (no DataParserParameters)
DEFAULT_LAYOUT = {
    "22.05": "v0.0.38",
    "23.02": "v0.0.39",
    "23.11": "v0.0.40",
    "24.11": "v0.0.42",
    "26.05": "v0.0.45",
}


def _release(fixture: Mapping[str, Any]) -> str:
    found = re.search(r"\d\d\.\d\d", str(fixture.get("release")))
    return found.group(0) if found else ""


def _combined(
    fixture: Mapping[str, Any], wanted: set[int]
) -> tuple[dict[int, JobStatus], set[str], str | None]:
    """What the JSON CLI backend answers from these outputs: squeue's (the command it runs),
    then sacct's for the jobs squeue lacks; and the labels squeue answered, and sacct's layout."""
    answers = dict(_answers(fixture))
    squeue = answers.get(" ".join(SQUEUE_COMMAND)) or answers.get("squeue --json")
    sacct = [answer for command, answer in answers.items() if command.startswith("sacct")]
    assert squeue or sacct, "the fixture holds no squeue or sacct answer"
    layout = fixture.get("data_parser") or DEFAULT_LAYOUT[_release(fixture)]
    for answer in filter(None, [squeue, *sacct]):
        assert data_parser_version(answer) == layout
    live = list(squeue_tasks(squeue, wanted)) if squeue else []
    statuses = live_then_accounting(
        wanted,
        live,
        lambda rest: [t for answer in sacct for t in sacct_tasks(answer, set(rest))],
        "test",
    )
    return statuses, {t.label for t in live}, layout


@pytest.mark.parametrize("path", _fixture_files(), ids=lambda p: str(p.relative_to(FIXTURES)))
def test_each_layout_reads_as_scontrol_reads_it(path: Path) -> None:
    fixture = json.loads(path.read_text())
    expected: dict[str, dict[str, Any]] = fixture.get("expected") or {}
    assert expected, f"{path.name} names no expected states"
    statuses, from_squeue, layout = _combined(fixture, _wanted(expected))
    found = _tasks(statuses)
    for label, want in expected.items():
        assert label in found, f"{label} was not found (answers: {sorted(found)})"
        task = found[label]
        assert task.state.value == want["state"], label
        if not JobState(want["state"]).is_terminal:
            assert (task.exit_code, task.signal) == (None, None), label
            continue
        assert task.signal == want["signal"], label
        if label not in from_squeue and layout in ACCOUNTING_EXIT_UNTRUSTED:
            # never a wrong number: the exit code is right or left unknown
            assert task.exit_code in (want["exit_code"], None), label
            if want["state"] == "COMPLETED":
                assert task.exit_code == 0, label
        else:
            assert task.exit_code == want["exit_code"], label
    for label, stdout in (fixture.get("expected_logs") or {}).items():
        assert found[label].stdout == stdout, label


def test_a_completing_job_is_never_taken_as_finished() -> None:
    fixture = json.loads((FIXTURES / "built" / "v0.0.40-23.11.json").read_text())
    squeue = fixture["command_outputs"]["squeue --json --states=all --all"]
    statuses = _read("squeue", squeue, {204, 211})
    assert statuses[204].summary_state == "COMPLETING" and statuses[204].verdict.value == "active"
    assert statuses[211].verdict.value == "active"


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (768, ExitStatus(3, 0)),  # 22.05 squeue: a wait status
        ({"set": True, "infinite": False, "number": 33280}, ExitStatus(130, 0)),  # 23.02 squeue
        ({"set": False, "infinite": False, "number": 0}, ExitStatus(None, None)),
        ({"status": "SUCCESS", "return_code": 0}, ExitStatus(None, 0)),  # 22.05/23.02 sacct bug
        (
            {
                "status": "SIGNALED",
                "return_code": -127,
                "signal": {"signal_id": 9, "name": "Killed"},
            },
            ExitStatus(0, 9),
        ),
        (
            {
                "status": ["SIGNALED"],
                "return_code": {"set": False, "infinite": False, "number": 0},
                "signal": {"id": {"set": True, "infinite": False, "number": 15}, "name": "TERM"},
            },
            ExitStatus(0, 15),
        ),
        (
            {
                "status": ["ERROR"],
                "return_code": {"set": True, "infinite": False, "number": 130},
                "signal": {"id": {"set": False, "infinite": False, "number": 0}, "name": ""},
            },
            ExitStatus(130, 0),
        ),
        (
            {"status": ["PENDING"], "return_code": {"set": False}, "signal": {}},
            ExitStatus(None, None),
        ),
        ({"status": ["INVALID"], "return_code": {"set": True, "number": 512}}, ExitStatus(2, 0)),
    ],
)
def test_exit_status_in_every_shape(value: Any, expected: ExitStatus) -> None:
    assert exit_status(value) == expected


@pytest.mark.parametrize(
    ("record", "expected"),
    [
        ({"standard_output": "out-%j.txt"}, ("out-%j.txt", True)),  # 22.05, 25.05+: the pattern
        ({"standard_output": "/w/out-7.txt"}, ("/w/out-7.txt", False)),  # 23.02-24.11: expanded
        (
            {"standard_output": "out-%j.txt", "stdout_expanded": "/w/out-7.txt"},
            ("/w/out-7.txt", False),
        ),
        ({"stdout": "/w/a%%b", "stdout_expanded": ""}, ("/w/a%%b", True)),  # sacct 24.05+
        ({"standard_output": ""}, (None, False)),
    ],
)
def test_log_names_in_every_layout(record: dict[str, Any], expected: tuple[Any, bool]) -> None:
    assert log_name(record, "stdout") == expected


def test_an_expanded_log_name_is_not_expanded_again() -> None:
    # %% in a name Slurm already expanded would lose a character if expanded twice
    record = {
        "job_id": 7,
        "job_state": ["COMPLETED"],
        "exit_code": 0,
        "current_working_directory": "/w",
        "standard_output": "/w/100%.out",
        "stdout_expanded": "/w/100%.out",
    }
    task = _tasks(_read("squeue", {"jobs": [record]}, {7}))["7"]
    assert task.stdout == "/w/100%.out"


@pytest.mark.parametrize(
    ("meta", "version"),
    [
        ({"plugin": {"type": "openapi/v0.0.38"}}, "v0.0.38"),
        ({"plugin": {"type": "openapi/dbv0.0.38"}}, "v0.0.38"),
        ({"plugins": {"data_parser": "data_parser/v0.0.39"}}, "v0.0.39"),
        ({"plugin": {"type": "", "data_parser": "data_parser/v0.0.45"}}, "v0.0.45"),
        ({}, None),
    ],
)
def test_the_layout_is_named_from_meta(meta: dict[str, Any], version: str | None) -> None:
    assert data_parser_version({"meta": meta}) == version


def test_two_layouts_are_both_named() -> None:
    assert describe_layouts({"squeue": "v0.0.42", "sacct": "v0.0.42"}) == "v0.0.42"
    assert describe_layouts({"squeue": "v0.0.42", "sacct": None}) == "v0.0.42"
    assert describe_layouts({"squeue": "v0.0.42", "sacct": "v0.0.41"}) == (
        "squeue v0.0.42, sacct v0.0.41"
    )
    assert describe_layouts({}) is None
