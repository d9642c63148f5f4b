"""Every user-facing failure of taskrank is a :class:`TaskrankError` (or a subclass).

The CLI turns these into a one-line message and exit code 2; anything else is a bug.
"""

from __future__ import annotations


class TaskrankError(Exception):
    """Base class of all errors taskrank reports to its users."""


class CheckpointError(TaskrankError):
    """A checkpoint cannot be found, read or written (missing file, corrupt shard, unknown hub id)."""


class MergeError(TaskrankError):
    """Task arithmetic cannot be applied (shape mismatch, bad selection, non-finite result)."""


class ConfigError(TaskrankError):
    """A configuration value, option or experiment file is invalid."""


class DataError(TaskrankError):
    """A dataset, run or qrels file is malformed or inconsistent."""


class ModelError(TaskrankError):
    """A model cannot be used as asked (wrong family, missing token, unavailable device)."""


__all__ = [
    "CheckpointError",
    "ConfigError",
    "DataError",
    "MergeError",
    "ModelError",
    "TaskrankError",
]
