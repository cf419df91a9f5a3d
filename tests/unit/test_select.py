"""Choosing the backend (no Slurm needed for these paths)."""

from __future__ import annotations

from pathlib import Path

import pytest

from datalad_slurm.slurm.backend import BackendError
from datalad_slurm.slurm.jsoncli import JsonCliBackend
from datalad_slurm.slurm.pyslurmapi import PyslurmBackend
from datalad_slurm.slurm.select import AutoBackend, choose_backend
from tests.unit.test_pyslurmapi import LIVE, Cluster, use_standin


@pytest.mark.parametrize(
    ("setting", "kind"),
    [("pyslurm", PyslurmBackend), ("jsoncli", JsonCliBackend), ("auto", AutoBackend)],
)
def test_a_setting_picks_its_backend(setting: str, kind: type) -> None:
    assert isinstance(choose_backend(f" {setting.upper()} "), kind)


def test_the_environment_applies_without_a_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DATALAD_SLURM_BACKEND", "jsoncli")
    assert isinstance(choose_backend(None), JsonCliBackend)
    monkeypatch.delenv("DATALAD_SLURM_BACKEND")
    assert isinstance(choose_backend(None), AutoBackend)


def test_unknown_backend_names_the_choices() -> None:
    with pytest.raises(BackendError, match="auto, pyslurm, jsoncli"):
        choose_backend("slurmrestd")


def test_forced_pyslurm_without_a_slurm_config_says_so(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # pyslurm is never imported then: libslurm would end the interpreter without a config
    monkeypatch.setenv("SLURM_CONF", str(tmp_path / "missing.conf"))
    with pytest.raises(BackendError, match="pyslurm needs a Slurm config"):
        PyslurmBackend().query([1])


def test_auto_falls_back_to_the_json_cli_and_says_why(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SLURM_CONF", str(tmp_path / "missing.conf"))
    monkeypatch.setenv("PATH", str(tmp_path))  # no squeue either: the fallback's own error
    auto = AutoBackend()
    assert auto.name == "auto" and auto.accounting is None
    with pytest.raises(BackendError, match="squeue is not installed"):
        auto.query([1])
    assert auto.name == "squeue/sacct --json"
    assert auto.pyslurm_problem and "Slurm config" in auto.pyslurm_problem


def test_prefetch_settles_on_the_json_cli_where_pyslurm_cannot_work(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SLURM_CONF", str(tmp_path / "missing.conf"))
    monkeypatch.setenv("PATH", str(tmp_path))
    auto = AutoBackend()
    auto.prefetch()  # starts squeue in the background; a missing one is no error yet
    assert auto.name == "squeue/sacct --json"
    assert auto.pyslurm_problem and "Slurm config" in auto.pyslurm_problem
    with pytest.raises(BackendError, match="squeue is not installed"):
        auto.query([1])


def test_no_jobs_no_question() -> None:
    assert PyslurmBackend().query([]) == {}


@pytest.mark.parametrize("version", ["22.5.1", "23.2.0"])  # tags with only the old dict API
def test_auto_falls_back_where_pyslurm_lacks_the_api(
    version: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    use_standin(monkeypatch, version, Cluster())
    monkeypatch.setenv("PATH", str(tmp_path))  # the JSON CLI answers with its own error
    auto = AutoBackend()
    with pytest.raises(BackendError, match="squeue is not installed"):
        auto.query([1])
    assert auto.name == "squeue/sacct --json"
    assert auto.pyslurm_problem and f"pyslurm {version} lacks pyslurm.Jobs.load" in (
        auto.pyslurm_problem
    )
    auto = AutoBackend()
    auto.prefetch()  # settled before the first query
    assert auto.name == "squeue/sacct --json" and auto.pyslurm_problem


@pytest.mark.parametrize("version", ["22.5.1", "23.2.0"])
def test_forced_pyslurm_without_the_api_is_one_clear_error(
    version: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    use_standin(monkeypatch, version, Cluster())
    backend = choose_backend("pyslurm")
    with pytest.raises(BackendError) as caught:
        backend.query([1])
    message = str(caught.value)
    assert message.startswith(f"pyslurm {version} lacks pyslurm.Jobs.load, pyslurm.db.Jobs.load")
    assert "datalad.slurm.backend to jsoncli" in message
    with pytest.raises(BackendError, match="lacks"):
        PyslurmBackend.check()


@pytest.mark.parametrize("version", ["22.5.2", "23.2.2", "24.11.0", "25.11.2"])
def test_auto_keeps_a_pyslurm_with_the_api(version: str, monkeypatch: pytest.MonkeyPatch) -> None:
    use_standin(monkeypatch, version, Cluster(live=LIVE["completed"]["records"]))
    auto = AutoBackend()
    auto.prefetch()
    assert auto.name == "auto" and auto.pyslurm_problem is None
    assert auto.query([2])[2].backend == "pyslurm" and auto.name == "pyslurm"
