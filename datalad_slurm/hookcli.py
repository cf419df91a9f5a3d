"""``datalad-slurm-hook``: install and check the Slurm hook from an installed package.

The installer is ``epilog/install`` itself, one implementation for a clone and
for a package: a wheel carries it, the hook's files and the slurm.conf
snippet under ``datalad_slurm/_hook/`` in the layout of a clone (``setup.py``
puts them there), and this command runs it with the package's own spool
module.  From a clone (or an editable install) it runs the clone's.
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

PROG = "datalad-slurm-hook"
#: the default of epilog/install's --prefix
DEFAULT_PREFIX = "/usr/local/libexec/datalad-slurm"
USAGE = f"""\
usage: {PROG} install [OPTIONS]
           install the hook (as root, on the controller); the options are epilog/install's:
           {PROG} install --help lists them
       {PROG} check [--prefix DIR]
           the installed hook's self-check: its modules, its config, its spool, how it asks
           slurmctld and whether slurmctld answers (DIR: the prefix it was installed to, default
           {DEFAULT_PREFIX}); warns where the installed files are not this package's
       {PROG} files
           the folder that holds the hook's files and installer (epilog/) and the slurm.conf
           template (contrib/slurm.conf.d/)
"""


class HookFilesMissing(RuntimeError):
    """Neither a package's nor a clone's copy of the hook files is here."""


def hook_files() -> Path:
    """The folder that holds ``epilog/install``, the hook and ``contrib/slurm.conf.d/``."""
    package = Path(__file__).resolve().parent
    for root in (package / "_hook", package.parent):
        if (root / "epilog" / "install").is_file():
            return root
    raise HookFilesMissing(
        f"the hook's files are neither in {package / '_hook'} (an installed wheel) nor in "
        f"{package.parent / 'epilog'} (a clone): reinstall datalad-slurm from a wheel or sdist"
    )


def spool_module() -> Path:
    """This package's spool module, which the hook gets as its ``datalad_slurm_spool.py``."""
    return Path(__file__).resolve().parent / "spool.py"


def installed_differences(prefix: Path) -> list[str]:
    """The files of the hook in ``prefix`` that are not this package's: missing, or another
    version (the worker but for its interpreter line, which the installer writes)."""
    epilog = hook_files() / "epilog"
    package = epilog / "datalad_slurm_hook"
    differ: list[str] = []
    pairs = [(spool_module(), prefix / "datalad_slurm_spool.py")]
    if (prefix / package.name).is_dir():
        pairs += [(module, prefix / package.name / module.name) for module in package.glob("*.py")]
    else:  # a single-file hook (before the worker's modules), or an incomplete install
        differ.append(f"{package.name}/")
    for ours, installed in sorted(pairs):
        try:
            same = installed.read_bytes() == ours.read_bytes()
        except OSError:
            same = False
        if not same:
            differ.append(installed.relative_to(prefix).as_posix())
    worker = "datalad_slurm_epilog.py"
    try:
        same = (prefix / worker).read_bytes().split(b"\n", 1)[1:] == (
            (epilog / worker).read_bytes().split(b"\n", 1)[1:]
        )
    except OSError:
        same = False
    return sorted(differ if same else [worker, *differ])


def install(args: list[str]) -> int:
    bash = shutil.which("bash") or "/bin/bash"
    script = hook_files() / "epilog" / "install"
    env = {
        **os.environ,
        "DATALAD_SLURM_HOOK_INSTALLER": f"{PROG} install",
        "DATALAD_SLURM_HOOK_SPOOL_MODULE": str(spool_module()),
    }
    os.execve(bash, [bash, str(script), *args], env)
    return 1  # not reached: execve replaced this process


def check(args: list[str]) -> int:
    prefix = DEFAULT_PREFIX
    rest = list(args)
    while rest:
        arg = rest.pop(0)
        if arg == "--prefix" and rest:
            prefix = rest.pop(0)
        elif arg.startswith("--prefix="):
            prefix = arg.split("=", 1)[1]
        elif arg in ("-h", "--help"):
            print(USAGE, end="")
            return 0
        else:
            print(f"{PROG} check: unknown argument {arg!r}\n{USAGE}", end="", file=sys.stderr)
            return 2
    worker = Path(prefix, "datalad_slurm_epilog.py")
    if not os.access(worker, os.X_OK):
        print(
            f"{PROG} check: no installed hook at {worker}; install it with '{PROG} install "
            f"--prefix {prefix}' (or give the --prefix it was installed with)",
            file=sys.stderr,
        )
        return 1
    differ = installed_differences(Path(prefix))
    if differ:
        print(
            f"{PROG} check: WARNING: the hook in {prefix} is not this package's "
            f"({', '.join(differ)} differ): run '{PROG} install --prefix {prefix}' again, "
            "with the options of the first install",
            file=sys.stderr,
        )
    # as Slurm runs the hook: without the caller's environment
    os.execve(str(worker), [str(worker), "--check"], {})
    return 1  # not reached


def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in ("-h", "--help"):
        print(USAGE, end="")
        return 0 if args else 2
    command, rest = args[0], args[1:]
    try:
        if command == "install":
            return install(rest)
        if command == "check":
            return check(rest)
        if command == "files":
            print(hook_files())
            return 0
    except HookFilesMissing as exc:
        print(f"{PROG}: {exc}", file=sys.stderr)
        return 1
    print(f"{PROG}: unknown command {command!r}\n{USAGE}", end="", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
