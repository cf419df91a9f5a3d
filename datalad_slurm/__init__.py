"""datalad-slurm: Slurm batch jobs as reproducible DataLad run records."""

from __future__ import annotations

__version__ = "0.3.0.dev0"

command_suite = (
    "Schedule Slurm jobs and record their results as DataLad run records",
    [
        ("datalad_slurm.commands.schedule", "Schedule", "schedule", "schedule"),
        ("datalad_slurm.commands.finish", "Finish", "finish", "finish"),
        ("datalad_slurm.commands.reschedule", "Reschedule", "reschedule", "reschedule"),
        # the names datalad-slurm 0.2.8 used, so old habits keep working
        ("datalad_slurm.commands.schedule", "Schedule", "slurm-schedule", "slurm_schedule"),
        ("datalad_slurm.commands.finish", "Finish", "slurm-finish", "slurm_finish"),
        ("datalad_slurm.commands.reschedule", "Reschedule", "slurm-reschedule", "slurm_reschedule"),
    ],
)
