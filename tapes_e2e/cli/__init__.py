"""The ``tapes`` command line.

``main`` is the console script. It runs the typer app without typer's own exception display, so
that every failure ends here: a ``TapesError`` prints ``tapes: error: …`` and ``tapes: hint: …``
and exits 1, anything unexpected prints one line and exits 70, and only ``--debug`` shows a
traceback. No local variable is ever printed.
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path
from typing import Annotated

import typer

import keymgmt
from tapes_e2e import __version__
from tapes_e2e.cli import auth, keys, output, service, session, storage, team, usage, verify
from tapes_e2e.context import Settings
from tapes_e2e.errors import InterruptedWorkError, TapesError

__all__ = ["app", "main"]

EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_INTERNAL = 70
EXIT_INTERRUPTED = 130

app = typer.Typer(
    name="tapes",
    help="tapes-e2e: record, verify and (end-to-end encrypted) sync agent sessions.",
    no_args_is_help=True,
    rich_markup_mode=None,
    pretty_exceptions_enable=False,
    add_completion=True,
)
app.add_typer(auth.app, name="auth")
app.add_typer(keys.app, name="keys")
app.add_typer(session.app, name="session")
app.add_typer(storage.app, name="storage")
storage.app.add_typer(service.app, name="service")
app.add_typer(team.app, name="team")
app.command("verify")(verify.verify)
app.command("usage")(usage.usage)


class _Once(logging.Filter):
    """Lets each distinct warning through once per command. Errors are left to the command,
    whose own ``tapes: error:`` line says what failed (a logged error would say it twice)."""

    def __init__(self) -> None:
        super().__init__()
        self._seen: set[str] = set()

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno != logging.WARNING:
            return False
        message = record.getMessage()
        if message in self._seen:
            return False
        self._seen.add(message)
        return True


def configure_logging(*, debug: bool) -> None:
    """``--debug``: every log record, with its logger's name. Otherwise warnings only, each once,
    in the CLI's own voice (``tapes: warning: …``), never as ``WARNING:tapes_e2e.…``; logged
    errors are not repeated (the command reports its failure itself)."""
    handler = logging.StreamHandler(sys.stderr)
    if debug:
        handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    else:
        handler.setFormatter(logging.Formatter("tapes: warning: %(message)s"))
        handler.addFilter(_Once())
    logging.basicConfig(
        level=logging.DEBUG if debug else logging.WARNING, handlers=[handler], force=True
    )


def _print_version(value: bool) -> None:
    if value:
        output.stdout.print(f"tapes-e2e {__version__}", markup=False)
        raise typer.Exit


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
    _version: Annotated[
        bool,
        typer.Option(
            "--version", help="Print the version and exit.", is_eager=True, callback=_print_version
        ),
    ] = False,
) -> None:
    configure_logging(debug=debug)
    ctx.obj = Settings.resolve(config_dir=config_dir, db=db, debug=debug)


@app.command("version")
def version() -> None:
    """Print the version."""
    output.stdout.print(f"tapes-e2e {__version__}", markup=False)


GO_BIN = "TAPES_GO_BIN"
_GLOBAL_VALUES = frozenset({"--config-dir", "--db"})  # global options that take a value


_COMPLETION = frozenset({"--install-completion", "--show-completion"})


def _subcommand(args: list[str]) -> str | None:
    """The first argument that is neither a global option nor its value."""
    rest = iter(args)
    for arg in rest:
        if arg in _COMPLETION:  # ``--show-completion bash``: the shell is its value
            return None
        if arg in _GLOBAL_VALUES:
            next(rest, None)
        elif not arg.startswith("-"):
            return arg
    return None


def _is_ours(path: Path) -> bool:
    """Whether an executable is this program's console script (not Go tapes' binary)."""
    try:
        with path.open("rb") as file:
            return b"tapes_e2e" in file.read(4096)
    except OSError:
        return True  # unreadable: not something to hand a command to


def go_tapes(env: dict[str, str] | None = None) -> Path | None:
    """Go tapes' binary: ``$TAPES_GO_BIN``, else the first ``tapes`` on ``PATH`` not ours."""
    env = dict(os.environ) if env is None else env
    if env.get(GO_BIN):
        return Path(env[GO_BIN])
    for folder in env.get("PATH", "").split(os.pathsep):
        candidate = Path(folder or ".") / "tapes"
        if candidate.is_file() and os.access(candidate, os.X_OK) and not _is_ours(candidate):
            return candidate
    return None


def _hand_to_go_tapes(name: str, args: list[str]) -> None:
    """Run Go tapes with the same arguments (``tapes start``, ``serve``, ``deck``, …): replaces
    this process, so its exit status and terminal are Go tapes' own."""
    binary = go_tapes()
    if binary is None:
        output.error(
            f"'{name}' is not a tapes-e2e command, and Go tapes (which has 'start', 'serve', "
            "'deck', 'chat', …) was not found",
            f"install Go tapes, or set {GO_BIN} to its binary; `tapes --help` lists this "
            "program's commands",
        )
        sys.exit(EXIT_USAGE)
    try:
        os.execv(binary, [str(binary), *args])  # noqa: S606 - the user's own Go tapes
    except OSError as exc:
        output.error(f"cannot run Go tapes at {binary}: {exc.strerror}", f"check {GO_BIN}")
        sys.exit(EXIT_ERROR)


def main(argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else argv
    debug = "--debug" in args or "-d" in args
    command = typer.main.get_command(app)
    name = _subcommand(args)
    if name is not None and name not in getattr(command, "commands", {}):
        _hand_to_go_tapes(name, args)
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
    except InterruptedWorkError as exc:  # Ctrl-C in a command that says what it kept
        output.error(exc.message, exc.hint)
        sys.exit(EXIT_INTERRUPTED)
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
    if code == EXIT_INTERRUPTED:  # typer turns Ctrl-C in a command into this code, silently
        output.error("interrupted")
    sys.exit(code if isinstance(code, int) else 0)
