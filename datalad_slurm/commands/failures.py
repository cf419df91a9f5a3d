"""How a failure of ours reaches the user: one DataLad error result, never a traceback.

DataLad then does what it does with any error result: the command line prints it and
exits non-zero; the Python API raises ``IncompleteResultsError`` at the end, or with
``on_failure='ignore'`` hands the result over.
"""

from __future__ import annotations

from typing import Any

from datalad_slurm.errors import DataladSlurmError
from datalad_slurm.results import make_result


def error_result(
    action: str, dataset_path: Any, failure: DataladSlurmError | str
) -> dict[str, Any]:
    """The error result of a command about the dataset; ``error_path`` names the file or
    folder the failure is about, where it is known."""
    result = make_result(
        action,
        "error",
        str(dataset_path),
        type="dataset",
        message="; ".join(line.strip() for line in str(failure).splitlines() if line.strip()),
    )
    if isinstance(failure, DataladSlurmError) and failure.path:
        result["error_path"] = failure.path
    return result
