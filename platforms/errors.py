"""The error of the platform contract, in a module of its own so that the contract's helpers
(:mod:`platforms.staging`) can raise it without importing the contract they serve."""

from __future__ import annotations


class PlatformError(Exception):
    """A platform step failed; the message goes into the session's messages."""
