"""The ``segkd`` command line: parse, build, run. No logic of its own.

``base`` holds the app, the root flags (``--quiet``, ``--debug``), the console and the argument
helpers; each other module adds one group of commands with its ``register(app)``, called here in
the order ``segkd --help`` lists them. ``main`` turns errors into one line and an exit code.
"""
from __future__ import annotations

import sys

import typer

from segkd.cli import cheap, compress, data, export, info, study, train
from segkd.cli.base import Interrupted, app, flags
from segkd.core.console import errors as err
from segkd.core.errors import SegkdError, user_message

__all__ = ["app", "main"]

for _group in (compress, train, info, export, data, study, cheap):
    _group.register(app)


def main() -> None:
    """Run the app; a SegkdError is one red ``error:`` line and exit code 2 (a traceback with
    ``--debug``), Ctrl-C exits 130, a usage error prints click's message and its code."""
    debug = "--debug" in sys.argv
    try:
        rc = app(standalone_mode=False)
        sys.exit(rc if isinstance(rc, int) else 0)
    except SegkdError as e:
        if debug:
            raise
        from rich.markup import escape  # a message may hold "[...]" (lists, globs)

        err.print(f"[bold red]error:[/bold red] {escape(user_message(e))}", highlight=False)
        sys.exit(2)
    except (KeyboardInterrupt, Interrupted):
        err.print("interrupted", highlight=False)
        sys.exit(130)
    except (typer.Abort, typer.Exit) as e:
        sys.exit(getattr(e, "exit_code", 1))
    except Exception as e:  # usage errors (click's, or typer's vendored copy of click)
        if hasattr(e, "show") and hasattr(e, "exit_code") and not flags.debug:
            e.show()
            sys.exit(e.exit_code)
        raise
