"""Where a submitted job's logs go (slurm/logfiles.py), from squeue's answers as each Slurm
release gives them (recorded on 22.05.8, 24.11.5 and 26.05.5 for held jobs), and for a dry
run from what sbatch is asked for."""

from __future__ import annotations

import pytest

from datalad_slurm.slurm.logfiles import (
    Fields,
    LogFile,
    expand,
    folder_before_unknown,
    requested_log_files,
    submitted_log_files,
)

PLAIN = Fields(job_id=42, array_job_id=None, task_id=None, job_name="fit it", user="ana")
TASK = Fields(job_id=40, array_job_id=40, task_id=3, job_name="arr", user="ana")


@pytest.mark.parametrize(
    ("pattern", "fields", "expected"),
    [
        ("logs/run.log", PLAIN, "logs/run.log"),
        ("slurm-%j.out", PLAIN, "slurm-42.out"),
        ("%x-%u-%J.log", PLAIN, "fit it-ana-42.log"),
        ("%5j.out", PLAIN, "00042.out"),
        ("%20j.out", PLAIN, "0000000042.out"),  # Slurm pads to 10 at most
        ("%5x.out", PLAIN, "fit it.out"),  # a width means nothing to a name
        ("%A_%a.out", PLAIN, "42_4294967294.out"),  # not an array
        ("%A_%a.out", TASK, "40_3.out"),
        ("%A_%3a.out", TASK, "40_003.out"),
        ("100%%.log", PLAIN, "100%.log"),
        ("lit\\%j.log", PLAIN, "lit%j.log"),  # a backslash: nothing expanded
        ("%j.out", TASK, None),  # an array task's own job id comes when it starts
        ("node-%N.out", PLAIN, None),
        ("%t-%n-%s.out", PLAIN, None),
        ("%b.out", TASK, None),  # 26.05 expands it, 22.05 does not: unknown either way
        ("%j.out", Fields(None, None, None, "x", "u"), None),  # a dry run: no job id yet
    ],
)
def test_expand(pattern: str, fields: Fields, expected: str | None) -> None:
    assert expand(pattern, fields) == expected


@pytest.mark.parametrize(
    ("pattern", "folder"),
    [
        ("/ds/logs/%N.out", "/ds/logs"),
        ("/ds/logs/run-%N/x.out", "/ds/logs"),
        ("/ds/logs/%N/%t.out", "/ds/logs"),  # the first unknown field decides
        ("/ds/%x/%N/x.out", "/ds/%x"),  # known fields stay, for expand
        ("%N.out", "."),
    ],
)
def test_folder_before_unknown(pattern: str, folder: str) -> None:
    assert folder_before_unknown(pattern) == folder


# squeue -O stdout,stderr,workdir,arraytaskid,name,username right after sbatch --hold
FACTS_22_05 = {
    # -o logs/run.log, no -e: stderr shows stdout's name
    "plain": {"stdout": "/w/logs/run.log", "stderr": "/w/logs/run.log", "array": "N/A"},
    # no -o: the default name expanded with the job id, also for an array
    "default": {"stdout": "/w/slurm-5.out", "stderr": "/w/slurm-5.out", "array": "N/A"},
    "array": {"stdout": "/w/slurm-5.out", "stderr": "/w/slurm-5.out", "array": "1,3"},
}
FACTS_24_11 = {
    "plain": {"stdout": "/w/logs/run.log", "array": "N/A"},  # stderr "(null)": left out
    "default": {"stdout": "/w/slurm-%j.out", "array": "N/A"},
    "array": {"stdout": "/w/slurm-%A_%a.out", "array": "1,3"},
}
FACTS_26_05 = {
    "plain": {"stdout": "/w/logs/run.log", "array": "N/A"},
    "default": {"stdout": "slurm-%j.out", "array": "N/A"},  # relative to the work dir
    "array": {"stdout": "slurm-%A_%a.out", "array": "1,3"},
}


@pytest.mark.parametrize("release", [FACTS_22_05, FACTS_24_11, FACTS_26_05])
def test_submitted_log_files_read_alike_from_every_release(
    release: dict[str, dict[str, str]],
) -> None:
    def files(kind: str) -> list[tuple[str, bool, int | None]]:
        facts = {**release[kind], "work_dir": "/w", "name": "job.sh", "user": "ana"}
        return [(f.path, f.exact, f.task) for f in submitted_log_files(facts, 5)]

    assert files("plain") == [("/w/logs/run.log", True, None)]
    assert files("default") == [("/w/slurm-5.out", True, None)]
    assert files("array") == [("/w/slurm-5_1.out", True, 1), ("/w/slurm-5_3.out", True, 3)]


def test_submitted_log_files_of_an_array_with_its_own_names() -> None:
    facts = {
        "stdout": "/w/x/%A_%a.out",
        "stderr": "/w/e %x %u %j.err",  # %j of a task: known when it starts
        "work_dir": "/w",
        "array": "0-3:2",
        "name": "my name",
        "user": "ana",
    }
    found = submitted_log_files(facts, 9)
    assert found == [
        LogFile("/w/x/9_0.out", True, "/w/x/%A_%a.out", 0),
        LogFile("/w", False, "/w/e %x %u %j.err", 0),
        LogFile("/w/x/9_2.out", True, "/w/x/%A_%a.out", 2),
    ]


def test_requested_log_files_of_a_dry_run() -> None:
    found = requested_log_files("logs/%j.out", "logs/err.log", "/w", None, "job", "ana")
    # the job id comes with the submission: only the folder is known, and only this job's
    # file of that name will be in it
    assert found == [
        LogFile("/w/logs", False, "logs/%j.out", None, own_name=False),
        LogFile("/w/logs/err.log", True, "logs/err.log", None),
    ]
    tasks = requested_log_files("a/%A_%a.out", "a/%A_%a.out", "/w", "0-1", "job", "ana")
    assert [(f.path, f.own_name) for f in tasks] == [("/w/a", False)]
    node = requested_log_files("n/%N.out", "n/%N.out", "/w", None, "job", "ana")
    assert [(f.path, f.exact, f.own_name) for f in node] == [("/w/n", False, True)]
