"""``tapes-server``: run the sync server and manage its database.

- ``tapes-server serve``: migrate, then serve with uvicorn and several worker processes;
- ``tapes-server db upgrade`` / ``db current``: Alembic migrations on either backend.

Settings come from ``TAPES_SERVER_*`` variables (see server/settings.py) and are validated before
anything starts; a bad URL, an unreachable database or a port in use is one clear line.
"""

from __future__ import annotations

import logging
import socket
import sys
from datetime import UTC, datetime

import typer
import uvicorn
from sqlalchemy.exc import OperationalError, SQLAlchemyError
from sqlalchemy.orm import Session
from uvicorn.supervisors import Multiprocess

from server.db.engine import make_engine
from server.db.migrate import current_revision, head_revision, upgrade
from server.errors import SettingsError
from server.plans import apply_retention
from server.settings import Settings

__all__ = ["app", "main"]

VERSION = "0.1.0"

app = typer.Typer(
    name="tapes-server",
    help="The tapes-e2e sync server: stores client-encrypted envelopes, never content.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
db_app = typer.Typer(help="Database migrations.", no_args_is_help=True)
app.add_typer(db_app, name="db")


class StartError(Exception):
    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.message, self.hint = message, hint


def _settings() -> Settings:
    try:
        return Settings.from_env()
    except SettingsError as exc:
        raise StartError(str(exc), "fix the TAPES_SERVER_* environment variable") from exc


def _first_line(error: BaseException | None) -> str:
    text = str(error).strip().splitlines()
    return text[0] if text else type(error).__name__


def _migrate(settings: Settings) -> str | None:
    engine = make_engine(settings.database_url)
    try:
        upgrade(engine)
        return current_revision(engine)
    except OperationalError as exc:
        raise StartError(
            f"cannot reach the database: {_first_line(exc.orig)}",
            "check TAPES_SERVER_DATABASE_URL and that the database server is running",
        ) from exc
    finally:
        engine.dispose()


def _listen(host: str, port: int) -> socket.socket:
    """The listening socket, made here rather than by uvicorn.

    It is created with ``IPPROTO_TCP`` as its protocol: asyncio turns on TCP_NODELAY for the
    connections of such a socket only, and uvicorn's own socket (protocol 0) leaves Nagle's
    algorithm on, which holds every small response body back for the client's delayed ACK
    (about 40 ms a request on a kept-alive connection).
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise StartError(
            f"cannot listen on {host}:{port}: {exc.strerror}",
            "choose another port with TAPES_SERVER_PORT",
        ) from exc
    sock.set_inheritable(True)
    return sock


@app.command()
def serve() -> None:
    """Migrate the database, then serve the API."""
    settings = _settings()
    revision = _migrate(settings)
    sock = _listen(settings.host, settings.port)
    config = uvicorn.Config(
        "server.asgi:app",
        host=settings.host,
        port=settings.port,
        workers=settings.workers,
        log_level="warning",
        access_log=False,
    )
    sys.stderr.write(
        f"tapes-server: serving on http://{settings.host}:{settings.port} "
        f"({settings.workers} workers, schema {revision})\n"
    )
    if settings.workers > 1:
        Multiprocess(config, sockets=[sock]).run()
    else:
        uvicorn.Server(config).run(sockets=[sock])


@db_app.command("upgrade")
def db_upgrade() -> None:
    """Apply every migration."""
    revision = _migrate(_settings())
    sys.stdout.write(f"database at revision {revision}\n")


@db_app.command("current")
def db_current() -> None:
    """Show the database's revision and the newest one."""
    settings = _settings()
    engine = make_engine(settings.database_url)
    try:
        current = current_revision(engine)
    except OperationalError as exc:
        raise StartError(f"cannot reach the database: {_first_line(exc.orig)}") from exc
    finally:
        engine.dispose()
    sys.stdout.write(f"current {current or '(empty)'}; newest {head_revision(engine)}\n")


@app.command()
def retention() -> None:
    """Delete envelopes older than each vault's plan keeps (run it daily, e.g. from cron).

    With ``TAPES_SERVER_PLANS=off`` (the default) nothing expires."""
    settings = _settings()
    engine = make_engine(settings.database_url)
    try:
        with Session(engine) as db, db.begin():
            deleted = apply_retention(db, datetime.now(UTC), settings.plans)
    finally:
        engine.dispose()
    sys.stdout.write(f"retention: deleted {deleted} expired envelope(s)\n")


@app.command()
def version() -> None:
    """Print the version."""
    sys.stdout.write(f"tapes-server {VERSION}\n")


def main(argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else argv
    logging.basicConfig(level=logging.WARNING)
    command = typer.main.get_command(app)
    try:
        code = command.main(args=args, prog_name="tapes-server", standalone_mode=False)
    except typer.Exit as exc:
        sys.exit(exc.exit_code)
    except typer.TyperException as exc:
        show = getattr(exc, "show", None)
        if callable(show):
            show()
        sys.exit(getattr(exc, "exit_code", 2))
    except StartError as exc:
        sys.stderr.write(f"tapes-server: error: {exc.message}\n")
        if exc.hint:
            sys.stderr.write(f"tapes-server: hint: {exc.hint}\n")
        sys.exit(1)
    except SQLAlchemyError as exc:
        sys.stderr.write(f"tapes-server: error: database: {type(exc).__name__}\n")
        sys.exit(1)
    sys.exit(code if isinstance(code, int) else 0)
