"""The command line's placeholders, filled in exactly as ``datalad run`` fills them.

``datalad run`` (datalad/core/local/run.py, ``format_command``) formats the
command with a ``string.Formatter`` that treats lists specially: ``{inputs}``
and ``{outputs}`` are lists of shell-quoted paths, joined by single spaces,
so a path with a space stays one argument, and ``{inputs[0]}`` is the first
whole (quoted) path.  The paths are the patterns the user gave, relative to
the working directory, with globs expanded there (``globs.expand``: sorted,
the unmatched pattern kept as given) and the dataset root ``.`` left out.
``{pwd}`` and ``{dspath}`` are absolute, ``{tmpdir}`` is a new temporary
directory (made only when the command names it), and every
``datalad.run.substitutions.NAME`` setting is ``{NAME}``.  This module does
the same, in code of its own.
"""

from __future__ import annotations

import shlex
import string
import tempfile
from collections.abc import Mapping, Sequence
from typing import Any

from datalad_slurm.errors import DataladSlurmError
from datalad_slurm.globs import expand

SUBSTITUTIONS_PREFIX = "datalad.run.substitutions."


class PlaceholderError(DataladSlurmError, ValueError):
    """A command whose placeholders cannot be filled; the message says why."""


class _ListFormatter(string.Formatter):
    """Lists become their items, each formatted with the field's spec, joined by spaces."""

    def format_field(self, value: Any, format_spec: str) -> Any:
        if isinstance(value, (list, tuple, set, frozenset)):
            return " ".join(
                string.Formatter.format_field(self, item, format_spec) for item in value
            )
        return string.Formatter.format_field(self, value, format_spec)


def substitutions(config: Any) -> dict[str, str]:
    """The ``datalad.run.substitutions.NAME`` settings, by NAME."""
    return {
        key[len(SUBSTITUTIONS_PREFIX) :]: value
        for key, value in config.items(SUBSTITUTIONS_PREFIX[:-1])
        if key.startswith(SUBSTITUTIONS_PREFIX)
    }


def format_command(
    cmd: str,
    *,
    inputs: Sequence[str],
    outputs: Sequence[str],
    pwd: str,
    dspath: str,
    configured: Mapping[str, Any] | None = None,
) -> str:
    """``cmd`` with its placeholders filled as ``datalad run`` fills them.

    ``inputs`` and ``outputs`` are the paths as the user gave them (relative to
    ``pwd`` or absolute); ``pwd`` is the absolute directory the command runs in.
    """
    values: dict[str, Any] = dict(configured or {})
    values.update(
        pwd=pwd,
        dspath=dspath,
        tmpdir=tempfile.mkdtemp(prefix="datalad-run-") if "{tmpdir}" in cmd else "",
        inputs=[shlex.quote(p) for p in expand(inputs, pwd, dot=False)],
        outputs=[shlex.quote(p) for p in expand(outputs, pwd, dot=False)],
    )
    try:
        return _ListFormatter().format(cmd, **values)
    except KeyError as exc:
        known = ", ".join("{" + name + "}" for name in sorted(values))
        raise PlaceholderError(
            f"unknown placeholder {{{exc.args[0]}}} in {cmd!r}; known are {known} "
            "(datalad.run.substitutions.NAME adds {NAME}); write literal braces as {{ and }}"
        ) from exc
    except IndexError as exc:
        raise PlaceholderError(
            f"a placeholder's index in {cmd!r} is past the end of its list "
            f"({len(values['inputs'])} input(s), {len(values['outputs'])} output(s))"
        ) from exc
    except (ValueError, AttributeError, TypeError) as exc:
        raise PlaceholderError(
            f"cannot expand placeholders in {cmd!r}: {exc}; write literal braces as {{{{ and }}}}"
        ) from exc
