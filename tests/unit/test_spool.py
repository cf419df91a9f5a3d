"""The spool's layout, events and their validation, without Slurm."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from datalad_slurm.spool import (
    Event,
    EventError,
    SpoolError,
    UserSpool,
    is_registered,
    read_config,
    write_event,
)

UID = os.getuid()


def test_config(tmp_path: Path) -> None:
    path = tmp_path / "c.conf"
    path.write_text(
        "# comment\nspool = /s  # trailing\nhook_user=slurm\nquery_timeout = 2.5\n"
        "slurm_conf = /etc/x.conf\nfuture = kept\n"
    )
    config = read_config(str(path))
    assert (config.spool, config.hook_user, config.query_timeout, config.slurm_conf) == (
        "/s",
        "slurm",
        2.5,
        "/etc/x.conf",
    )
    path.write_text("spool relative\n")
    with pytest.raises(SpoolError, match="expected 'key = value'"):
        read_config(str(path))
    path.write_text("spool = relative/dir\n")
    with pytest.raises(SpoolError, match="absolute"):
        read_config(str(path))
    with pytest.raises(SpoolError, match="cannot read"):
        read_config(str(tmp_path / "missing"))


def test_layout_and_registration(spool: Path) -> None:
    user = UserSpool(str(spool))
    assert not is_registered(str(spool), UID, "c", 5)
    user.register("c", 5)
    assert is_registered(str(spool), UID, "c", 5)
    assert not is_registered(str(spool), UID, "other", 5)
    assert not is_registered(str(spool), UID, "c", 6)
    user.register(None, 7)  # cluster unknown at schedule time: any cluster matches
    assert is_registered(str(spool), UID, "c", 7)
    assert oct(os.stat(spool / str(UID) / "events").st_mode & 0o7777) == "0o1733"
    user.unregister("c", 5)
    assert not is_registered(str(spool), UID, "c", 5)


def test_inflight_submission_reports_every_job(spool: Path) -> None:
    user = UserSpool(str(spool))
    user.begin_submission("tok")
    assert is_registered(str(spool), UID, "c", 123)
    user.register("c", 9, "tok")  # registration ends the in-flight window
    assert not is_registered(str(spool), UID, "c", 123)
    user.begin_submission("tok2")
    user.end_submission("tok2")
    assert not is_registered(str(spool), UID, "c", 123)


def test_event_round_trip(spool: Path) -> None:
    user = UserSpool(str(spool))
    user.register("c", 10)
    event = Event(
        job_id=12,
        state="COMPLETED",
        cluster="c",
        array_job_id=10,
        array_task_id=2,
        exit_code=0,
        uid=UID,
        stdout="/x/10_2.out",
    )
    name = write_event(str(spool), UID, event, {UID})
    events, rejected = user.read_events({UID})
    assert rejected == []
    [back] = events
    assert back.name == name and back.owner_job_id == 10 and back.array_task_id == 2
    assert back.state == "COMPLETED" and back.stdout == "/x/10_2.out" and back.written_at > 0
    assert not [p for p in os.listdir(spool / str(UID) / "events") if p.startswith(".")]
    user.remove_events([name])
    assert user.read_events({UID}) == ([], [])


def test_hook_refuses_a_symlinked_events_folder(spool: Path, tmp_path: Path) -> None:
    user = UserSpool(str(spool))
    user.register("c", 1)
    target = tmp_path / "target"
    target.mkdir()
    events = spool / str(UID) / "events"
    events.rmdir()
    events.symlink_to(target)
    with pytest.raises(OSError):
        write_event(str(spool), UID, Event(job_id=1, state="COMPLETED"), {UID})
    assert list(target.iterdir()) == []
    with pytest.raises(OSError):
        user.read_events({UID})


def test_hook_refuses_a_folder_of_another_owner(spool: Path) -> None:
    UserSpool(str(spool)).register("c", 1)
    # a folder named for another uid, made by this one: the hook must not write there
    (spool / str(UID + 1) / "events").mkdir(parents=True)
    with pytest.raises(SpoolError, match="belongs to uid"):
        write_event(str(spool), UID + 1, Event(job_id=1, state="COMPLETED"), {UID})
    with pytest.raises(FileNotFoundError):
        write_event(str(spool), 4242, Event(job_id=1, state="COMPLETED"), {UID})


def test_hook_refuses_an_unsafe_spool(spool: Path) -> None:
    UserSpool(str(spool)).register("c", 1)
    spool.chmod(0o777)  # world-writable without the sticky bit
    with pytest.raises(SpoolError, match="sticky"):
        write_event(str(spool), UID, Event(job_id=1, state="COMPLETED"), {UID})


@pytest.mark.skipif(os.getuid() != 0, reason="needs root to give a file to another user")
def test_events_of_other_writers_are_rejected(spool: Path) -> None:
    user = UserSpool(str(spool))
    user.register("c", 1)
    folder = spool / str(UID) / "events"
    good = json.dumps({"version": 1, "job_id": 1, "state": "COMPLETED"})
    (folder / "forged.event").write_text(good)
    os.chown(folder / "forged.event", 65534, 65534)
    (folder / "link.event").symlink_to(folder / "forged.event")
    (folder / "bad.event").write_text("{not json")
    (folder / "old.event").write_text(json.dumps({"version": 99, "job_id": 1, "state": "X"}))
    (folder / "typed.event").write_text(json.dumps({"version": 1, "job_id": "1", "state": "X"}))
    (folder / "big.event").write_text(" " * 70000)
    os.mkfifo(folder / "fifo.event")
    events, rejected = user.read_events({UID})
    assert events == []
    reasons = {r.name: r.reason for r in rejected}
    assert "written by uid 65534" in reasons["forged.event"]
    assert reasons["link.event"] == "is a symlink"
    assert "not valid JSON" in reasons["bad.event"]
    assert "unknown event version 99" in reasons["old.event"]
    assert "job_id must be an integer" in reasons["typed.event"]
    assert "too large" in reasons["big.event"]
    assert "not a regular file" in reasons["fifo.event"]
    user.set_aside("forged.event")
    assert (folder / "forged.event.rejected").exists()


def test_event_from_json_checks_types() -> None:
    with pytest.raises(EventError, match="JSON object"):
        Event.from_json([1])
    with pytest.raises(EventError, match="required"):
        Event.from_json({"version": 1, "job_id": 1})
    with pytest.raises(EventError, match="exit_code"):
        Event.from_json({"version": 1, "job_id": 1, "state": "X", "exit_code": True})
