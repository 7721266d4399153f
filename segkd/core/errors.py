"""User-facing errors: one clear message, no traceback unless --debug."""
from __future__ import annotations


class SegkdError(Exception):
    """An error the user can act on (bad input, bad config, missing file).

    The CLI prints ``str(err)`` and exits with code 2; ``--debug`` shows the traceback.
    """


def user_message(err: BaseException) -> str:
    """``str(err)`` without the traceback a DataLoader worker wraps around it.

    An error raised in a worker process is re-raised in the main one as the same class with
    the message ``Caught DataError in DataLoader worker process 0.\nOriginal Traceback ...
    segkd.core.errors.DataError: <message>``; the user only needs ``<message>``.
    """
    msg = str(err)
    if "Original Traceback" not in msg:
        return msg
    return msg.rsplit(f"{type(err).__name__}: ", 1)[-1].strip()


class DataError(SegkdError):
    """A problem with a dataset file: corrupt image, bad mask, empty split."""


class ConfigError(SegkdError):
    """A problem with a config key or value."""


class NonFiniteLoss(SegkdError):
    """Training produced NaN/Inf; the message names the step and the term(s)."""


class CheckpointError(SegkdError):
    """A checkpoint that cannot be loaded (wrong architecture, corrupt, unsafe)."""
