"""A job's Slurm environment (``SLURM_*``), and the event written for it into the spool."""

from __future__ import annotations

import os
from collections.abc import Mapping

from . import spool
from .settings import Settings

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (the hook starts faster)
if TYPE_CHECKING:
    from typing import Any


def well_formed(env: Mapping[str, str]) -> bool:
    return env.get("SLURM_JOB_UID", "").isdigit() and env.get("SLURM_JOB_ID", "").isdigit()


def array_job(env: Mapping[str, str]) -> str | None:
    found = env.get("SLURM_ARRAY_JOB_ID", "")
    return found if found.isdigit() and found != "0" else None


def owner_job(env: Mapping[str, str]) -> str:
    """The id ``schedule`` registered: the array job's for an array task."""
    return array_job(env) or env["SLURM_JOB_ID"]


def is_registered(settings: Settings, env: Mapping[str, str]) -> bool:
    """Whether ``datalad schedule`` registered the (well-formed) job, or is submitting one."""
    return spool.is_registered(
        settings.spool,
        int(env["SLURM_JOB_UID"]),
        env.get("SLURM_CLUSTER_NAME") or None,
        owner_job(env),
    )


def write_job_event(settings: Settings, env: Mapping[str, str], facts: dict[str, Any]) -> None:
    """The event for the job whose Slurm environment is ``env``, written into the spool."""
    facts = dict(facts)
    uid = int(env["SLURM_JOB_UID"])
    event = spool.Event(job_id=int(env["SLURM_JOB_ID"]), state=facts.pop("state"), uid=uid, **facts)
    event.cluster = env.get("SLURM_CLUSTER_NAME") or None
    array = array_job(env)
    if array:
        event.array_job_id = int(array)
        task = env.get("SLURM_ARRAY_TASK_ID", "")
        event.array_task_id = int(task) if task.isdigit() else None
    event.user = env.get("SLURM_JOB_USER") or None
    spool.write_event(settings.spool, uid, event, spool_owners(settings.hook_user))


def spool_owners(hook_user: str) -> set[int]:
    """Who may own the spool: root, this process's account and the hook's."""
    owners = {0, os.getuid()}
    uid = uid_of(hook_user)
    if uid is not None:
        owners.add(uid)
    return owners


def uid_of(user: str) -> int | None:
    try:
        import pwd

        return pwd.getpwnam(user).pw_uid
    except (KeyError, ImportError):
        return None
