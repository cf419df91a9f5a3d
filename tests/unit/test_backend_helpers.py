from __future__ import annotations

import pytest

from datalad_slurm.scheduling import ScheduleError, expand_placeholders, join_command
from datalad_slurm.slurm.backend import expand_array_spec, expand_filename_pattern
from datalad_slurm.slurm.jsonlayout import ExitStatus


@pytest.mark.parametrize(
    ("spec", "ids"),
    [
        ("0-3", [0, 1, 2, 3]),
        ("1,5,7", [1, 5, 7]),
        ("0-10:5", [0, 5, 10]),
        ("2-4%1", [2, 3, 4]),
        ("7", [7]),
    ],
)
def test_expand_array_spec(spec: str, ids: list[int]) -> None:
    assert expand_array_spec(spec) == ids


def test_expand_array_spec_rejects_garbage() -> None:
    with pytest.raises(ValueError, match="not a Slurm array spec"):
        expand_array_spec("a-b")


@pytest.mark.parametrize(
    ("pattern", "expected"),
    [
        ("slurm-%j.out", "slurm-12.out"),
        ("slurm-%A_%a.out", "slurm-10_2.out"),
        ("%x-%u.log", "name-alice.log"),
        ("out-%4j-%%.txt", "out-0012-%.txt"),
        ("/abs/%N.out", "/abs/node1.out"),
    ],
)
def test_expand_filename_pattern(pattern: str, expected: str) -> None:
    assert (
        expand_filename_pattern(
            pattern,
            job_id=12,
            array_job_id=10,
            task_id=2,
            job_name="name",
            user="alice",
            node="node1",
        )
        == expected
    )


@pytest.mark.parametrize(
    ("raw", "expected"), [(0, (0, 0)), (256, (1, 0)), (15, (0, 15)), (None, (None, None))]
)
def test_a_wait_status_splits_into_exit_code_and_signal(
    raw: int | None, expected: tuple[int | None, int | None]
) -> None:
    assert ExitStatus.from_wait_status(raw) == ExitStatus(*expected)


def test_join_command_and_placeholders() -> None:
    assert join_command(["sbatch job.sh"]) == "sbatch job.sh"
    assert join_command(["sbatch", "--wrap", "echo a b"]) == "sbatch --wrap 'echo a b'"
    assert (
        expand_placeholders(
            "sbatch --export=O={outputs} job.sh {inputs} {{x}}",
            inputs=["in put"],
            outputs=["o1", "o2"],
            pwd="/p",
            dspath="/d",
        )
        == "sbatch --export=O=o1 o2 job.sh 'in put' {x}"
    )
    with pytest.raises(ScheduleError, match=r"unknown placeholder\(s\) \{nope\}"):
        expand_placeholders("sbatch {nope}", inputs=[], outputs=[], pwd="", dspath="")
