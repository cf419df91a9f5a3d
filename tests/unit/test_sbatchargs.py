"""Reading an sbatch call as sbatch reads it (slurm/sbatchargs.py): getopt_long's rules, the
script's #SBATCH lines up to its first command, SBATCH_* variables, their precedence."""

from __future__ import annotations

from pathlib import Path

import pytest

from datalad_slurm.slurm.sbatchargs import parse_options, read_call, sbatch_calls, script_directives


@pytest.mark.parametrize(
    ("arguments", "options", "rest"),
    [
        (["job.sh"], {}, ["job.sh"]),
        (["--hold", "job.sh", "-o", "x"], {"hold": ""}, ["job.sh", "-o", "x"]),
        (["-H", "job.sh"], {"hold": ""}, ["job.sh"]),
        (["-vH", "job.sh"], {"hold": ""}, ["job.sh"]),  # a cluster of flags
        (["-JHello", "job.sh"], {"job-name": "Hello"}, ["job.sh"]),  # H is the name here
        (["-oHx.log", "job.sh"], {"output": "Hx.log"}, ["job.sh"]),
        (["-o", "a.log", "-e", "b.log", "j.sh"], {"output": "a.log", "error": "b.log"}, ["j.sh"]),
        (
            ["--output=a.log", "--error", "b.log", "j.sh"],
            {"output": "a.log", "error": "b.log"},
            ["j.sh"],
        ),
        (["--out", "a.log", "--hol", "j.sh"], {"output": "a.log", "hold": ""}, ["j.sh"]),
        (
            ["-p", "debug", "--mem", "1G", "--array", "0-3", "j.sh", "1"],
            {"array": "0-3"},
            ["j.sh", "1"],
        ),
        (["--exclusive", "j.sh"], {}, ["j.sh"]),  # an optional argument only after '='
        (["-k", "j.sh"], {}, ["j.sh"]),
        (["-o", "a", "-o", "b", "j.sh"], {"output": "b"}, ["j.sh"]),  # the last one wins
        (["--wrap", "echo hi"], {"wrap": "echo hi"}, []),
        (["--", "j.sh", "--hold"], {}, ["j.sh", "--hold"]),
        (["--parsable", "-D", "sub", "j.sh"], {"chdir": "sub"}, ["j.sh"]),
    ],
)
def test_parse_options(arguments: list[str], options: dict[str, str], rest: list[str]) -> None:
    assert parse_options(arguments) == (options, rest)


def test_script_directives_stop_at_the_first_command() -> None:
    text = (
        "#!/bin/bash\n"
        "#SBATCH -o logs/run.log  # a comment\n"
        "\n"
        "  # an indented comment\n"
        '#SBATCH --job-name="two words"\n'
        " #SBATCH --hold\n"  # not at the line's start: a comment
        "echo hi\n"
        "#SBATCH --array=0-3\n"  # after the first command: ignored
    )
    assert script_directives(text) == (["-o", "logs/run.log", "--job-name=two words"], False)
    assert script_directives("#!/bin/sh\n#PBS -h\ntrue\n") == ([], True)


def test_read_call_merges_as_sbatch_does(tmp_path: Path) -> None:
    (tmp_path / "job.sh").write_text(
        "#!/bin/sh\n#SBATCH -o script.log\n#SBATCH -e s.err\n#SBATCH -H\n"
    )
    call = read_call(["-e", "cli.err", "job.sh"], str(tmp_path), {"SBATCH_ERROR": "env.err"})
    # the command line wins over the variables, which win over the script
    assert call.options == {"output": "script.log", "error": "cli.err", "hold": ""}
    assert call.hold and call.job_name == "job.sh" and call.script == "job.sh"
    assert call.log_patterns() == ("script.log", "cli.err")
    env_only = read_call(["job.sh"], str(tmp_path), {"SBATCH_OUTPUT": "env.log"})
    assert env_only.log_patterns() == ("env.log", "s.err")
    bare = read_call(["--array=1-2", "-D", "sub", "--wrap", "true"], str(tmp_path), {})
    assert (bare.hold, bare.job_name, bare.work_dir) == (False, "wrap", str(tmp_path / "sub"))
    assert bare.log_patterns() == ("slurm-%A_%a.out", "slurm-%A_%a.out")


@pytest.mark.parametrize(
    ("command", "calls"),
    [
        ("sbatch job.sh 1", [["job.sh", "1"]]),
        ("/usr/bin/sbatch --hold 'a b.sh'", [["--hold", "a b.sh"]]),
        ("cd sub && sbatch -o x job.sh; echo done", [["-o", "x", "job.sh"]]),
        ("FOO=1 sbatch job.sh | cat", [["job.sh"]]),
        ("bash submit.sh sbatch", []),  # an argument, not a command
        ("echo 'unbalanced", []),
    ],
)
def test_sbatch_calls(command: str, calls: list[list[str]]) -> None:
    assert list(sbatch_calls(command)) == calls
