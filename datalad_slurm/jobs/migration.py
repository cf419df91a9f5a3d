"""Taking over the open jobs of datalad-slurm 0.2.8 (and 0.2.5-0.2.7) from its registry.

Reading that registry's file is ``jobs/oldregistry.py``.  Each of its jobs becomes an open
job of our registry with its outputs reserved, keyed by where it came from, so a job is never
taken twice.  Once every job of the file is ours, the file is renamed (``<name>.imported``),
never changed or deleted: 0.2.8's ``slurm-finish`` cannot commit the jobs a second time,
later runs do not read it again, and renaming it back gives 0.2.8 its jobs again.  This
module owns that: the take-over (:func:`take_over`), the rename, the results, and what
``--list-open-jobs`` shows of jobs not yet taken (:func:`waiting`).
"""

from __future__ import annotations

import os
from collections.abc import Generator, Iterator
from typing import Any

from datalad_slurm.jobs.oldregistry import (
    MigrationError,
    OldJob,
    adopted,
    old_registries,
    read_old_registry,
)
from datalad_slurm.jobs.registry import Registry
from datalad_slurm.jobs.reservations import OutputConflictError
from datalad_slurm.results import MIGRATE, make_result
from datalad_slurm.settings import spool_config
from datalad_slurm.slurm.conf import cluster_name
from datalad_slurm.spool import SpoolError, UserSpool

ACTION = MIGRATE


#: what a taken-over registry file is renamed to: ``<name>`` + this (then ``.2``, ``.3``...)
IMPORTED_SUFFIX = ".imported"


#: the key of ``Job.submission_facts`` that holds the log files 0.2.8 found at submission
IMPORTED_LOGS = "imported_logs"


def _result(dataset_path: str, status: str, message: str, **extra: Any) -> dict[str, Any]:
    return make_result(ACTION, status, dataset_path, type="dataset", message=message, **extra)


def _unreadable(dataset_path: str, path: str, exc: MigrationError) -> dict[str, Any]:
    return _result(
        dataset_path,
        "impossible",
        f"datalad-slurm 0.2.8's job registry {_shown(dataset_path, path)} cannot be read "
        f"({exc}); its jobs were not taken over. Finish them with datalad-slurm 0.2.8, or move "
        "the file away",
        old_registry=path,
    )


def _shown(dataset_path: str, path: str) -> str:
    return os.path.relpath(path, dataset_path)


def take_over(ds: Any, registry: Registry) -> Iterator[dict[str, Any]]:
    """Register the open jobs of every 0.2.8 registry file of the dataset, outputs reserved,
    and rename each file once all its jobs are ours.  One result per job taken (or not
    taken, with what to do) and per file renamed; nothing when there is no such file."""
    dataset_path = str(ds.path)
    files = old_registries(ds)
    if not files:
        return
    cluster = cluster_name()
    spool = _spool(ds)
    for path in files:
        yield from _take_file(dataset_path, registry, path, cluster, spool)


def _take_file(
    dataset_path: str,
    registry: Registry,
    path: str,
    cluster: str | None,
    spool: UserSpool | None,
) -> Iterator[dict[str, Any]]:
    name = os.path.basename(path)
    shown = _shown(dataset_path, path)
    try:
        old_jobs = read_old_registry(path)
    except MigrationError as exc:
        yield _unreadable(dataset_path, path, exc)
        return
    left = yield from _take_jobs(dataset_path, registry, name, shown, old_jobs, cluster, spool)
    if left:
        return  # the file is read again next time: nothing of 0.2.8's is hidden from anybody
    renamed = _rename_aside(path)
    if renamed is None:
        return  # another process renamed it at the same moment
    # rows 0.2.8 wrote while we read are in the renamed file: take them too
    try:
        late = read_old_registry(renamed)
    except MigrationError:
        late = []
    yield from _take_jobs(dataset_path, registry, name, shown, late, cluster, spool)
    yield _result(
        dataset_path,
        "ok",
        f"datalad-slurm 0.2.8's job registry {shown} was taken over ({len(old_jobs)} open "
        f"job{'s' if len(old_jobs) != 1 else ''}) and renamed {_shown(dataset_path, renamed)}, "
        "unchanged; renaming it back gives 0.2.8 its jobs again",
        old_registry=path,
        renamed_to=renamed,
    )


def _take_jobs(
    dataset_path: str,
    registry: Registry,
    name: str,
    shown: str,
    old_jobs: list[OldJob],
    cluster: str | None,
    spool: UserSpool | None,
) -> Generator[dict[str, Any], None, int]:
    """Take each job; returns how many could not be taken (they stay 0.2.8's)."""
    left = 0
    for old in old_jobs:
        try:
            new = adopted(dataset_path, old)
            job = registry.adopt(
                note=old.note(name),
                job_id=old.job_id,
                cluster=cluster,
                cmd=old.cmd,
                pwd=new.pwd,
                inputs=new.inputs,
                extra_inputs=new.extra_inputs,
                outputs=new.outputs,
                chain=old.chain,
                message=old.message,
                dsid=old.dsid,
                submission_facts={IMPORTED_LOGS: new.logs} if new.logs else {},
                alt_dir=new.alt_dir,
            )
        except (MigrationError, OutputConflictError) as exc:
            left += 1
            yield _result(
                dataset_path,
                "impossible",
                f"job {old.job_id} of datalad-slurm 0.2.8 ({shown}) was not taken over: {exc}",
                slurm_job_id=old.job_id,
                old_registry=os.path.join(dataset_path, shown),
            )
            continue
        if job is None:
            continue  # taken before (a run that stopped before renaming the file)
        if spool is not None and job.job_id is not None:
            try:  # the hook then reports the job's end too, as for jobs we submitted
                spool.register(job.cluster, job.job_id)
            except (OSError, SpoolError):
                pass  # finish asks Slurm instead
        yield _result(
            dataset_path,
            "ok",
            f"took over job {old.job_id} from datalad-slurm 0.2.8 ({shown}): outputs "
            f"{', '.join(new.outputs)} reserved; 'datalad finish' commits it once it completed"
            + (
                f" (its outputs brought back from its --alt-dir {new.alt_dir})"
                if new.alt_dir
                else ""
            ),
            slurm_job_id=old.job_id,
            cluster=cluster,
            outputs=new.outputs,
            old_registry=os.path.join(dataset_path, shown),
        )
    return left


def _rename_aside(path: str) -> str | None:
    """Rename ``path`` to a free ``<path>.imported[.N]``, never over another file; None if
    ``path`` is gone (renamed by a concurrent run)."""
    number = 1
    while True:
        target = path + IMPORTED_SUFFIX + (f".{number}" if number > 1 else "")
        try:
            os.link(path, target)  # fails if target exists: nothing is overwritten
        except FileExistsError:
            number += 1
            continue
        except FileNotFoundError:
            return None
        except OSError:
            # a file system without hard links: a rename that checked first
            if os.path.lexists(target):
                number += 1
                continue
            try:
                os.rename(path, target)
            except FileNotFoundError:
                return None
            return target
        try:
            os.unlink(path)
        except FileNotFoundError:
            os.unlink(target)  # a concurrent run renamed it first and keeps its own name
            return None
        return target


def waiting(ds: Any) -> Iterator[dict[str, Any]]:
    """For a look that changes nothing (``--list-open-jobs``): the jobs 0.2.8's registry
    holds that are not taken over yet, one result per file."""
    dataset_path = str(ds.path)
    for path in old_registries(ds):
        shown = _shown(dataset_path, path)
        try:
            old_jobs = read_old_registry(path)
        except MigrationError as exc:
            yield _unreadable(dataset_path, path, exc)
            continue
        if old_jobs:
            ids = ", ".join(str(old.job_id) for old in old_jobs)
            yield _result(
                dataset_path,
                "ok",
                f"datalad-slurm 0.2.8's job registry {shown} holds open job(s) {ids}, not listed "
                "here: 'datalad finish' (or 'datalad schedule') takes them over",
                old_registry=path,
                old_job_ids=[old.job_id for old in old_jobs],
            )


def _spool(ds: Any) -> UserSpool | None:
    try:
        config = spool_config(ds)
    except (OSError, SpoolError):
        return None
    return UserSpool(config.spool) if config else None
