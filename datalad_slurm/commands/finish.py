"""``datalad finish``: commit completed Slurm jobs, report and close the others."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from datalad.distribution.dataset import EnsureDataset, datasetmethod, require_dataset
from datalad.interface.base import Interface, build_doc, eval_results
from datalad.support.constraints import EnsureFloat, EnsureInt, EnsureNone, EnsureStr
from datalad.support.param import Parameter

from datalad_slurm.commands.failures import error_result
from datalad_slurm.errors import DataladSlurmError
from datalad_slurm.results import FINISH, make_result
from datalad_slurm.slurm.backend import BackendError
from datalad_slurm.slurm.conf import cluster_name, conf_path
from datalad_slurm.slurm.jobid import JobIdError, parse_job_id
from datalad_slurm.slurm.select import choose_backend
from datalad_slurm.usecases.finish import finish
from datalad_slurm.usecases.finish_listing import list_open_jobs
from datalad_slurm.usecases.finish_request import FinishRequest


@build_doc
class Finish(Interface):
    """Commit the results of completed Slurm jobs as ``[DATALAD SLURM RUN]`` records.

    All open jobs of the dataset are looked up with one query to Slurm.  Each
    job whose every task ended COMPLETED gets one commit with its outputs, its
    Slurm log files and ``slurm-job-<id>.env.json``.  Jobs still pending or
    running are left for later; failed or cancelled jobs are reported and
    stay open until closed with ``--close-failed-jobs`` or committed anyway
    with ``--commit-failed-jobs``.  A job is committed only after the jobs
    whose outputs it read (``datalad schedule`` made it wait for them); one
    that waits for a job that failed will never start, is reported so, and is
    closed by ``--close-failed-jobs`` (cancelled in Slurm too with
    ``--cancel``).
    """

    _examples_ = [
        dict(
            text="Commit every completed job; jobs still pending or running stay open",
            code_cmd="datalad finish",
            code_py="finish()",
        ),
        dict(
            text="Show the open jobs and their Slurm states, committing nothing",
            code_cmd="datalad finish --list-open-jobs",
        ),
        dict(
            text="Commit one job, by its Slurm job id (an array job by its array id)",
            code_cmd="datalad finish 4242",
        ),
        dict(
            text="Close failed or cancelled jobs without committing them (their files "
            "stay untracked), or commit them with their state in the subject",
            code_cmd="datalad finish --close-failed-jobs",
        ),
        dict(
            text="Close the jobs that will never start because a job they wait for "
            "failed, cancelling them in Slurm",
            code_cmd="datalad finish --close-failed-jobs --cancel",
        ),
        dict(
            text="Commit each completed job onto a branch of its own "
            "(slurm-job-branch-<id>), or merge those commits at once with one octopus merge",
            code_cmd="datalad finish --branches",
        ),
        dict(
            text="From cron: print only problems, and a failed job only once",
            code_cmd="cd /path/to/dataset && datalad finish --cron",
        ),
    ]

    _params_ = dict(
        job_id=Parameter(
            args=("job_id",),
            nargs="?",
            metavar="JOBID",
            doc="""finish only this Slurm job: the number sbatch printed. Whole
            jobs only: for an array job give its id, not a task's (4, not
            4_9)""",
            constraints=EnsureStr() | EnsureInt() | EnsureNone(),
        ),
        dataset=Parameter(
            args=("-d", "--dataset"),
            doc="""the dataset whose jobs to finish; default: the current one""",
            constraints=EnsureDataset() | EnsureNone(),
        ),
        list_open_jobs=Parameter(
            args=("--list-open-jobs",),
            action="store_true",
            doc="""show every open job with its Slurm state; change nothing""",
        ),
        close_failed_jobs=Parameter(
            args=("--close-failed-jobs",),
            action="store_true",
            doc="""drop failed, cancelled and unknown jobs from the registry and
            release their outputs; their files stay as they are, untracked""",
        ),
        cancel=Parameter(
            args=("--cancel",),
            action="store_true",
            doc="""with --close-failed-jobs: cancel in Slurm the jobs that will
            never start because a job they wait for failed (Slurm leaves them
            pending, reason DependencyNeverSatisfied), then close them""",
        ),
        commit_failed_jobs=Parameter(
            args=("--commit-failed-jobs",),
            action="store_true",
            doc="""commit failed and cancelled jobs too, with their real state in
            the record's subject""",
        ),
        message=Parameter(
            args=("-m", "--message"),
            metavar="MESSAGE",
            doc="""a description added to each run record's commit message""",
            constraints=EnsureStr() | EnsureNone(),
        ),
        lock_timeout=Parameter(
            args=("--lock-timeout",),
            metavar="SECONDS",
            doc="""wait at most this long for another 'datalad finish' of the
            dataset, then step aside (exit 0). Default: wait as long as it
            takes; with --cron: do not wait.""",
            constraints=EnsureFloat() | EnsureNone(),
        ),
        branches=Parameter(
            args=("--branches",),
            action="store_true",
            doc="""commit each job onto a branch of its own,
            slurm-job-branch-<job id>, made from the current commit, as
            datalad-slurm 0.2.8 did; the current branch stays where it is and
            the jobs' files leave its worktree ('git merge' brings them
            back)""",
        ),
        octopus=Parameter(
            args=("--octopus",),
            action="store_true",
            doc="""as --branches, then merge all the jobs' commits into the
            current branch with one octopus merge; no branch is left, as
            datalad-slurm 0.2.8 deleted its branches after the merge (with
            --branches too, --octopus decides)""",
        ),
        cron=Parameter(
            args=("--cron",),
            action="store_true",
            doc="""behave as a cron job: print nothing when there is nothing to
            do (jobs still running, another finish at work), print problems on
            stderr, and exit non-zero only for them. A failed job is reported
            once, and again only when its state changes; a finish without
            --cron, and --list-open-jobs, still show every job""",
        ),
    )

    @staticmethod
    @datasetmethod(name="finish")
    @eval_results
    def __call__(
        job_id: int | str | None = None,
        *,
        dataset: Any = None,
        list_open_jobs: bool = False,
        close_failed_jobs: bool = False,
        cancel: bool = False,
        commit_failed_jobs: bool = False,
        message: str | None = None,
        lock_timeout: float | None = None,
        cron: bool = False,
        branches: bool = False,
        octopus: bool = False,
    ) -> Iterator[dict[str, Any]]:
        ds = require_dataset(dataset, check_installed=True, purpose="finish Slurm jobs")
        if close_failed_jobs and commit_failed_jobs:
            yield _error(ds.path, "--close-failed-jobs and --commit-failed-jobs exclude each other")
            return
        if cancel and not close_failed_jobs:
            yield _error(
                ds.path,
                "--cancel goes with --close-failed-jobs: 'datalad finish --close-failed-jobs "
                "--cancel' cancels and closes the jobs that will never start",
            )
            return
        try:
            wanted = None if job_id is None else parse_job_id(job_id)
        except JobIdError as exc:
            yield {
                **_error(ds.path, str(exc)),
                **({"whole_job_id": exc.whole_job} if exc.whole_job is not None else {}),
            }
            return
        try:
            # the listing shows states only, which the JSON CLI asks cheaply
            backend = choose_backend(
                ds.config.get("datalad.slurm.backend"), states_only=list_open_jobs
            )
            if list_open_jobs:
                yield from _list(ds, wanted, backend)
                return
            request = FinishRequest(
                job_id=wanted,
                close_failed_jobs=close_failed_jobs,
                cancel=cancel,
                commit_failed_jobs=commit_failed_jobs,
                message=message,
                lock_timeout=0.0 if cron and lock_timeout is None else lock_timeout,
                cron=cron,
                branches="octopus" if octopus else "branches" if branches else None,
            )
            for result in finish(ds, request, backend):
                if cron:
                    result["cron"] = True  # for the renderers
                yield result
        except BackendError as exc:
            yield _error(ds.path, _slurm_unreachable(ds.path, exc))
        except DataladSlurmError as exc:
            yield _error(ds.path, exc)

    @staticmethod
    def custom_result_renderer(res: dict[str, Any], **kwargs: Any) -> None:
        if res.get("list_open_jobs"):
            return  # the table comes in the summary
        from datalad.interface.utils import generic_result_renderer

        if res.get("status") == "notneeded" and res.get("asked_for") and not kwargs.get("cron"):
            # a job asked for by id that stays open: DataLad's renderer hides 'notneeded'
            _render_shown(res)
            return
        if kwargs.get("cron"):
            if res.get("status") == "notneeded":
                return
            if res.get("status") in ("impossible", "error"):
                import sys

                # DataLad's renderer writes to its own stdout handle: say it ourselves
                message = res.get("message")
                if isinstance(message, tuple) and message:
                    message = message[0] % tuple(message[1:])
                print(
                    f"{res.get('action')}({res.get('status')}): {res.get('path')} "
                    f"({res.get('type', '')}) [{message}]",
                    file=sys.stderr,
                )
                return
        generic_result_renderer(res)

    custom_result_summary_renderer_pass_summary = True

    @staticmethod
    def custom_result_summary_renderer(results: list[dict[str, Any]], action_summary: Any) -> None:
        from datalad.ui import ui

        listed = [r for r in results if r.get("list_open_jobs")]
        if listed:
            ui.message(render_open_jobs(listed))
            return
        if any(r.get("cron") for r in results):
            return
        if action_summary and sum(sum(s.values()) for s in action_summary.values()) > 1:
            from datalad.interface.utils import render_action_summary

            render_action_summary(action_summary)


def _render_shown(res: dict[str, Any]) -> None:
    """One result as DataLad's generic renderer writes it, also where it would hide it."""
    from datalad.support import ansi_colors as ac
    from datalad.ui import ui

    ui.message(
        "{action}({status}): {path} ({type}) [{message}]".format(
            action=ac.color_word(res.get("action", ""), ac.BOLD),
            status=ac.color_status(res.get("status", "")),
            path=res.get("path", ""),
            type=ac.color_word(res.get("type", ""), ac.MAGENTA),
            message=res.get("message", ""),
        )
    )


def _list(ds: Any, job_id: int | None, backend: Any) -> Iterator[dict[str, Any]]:
    found = False
    for result in list_open_jobs(ds, job_id, backend):
        found = True
        yield result
    if not found:
        yield make_result(
            FINISH,
            "ok",
            str(ds.path),
            type="dataset",
            message="there are no open jobs",
            list_open_jobs=False,
        )


def render_open_jobs(results: list[dict[str, Any]]) -> str:
    """The table of ``--list-open-jobs``, headed as in datalad-slurm 0.2.8."""
    rows = [("slurm-job-id", "slurm-job-status", "elapsed", "tasks")]
    for res in results:
        counts = res.get("task_counts") or {}
        tasks = ", ".join(f"{n} {state}" for state, n in sorted(counts.items())) or "-"
        job = res.get("slurm_job_id")
        rows.append(
            (
                str(job) if job is not None else "-",
                res.get("slurm_job_status", ""),
                _duration(res.get("elapsed")),
                tasks,
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(3)]
    lines = [
        "The following jobs are open: ",
        "",
        *(
            f"{r[0]:<{widths[0]}}   {r[1]:<{widths[1]}}   {r[2]:>{widths[2]}}   {r[3]}".rstrip()
            for r in rows
        ),
        "",
        f"({len(results)} open job{'s' if len(results) != 1 else ''}; "
        f"states from {_source(results[0])})",
    ]
    return "\n".join(lines)


def _duration(seconds: Any) -> str:
    """A running job's elapsed time as squeue's TIME shows it (``5:07``, ``1:02:03``,
    ``2-01:02:03``); ``-`` for a job that does not run."""
    if not isinstance(seconds, int):
        return "-"
    minutes, secs = divmod(seconds, 60)
    hours, minutes = divmod(minutes, 60)
    days, hours = divmod(hours, 24)
    if days:
        return f"{days}-{hours:02d}:{minutes:02d}:{secs:02d}"
    if hours:
        return f"{hours}:{minutes:02d}:{secs:02d}"
    return f"{minutes}:{secs:02d}"


def _source(result: dict[str, Any]) -> str:
    """``squeue/sacct --json, data_parser v0.0.42``: who answered, in which layout."""
    backend = result.get("backend") or "?"
    layout = result.get("data_parser")
    return f"{backend}, data_parser {layout}" if layout else backend


def _slurm_unreachable(path: Any, exc: BackendError) -> DataladSlurmError:
    """Slurm did not answer (controller or accounting down, tools missing): which Slurm, and
    that nothing changed.  Asked before any job is committed or closed."""
    conf = conf_path()
    return DataladSlurmError(
        f"Slurm could not be asked about the jobs of {path}: {exc}",
        path=conf,
        advice=f"nothing was committed or closed, the jobs stay open; run the command again "
        f"when Slurm answers (cluster {cluster_name(conf) or '?'}, config {conf})",
    )


def _error(path: Any, failure: DataladSlurmError | str) -> dict[str, Any]:
    return error_result("finish", path, failure)
