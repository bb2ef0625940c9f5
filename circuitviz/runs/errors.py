"""Errors raised by the run store. Each message names the file or id at fault and what to do."""

from __future__ import annotations


class RunStoreError(Exception):
    """A run cannot be created, opened or written (bad directory, bad id, already exists)."""


class RunNotFound(RunStoreError, LookupError):
    """No run with this id exists under any of the store's roots."""


class RunCorrupt(RunStoreError):
    """A run's files exist but cannot be read: not SQLite, missing tables, wrong schema, bad blob."""
