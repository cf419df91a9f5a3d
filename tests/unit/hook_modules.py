"""The hook's modules as the tests use them: the package ``epilog/datalad_slurm_hook``, found as
the installed worker finds it (its folder put on ``sys.path``), with the package's own spool."""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

EPILOG = Path(__file__).resolve().parents[2] / "epilog"
if str(EPILOG) not in sys.path:
    sys.path.insert(0, str(EPILOG))

ask = importlib.import_module("datalad_slurm_hook.ask")
entry = importlib.import_module("datalad_slurm_hook.entry")
facts = importlib.import_module("datalad_slurm_hook.facts")
queue = importlib.import_module("datalad_slurm_hook.queue")
scontrol = importlib.import_module("datalad_slurm_hook.scontrol")
settings = importlib.import_module("datalad_slurm_hook.settings")
worker = importlib.import_module("datalad_slurm_hook.worker")
