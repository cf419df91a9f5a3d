"""What an sbatch call asks for, read as sbatch reads it: its options, its script's ``#SBATCH``
lines and its environment.

Only the options datalad-slurm needs are kept: ``--hold`` (a job the user wants held stays
held after ``schedule``), the log names (``-o``/``-e``), ``--array``, ``--job-name``,
``--chdir`` and ``--wrap``.  Slurm itself says where a submitted job writes its logs; this
reading is for what happens before anything is submitted (``schedule --dry-run``) and for the
user's own ``--hold``.

sbatch parses with ``getopt_long`` and stops at the first argument that is not an option (the
script; what follows are the script's arguments).  Command line options win over ``SBATCH_*``
variables, which win over ``#SBATCH`` lines.  The ``#SBATCH`` lines are read from the top of
the script up to its first line that is neither blank nor a comment.
"""

from __future__ import annotations

import os
import shlex
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field

#: short options that take an argument (``-o FILE`` or ``-oFILE``); ``-k`` takes one only attached
_SHORT_WITH_ARGUMENT = frozenset("AaBbCcDdeFGiJLMmNnopqStwx")
_SHORT_OPTIONAL_ARGUMENT = frozenset("k")
#: the long options (of Slurm 22.05 to 26.05) that take no argument, or one only after ``=``;
#: every other long option takes one (``--output FILE`` or ``--output=FILE``)
_LONG_WITHOUT_ARGUMENT = frozenset(
    {
        "consolidate-segments",
        "contiguous",
        "exclusive",
        "get-user-env",
        "help",
        "hold",
        "ignore-pbs",
        "nice",
        "no-kill",
        "no-requeue",
        "oom-kill-step",
        "overcommit",
        "oversubscribe",
        "parsable",
        "propagate",
        "quiet",
        "reboot",
        "requeue",
        "resv-ports",
        "spread-job",
        "spread-segments",
        "stepmgr",
        "test-only",
        "usage",
        "use-min-nodes",
        "verbose",
        "version",
        "wait",
    }
)
_LONG_WITH_ARGUMENT = frozenset(
    {
        "account",
        "acctg-freq",
        "array",
        "batch",
        "bb",
        "bbf",
        "begin",
        "chdir",
        "cluster-constraint",
        "clusters",
        "comment",
        "constraint",
        "container",
        "container-id",
        "container-type",
        "core-spec",
        "cores-per-socket",
        "cpu-freq",
        "cpus-per-gpu",
        "cpus-per-task",
        "deadline",
        "delay-boot",
        "dependency",
        "distribution",
        "error",
        "exclude",
        "export",
        "export-file",
        "extra",
        "extra-node-info",
        "gid",
        "gpu-bind",
        "gpu-freq",
        "gpus",
        "gpus-per-node",
        "gpus-per-socket",
        "gpus-per-task",
        "gres",
        "gres-flags",
        "hint",
        "input",
        "job-name",
        "kill-on-invalid-dep",
        "licenses",
        "mail-type",
        "mail-user",
        "mcs-label",
        "mem",
        "mem-bind",
        "mem-per-cpu",
        "mem-per-gpu",
        "mem-update",
        "mincpus",
        "network",
        "nodefile",
        "nodelist",
        "nodes",
        "ntasks",
        "ntasks-per-core",
        "ntasks-per-gpu",
        "ntasks-per-node",
        "ntasks-per-socket",
        "open-mode",
        "output",
        "partition",
        "power",
        "prefer",
        "priority",
        "profile",
        "qos",
        "reservation",
        "resources",
        "segment",
        "signal",
        "sockets-per-node",
        "switches",
        "thread-spec",
        "threads-per-core",
        "time",
        "time-min",
        "tmp",
        "tres-bind",
        "tres-per-task",
        "uid",
        "wait-all-nodes",
        "wckey",
        "wrap",
    }
)
_LONG = _LONG_WITHOUT_ARGUMENT | _LONG_WITH_ARGUMENT
#: short option -> the long name it stands for (only those we keep)
_SHORT_NAMES = {"H": "hold", "o": "output", "e": "error", "a": "array", "J": "job-name"}
_SHORT_NAMES.update({"D": "chdir", "W": "wait"})
#: the options kept, and the SBATCH_* variables that set them
_KEPT = ("hold", "output", "error", "array", "job-name", "chdir", "wrap", "wait")
_ENVIRONMENT = {
    "SBATCH_OUTPUT": "output",
    "SBATCH_ERROR": "error",
    "SBATCH_ARRAY_INX": "array",
    "SBATCH_JOB_NAME": "job-name",
}
#: directives that hold a job in the other batch systems' syntax sbatch also reads
_FOREIGN_HOLD = (("#PBS", "-h"), ("#BSUB", "-H"))
_MAGIC = "#SBATCH"


@dataclass
class SbatchCall:
    """What one sbatch call asks for (None: not asked for)."""

    #: the script's path as given (None: ``--wrap``, or the script comes from standard input)
    script: str | None = None
    #: the directory sbatch ran in
    cwd: str = "."
    options: dict[str, str] = field(default_factory=dict)

    @property
    def hold(self) -> bool:
        return "hold" in self.options

    @property
    def array(self) -> str | None:
        return self.options.get("array")

    @property
    def work_dir(self) -> str:
        """Where the job runs, and where relative log names lead."""
        return os.path.normpath(os.path.join(self.cwd, self.options.get("chdir", ".")))

    @property
    def job_name(self) -> str:
        """The name Slurm gives the job: ``--job-name``, else the script's file name."""
        if "job-name" in self.options:
            return self.options["job-name"]
        if "wrap" in self.options:
            return "wrap"
        return os.path.basename(self.script) if self.script else "sbatch"

    def log_patterns(self) -> tuple[str, str]:
        """``(stdout, stderr)`` as sbatch would send them: Slurm's default name where none
        was given (stderr goes where stdout goes)."""
        default = "slurm-%A_%a.out" if self.array else "slurm-%j.out"
        stdout = self.options.get("output") or default
        return stdout, self.options.get("error") or stdout


def parse_options(arguments: Sequence[str]) -> tuple[dict[str, str], list[str]]:
    """The options kept of an sbatch argument list, and the arguments after them (the script
    and its arguments).  Later options win, as in sbatch."""
    options: dict[str, str] = {}
    position = 0
    while position < len(arguments):
        argument = arguments[position]
        position += 1
        if argument == "--":
            break
        if argument.startswith("--"):
            name, equals, value = argument[2:].partition("=")
            name = _long_name(name)
            if name in _LONG_WITH_ARGUMENT and not equals and position < len(arguments):
                value = arguments[position]
                position += 1
            if name in _KEPT:
                options[name] = value
        elif argument.startswith("-") and argument != "-":
            position = _short_options(argument, arguments, position, options)
        else:
            position -= 1
            break
    return options, list(arguments[position:])


def _long_name(given: str) -> str:
    """getopt_long also takes an unambiguous beginning of a long option's name."""
    if given in _LONG:
        return given
    matches = [name for name in _LONG if name.startswith(given)]
    return matches[0] if len(matches) == 1 else given


def _short_options(
    argument: str, arguments: Sequence[str], position: int, options: dict[str, str]
) -> int:
    """One ``-abc`` cluster; returns the position after it (and after its argument)."""
    letters = argument[1:]
    for index, letter in enumerate(letters):
        rest = letters[index + 1 :]
        if letter in _SHORT_WITH_ARGUMENT:
            value = rest
            if not rest and position < len(arguments):
                value = arguments[position]
                position += 1
            if letter in _SHORT_NAMES:
                options[_SHORT_NAMES[letter]] = value
            return position
        if letter in _SHORT_OPTIONAL_ARGUMENT:
            return position
        if letter in _SHORT_NAMES:
            options[_SHORT_NAMES[letter]] = ""
    return position


def script_directives(text: str) -> tuple[list[str], bool]:
    """The arguments of a script's ``#SBATCH`` lines, and whether a ``#PBS -h`` or
    ``#BSUB -H`` line holds the job."""
    arguments: list[str] = []
    foreign_hold = False
    for line in text.splitlines():
        stripped = line.strip()
        if stripped and not stripped.startswith("#"):
            break  # the first command ends the directives
        if line.startswith(_MAGIC):
            arguments += _split(line[len(_MAGIC) :])
            continue
        for magic, hold in _FOREIGN_HOLD:
            if line.startswith(magic) and hold in _split(line[len(magic) :]):
                foreign_hold = True
    return arguments, foreign_hold


def _split(text: str) -> list[str]:
    """A directive's words; a ``#`` starts a comment, quotes group words."""
    try:
        return shlex.split(text, comments=True)
    except ValueError:  # an unbalanced quote: words as they stand
        return text.split("#", 1)[0].split()


def read_call(
    arguments: Sequence[str], cwd: str, environment: Mapping[str, str] | None = None
) -> SbatchCall:
    """An sbatch call (its arguments without ``sbatch`` itself, run in ``cwd``) with its
    script's directives and ``SBATCH_*`` variables merged as sbatch merges them."""
    environment = os.environ if environment is None else environment
    given, rest = parse_options(arguments)
    script = None if "wrap" in given or not rest or rest[0] == "-" else rest[0]
    options: dict[str, str] = {}
    if script is not None:
        text = _script_head(os.path.join(cwd, script))
        directives, foreign_hold = script_directives(text)
        options.update(parse_options(directives)[0])
        if foreign_hold:
            options["hold"] = ""
    for variable, name in _ENVIRONMENT.items():
        if environment.get(variable):
            options[name] = environment[variable]
    options.update(given)
    return SbatchCall(script=script, cwd=cwd, options=options)


def _script_head(path: str, limit: int = 1 << 20) -> str:
    """The beginning of a script (its directives are at the top); '' if it cannot be read."""
    try:
        with open(path, "rb") as stream:
            return stream.read(limit).decode("utf-8", "replace")
    except OSError:
        return ""


def sbatch_calls(command: str) -> Iterator[list[str]]:
    """The arguments of each plain ``sbatch ...`` in a submit command's shell text
    (``sbatch`` as a command word: at the start, or after ``;``, ``&&``, ``||``, ``|``)."""
    try:
        lexer = shlex.shlex(command, posix=True, punctuation_chars=True)
        lexer.whitespace_split = True
        words = list(lexer)
    except ValueError:
        return
    call: list[str] | None = None
    at_command = True
    for word in words:
        if word in (";", "&&", "||", "|", "&", "(", ")"):
            if call is not None:
                yield call
            call, at_command = None, True
            continue
        if call is not None:
            call.append(word)
        elif at_command and os.path.basename(word) == "sbatch":
            call = []
        elif at_command and "=" in word and not word.startswith("="):
            continue  # a variable assignment before the command
        else:
            at_command = False
    if call is not None:
        yield call
