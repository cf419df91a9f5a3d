"""Where slurm.conf is found and what is read from it (datalad_slurm/slurm/conf.py)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from datalad_slurm.slurm import pyslurmload
from datalad_slurm.slurm.conf import (
    DEFAULT_SLURM_CONFIGS,
    conf_value,
    has_accounting,
    min_job_age,
    seconds,
    slurm_conf_path,
)
from tests.unit.hook_modules import scontrol


def test_one_list_of_default_places() -> None:
    """The hook keeps its own copy (it imports nothing of the package but the spool module);
    the pyslurm backend uses conf.py's.  Configless login nodes' copy is among them."""
    assert scontrol.DEFAULT_SLURM_CONFIGS == DEFAULT_SLURM_CONFIGS
    assert "/run/slurm/conf/slurm.conf" in DEFAULT_SLURM_CONFIGS
    assert pyslurmload.slurm_conf_path is slurm_conf_path


def test_no_other_module_has_its_own_list() -> None:
    """slurm.conf's default places are written in slurm/conf.py only: no other module of the
    package names one of them (messages take them from there too)."""
    package = Path(__file__).resolve().parents[2] / "datalad_slurm"
    own = package / "slurm" / "conf.py"
    found = [
        f"{path.relative_to(package)}:{node.lineno}: {node.value}"
        for path in sorted(package.rglob("*.py"))
        if path != own
        for node in ast.walk(ast.parse(path.read_text()))
        if isinstance(node, ast.Constant)
        and isinstance(node.value, str)
        and any(place in node.value for place in DEFAULT_SLURM_CONFIGS)
    ]
    assert found == []


def test_config_lookup(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    conf = tmp_path / "slurm.conf"
    monkeypatch.setenv("SLURM_CONF", str(conf))
    assert slurm_conf_path() is None  # named but missing: not looked for elsewhere
    conf.write_text("ClusterName=x\n")
    assert slurm_conf_path() == str(conf)


def test_values_as_slurm_reads_them(tmp_path: Path) -> None:
    conf = tmp_path / "slurm.conf"
    conf.write_text(
        "# ClusterName=commented\nclustername = First  # a comment\nMinJobAge=30\n"
        "CLUSTERNAME=Second\nEmpty=\n"
    )
    assert conf_value("ClusterName", str(conf)) == "Second"  # the last one wins
    assert conf_value("MinJobAge", str(conf)) == "30"
    assert conf_value("Empty", str(conf)) is None
    assert conf_value("Missing", str(conf)) is None
    assert conf_value("ClusterName", str(tmp_path / "none")) is None


def test_what_scontrol_show_config_says() -> None:
    assert seconds("300 sec") == 300 and seconds("2") == 2 and seconds("UNLIMITED") is None
    assert min_job_age({"MinJobAge": "2 sec"}) == 2 and min_job_age({}) is None
    assert has_accounting({"AccountingStorageType": "accounting_storage/slurmdbd"}) is True
    assert has_accounting({"AccountingStorageType": "accounting_storage/none"}) is False
    assert has_accounting({"AccountingStorageType": "(null)"}) is False
    assert has_accounting({}) is None
