from __future__ import annotations

import pytest

from datalad_slurm.slurm.jobid import NoJobIdError, Submission, parse_submission


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
