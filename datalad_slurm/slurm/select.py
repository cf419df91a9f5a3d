"""Choosing the backend that answers job-state questions.

``DATALAD_SLURM_BACKEND`` (or the git config ``datalad.slurm.backend``,
passed in by the commands) forces one; ``auto`` picks the best available.
"""

from __future__ import annotations

import os

from datalad_slurm.slurm.backend import Backend, BackendError
from datalad_slurm.slurm.jsoncli import JsonCliBackend

BACKENDS = ("auto", "jsoncli")


def choose_backend(setting: str | None = None) -> Backend:
    name = (setting or os.environ.get("DATALAD_SLURM_BACKEND") or "auto").strip().lower()
    if name not in BACKENDS:
        raise BackendError(
            f"unknown Slurm backend {name!r} (datalad.slurm.backend); choose one of "
            + ", ".join(BACKENDS)
        )
    return JsonCliBackend()
