"""What a job was given and what it used: elapsed and CPU time, MaxRSS, TRES, nodes, partition,
account and QOS, read from whoever said so.

Three kinds of source, in the order their word counts:

- accounting (``sacct --json``, ``pyslurm.db.Jobs``): every figure, and the only one with the
  CPU time and memory the job's steps used (sacct's TotalCPU and MaxRSS, gathered by Slurm's
  ``JobAcctGatherType`` plugin; with ``jobacct_gather/none`` they are zero, read as unknown);
- slurmctld (``squeue --json``, ``pyslurm.Jobs``): elapsed time, requested and allocated TRES,
  nodes, partition, account, QOS, as long as it holds the job;
- the hook (``scontrol show job``, or ``pyslurm.Job``, at the job's end): the same.

A figure nobody gave is ``None`` and never written: a record lacks it, no finish fails for it.
TRES are kept as Slurm counts them (``mem`` in megabytes), only ``cpu``, ``mem``, ``node`` and
``gres/*``; MaxRSS is in bytes, times in seconds.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, fields, replace
from typing import Any

#: the TRES kept (``gres/...`` too): what a user sizes the next run by
TRES_KEPT = ("cpu", "mem", "node")
#: memory units in Slurm's TRES strings, in megabytes (Slurm counts TRES memory in MB)
_MEM_UNITS = {"K": 1 / 1024, "M": 1, "G": 1024, "T": 1024**2, "P": 1024**3}
_MEM_VALUE = re.compile(r"^(\d+(?:\.\d+)?)([KMGTP]?)$")
_RUN_TIME = re.compile(r"^(?:(\d+)-)?(?:(\d+):)?(\d+):(\d+)$")
#: what Slurm writes for a string it has no value for
_NO_STRING = ("", "(null)", "None", "N/A", "None assigned")
#: Slurm's NO_VAL and INFINITE, 64 and 32 bits
_NOT_SET = (0xFFFFFFFFFFFFFFFE, 0xFFFFFFFFFFFFFFFF, 0xFFFFFFFE, 0xFFFFFFFF)

#: accounting's and the backends' names for a source
ACCOUNTING_SOURCES = ("sacct", "pyslurm.db")


@dataclass(frozen=True)
class Resources:
    """One task's figures; None where the source had none."""

    #: run time in seconds (sacct's Elapsed, scontrol's RunTime)
    elapsed: int | None = None
    #: user + system CPU seconds of all the job's steps (sacct's TotalCPU); accounting only
    total_cpu: float | None = None
    #: the largest resident set of any task of any step, in bytes (sacct's MaxRSS); accounting
    max_rss: int | None = None
    #: TRES requested and allocated, ``{"cpu": 2, "mem": 100, "node": 1, "gres/gpu": 1}``
    req_tres: Mapping[str, int] | None = None
    alloc_tres: Mapping[str, int] | None = None
    #: the nodes the job ran on, as Slurm writes them (``node[1-3]``)
    nodes: str | None = None
    partition: str | None = None
    account: str | None = None
    qos: str | None = None
    #: who said so: ``sacct``, ``squeue``, ``scontrol``, ``pyslurm``, ``pyslurm.db``, ...;
    #: ``sacct + squeue`` when one filled the other's gaps
    source: str | None = None

    @property
    def figures(self) -> dict[str, Any]:
        """The known figures (no source), as JSON values."""
        known: dict[str, Any] = {}
        for item in fields(self):
            value = getattr(self, item.name)
            if item.name != "source" and value is not None:
                known[item.name] = dict(value) if isinstance(value, Mapping) else value
        return known

    @property
    def from_accounting(self) -> bool:
        """Whether accounting said anything of this (its usage figures are then known, or
        were not gathered)."""
        return any(s in ACCOUNTING_SOURCES for s in (self.source or "").split(" + "))

    def to_json(self) -> dict[str, Any]:
        known = self.figures
        if known and self.source:
            known["source"] = self.source
        return known

    def merged(self, other: Resources | None) -> Resources:
        """These figures, with the gaps filled from ``other``."""
        if other is None or not other.figures:
            return self
        if not self.figures:
            return other
        filled = {
            item.name: getattr(other, item.name)
            for item in fields(self)
            if item.name != "source" and getattr(self, item.name) is None
        }
        useful = {k: v for k, v in filled.items() if v is not None}
        if not useful:
            return self
        sources = [s for s in (self.source, other.source) if s]
        return replace(self, **useful, source=" + ".join(sources) or None)


def merge(first: Resources | None, second: Resources | None) -> Resources | None:
    """``first``'s figures, gaps filled from ``second``; either may be missing."""
    if first is None:
        return second
    return first.merged(second)


def text(value: Any) -> str | None:
    """A string figure, None for Slurm's ways of saying none (``(null)``, empty)."""
    if not isinstance(value, str) or value.strip() in _NO_STRING:
        return None
    return value.strip()


def count(value: Any) -> int | None:
    """A whole number, plain or ``{"set", "infinite", "number"}``; None when unset."""
    if isinstance(value, Mapping):
        if not value.get("set", True) or value.get("infinite"):
            return None
        value = value.get("number")
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        return None
    try:
        number = int(value)
    except ValueError:
        return None
    return None if number < 0 or number in _NOT_SET else number


def _mem_megabytes(value: str) -> int | None:
    found = _MEM_VALUE.match(value.strip().upper())
    if not found:
        return None
    return round(float(found.group(1)) * _MEM_UNITS[found.group(2) or "M"])


def _kept(name: str) -> bool:
    return name in TRES_KEPT or name.startswith("gres/")


def tres_from_text(value: Any) -> dict[str, int] | None:
    """Slurm's TRES string (``cpu=2,mem=100G,node=1,billing=2,gres/gpu=1``), as scontrol,
    squeue and slurmctld write it: the kept TRES, memory in megabytes; None if none."""
    if not isinstance(value, str) or text(value) is None:
        return None
    found: dict[str, int] = {}
    for item in value.split(","):
        name, sep, amount = item.strip().partition("=")
        if not sep or not _kept(name):
            continue
        number = _mem_megabytes(amount) if name == "mem" else count(amount)
        if number is not None:
            found[name] = number
    return found or None


def tres_from_list(value: Any) -> dict[str, int] | None:
    """Accounting's TRES list (``[{"type": "gres", "name": "gpu", "count": 1}, ..]``,
    ``sacct --json`` in every layout): the kept TRES; None if none."""
    if not isinstance(value, list):
        return None
    found: dict[str, int] = {}
    for item in value:
        if not isinstance(item, Mapping) or not isinstance(item.get("type"), str):
            continue
        name = item["type"] if not item.get("name") else f"{item['type']}/{item['name']}"
        number = count(item.get("count"))
        if _kept(name) and number is not None:
            found[name] = number
    return found or None


def run_time_text(value: Any) -> int | None:
    """scontrol's ``RunTime`` (``1-02:03:04``, ``02:03:04``, ``03:04``) in seconds; a number
    of seconds is taken as it is (the hook's pyslurm answers)."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value if value >= 0 else None
    if not isinstance(value, str):
        return None
    if value.isdigit():
        return int(value)
    found = _RUN_TIME.match(value.strip())
    if not found:
        return None
    days, hours, minutes, seconds = (int(g) if g else 0 for g in found.groups())
    return ((days * 24 + hours) * 60 + minutes) * 60 + seconds


def run_time(
    *,
    pending: bool,
    suspended: bool,
    running: bool,
    start: int | None,
    end: int | None,
    suspend_time: int | None,
    pre_sus_time: int | None,
    now: float,
) -> int | None:
    """A job's run time as ``scontrol show job`` and pyslurm compute it from slurmctld's record
    (``RunTime``, ``Job.run_time``): up to now while it runs, then up to its end; a suspended
    job's time before its last suspension counts, not the time it was suspended."""
    if pending or not start:
        return 0 if pending else None
    if suspended:
        return pre_sus_time or 0
    stop = now if running or not end else end
    if suspend_time:
        return max(int(stop - suspend_time + (pre_sus_time or 0)), 0)
    return max(int(stop - start), 0)


def from_sacct(record: Mapping[str, Any]) -> Resources:
    """A job's figures from its ``sacct --json`` record (layouts v0.0.38-v0.0.45).

    TotalCPU is the sum of the steps' ``time.total`` (as sacct's job line shows
    it; 22.05 leaves the job's own ``time.total`` at 0), MaxRSS the largest
    ``mem`` among the steps' ``tres.requested.max``.  Zero is what accounting
    holds where Slurm gathered nothing (``jobacct_gather/none``; a job shorter
    than ``JobAcctGatherFrequency`` has no MaxRSS): unknown then, never a wrong 0.
    """
    time = record.get("time") if isinstance(record.get("time"), Mapping) else None
    tres = record.get("tres") if isinstance(record.get("tres"), Mapping) else None
    found = record.get("steps")
    steps: list[Any] = found if isinstance(found, list) else []
    return Resources(
        elapsed=count(time.get("elapsed")) if time is not None else None,
        total_cpu=_total_cpu([s.get("time") for s in steps if isinstance(s, Mapping)])
        or _total_cpu([time]),
        max_rss=_steps_max_rss(steps) or None,
        req_tres=tres_from_list(tres.get("requested")) if tres is not None else None,
        alloc_tres=tres_from_list(tres.get("allocated")) if tres is not None else None,
        nodes=text(record.get("nodes")),
        partition=text(record.get("partition")),
        account=text(record.get("account")),
        qos=text(record.get("qos")),
        source="sacct",
    )


def _total_cpu(times: Iterable[Any]) -> float | None:
    """The sum of ``time.total`` (``{"seconds", "microseconds"}``) over these; None for 0."""
    total = 0.0
    for time in times:
        spent = time.get("total") if isinstance(time, Mapping) else None
        if isinstance(spent, Mapping):
            seconds, micro = count(spent.get("seconds")), count(spent.get("microseconds"))
            total += (seconds or 0) + (micro or 0) / 1e6
    return round(total, 6) or None


def _steps_max_rss(steps: Iterable[Any]) -> int | None:
    """The largest ``mem`` among the steps' ``tres.requested.max`` (bytes)."""
    largest: int | None = None
    for step in steps:
        tres = step.get("tres") if isinstance(step, Mapping) else None
        requested = tres.get("requested") if isinstance(tres, Mapping) else None
        maxima = requested.get("max") if isinstance(requested, Mapping) else None
        for item in maxima if isinstance(maxima, list) else []:
            if isinstance(item, Mapping) and item.get("type") == "mem" and not item.get("name"):
                found = count(item.get("count"))
                if found is not None and (largest is None or found > largest):
                    largest = found
    return largest


def from_squeue(record: Mapping[str, Any], phase: str, now: float) -> Resources:
    """A job's figures from its ``squeue --json`` record (slurmctld's view, every layout).

    ``phase``: ``pending``, ``suspended``, ``running`` or ``ended``, for its run time,
    computed as scontrol does.
    """

    def number(key: str) -> int | None:
        return count(record.get(key))

    return Resources(
        elapsed=run_time(
            pending=phase == "pending",
            suspended=phase == "suspended",
            running=phase == "running",
            start=number("start_time"),
            end=number("end_time"),
            suspend_time=number("suspend_time"),
            pre_sus_time=number("pre_sus_time"),
            now=now,
        ),
        req_tres=tres_from_text(record.get("tres_req_str")),
        alloc_tres=tres_from_text(record.get("tres_alloc_str")),
        nodes=text(record.get("nodes")),
        partition=text(record.get("partition")),
        account=text(record.get("account")),
        qos=text(record.get("qos")),
        source="squeue",
    )


def job_totals(per_task: Iterable[Resources | None]) -> Resources | None:
    """What a job's tasks add up to (a plain job: its one task's figures).

    Elapsed and CPU time are summed, MaxRSS is the largest, TRES are summed
    per name; nodes, partitions, accounts and QOS are the distinct values,
    comma-joined.  A figure is given only when every task has it: a total of
    some tasks would pass for the job's.
    """
    tasks = list(per_task)
    if not tasks or any(t is None for t in tasks):
        return None
    known: list[Resources] = [t for t in tasks if t is not None]
    if len(known) == 1:
        return known[0]

    def every(name: str) -> list[Any] | None:
        values = [getattr(t, name) for t in known]
        return None if any(v is None for v in values) else values

    def summed(name: str) -> Any:
        values = every(name)
        return None if values is None else sum(values)

    def tres(name: str) -> dict[str, int] | None:
        values = every(name)
        if values is None:
            return None
        total: dict[str, int] = {}
        for value in values:
            for key, amount in value.items():
                total[key] = total.get(key, 0) + amount
        return total

    def joined(name: str) -> str | None:
        values = every(name)
        return None if values is None else ",".join(sorted(set(values)))

    rss = every("max_rss")
    cpu = summed("total_cpu")
    sources = sorted({t.source for t in known if t.source})
    return Resources(
        elapsed=summed("elapsed"),
        total_cpu=None if cpu is None else round(cpu, 6),
        max_rss=None if rss is None else max(rss),
        req_tres=tres("req_tres"),
        alloc_tres=tres("alloc_tres"),
        nodes=joined("nodes"),
        partition=joined("partition"),
        account=joined("account"),
        qos=joined("qos"),
        source=", ".join(sources) or None,
    )


#: pyslurm's TRES attributes in the order of Slurm's TRES ids (cpu 1, mem 2, energy 3, node 4,
#: billing 5, fs/disk 6, vmem 7, pages 8), then the named kinds (gres, license: 1000 and up)
_TRES_ORDER = ("cpu", "mem", "energy", "node", "billing", "fs", "vmem", "pages", "gres", "license")


def tres_text(tres: Any) -> str | None:
    """Slurm's TRES string (``cpu=2,mem=100M,node=1,billing=2,gres/gpu=1``), as scontrol writes
    it, for a TRES value as pyslurm gives it (``Job.allocated_tres``: ``cpu``, ``mem``, ...
    objects with a ``count``, memory in megabytes, and ``fs``/``gres``/``license`` maps of
    named ones); a string stays as it is; None for nothing.

    The pyslurm backend writes what scontrol would: memory in the largest unit that holds it
    exactly (``2048`` -> ``2G``).  The hook's worker has its own copy (``ask.tres_text`` in
    ``epilog/datalad_slurm_hook``, stdlib only, installed without this package);
    ``tests/unit/test_resources.py`` holds the two equal.
    """
    if tres is None or isinstance(tres, str):
        return tres or None
    parts = []
    for kind in _TRES_ORDER:
        value = getattr(tres, kind, None)
        named = value.items() if isinstance(value, dict) else [(None, value)]
        for key, item in named:
            amount = getattr(item, "count", None)
            if not isinstance(amount, int) or isinstance(amount, bool):
                continue
            if key is None:
                parts.append(f"{kind}={_mem_text(amount) if kind == 'mem' else amount}")
            else:
                parts.append(f"{kind}/{getattr(item, 'name', None) or key}={amount}")
    return ",".join(parts) or None


def _mem_text(megabytes: int) -> str:
    """Megabytes as Slurm writes them in TRES strings: ``1000M``, ``2G``, ``1T``."""
    amount, units = megabytes, "MGTP"
    while amount and amount % 1024 == 0 and len(units) > 1:
        amount, units = amount // 1024, units[1:]
    return f"{amount}{units[0]}"
