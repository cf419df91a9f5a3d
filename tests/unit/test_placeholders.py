"""Our placeholder filling against DataLad's own ``format_command``, case by case."""

from __future__ import annotations

from pathlib import Path

import pytest
from datalad.api import Dataset
from datalad.core.local.run import format_command as datalad_format_command

from datalad_slurm.jobs.placeholders import PlaceholderError, format_command, substitutions

COMMANDS = [
    "sbatch job.sh {inputs} -- {outputs}",
    "sbatch job.sh {inputs[0]} {inputs[2]} {outputs[1]}",
    "sbatch --export=ALL,IN={inputs[1]} job.sh {pwd} {dspath} {{not a field}}",
    "sbatch job.sh {name} {inputs!r} {outputs:>3}",
]


@pytest.fixture(scope="module")
def ds(tmp_path_factory: pytest.TempPathFactory) -> Dataset:
    """One dataset for every case: nothing here changes it."""
    ds = Dataset(str(tmp_path_factory.mktemp("placeholders") / "ds")).create(
        result_renderer="disabled"
    )
    ds.config.set("datalad.run.substitutions.name", "a value", scope="local")
    top = Path(ds.path)
    for name in ("in put.txt", 'say "hi".txt', "it's", "g1.dat", "g2.dat", "plain"):
        (top / name).write_text(name)
    for folder in ("d1", "d2", "sub/a", "sub/b"):
        (top / folder).mkdir(parents=True)
    return ds


@pytest.mark.parametrize("command", COMMANDS)
@pytest.mark.parametrize(
    ("inputs", "outputs"),
    [
        (["in put.txt", 'say "hi".txt', "it's"], ["out/with space", "o'q"]),
        (["g*.dat", "d*/", "./plain"], [".", "res", "nothing*"]),
        (["sub/*/missing/f", "ABS", "d1/"], ["sub/a", "./res dir", "sub/a/../b"]),
    ],
)
def test_the_command_is_what_datalad_run_would_run(
    ds: Dataset, command: str, inputs: list[str], outputs: list[str]
) -> None:
    top = Path(ds.path)
    inputs = [str(top / "in put.txt") if p == "ABS" else p for p in inputs]
    pwd = str(top)
    expected = datalad_format_command(
        ds, command, pwd=pwd, dspath=ds.path, inputs=inputs, outputs=outputs
    )
    ours = format_command(
        command,
        inputs=inputs,
        outputs=outputs,
        pwd=pwd,
        dspath=ds.path,
        configured=substitutions(ds.config),
    )
    assert ours == expected
    assert "{" not in ours.replace("{not a field}", "")


def test_from_a_subdirectory_paths_are_relative_to_it(ds: Dataset) -> None:
    top = Path(ds.path)
    pwd = str(top / "sub")
    command = "sbatch ../job.sh {inputs} {outputs[0]} {pwd}"
    inputs = [str(top / "in put.txt"), "*", "a/"]
    outputs = ["b", str(top / "d2")]
    expected = datalad_format_command(
        ds, command, pwd=pwd, dspath=ds.path, inputs=inputs, outputs=outputs
    )
    assert expected == f"sbatch ../job.sh '../in put.txt' a b a/ b {pwd}"
    assert format_command(command, inputs=inputs, outputs=outputs, pwd=pwd, dspath=ds.path) == (
        expected
    )


def test_tmpdir_is_a_new_folder_only_when_named(ds: Dataset) -> None:
    filled = format_command("sbatch job.sh {tmpdir}", inputs=[], outputs=[], pwd=ds.path, dspath="")
    folder = Path(filled.split()[-1])
    assert folder.is_dir() and folder.name.startswith("datalad-run-")
    folder.rmdir()
    assert format_command("sbatch job.sh", inputs=[], outputs=[], pwd=ds.path, dspath="") == (
        "sbatch job.sh"
    )


@pytest.mark.parametrize(
    ("command", "complaint"),
    [
        ("sbatch {nope}", r"unknown placeholder \{nope\}"),
        ("sbatch {inputs[3]}", "past the end"),
        ("sbatch {inputs", "cannot expand placeholders"),
    ],
)
def test_a_bad_placeholder_is_a_clear_error(ds: Dataset, command: str, complaint: str) -> None:
    with pytest.raises(PlaceholderError, match=complaint):
        format_command(command, inputs=["plain"], outputs=[], pwd=ds.path, dspath=ds.path)
