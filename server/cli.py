"""``tapes-server``: run the sync server and manage its database.

- ``tapes-server serve``: migrate, then serve with uvicorn and several worker processes;
- ``tapes-server db upgrade`` / ``db current``: Alembic migrations on either backend;
- ``tapes-server plan set HANDLE|TEAM TIER``: a user's or a team's plan tier;
- ``tapes-server retention [--dry-run]``: delete (or list) what the plans no longer keep.

Every setting is a flag whose default is its ``TAPES_SERVER_*`` variable (server/settings.py
holds the table; docs/server.md explains each). Settings are validated before anything starts;
bad input (a port out of range, an unknown tier or handle) is one line on stderr and a non-zero
exit, and changes nothing; an unreachable database or a port in use adds a hint.
"""

from __future__ import annotations

import logging
import os
import socket
import sys
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Annotated, Any

import typer
import uvicorn
from sqlalchemy import Engine
from sqlalchemy.engine import make_url
from sqlalchemy.exc import OperationalError, SQLAlchemyError
from sqlalchemy.orm import Session
from typer.core import TyperGroup
from uvicorn.supervisors import Multiprocess

from server.db.engine import READ_ONLY, make_engine
from server.db.migrate import current_revision, head_revision, upgrade
from server.errors import CommandError, SettingsError
from server.plans import TIERS, apply_retention, expiring, set_tier
from server.settings import OPTIONS, Settings, sqlite_path

__all__ = ["app", "main"]

VERSION = "0.1.0"
PROG = "tapes-server"


class StartError(Exception):
    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.message, self.hint = message, hint


class _Group(TyperGroup):
    """Every way in (the console script, typer's CliRunner) ends errors here: one line
    ``tapes-server: error: …`` (and a hint where there is one), a non-zero exit, no traceback."""

    def main(  # type: ignore[override]
        self, args: Sequence[str] | None = None, prog_name: str | None = None, **extra: Any
    ) -> Any:
        extra.pop("standalone_mode", None)
        try:
            code = super().main(
                args=args, prog_name=prog_name or PROG, standalone_mode=False, **extra
            )
        except typer.Exit as exc:
            sys.exit(exc.exit_code)
        except (typer.Abort, KeyboardInterrupt):
            _fail("interrupted", code=130)
        except typer.TyperException as exc:  # usage errors: an unknown option, a missing argument
            _fail(_usage(exc), code=getattr(exc, "exit_code", 2))
        except StartError as exc:
            _fail(exc.message, exc.hint)
        except (SettingsError, CommandError) as exc:
            _fail(str(exc))
        except SQLAlchemyError as exc:
            _fail(f"database: {type(exc).__name__}: {_first_line(getattr(exc, 'orig', exc))}")
        sys.exit(code if isinstance(code, int) else 0)


def _usage(exc: typer.TyperException) -> str:
    format_message = getattr(exc, "format_message", None)
    message = format_message() if callable(format_message) else str(exc)
    command = getattr(getattr(exc, "ctx", None), "command_path", None) or PROG
    return f"{message} (see {command} --help)"


def _fail(message: str, hint: str | None = None, *, code: int = 1) -> None:
    sys.stderr.write(f"{PROG}: error: {message}\n")
    if hint:
        sys.stderr.write(f"{PROG}: hint: {hint}\n")
    sys.exit(code)


app = typer.Typer(
    name=PROG,
    cls=_Group,
    help="The tapes-e2e sync server: stores client-encrypted envelopes, never content. "
    "Every setting is listed by 'tapes-server serve --help' (and in docs/server.md).",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
db_app = typer.Typer(help="Database migrations.", no_args_is_help=True)
plan_app = typer.Typer(
    help="Plan tiers (free, pro, enterprise); they limit only with --plans rfc.",
    no_args_is_help=True,
)
app.add_typer(db_app, name="db")
app.add_typer(plan_app, name="plan")

_OPTION = {option.field: option for option in OPTIONS}


def _setting(field: str) -> Any:
    """The typer option of one setting: its flag, its variable, its default as written."""
    option = _OPTION[field]
    return typer.Option(
        option.flag,
        envvar=option.env,
        show_envvar=True,
        show_default=False,
        metavar=option.metavar,
        help=f"{option.help}. Default: {option.default}.",
    )


DatabaseUrl = Annotated[str | None, _setting("database_url")]
Host = Annotated[str | None, _setting("host")]
Port = Annotated[str | None, _setting("port")]
Workers = Annotated[str | None, _setting("workers")]
PublicUrl = Annotated[str | None, _setting("public_url")]
AccessTtl = Annotated[str | None, _setting("access_ttl")]
RefreshTtl = Annotated[str | None, _setting("refresh_ttl")]
MaxBody = Annotated[str | None, _setting("max_body")]
AuthRate = Annotated[str | None, _setting("auth_rate_per_minute")]
TrustedProxies = Annotated[str | None, _setting("trusted_proxies")]
Plans = Annotated[str | None, _setting("plans")]
DbConnections = Annotated[str | None, _setting("db_connections")]
Pricing = Annotated[str | None, _setting("pricing")]
GithubClientId = Annotated[str | None, _setting("github_client_id")]
GithubClientSecret = Annotated[str | None, _setting("github_client_secret")]
GithubUrl = Annotated[str | None, _setting("github_url")]
GithubApiUrl = Annotated[str | None, _setting("github_api_url")]


def _settings(ctx: typer.Context) -> Settings:
    """The command's settings: its flags, else their variables (typer resolved which), else
    the defaults; an error names the flag or the variable the bad value came from."""
    labels = {
        name: _OPTION[name].flag
        if getattr(ctx.get_parameter_source(name), "name", None) == "COMMANDLINE"
        else _OPTION[name].env
        for name in ctx.params
        if name in _OPTION
    }
    values = {name: value for name, value in ctx.params.items() if name in _OPTION}
    return Settings.load(values, labels)


def _first_line(error: BaseException | None) -> str:
    text = str(error).strip().splitlines()
    return text[0] if text else type(error).__name__


def _unreachable(exc: OperationalError) -> StartError:
    return StartError(
        f"cannot reach the database: {_first_line(exc.orig)}",
        "check --database-url (TAPES_SERVER_DATABASE_URL) and that the database is running",
    )


def _migrate(settings: Settings) -> str | None:
    engine = make_engine(settings.database_url)
    try:
        upgrade(engine)
        return current_revision(engine)
    except OperationalError as exc:
        raise _unreachable(exc) from exc
    finally:
        engine.dispose()


def _existing(settings: Settings) -> Engine:
    """An engine on a database the server has already set up (nothing is created here)."""
    path = sqlite_path(settings.database_url)
    if path is not None and not path.is_file():
        raise StartError(
            f"no database at {path}",
            "check --database-url (TAPES_SERVER_DATABASE_URL), or start the server once",
        )
    engine = make_engine(settings.database_url)
    try:
        current, newest = current_revision(engine), head_revision(engine)
    except OperationalError as exc:
        engine.dispose()
        raise _unreachable(exc) from exc
    if current != newest:
        engine.dispose()
        raise StartError(
            f"the database is at schema {current or '(empty)'}, not {newest}",
            "run tapes-server db upgrade (serve does it too)",
        )
    return engine


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
            "choose another --port (TAPES_SERVER_PORT) or --host (TAPES_SERVER_HOST)",
        ) from exc
    sock.set_inheritable(True)
    return sock


def _where(settings: Settings) -> str:
    path = sqlite_path(settings.database_url)
    if path is not None:
        return f"SQLite file {path}"
    return make_url(settings.database_url).render_as_string(hide_password=True)


@app.command()
def serve(
    ctx: typer.Context,
    database_url: DatabaseUrl = None,
    host: Host = None,
    port: Port = None,
    workers: Workers = None,
    public_url: PublicUrl = None,
    access_ttl: AccessTtl = None,
    refresh_ttl: RefreshTtl = None,
    max_body: MaxBody = None,
    auth_rate_per_minute: AuthRate = None,
    trusted_proxies: TrustedProxies = None,
    plans: Plans = None,
    db_connections: DbConnections = None,
    pricing: Pricing = None,
    github_client_id: GithubClientId = None,
    github_client_secret: GithubClientSecret = None,
    github_url: GithubUrl = None,
    github_api_url: GithubApiUrl = None,
) -> None:
    """Migrate the database, then serve the API."""
    settings = _settings(ctx)
    revision = _migrate(settings)
    sock = _listen(settings.host, settings.port)
    # The workers import server.asgi, which reads the settings from the environment.
    os.environ.update(settings.to_env())
    config = uvicorn.Config(
        "server.asgi:app",
        host=settings.host,
        port=settings.port,
        workers=settings.workers,
        log_level="warning",
        access_log=False,
    )
    sys.stderr.write(
        f"{PROG}: database: {_where(settings)} (schema {revision})\n"
        f"{PROG}: serving on http://{settings.host}:{settings.port} "
        f"({settings.workers} workers, plans {settings.plans})\n"
    )
    if settings.workers > 1:
        Multiprocess(config, sockets=[sock]).run()
    else:
        uvicorn.Server(config).run(sockets=[sock])


@db_app.command("upgrade")
def db_upgrade(ctx: typer.Context, database_url: DatabaseUrl = None) -> None:
    """Apply every migration."""
    settings = _settings(ctx)
    revision = _migrate(settings)
    sys.stdout.write(f"database {_where(settings)} at revision {revision}\n")


@db_app.command("current")
def db_current(ctx: typer.Context, database_url: DatabaseUrl = None) -> None:
    """Show the database's revision and the newest one."""
    engine = make_engine(_settings(ctx).database_url)
    try:
        current = current_revision(engine)
    except OperationalError as exc:
        raise _unreachable(exc) from exc
    finally:
        engine.dispose()
    sys.stdout.write(f"current {current or '(empty)'}; newest {head_revision(engine)}\n")


@plan_app.command("set")
def plan_set(
    ctx: typer.Context,
    name: Annotated[
        str,
        typer.Argument(
            metavar="HANDLE|TEAM",
            help="a user's handle or a team's slug (or id); user:NAME or team:NAME if both match",
            show_default=False,
        ),
    ],
    tier: Annotated[
        str, typer.Argument(metavar="TIER", help="free, pro or enterprise", show_default=False)
    ],
    database_url: DatabaseUrl = None,
) -> None:
    """Set a user's or a team's plan tier."""
    if tier not in TIERS:  # before the database is opened: a typo changes nothing
        raise CommandError(f"unknown tier {tier!r}: choose one of {', '.join(TIERS)}")
    engine = _existing(_settings(ctx))
    try:
        with Session(engine) as db, db.begin():
            change = set_tier(db, name, tier, datetime.now(UTC))
    finally:
        engine.dispose()
    sys.stdout.write(f"plan: {change.kind} {change.name}: {change.old} -> {change.new}\n")


@app.command()
def retention(
    ctx: typer.Context,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Print what would be deleted; delete nothing.")
    ] = False,
    database_url: DatabaseUrl = None,
    plans: Plans = None,
) -> None:
    """Delete envelopes older than each vault's plan keeps (daily, e.g. from cron)."""
    settings = _settings(ctx)
    if settings.plans == "off":
        sys.stdout.write(
            "retention: plans are off (--plans / TAPES_SERVER_PLANS=off): nothing expires\n"
        )
        return
    engine = _existing(settings)
    now = datetime.now(UTC)
    try:
        if dry_run:  # a read-only transaction, rolled back
            with Session(engine.execution_options(**{READ_ONLY: True})) as db:
                found = expiring(db, now, settings.plans)
                total = sum(expiry.envelopes for expiry in found if not expiry.held)
        else:  # one transaction: the list is what is deleted
            with Session(engine) as db, db.begin():
                found = expiring(db, now, settings.plans)
                total = apply_retention(db, now, settings.plans)
    finally:
        engine.dispose()
    verb = "would delete" if dry_run else "deleted"
    for expiry in found:
        what = f"{expiry.envelopes} envelope(s) of {expiry.kind} vault {expiry.slug}"
        plan = f"{expiry.tier} plan: uploaded before {expiry.cutoff:%Y-%m-%d %H:%M} UTC"
        if expiry.held:
            sys.stdout.write(f"kept {what} ({plan}): on legal hold\n")
        else:
            sys.stdout.write(f"{verb} {what} ({plan})\n")
    tail = "; nothing deleted (dry run)" if dry_run else ""
    sys.stdout.write(f"retention: {verb} {total} expired envelope(s){tail}\n")


@app.command()
def version() -> None:
    """Print the version."""
    sys.stdout.write(f"{PROG} {VERSION}\n")


def main(argv: list[str] | None = None) -> None:
    logging.basicConfig(level=logging.WARNING)
    typer.main.get_command(app).main(args=sys.argv[1:] if argv is None else argv, prog_name=PROG)
