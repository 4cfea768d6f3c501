"""Exceptions raised by the starcli library.

The library never prints or exits: it raises a :class:`StarcliError` subclass whose message is
one actionable line, and the CLI prints it and exits 1.
"""

from __future__ import annotations

from pathlib import Path


class StarcliError(Exception):
    """Base class of every error starcli reports to users (one line, actionable)."""


class InputError(StarcliError):
    """A user input (file, dataset, option) cannot be used. The message names it and says why."""

    def __init__(self, path: str | Path | None, reason: str):
        self.path = None if path is None else Path(path)
        self.reason = reason
        super().__init__(f"{path}: {reason}" if path is not None else reason)


class ModelError(StarcliError):
    """A model or checkpoint cannot be found, downloaded or loaded."""


class AttributeSpecError(StarcliError):
    """An attribute setting (``--set``) does not match the model's attributes."""


class PluginError(StarcliError):
    """A plugin is unknown, failed to import, or cannot run on this machine."""


class ConfigError(StarcliError):
    """A config key is unknown or has the wrong type (the message names the dotted key)."""
