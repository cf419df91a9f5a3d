"""The one exception base of datalad-slurm: a failure the user or the environment caused.

Every error class of the package derives from :class:`DataladSlurmError`, and the
commands (``commands/``) turn it into a DataLad error result, never a traceback.  It
carries the path the failure is about and what the user can do.  Stdlib only, and
imports nothing of the package: every layer may raise it.

``spool.SpoolError`` is the one exception: ``spool.py`` is installed alone beside the
Slurm hook and imports nothing of the package, so the DataLad side translates it
where it reads the spool (``settings.spool_config``).
"""

from __future__ import annotations

import errno


class DataladSlurmError(Exception):
    """A failure of ours, shown to the user as an error result.

    ``str()`` is the message followed by the advice; ``path`` is the file or
    folder the failure is about (None: the dataset as a whole).
    """

    def __init__(self, message: str, *, path: str | None = None, advice: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.path = path
        self.advice = advice

    def __str__(self) -> str:
        return f"{self.message}; {self.advice}" if self.advice else self.message


def os_advice(exc: OSError, where: str) -> str:
    """What to do about an operating system's error on ``where`` (a file or folder)."""
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return (
            f"free space on the disk that holds {where} (or raise your quota there), then run "
            "the command again"
        )
    if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return (
            f"{where} must be writable for you: fix its permissions, or run the command as "
            "its owner"
        )
    return f"check {where} and the disk that holds it, then run the command again"
