"""The documents name only files and options that exist (issue 19).

Every code block and inline code span of README.md and docs/*.md is read: a path into this
tree must exist, a results file named by its name alone must be in benchmarks/results/, and an
option given to one of our commands or scripts must be one it has. Slurm's, git's and the
shell's own commands are not checked.
"""

from __future__ import annotations

import importlib
import re
import shlex
import subprocess
import sys
from collections.abc import Iterator
from functools import cache
from pathlib import Path

import pytest

#: the documents only: the host and forky-jsoncli tiers (tests/conftest.py, AGNOSTIC_TIERS)
pytestmark = pytest.mark.slurm_agnostic

ROOT = Path(__file__).resolve().parents[2]
DOCUMENTS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md")), ROOT / "CHANGELOG.md"]

# top-level folders of this tree; a token starting with one of them is a path into it
TREE_FOLDERS = ("epilog", "contrib", "datalad_slurm", "benchmarks", "tests", "docs", ".ci")
PATH_TOKEN = re.compile(
    r"(?<![\w/.-])((?:\./)?(?:" + "|".join(TREE_FOLDERS) + r")/[\w./+*?{}<>$-]*)"
)
RESULTS_NAME = re.compile(r"(?<![\w/.-])([\w.+-]*20\d\d-\d\d-\d\d[\w.+-]*\.(?:md|json|txt))\b")
OPTION = re.compile(r"^--[a-z][a-z0-9-]*")

# our DataLad commands, by their command-line names
OUR_COMMANDS = {
    "schedule": "datalad_slurm.commands.schedule",
    "finish": "datalad_slurm.commands.finish",
    "reschedule": "datalad_slurm.commands.reschedule",
}


def code_of(text: str) -> Iterator[tuple[int, str, bool]]:
    """(line number, code, whether it is a block line) of each code span and indented block."""
    previous_blank = True
    in_block = False
    fenced = False
    for number, line in enumerate(text.splitlines(), 1):
        if line.lstrip().startswith("```"):
            fenced = not fenced
            continue
        if fenced:
            yield number, line, True
            continue
        indented = line.startswith("    ") and not line.lstrip().startswith(("- ", "* "))
        if indented and (in_block or previous_blank):
            in_block = True
            yield number, line.strip(), True
        elif line.strip():
            in_block = False
            for span in re.findall(r"`([^`]+)`", line):
                yield number, span, False
        previous_blank = not line.strip()


def _clean(token: str) -> str:
    return token.rstrip(".,;:)'\"")


#: paths that only the built wheel has, and the file that makes them
BUILT = {"datalad_slurm/_hook": "setup.py"}


def _exists(token: str) -> bool:
    token = _clean(token).removeprefix("./")
    for built, maker in BUILT.items():
        if token.rstrip("/") == built or token.startswith(built + "/"):
            return built.rsplit("/", 1)[-1] in (ROOT / maker).read_text()
    if any(ch in token for ch in "*?[<{$"):  # a pattern or a placeholder: its fixed part
        token = re.split(r"[*?\[<{$]", token, maxsplit=1)[0].rsplit("/", 1)[0]
    return (ROOT / token).exists()


def named_paths() -> list[tuple[str, int, str]]:
    found = []
    for document in DOCUMENTS:
        for number, code, _ in code_of(document.read_text()):
            for token in PATH_TOKEN.findall(code):
                if _clean(token).rstrip("/") in TREE_FOLDERS:
                    continue
                found.append((document.relative_to(ROOT).as_posix(), number, _clean(token)))
    return found


def named_results() -> list[tuple[str, int, str]]:
    found = []
    for document in DOCUMENTS:
        for number, code, _ in code_of(document.read_text()):
            for token in RESULTS_NAME.findall(code):
                if "/" not in token:
                    found.append((document.relative_to(ROOT).as_posix(), number, token))
    return found


@cache
def command_options(module: str) -> frozenset[str]:
    """The long and short options of one of our DataLad commands."""
    interface = importlib.import_module(module)
    options: set[str] = set()
    for value in vars(interface).values():
        params = getattr(value, "_params_", None)
        if isinstance(params, dict) and getattr(value, "__module__", "") == module:
            for key, parameter in params.items():
                # without args, DataLad makes the option from the parameter's name
                given = parameter.cmd_args or ("--" + key.replace("_", "-"),)
                options.update(a for a in given if a.startswith("-"))
    options.update({"-h", "--help"})
    return frozenset(options)


@cache
def datalad_main_options() -> frozenset[str]:
    """The options `datalad` itself takes before a command (-f json, -c, -l ...)."""
    datalad = Path(sys.executable).with_name("datalad")
    out = subprocess.run([datalad, "--help"], capture_output=True, text=True, check=True).stdout
    return frozenset(re.findall(r"(?<![\w-])(--?[a-zA-Z][\w-]*)", out.split("commands:")[0]))


@cache
def script_text(path: str) -> str:
    """What a script of ours says: its own text and that of modules it hands its options to."""
    target = ROOT / path
    text = target.read_text(errors="replace")
    if target.name == "install" and target.parent.name == "epilog":
        text += "".join(p.read_text() for p in (ROOT / "epilog").glob("*.py"))
    return text


def used_options() -> list[tuple[str, int, str, str, str]]:
    """(document, line, program, option, how to check) for commands in code blocks."""
    found = []
    for document in DOCUMENTS:
        name = document.relative_to(ROOT).as_posix()
        for number, code, block in code_of(document.read_text()):
            command = code.removeprefix("$ ").split("#", 1)[0].strip()
            if not block and not command.startswith(("datalad ", "epilog/", "contrib/")):
                continue
            try:
                words = shlex.split(command)
            except ValueError:
                words = command.split()
            for index, word in enumerate(words):
                if word == "datalad":
                    rest = words[index + 1 :]
                    main: list[str] = []
                    while rest and rest[0].startswith("-"):
                        main.append(rest.pop(0))
                        if main[-1] in ("-f", "-c", "-l", "-C") and rest:
                            rest.pop(0)
                    for option in main:
                        found.append((name, number, "datalad", option, "datalad"))
                    if rest and rest[0] in OUR_COMMANDS:
                        for option in _options(rest[1:], stop_at_positional=True):
                            found.append((name, number, rest[0], option, "command"))
                    break
                script = _clean(word).removeprefix("./")
                is_ours = script.startswith(TREE_FOLDERS) and (ROOT / script).is_file()
                if is_ours and ((ROOT / script).stat().st_mode & 0o111 or script.endswith(".py")):
                    for option in _options(words[index + 1 :], stop_at_positional=False):
                        found.append((name, number, script, option, "script"))
                    break
    return found


def _options(words: list[str], stop_at_positional: bool) -> Iterator[str]:
    """The long options among a command's words (up to its first positional argument, for
    our DataLad commands: what follows is the user's submission command)."""
    value_next = False
    for word in words:
        if word in ("|", "&&", ";", ">", "2>&1"):
            return
        if value_next:  # the value of a short option
            value_next = False
            continue
        match = OPTION.match(word)
        if match:
            yield match.group(0)
        elif re.fullmatch(r"-[a-zA-Z]", word):
            value_next = word not in ("-h",)
        elif stop_at_positional and not word.startswith("-"):
            # the value of the option before it, or the first positional argument
            return


def test_the_documents_are_read() -> None:
    """The check sees the documents' code at all (a check that reads nothing passes anything)."""
    assert len(named_paths()) > 50
    assert len(used_options()) > 15
    assert {program for _, _, program, _, _ in used_options()} >= {"finish", "schedule"}


@pytest.mark.parametrize(
    "document,line,path", named_paths(), ids=lambda v: str(v) if isinstance(v, int) else None
)
def test_named_path_exists(document: str, line: int, path: str) -> None:
    assert _exists(path), f"{document}:{line} names {path}, which this tree does not have"


@pytest.mark.parametrize("document,line,name", named_results())
def test_named_results_file_exists(document: str, line: int, name: str) -> None:
    assert (ROOT / "benchmarks" / "results" / name).exists() or any(
        ROOT.glob(f"benchmarks/**/{name}")
    ), f"{document}:{line} names the results file {name}, which benchmarks/results/ does not have"


@pytest.mark.parametrize("document,line,program,option,how", used_options())
def test_used_option_exists(document: str, line: int, program: str, option: str, how: str) -> None:
    if how == "datalad":
        known = datalad_main_options()
        assert option in known, f"{document}:{line}: datalad has no main option {option}"
    elif how == "command":
        known = command_options(OUR_COMMANDS[program])
        assert option in known, f"{document}:{line}: datalad {program} has no option {option}"
    else:
        assert re.search(rf"(?<![\w-]){re.escape(option)}(?![\w-])", script_text(program)), (
            f"{document}:{line}: {program} has no option {option}"
        )


def example_options() -> list[tuple[str, str, str]]:
    """(command, option, example) for the options in our commands' --help Examples."""
    found = []
    for program, module in OUR_COMMANDS.items():
        interface = importlib.import_module(module)
        examples = [
            example
            for value in vars(interface).values()
            if getattr(value, "__module__", "") == module
            for example in getattr(value, "_examples_", [])
        ]
        assert examples, f"datalad {program} --help has no Examples"
        for example in examples:
            words = shlex.split(example["code_cmd"].split("&&")[-1])
            assert words[:2] == ["datalad", program], example["code_cmd"]
            for option in _options(words[2:], stop_at_positional=True):
                found.append((program, option, example["code_cmd"]))
    return found


@pytest.mark.parametrize("program,option,example", example_options())
def test_help_example_options_exist(program: str, option: str, example: str) -> None:
    known = command_options(OUR_COMMANDS[program])
    assert option in known, f"datalad {program} --help example {example!r}: no option {option}"
