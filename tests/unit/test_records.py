from __future__ import annotations

import pytest

from datalad_slurm.commit.message import RecordError, RunRecord, format_message, parse_message

SEED_MESSAGE = """[DATALAD SLURM RUN] Slurm job 10524535: Completed

=== Do not change lines below ===
{
 "chain": [],
 "cmd": "sbatch submit_silver.slurm",
 "commit_id": null,
 "dsid": "61576cad-ea4f-4425-8f35-16b9955c9926",
 "extra_inputs": [],
 "inputs": [],
 "outputs": [
  "models/abrupt/silver",
  "models/abrupt/silver/05_02/slurm-10524535.out",
  "models/abrupt/silver/05_02/slurm-job-10524535.env.json"
 ],
 "pwd": ".",
 "slurm_job_id": 10524535,
 "slurm_outputs": [
  "models/abrupt/silver/05_02/slurm-10524535.out",
  "models/abrupt/silver/05_02/slurm-job-10524535.env.json"
 ]
}
^^^ Do not change lines above ^^^
"""


def test_reads_the_seed_record_of_0_2_8() -> None:
    record = parse_message(SEED_MESSAGE)
    assert record.slurm_job_id == 10524535
    assert record.cmd == "sbatch submit_silver.slurm"
    assert record.declared_outputs == ["models/abrupt/silver"]
    assert record.extra == {}


def test_round_trip_matches_the_seed_layout() -> None:
    record = parse_message(SEED_MESSAGE)
    assert format_message(record, "Completed") == SEED_MESSAGE


def test_extra_keys_and_user_message_round_trip() -> None:
    record = RunRecord(
        cmd="sbatch x",
        dsid="id",
        slurm_job_id=3,
        outputs=["o"],
        extra={"slurm_exit_code": 0, "slurm_task_states": {"3": "COMPLETED"}},
    )
    message = format_message(record, "Failed", "why I ran it")
    assert message.startswith("[DATALAD SLURM RUN] Slurm job 3: Failed\n\nwhy I ran it\n\n===")
    again = parse_message(message)
    assert again == record


@pytest.mark.parametrize(
    ("message", "match"),
    [
        ("[DATALAD RUNCMD] x", "not a Slurm run record"),
        ("[DATALAD SLURM RUN] Slurm job 3: Completed\n\nno block", "missing or cut"),
        (
            "[DATALAD SLURM RUN] Slurm job 3: Completed\n\n=== Do not change lines below ===\n{\n"
            "^^^ Do not change lines above ^^^",
            "not valid JSON",
        ),
        (
            "[DATALAD SLURM RUN] Slurm job 3: Completed\n\n=== Do not change lines below ===\n{}\n"
            "^^^ Do not change lines above ^^^",
            "lacks 'cmd'",
        ),
    ],
)
def test_bad_records_are_named(message: str, match: str) -> None:
    with pytest.raises(RecordError, match=match):
        parse_message(message)
