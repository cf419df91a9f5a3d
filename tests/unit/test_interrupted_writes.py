"""Leftovers of a killed writer: git lock files and the commits it did or did not make."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from datalad_slurm.commit.recovery import find_commits_with_tokens
from datalad_slurm.jobs.statedir import clear_interrupted_writes, git_writes, state_dir
from tests.unit.conftest import git

#: git only: the host and forky-jsoncli tiers (tests/conftest.py, AGNOSTIC_TIERS)
pytestmark = pytest.mark.slurm_agnostic


def test_nothing_to_clear_without_a_marker(repo: Path) -> None:
    lock = repo / ".git" / "index.lock"
    lock.write_text("")
    assert clear_interrupted_writes(str(repo)) == []
    assert lock.exists(), "a lock without our marker may be a running git's: never touch it"


def test_a_clean_exit_leaves_no_marker(repo: Path) -> None:
    with pytest.raises(RuntimeError), git_writes(str(repo)):
        raise RuntimeError("boom")
    assert os.listdir(state_dir(str(repo))) == []


def test_locks_of_a_killed_writer_are_removed(repo: Path) -> None:
    gitdir = repo / ".git"
    old = gitdir / "refs" / "heads" / "old.lock"
    old.write_text("")
    past = time.time() - 3600
    os.utime(old, (past, past))
    script = (
        "import os, sys\n"
        "from datalad_slurm.jobs.statedir import git_writes\n"
        "with git_writes(sys.argv[1]):\n"
        "    for name in ('index.lock', 'HEAD.lock', 'refs/heads/master.lock',\n"
        "                 'objects/maintenance.lock'):\n"
        "        open(os.path.join(sys.argv[1], '.git', name), 'w').close()\n"
        "    os.kill(os.getpid(), 9)\n"
    )
    proc = subprocess.run([sys.executable, "-c", script, str(repo)], check=False)
    assert proc.returncode == -9
    removed = clear_interrupted_writes(str(repo))
    # git skips its auto maintenance for good while objects/maintenance.lock exists
    assert sorted(removed) == [
        "HEAD.lock",
        "index.lock",
        "objects/maintenance.lock",
        "refs/heads/master.lock",
    ]
    assert old.exists(), "a lock older than the interrupted run is not its own"
    assert clear_interrupted_writes(str(repo)) == []


def test_commits_found_by_token_after_the_submission_commits(repo: Path) -> None:
    submitted_from = git(repo, "rev-parse", "HEAD").strip()
    body = '=== Do not change lines below ===\n{{\n "slurm_registration": "{}"\n}}\n^^^'
    shas = {}
    for token in ("tok1", "tok2"):
        git(
            repo,
            "commit",
            "-q",
            "--allow-empty",
            "-m",
            "[DATALAD SLURM RUN] x\n\n" + body.format(token),
        )
        shas[token] = git(repo, "rev-parse", "HEAD").strip()
    # a user message quoting a token is not a record of it
    git(repo, "commit", "-q", "--allow-empty", "-m", 'note "slurm_registration": "tok3"')
    found = find_commits_with_tokens(str(repo), {"tok1", "tok2", "tok3"}, {submitted_from})
    assert found == shas
    assert find_commits_with_tokens(str(repo), {"tok1"}, {shas["tok2"]}) == {}
    assert find_commits_with_tokens(str(repo), {"tok1"}, {None}) == {"tok1": shas["tok1"]}
