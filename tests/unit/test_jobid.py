from __future__ import annotations

import pytest

from datalad_slurm.slurm.jobid import (
    JobIdError,
    NoJobIdError,
    Submission,
    parse_job_id,
    parse_submission,
)


@pytest.mark.parametrize(
    ("stdout", "expected"),
    [
        ("Submitted batch job 42\n", Submission(42)),
        ("Submitted batch job 42 on cluster alpha\n", Submission(42, "alpha")),
        ("42\n", Submission(42)),
        ("42;alpha\n", Submission(42, "alpha")),
        ("  17  \n", Submission(17)),
        ("sbatch: note: using defaults\nSubmitted batch job 7\n", Submission(7)),
        ("Submitted batch job 7\nSubmitted batch job 7\n", Submission(7)),
    ],
)
def test_parse_submission_forms(stdout: str, expected: Submission) -> None:
    assert parse_submission(stdout) == expected


@pytest.mark.parametrize(
    "stdout",
    ["", "sbatch: error: Batch job submission failed\n", "job 42 submitted\n", "4x2\n"],
)
def test_parse_submission_without_id(stdout: str) -> None:
    with pytest.raises(NoJobIdError, match="no Slurm job id"):
        parse_submission(stdout)


def test_parse_submission_refuses_several_jobs() -> None:
    with pytest.raises(NoJobIdError, match=r"several job ids \(1, 2\)"):
        parse_submission("Submitted batch job 1\nSubmitted batch job 2\n")


@pytest.mark.parametrize(("given", "expected"), [("4", 4), (" 17 ", 17), (49, 49), ("007", 7)])
def test_plain_job_ids(given: object, expected: int) -> None:
    assert parse_job_id(given) == expected


@pytest.mark.parametrize(
    ("given", "message", "whole"),
    [
        (
            "4_9",
            "4_9 is task 9 of array job 4; datalad finish takes whole jobs: datalad finish 4",
            4,
        ),
        ("1_0", "1_0 is task 0 of array job 1; ", 1),
        ("4_[1-3,7]", "4_[1-3,7] names tasks [1-3,7] of array job 4; ", 4),
        ("4_*", "4_* names tasks * of array job 4; ", 4),
        ("4+1", "4+1 is component 1 of heterogeneous job 4; ", 4),
        ("4.batch", "4.batch is step batch of job 4; ", 4),
        ("4.0", "4.0 is step 0 of job 4; ", 4),
        (
            "4;alpha",
            "4;alpha is job 4 on cluster alpha; give the job id alone: datalad finish 4",
            4,
        ),
        ("abc", "'abc' is not a Slurm job id; give the number sbatch printed", None),
        ("", "'' is not a Slurm job id", None),
        ("+4", "'+4' is not a Slurm job id", None),
        ("-4", "'-4' is not a Slurm job id", None),
        ("4e3", "'4e3' is not a Slurm job id", None),
        ("\u0664", "'\u0664' is not a Slurm job id", None),  # int() takes Arabic-Indic digits
        ("0", "0 is not a Slurm job id (they are whole numbers from 1)", None),
        (0, "0 is not a Slurm job id", None),
        (-3, "-3 is not a Slurm job id", None),
        (True, "True is not a Slurm job id", None),
    ],
)
def test_job_ids_that_are_not_whole_jobs(given: object, message: str, whole: int | None) -> None:
    with pytest.raises(JobIdError) as raised:
        parse_job_id(given)
    assert str(raised.value).startswith(message)
    assert raised.value.whole_job == whole
