"""The build adds the Slurm hook, its installer and the slurm.conf template to the package.

They live in epilog/ and contrib/slurm.conf.d/ (a clone runs them from there); the wheel
carries them under datalad_slurm/_hook/ in the same layout, for `datalad-slurm-hook install`
(datalad_slurm/hookcli.py). Everything else is in setup.cfg.
"""

from __future__ import annotations

import glob
import os

from setuptools import setup
from setuptools.command.build_py import build_py

#: the files of a clone that installing the hook needs (the spool module is the package's own):
#: the worker's modules are every .py file of epilog/datalad_slurm_hook/ (MANIFEST.in puts them
#: into the sdist)
HOOK_FILES = (
    "epilog/install",
    "epilog/datalad-slurm-epilog.sh",
    "epilog/datalad_slurm_epilog.py",
    *sorted(glob.glob("epilog/datalad_slurm_hook/*.py")),
    "epilog/datalad_slurm_hook/install.conf",
    "contrib/slurm.conf.d/datalad-slurm.conf",
)


class BuildWithHook(build_py):
    def run(self) -> None:
        super().run()
        if getattr(self, "editable_mode", False):
            return  # an editable install runs the clone's own files
        for name in HOOK_FILES:
            target = os.path.join(self.build_lib, "datalad_slurm", "_hook", name)
            self.mkpath(os.path.dirname(target))
            self.copy_file(name, target, preserve_mode=True)


setup(cmdclass={"build_py": BuildWithHook})
