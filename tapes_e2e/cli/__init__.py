"""The ``tapes`` command line.

``main`` is the console script. It runs the typer app without typer's own exception display, so
that every failure ends here: a ``TapesError`` prints ``tapes: error: …`` and ``tapes: hint: …``
and exits 1, anything unexpected prints one line and exits 70, and only ``--debug`` shows a
traceback. No local variable is ever printed.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Annotated

import typer

import keymgmt
from tapes_e2e import __version__
from tapes_e2e.cli import auth, output, session, storage, team, usage_open, verify
from tapes_e2e.context import Settings
from tapes_e2e.errors import TapesError

__all__ = ["app", "main"]

EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_INTERNAL = 70
EXIT_INTERRUPTED = 130

app = typer.Typer(
    name="tapes",
    help="tapes-e2e: record, verify and (end-to-end encrypted) sync agent sessions.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
app.add_typer(auth.app, name="auth")
app.add_typer(session.app, name="session")
app.add_typer(storage.app, name="storage")
app.add_typer(team.app, name="team")
app.command("verify")(verify.verify)
app.command("usage")(usage_open.usage)


@app.callback()
def _global_options(
    ctx: typer.Context,
    config_dir: Annotated[
        Path | None,
        typer.Option("--config-dir", help="Use this .tapes directory.", show_default=False),
    ] = None,
    db: Annotated[
        Path | None, typer.Option("--db", help="Use this SQLite file.", show_default=False)
    ] = None,
    debug: Annotated[
        bool, typer.Option("--debug", "-d", help="Debug logging and tracebacks.")
    ] = False,
) -> None:
    logging.basicConfig(level=logging.DEBUG if debug else logging.WARNING)
    ctx.obj = Settings.resolve(config_dir=config_dir, db=db, debug=debug)


@app.command("version")
def version() -> None:
    """Print the version."""
    output.stdout.print(f"tapes-e2e {__version__}", markup=False)


def main(argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else argv
    debug = "--debug" in args or "-d" in args
    command = typer.main.get_command(app)
    try:
        # Without standalone mode click returns the code of a typer.Exit instead of exiting.
        code = command.main(args=args, prog_name="tapes", standalone_mode=False)
    except typer.Exit as exc:
        sys.exit(exc.exit_code)
    except (typer.Abort, KeyboardInterrupt):
        output.error("interrupted")
        sys.exit(EXIT_INTERRUPTED)
    except typer.TyperException as exc:  # usage errors: typer (its bundled click) explains them
        show = getattr(exc, "show", None)
        if callable(show):
            show()
        else:  # pragma: no cover - every usage error typer raises can show itself
            output.error(str(exc))
        sys.exit(getattr(exc, "exit_code", EXIT_USAGE))
    except (TapesError, keymgmt.KeymgmtError) as exc:
        if debug:
            raise
        output.error(exc.message, exc.hint)
        sys.exit(EXIT_ERROR)
    except Exception as exc:
        if debug:
            raise
        output.error(
            f"unexpected {type(exc).__name__}: {exc}",
            "run again with --debug for a traceback, and report it",
        )
        sys.exit(EXIT_INTERNAL)
    sys.exit(code if isinstance(code, int) else 0)
