"""User-facing errors: one clear message, no traceback unless --debug."""
from __future__ import annotations


class SegkdError(Exception):
    """An error the user can act on (bad input, bad config, missing file).

    The CLI prints ``str(err)`` and exits with code 2; ``--debug`` shows the traceback.
    """


class DataError(SegkdError):
    """A problem with a dataset file: corrupt image, bad mask, empty split."""


class ConfigError(SegkdError):
    """A problem with a config key or value."""


class CheckpointError(SegkdError):
    """A checkpoint that cannot be loaded (wrong architecture, corrupt, unsafe)."""
