"""DataLad result records, built in one place.

Every result the commands yield is a dict that DataLad renders and filters: ``action``,
``status``, ``path`` and ``type`` always, ``message``, ``refds`` and keys of ours
(``slurm_job_id``, ``commit``, ...) where they say something.  :func:`make_result` is the one
place that builds them; the action names are here too, so that the layers below the
commands (a commit batch, a take-over of 0.2.8's registry) write the same words.
"""

from __future__ import annotations

from typing import Any

SCHEDULE = "schedule"
FINISH = "finish"
RESCHEDULE = "reschedule"
MIGRATE = "migrate"

STATUSES = ("ok", "notneeded", "impossible", "error")


def make_result(
    action: str,
    status: str,
    path: str,
    type: str = "dataset",
    **keys: Any,
) -> dict[str, Any]:
    """A result record with every key given, None values too (``data_parser: None`` says the
    backend read no JSON; a key left out would be a different record)."""
    if status not in STATUSES:
        raise ValueError(f"not a DataLad result status: {status!r}")
    record: dict[str, Any] = {"action": action, "status": status, "path": path, "type": type}
    record.update(keys)
    return record
