"""``schedule --assume-ready {inputs,outputs,both}``, as ``datalad run`` has it (issue 20,
item 3; datalad-slurm 0.2.8's option): ``inputs`` obtains nothing (and refuses no input glob
that matches nothing), ``outputs`` unlocks nothing, ``both`` neither; without it, both are
prepared.  Each variant is seen on real Slurm through the ``datalad`` command line, as root
and as the unprivileged account, with the jobs finished and the dataset checked after.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tests.cluster.test_cli_answers import _git, _json
from tests.cluster.test_globs import _as_owner, _clean
from tests.conftest import Actor

#: writes a file into its output folder ($1), or leaves its output (a file) as it is
WRITE = """#!/bin/sh
case "$1" in
    */) mkdir -p "$1" && echo written > "$1/r.txt" ;;
esac
"""


def _datasets(actor: Actor) -> tuple[Path, Path]:
    """An origin with code/write.sh (git), data/in.dat and out/o.dat, out/p.dat (annexed,
    locked), and a clone of it, which has none of the annexed content yet."""
    top = actor.folder()
    origin = top / "origin"
    actor.ok("create", str(origin), cwd=top)
    actor.write(origin / "code" / "write.sh", WRITE)
    (origin / "code" / "write.sh").chmod(0o755)
    actor.ok("save", "--to-git", "-m", "code", "code", cwd=origin)
    for name in ("data/in.dat", "out/o.dat", "out/p.dat", "out/q.dat"):
        actor.write(origin / name, f"content of {name}\n")
    actor.ok("save", "-m", "data", "data", "out", cwd=origin)
    clone = top / "clone"
    actor.ok("clone", str(origin), str(clone), cwd=top)
    return origin, clone


def _here(actor: Actor, ds: Path, path: str) -> bool:
    """Whether the annexed file's content is in this dataset."""
    found = _as_owner(actor, ds, "git", "annex", "find", "--in=here", path)
    return found.stdout.strip() == path


def _schedule(actor: Actor, ds: Path, *args: str) -> dict[str, Any]:
    proc = actor.datalad("-f", "json", "schedule", *args, cwd=ds)
    assert "Traceback" not in proc.stderr, proc.stderr
    (result,) = _json(proc.stdout)
    return result


def test_assume_ready_inputs_obtains_nothing(actor: Actor) -> None:
    _origin, ds = _datasets(actor)
    assert not _here(actor, ds, "data/in.dat")
    first = ["--assume-ready", "inputs", "-i", "data/in.dat", "-o", "res/1/"]
    first += ["sbatch", "code/write.sh", "res/1/"]
    dry = _schedule(actor, ds, "--dry-run", *first)
    assert dry["status"] == "ok" and dry["would_get"] == [], dry
    ready = _schedule(actor, ds, *first)
    assert ready["status"] == "ok", ready
    assert not _here(actor, ds, "data/in.dat"), "--assume-ready inputs obtained the input"
    # an input glob without a match: refused as datalad run refuses it, unless assumed ready
    nothing = ["-i", "data/*.none", "-o", "res/2/", "sbatch", "code/write.sh", "res/2/"]
    refused = _schedule(actor, ds, *nothing)
    assert refused["status"] == "error" and "match nothing" in refused["message"], refused
    glob = _schedule(actor, ds, "--assume-ready", "inputs", *nothing)
    assert glob["status"] == "ok", glob
    # without the option the input is obtained
    got = _schedule(
        actor, ds, "-i", "data/in.dat", "-o", "res/3/", "sbatch", "code/write.sh", "res/3/"
    )
    assert got["status"] == "ok" and _here(actor, ds, "data/in.dat"), got
    jobs = [ready["slurm_job_id"], glob["slurm_job_id"], got["slurm_job_id"]]
    actor.cluster.wait_done(jobs)
    finished = _json(actor.ok("-f", "json", "finish", cwd=ds))
    assert sorted(r["slurm_job_id"] for r in finished if r["action"] == "finish") == sorted(jobs)
    assert _git(ds, "status", "--porcelain") == ""
    _clean(actor, ds)


def test_assume_ready_outputs_unlocks_nothing(actor: Actor) -> None:
    ds, _clone = _datasets(actor)
    args = ["sbatch", "code/write.sh", "-"]
    for ready in ("outputs", "both"):
        dry = _schedule(actor, ds, "--dry-run", "--assume-ready", ready, "-o", "out/o.dat", *args)
        assert dry["status"] == "ok" and dry["would_unlock"] == [], dry
    dry = _schedule(actor, ds, "--dry-run", "-o", "out/o.dat", *args)
    assert dry["would_unlock"] == ["out/o.dat"], dry

    kept = _schedule(actor, ds, "--assume-ready", "outputs", "-o", "out/o.dat", *args)
    assert kept["status"] == "ok", kept
    assert (ds / "out" / "o.dat").is_symlink(), "--assume-ready outputs unlocked the output"
    both = _schedule(
        actor, ds, "--assume-ready", "both", "-i", "data/in.dat", "-o", "out/q.dat", *args
    )
    assert both["status"] == "ok" and (ds / "out" / "q.dat").is_symlink(), both
    unlocked = _schedule(actor, ds, "-o", "out/p.dat", *args)
    assert unlocked["status"] == "ok", unlocked
    path = ds / "out" / "p.dat"
    assert not path.is_symlink() and path.read_text() == "content of out/p.dat\n"
    jobs = [kept["slurm_job_id"], both["slurm_job_id"], unlocked["slurm_job_id"]]
    actor.cluster.wait_done(jobs)
    finished = _json(actor.ok("-f", "json", "finish", cwd=ds))
    assert sorted(r["slurm_job_id"] for r in finished if r["action"] == "finish") == sorted(jobs)
    # the output the job left alone is locked again, as datalad save locks it
    assert path.is_symlink() and _git(ds, "status", "--porcelain") == ""
    _clean(actor, ds)
