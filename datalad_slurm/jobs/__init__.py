"""Jobs and their life cycle.

The registry and our state folder, pipelines, log files, scratch folders, spool events.
Imports ``git/``, ``slurm/`` and the base modules; nothing above.
"""
