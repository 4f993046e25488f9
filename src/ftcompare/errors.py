"""The error every configuration check raises: the lowest module, so that the catalogue of
methods, the config loader and the checks that combine them can all raise it."""

from __future__ import annotations


class ConfigError(ValueError):
    """A config value the workflow cannot use; the message names it and what is allowed."""
