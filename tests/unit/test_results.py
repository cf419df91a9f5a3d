"""The one builder of result records (``results.make_result``)."""

from __future__ import annotations

import pytest

from datalad_slurm.results import FINISH, make_result


def test_every_key_given_is_in_the_record_none_too() -> None:
    """A key whose value is None stays (``data_parser: None``: the pyslurm backend read no
    JSON); a record without it would be another record (seen in the pyslurm tier)."""
    record = make_result(FINISH, "ok", "/ds", message="m", data_parser=None, slurm_job_id=3)
    assert record == {
        "action": "finish",
        "status": "ok",
        "path": "/ds",
        "type": "dataset",
        "message": "m",
        "data_parser": None,
        "slurm_job_id": 3,
    }


def test_a_status_datalad_does_not_know_is_refused() -> None:
    with pytest.raises(ValueError, match="not a DataLad result status"):
        make_result(FINISH, "fine", "/ds")
