"""Loading pyslurm and finding what the installed release has.

pyslurm is imported lazily and only when a Slurm config can be found (:func:`conf.slurm_conf_path`):
importing it initialises libslurm, which ends the interpreter when it finds no config
(:class:`LoadedPyslurm`).  pyslurm releases follow Slurm's (22.5 ... 25.11) and differ in what
they have; :class:`PyslurmApi` finds the parts used here in the installed one and names what is
missing.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from types import ModuleType
from typing import Any

from datalad_slurm.slurm.backend import BackendError, TaskKey
from datalad_slurm.slurm.conf import DEFAULT_SLURM_CONFIGS, slurm_conf_path
from datalad_slurm.slurm.pyslurmexit import RawStatus, raw_statuses
from datalad_slurm.slurm.pyslurmrecords import attribute

INSTALL_HINT = (
    'install pyslurm matching your Slurm release: pip install "pyslurm==<Slurm major.minor>.*" '
    "(needs Slurm's headers and libslurm, e.g. Debian's libslurm-dev, gcc and Cython)"
)


class LoadedPyslurm:
    """The imported pyslurm module, initialised for the config in use now."""

    module: ModuleType | None = None
    config: str | None = None

    @classmethod
    def get(cls) -> ModuleType:
        config = slurm_conf_path()
        if config is None:
            raise BackendError(
                "pyslurm needs a Slurm config: set SLURM_CONF or install "
                f"{DEFAULT_SLURM_CONFIGS[0]}"
            )
        if cls.module is None:
            try:
                import pyslurm
            except (ImportError, OSError) as exc:  # not installed, or built for another Slurm
                raise BackendError(f"pyslurm cannot be imported ({exc}); {INSTALL_HINT}") from exc
            cls.module, cls.config = pyslurm, config
        elif config != cls.config:
            # libslurm reads its config once; another SLURM_CONF needs a fresh start (that
            # reaches the new slurmctld; slurmdbd stays the first accounting cluster's)
            fini, init = (getattr(cls.module, name, None) for name in ("slurm_fini", "slurm_init"))
            if callable(fini) and callable(init):  # both in every pyslurm with the object API
                fini()
                init(config)
            cls.config = config
        return cls.module


#: what pyslurm's object API first shipped in (22.5.0, 22.5.1 and 23.2.0 have only the old one)
FIRST_OBJECT_API = "22.5.2 (for Slurm 22.05) or 23.2.1 (for Slurm 23.02 and later)"


class PyslurmApi:
    """The parts of pyslurm this backend uses, as the installed release has them.

    Verified against pyslurm's tags: ``Jobs.load``, ``Job.load``, ``db.Jobs.load``
    and ``RPCError`` exist from 22.5.2/23.2.1 on (22.5.0, 22.5.1 and 23.2.0 only
    have the old dict API); ``db.JobFilter`` from 22.5.3/23.2.2 on, before it
    ``db.JobSearchFilter`` (kept as an alias since); ``slurmctld.Config`` has
    ``accounting_storage_type`` from 25.5.0 on, the old ``pyslurm.config()``
    dict has it up to 24.11; the old ``slurmdb_jobs`` (raw wait statuses) is in
    every tag from 22.5.2 to 25.11.2.
    """

    def __init__(self, module: Any) -> None:
        self.module = module
        version = getattr(module, "__version__", None)
        self.version = str(version) if version else "(version unknown)"
        self.load_jobs: Any = attribute(module, "Jobs.load")
        self.load_db_jobs: Any = attribute(module, "db.Jobs.load")
        self.job_filter: Any = attribute(module, "db.JobFilter") or attribute(
            module, "db.JobSearchFilter"
        )
        error = getattr(module, "RPCError", None)
        self.rpc_error: type[Exception] = (
            error if isinstance(error, type) and issubclass(error, Exception) else _NoError
        )
        missing = [
            name
            for name, found in (
                ("pyslurm.Jobs.load", callable(self.load_jobs)),
                ("pyslurm.db.Jobs.load", callable(self.load_db_jobs)),
                ("pyslurm.db.JobFilter (or JobSearchFilter)", callable(self.job_filter)),
                ("pyslurm.RPCError", self.rpc_error is not _NoError),
            )
            if not found
        ]
        if missing:
            where = getattr(module, "__file__", None)
            raise BackendError(
                f"pyslurm {self.version}{f' ({where})' if where else ''} lacks "
                f"{', '.join(missing)}: the pyslurm backend needs pyslurm's object API, "
                f"from pyslurm {FIRST_OBJECT_API}; {INSTALL_HINT}, or set "
                "datalad.slurm.backend to jsoncli"
            )

    def accounting_configured(self) -> bool | None:
        """Whether slurmctld's config names an accounting storage; None: pyslurm cannot tell.

        One RPC, asked only after accounting failed.  A value of None or
        ``accounting_storage/none`` is a config without accounting; a missing
        attribute or a failing call tells nothing.
        """
        config = attribute(self.module, "slurmctld.Config")
        try:
            if config is not None and hasattr(config, "accounting_storage_type"):
                storage = config.load().accounting_storage_type  # pyslurm >= 25.5.0
            elif callable(getattr(self.module, "config", None)):
                # pyslurm <= 24.11: the old API's config dict has it
                storage = self.module.config().get()["accounting_storage_type"]
            else:
                return None
        except Exception:
            return None
        return bool(storage) and "none" not in str(storage).lower()

    def raw_exit_statuses(
        self, job_ids: Sequence[int], clusters: Sequence[str] = ()
    ) -> dict[TaskKey, RawStatus]:
        """Accounting's raw wait statuses of these jobs' tasks, through the old
        ``slurmdb_jobs`` (the object API only has them reduced); empty where it fails."""
        legacy = getattr(self.module, "slurmdb_jobs", None)
        if not callable(legacy):
            return {}
        try:
            answer = legacy().get(jobids=list(job_ids), clusters=list(clusters))
        except Exception:
            return {}
        return raw_statuses(answer.values() if isinstance(answer, Mapping) else [])


class _NoError(Exception):
    """Stands for a missing ``pyslurm.RPCError`` (never raised)."""
