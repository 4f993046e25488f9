"""The errors every configuration check and every command raises: the lowest module, so that
the catalogue of methods, the config loader, the checks that combine them and the study's
layout (ftcompare.plan.matrix) can all raise them."""

from __future__ import annotations


class ConfigError(ValueError):
    """A config value the workflow cannot use; the message names it and what is allowed."""


class UsageError(ValueError):
    """A run, an input or an output the commands cannot use; the message says which and why."""
