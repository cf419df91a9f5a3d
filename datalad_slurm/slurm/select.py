"""Choosing the backend that answers job-state questions.

``datalad.slurm.backend`` (git config, passed in by the commands) or
``DATALAD_SLURM_BACKEND`` forces one: ``pyslurm`` or ``jsoncli``.  ``auto``
(the default) asks pyslurm when it imports, has the API used here (pyslurm
22.5.2/23.2.1 or newer, see :class:`~datalad_slurm.slurm.pyslurmload.PyslurmApi`)
and slurmctld answers it, and the JSON CLI (``squeue``/``sacct --json``)
otherwise, keeping why in ``pyslurm_problem``.  Forced, pyslurm's problem is
the error.  Results name the backend that answered.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

from datalad_slurm.slurm.backend import Backend, BackendError, UsageAnswer
from datalad_slurm.slurm.jsoncli import JsonCliBackend
from datalad_slurm.slurm.pyslurmapi import PyslurmBackend
from datalad_slurm.slurm.state import JobStatus

BACKENDS = ("auto", "pyslurm", "jsoncli")


class AutoBackend:
    """pyslurm when it works here, else the JSON CLI; decided at the first query."""

    def __init__(self, *, states_only: bool = False) -> None:
        #: "auto" until the first query; then the name of the backend that answers
        self.name = "auto"
        #: passed on to the JSON CLI (see :class:`JsonCliBackend`)
        self.states_only = states_only
        self.chosen: Backend | None = None
        #: why pyslurm was not used (for diagnostics), if it was not
        self.pyslurm_problem: str | None = None

    @property
    def accounting(self) -> bool | None:
        """Whether the chosen backend found accounting (None: not asked yet)."""
        answer = getattr(self.chosen, "accounting", None)
        return answer if isinstance(answer, bool) else None

    def prefetch(self) -> None:
        """Where pyslurm cannot even be imported, settle on the JSON CLI now and start it."""
        if self.chosen is None:
            try:
                PyslurmBackend.check()
            except BackendError as exc:
                self._fall_back(str(exc))
        if self.chosen is not None:
            self.chosen.prefetch()

    def query(self, job_ids: Sequence[int]) -> dict[int, JobStatus]:
        if self.chosen is not None:
            return self.chosen.query(job_ids)
        candidate = PyslurmBackend()
        try:
            answer = candidate.query(job_ids)
        except BackendError as exc:
            return self._fall_back(str(exc)).query(job_ids)
        self.chosen, self.name = candidate, candidate.name
        return answer

    def usage(self, job_ids: Sequence[int]) -> UsageAnswer:
        """Through the backend that answered; without a query yet (events settled every
        job), through pyslurm where it imports and finds a config, else the JSON CLI."""
        if self.chosen is None:
            try:
                PyslurmBackend.check()
            except BackendError as exc:
                self._fall_back(str(exc))
            else:
                candidate = PyslurmBackend()
                self.chosen, self.name = candidate, candidate.name
        assert self.chosen is not None
        return self.chosen.usage(job_ids)

    def _fall_back(self, problem: str) -> Backend:
        self.pyslurm_problem = problem
        fallback = JsonCliBackend(states_only=self.states_only)
        self.chosen, self.name = fallback, fallback.name
        return fallback


def choose_backend(setting: str | None = None, *, states_only: bool = False) -> Backend:
    """The backend named by ``setting`` or the environment.  ``states_only``: the caller needs
    only the state of each task (``finish --list-open-jobs``), which the JSON CLI asks cheaply."""
    name = (setting or os.environ.get("DATALAD_SLURM_BACKEND") or "auto").strip().lower()
    if name == "pyslurm":
        return PyslurmBackend()
    if name == "jsoncli":
        return JsonCliBackend(states_only=states_only)
    if name == "auto":
        return AutoBackend(states_only=states_only)
    raise BackendError(
        f"unknown Slurm backend {name!r} (datalad.slurm.backend or DATALAD_SLURM_BACKEND); "
        "choose one of " + ", ".join(BACKENDS)
    )
