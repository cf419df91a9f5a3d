from __future__ import annotations

from pathlib import Path

import pytest

from datalad_slurm.jobs.placeholders import PlaceholderError, format_command
from datalad_slurm.slurm.backend import expand_array_spec, expand_filename_pattern
from datalad_slurm.slurm.jsonlayout import ExitStatus
from datalad_slurm.usecases.request import join_command


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


def test_join_command_and_placeholders(tmp_path: Path) -> None:
    assert join_command(["sbatch job.sh"]) == "sbatch job.sh"
    assert join_command(["sbatch", "--wrap", "echo a b"]) == "sbatch --wrap 'echo a b'"
    (tmp_path / "in put").write_text("x")
    (tmp_path / "d1").mkdir()
    (tmp_path / "d2").mkdir()
    filled = format_command(
        "sbatch --export=O={outputs} job.sh {inputs} {{x}} {inputs[1]} {outputs[0]} {pwd} {dspath}",
        inputs=["in put", "d*/"],
        outputs=["o1", "o 2", "."],
        pwd=str(tmp_path),
        dspath="/d",
    )
    assert filled == (
        f"sbatch --export=O=o1 'o 2' job.sh 'in put' d1/ d2/ {{x}} d1/ o1 {tmp_path} /d"
    )
    with pytest.raises(PlaceholderError, match=r"unknown placeholder \{nope\}"):
        format_command("sbatch {nope}", inputs=[], outputs=[], pwd="/", dspath="/")
    with pytest.raises(PlaceholderError, match="past the end"):
        format_command("sbatch {inputs[2]}", inputs=["a"], outputs=[], pwd="/", dspath="/")
