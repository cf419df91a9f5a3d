"""Turning finished jobs into commits.

The record and its message, annexing, tree and commit writing, job branches.  Imports
``jobs/``, ``git/``, ``slurm/`` and the base modules; nothing above.
"""
