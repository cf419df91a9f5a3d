"""A registered job's life cycle: its states and the steps between them.

It owns :class:`Phase` (the ``state`` column of the registry's ``jobs`` table), the
legal steps (:data:`STEPS`) and :class:`TransitionError`.  Only the registry
(``jobs/registry.py``) changes a job's state, and it checks every step here first.
Not Slurm's state of a job: that is ``slurm/state.py``'s ``JobState``.
"""

from __future__ import annotations

from collections.abc import Mapping
from enum import StrEnum

from datalad_slurm.errors import DataladSlurmError


class Phase(StrEnum):
    """Where a registered job is in its life cycle; the values are what the registry stores."""

    #: its outputs are reserved, its submission runs (sbatch, or the held job's log files)
    SUBMITTING = "submitting"
    #: Slurm has it; finish commits it once it completed
    OPEN = "open"
    #: finish is writing its commit (a crash here is settled by ``commit/batch.recover``)
    COMMITTING = "committing"
    #: committed (``commit_sha``); its reservations are released
    FINISHED = "finished"
    #: dropped without a commit (failed, never to start, interrupted); reservations released
    CLOSED = "closed"


#: the states in which a job holds its output reservations
HOLDING_STATES = (Phase.SUBMITTING, Phase.OPEN, Phase.COMMITTING)

#: the steps a job may take, from each state
STEPS: Mapping[Phase, frozenset[Phase]] = {
    # SUBMITTING -> COMMITTING: a job held by a schedule that died, released by hand and
    # completed, is committed as any other
    Phase.SUBMITTING: frozenset({Phase.OPEN, Phase.COMMITTING, Phase.CLOSED}),
    Phase.OPEN: frozenset({Phase.COMMITTING, Phase.CLOSED}),
    # COMMITTING -> OPEN: the attempt left no commit behind
    Phase.COMMITTING: frozenset({Phase.OPEN, Phase.FINISHED}),
    Phase.FINISHED: frozenset(),
    Phase.CLOSED: frozenset(),
}


class TransitionError(DataladSlurmError, RuntimeError):
    """A job was asked to take a step its state does not allow (a bug, or a row another
    process changed meanwhile)."""


def check_step(row_id: int, current: str | None, to: Phase, start: Phase | None = None) -> None:
    """Raise :class:`TransitionError` unless a job in ``current`` may become ``to`` (``current``
    None: the row is gone); ``start``: the one state this step leaves (opening a submission
    leaves ``submitting``, a reopening ``committing``)."""
    if current is None:
        raise TransitionError(
            f"registry entry {row_id} cannot become {to}: it is not in the registry",
            advice="report this as a bug of datalad-slurm; run 'datalad finish' again meanwhile",
        )
    if to not in STEPS[Phase(current)] or start not in (None, current):
        raise TransitionError(
            f"registry entry {row_id} cannot go from {current} to {to}",
            advice="report this as a bug of datalad-slurm; run 'datalad finish' again meanwhile",
        )
