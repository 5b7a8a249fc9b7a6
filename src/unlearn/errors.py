"""The one error type of ``unlearn``: a problem with what the user gave, or with their machine.

Raised where the problem is found, with a message that names the file, line, field, flag or
path at fault. ``unlearn``'s ``main`` prints exactly these as one line (exit 2); any other
exception is a bug and keeps its traceback, so a shape error inside a loss is never disguised
as a user error.
"""

from __future__ import annotations


class UnlearnError(Exception):
    """A user-facing error, reported in one line."""


class ConfigError(UnlearnError):
    """A flag, config key, method name or method argument that cannot be used."""


class DataError(UnlearnError):
    """Bad input data, reported naming the file, the line and the field."""


class ModelError(UnlearnError):
    """A model, tokenizer or judge that cannot be found, loaded or trusted."""


class DependencyError(UnlearnError):
    """An optional package a requested feature needs is not installed."""


class DivergenceError(UnlearnError):
    """A loss became NaN or infinite; no final model is written, the last checkpoint is kept."""


class OutputError(UnlearnError):
    """An output folder that cannot be written as asked (already holds results, locked, ...)."""
