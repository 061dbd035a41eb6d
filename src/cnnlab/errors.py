"""User-facing errors.

Every problem caused by the user's input (an unknown name, a bad shape, a missing file) is raised as a
:class:`CnnlabError` subclass with a one-line message. The CLI turns these into a message on stderr
and a non-zero exit code instead of a traceback; library users can catch them like any exception.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class CnnlabError(Exception):
    """Base class of errors caused by user input; ``exit_code`` is what the CLI returns."""

    exit_code = 1


class UnknownNameError(CnnlabError, KeyError):
    """An unknown model, dataset, optimizer, schedule or other named choice."""

    exit_code = 2

    def __init__(self, kind: str, name: str, choices: Iterable[str]):
        self.kind, self.name, self.choices = kind, name, sorted(choices)
        close = difflib.get_close_matches(name, self.choices, n=3, cutoff=0.5)
        hint = f" Did you mean: {', '.join(close)}?" if close else ""
        listing = ", ".join(self.choices)
        if len(listing) > 600:
            listing = listing[:600].rsplit(",", 1)[0] + ", … (see `cnnlab models`)"
        super().__init__(f"unknown {kind} '{name}'.{hint} Valid {kind}s: {listing}")

    def __str__(self) -> str:  # KeyError would otherwise wrap the message in quotes
        return str(self.args[0])


class DataError(CnnlabError):
    """Missing, empty or malformed data."""

    exit_code = 2


class ConfigError(CnnlabError):
    """A bad configuration value or key."""

    exit_code = 2


class RunError(CnnlabError):
    """A run directory or checkpoint that is missing, incomplete or corrupt."""

    exit_code = 2


class InputShapeError(CnnlabError, ValueError):
    """A tensor whose shape the model cannot take."""

    exit_code = 2
