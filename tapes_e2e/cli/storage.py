"""``tapes storage``: which provider and database are used, and switching or configuring them."""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Annotated, Any

import tomlkit
import typer

from tapes_e2e import account, context
from tapes_e2e.cli import auth, output
from tapes_e2e.client import ApiClient, Session
from tapes_e2e.config import PROVIDERS, Config, save_config, storage_table
from tapes_e2e.context import Settings, api_client, chosen_vault, logged_in
from tapes_e2e.errors import (
    ConfigError,
    InterruptedWorkError,
    RemoteError,
    ServerUnreachableError,
    TeamError,
)
from tapes_e2e.providers.local import LocalProvider
from tapes_e2e.remote_sync import vault_runner
from tapes_e2e.store.syncstate import SyncState, sync_lock
from tapes_e2e.sync.engine import Event, PulledPage, PushAcked
from tapes_e2e.sync.watch import DataVersion, describe, read_status, watch
from tapes_e2e.sync.worker import SyncWorker, run_sync
from tapes_e2e.teams.access import resolve_team
from tapes_e2e.teams.routing import team_sync_hooks

app = typer.Typer(
    help="Show and change where sessions are stored.", no_args_is_help=True, rich_markup_mode=None
)


def _settings(ctx: typer.Context) -> Settings:
    settings: Settings = ctx.obj
    return settings


@contextmanager
def _explain_a_team_left_behind(settings: Settings) -> Iterator[None]:
    """Turn the server's 404 for the team storage syncs into what happened: this account is
    no longer in that team (an admin removed it, or it left), and how to sync elsewhere."""
    try:
        yield
    except RemoteError as exc:
        team = settings.config.cloud.team_id
        if exc.status != 404 or not team:
            raise
        try:
            still = any(v.vault_id == team for v in logged_in(settings)[0].vaults())
        except RemoteError:
            raise exc from None
        if still:
            raise
        raise TeamError(
            f"you are no longer a member of team {team} (an owner or admin removed you, or you "
            "left); nothing was synced with it",
            hint="`tapes storage configure --no-team` syncs your personal vault again; what you "
            "downloaded stays on this machine",
        ) from None


@app.command("status")
def status(
    ctx: typer.Context,
    as_json: output.JsonFlag = False,
) -> None:
    """Show the provider, the database file (and why that one), and what it holds."""
    settings = _settings(ctx)
    path = settings.database.path
    report: dict[str, Any] = {
        "provider": settings.config.provider,
        "config_file": str(settings.config.path),
        "config_exists": settings.config.exists,
        "config_dir": str(settings.dotdir.path),
        "config_dir_reason": settings.dotdir.reason,
        "database": str(path),
        "database_reason": settings.database.reason,
        "database_exists": path.exists(),
    }
    session = account.load_session(settings.dotdir.path)
    if path.exists():
        with settings.store() as store:
            nodes, sessions, roots = store.counts()
            report |= {
                "database_bytes": path.stat().st_size,
                "journal_mode": store.journal_mode(),
                "nodes": nodes,
                "sessions": sessions,
                "roots": roots,
            }
            if session is not None:
                with _explain_a_team_left_behind(settings):
                    report["sync"] = _sync_report(settings, session, store)
    if settings.config.provider != "local":
        report["remote"] = settings.config.cloud.api_url
        report["team_id"] = settings.config.cloud.team_id
    watcher = read_status(settings.dotdir.path)
    if watcher is not None or settings.config.provider != "local":
        report["watch"] = None if watcher is None else watcher.summary()
    failing = "sync" in report and not report["sync"]["healthy"]
    if as_json:
        output.emit_json(report)
        if failing:
            raise typer.Exit(1)
        return
    output.stdout.print(f"Provider: {report['provider']}", markup=False)
    output.stdout.print(
        f"Config:   {report['config_file']} ({settings.dotdir.reason})", markup=False
    )
    if path.exists():
        output.stdout.print(
            f"Local:    {path} ({output.count(report['sessions'], 'session')}, "
            f"{output.count(report['nodes'], 'node')})",
            markup=False,
        )
    else:
        output.stdout.print(f"Local:    {path} (not created yet)", markup=False)
    output.stdout.print(f"          chosen because: {settings.database.reason}", markup=False)
    if "remote" in report:
        output.stdout.print(f"Remote:   {report['remote']}", markup=False)
    if "sync" in report:
        info = report["sync"]
        reach = "reachable" if info["server_reachable"] else "UNREACHABLE (working offline)"
        output.stdout.print(
            f"Sync:     {info['server']} {reach}; vault {info['vault']}: "
            f"{info['synced']:,} synced, {info['pending_push']:,} to push, "
            f"{info['pending_pull'] if info['pending_pull'] is not None else '?'} to pull",
            markup=False,
        )
        output.stdout.print(
            f"Last sync: {info['last_sync_at'] or 'never'} ({info['last_result'] or 'no result'})",
            markup=False,
        )
    if "watch" in report:
        output.stdout.print(f"Watch:    {describe(watcher)}", markup=False)
    if failing:
        raise typer.Exit(1)


def _sync_report(settings: Settings, session: Session, store: LocalProvider) -> dict[str, Any]:
    """Pending counts from the local bookkeeping, and the server's view when it answers."""
    vault = chosen_vault(settings.config, session)
    state = SyncState(store)
    stored = state.load(vault)
    pending_push = state.pending_push_count(vault)
    synced = state.remote_count(vault)
    info: dict[str, Any] = {
        "server": session.server,
        "vault": vault,
        "synced": synced,
        "pending_push": pending_push,
        "pending_pull": None,
        "last_sync_at": stored.last_sync_at,
        "last_result": stored.last_result,
        "server_reachable": False,
    }
    try:
        remote = api_client(settings, session.server).status(vault, after=stored.cursor)
    except ServerUnreachableError:
        pass
    else:
        info["server_reachable"] = True
        # what the server counts past the cursor, less our own nodes there (never pulled)
        info["pending_pull"] = max(remote.pending_pull - stored.own_nodes_ahead, 0)
    info["healthy"] = info["server_reachable"] and stored.last_result in (None, "ok")
    return info


def _require(config: Config, provider: str) -> None:
    missing = config.missing_for(provider)
    if missing:
        raise ConfigError(
            f"provider {provider} needs {', '.join(missing)}, which is not set",
            hint="set it first: tapes storage configure --api-url https://… "
            "(then log in with `tapes auth login`)",
        )


@app.command("set-provider")
def set_provider(
    ctx: typer.Context,
    provider: Annotated[str, typer.Argument(help="local, cloud or hybrid.")],
) -> None:
    """Choose where sessions are stored."""
    settings = _settings(ctx)
    if provider not in PROVIDERS:
        raise ConfigError(f"unknown provider {provider!r}: expected one of {', '.join(PROVIDERS)}")
    _require(settings.config, provider)

    def edit(doc: tomlkit.TOMLDocument) -> None:
        storage_table(doc)["provider"] = provider

    save_config(settings.config, edit)
    output.note(f"provider set to {provider} in {settings.config.path}")


PERSONAL = "personal"


def _team_id(settings: Settings, team: str | None) -> str | None:
    """``--team``: a team id as given, ``personal``, or a team's name looked up on the server
    (so a typo is refused before anything is written)."""
    if team is None or team == PERSONAL or team.startswith("t_"):
        return team
    api, _ = logged_in(settings, "looking up a team by name")
    return resolve_team(api, team)


@app.command("configure")
def configure(
    ctx: typer.Context,
    api_url: Annotated[str | None, typer.Option(help="Sync server URL.")] = None,
    api_key: Annotated[str | None, typer.Option(help="Team API key (tapes_…).")] = None,
    team: Annotated[
        str | None,
        typer.Option(help="Team to sync to: its id or name; 'personal' for your own vault."),
    ] = None,
    no_team: Annotated[
        bool, typer.Option("--no-team", help="Sync to your personal vault (as --team personal).")
    ] = False,
    auto_share: Annotated[
        bool | None, typer.Option("--auto-share/--no-auto-share", help="Share new sessions.")
    ] = None,
    sync_interval: Annotated[
        str | None, typer.Option(help='Background sync interval, e.g. "5m".')
    ] = None,
    sync_on_close: Annotated[
        bool | None, typer.Option("--sync-on-close/--no-sync-on-close", help="Sync on exit.")
    ] = None,
    check: Annotated[
        bool, typer.Option("--check/--no-check", help="Ask the server before saving its URL.")
    ] = True,
) -> None:
    """Set the [storage.cloud] settings. Values are checked before anything is written."""
    settings = _settings(ctx)
    if api_url is not None and check:
        # Refuse a URL that is not a reachable tapes server whose logins bind to this very URL.
        ApiClient(
            context.server_http(settings, api_url), api_url=api_url.rstrip("/")
        ).check_server()
    if no_team:
        team = PERSONAL
    values = {
        "api_url": api_url,
        "api_key": api_key,
        "team_id": _team_id(settings, team),
        "auto_share": auto_share,
        "sync_interval": sync_interval,
        "sync_on_close": sync_on_close,
    }
    chosen = {k: v for k, v in values.items() if v is not None}
    if not chosen:
        raise ConfigError(
            "nothing to configure", hint="pass at least one option; see tapes storage configure -h"
        )

    def edit(doc: tomlkit.TOMLDocument) -> None:
        cloud = storage_table(doc, "cloud")
        for key, value in chosen.items():
            if value == PERSONAL and key == "team_id":
                cloud.pop(key, None)
            else:
                cloud[key] = value

    updated = save_config(settings.config, edit)
    _require(updated, updated.provider)
    output.note(f"updated {', '.join(sorted(chosen))} in {settings.config.path}")


def _watch(settings: Settings, linked: context.Connection) -> None:
    """`tapes storage sync --watch`: sync until SIGTERM or Ctrl-C (see tapes_e2e.sync.watch)."""
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    cloud, path, vault = settings.config.cloud, settings.database.path, linked.vault
    with _explain_a_team_left_behind(settings), LocalProvider(path) as store:
        hooks = team_sync_hooks(
            linked.api, linked.identity, settings.dotdir.path, cloud, store=store, vault=vault
        )
        runner = vault_runner(
            store, linked.api, vault, linked.trust, sync_interval=cloud.sync_interval,
            on_integrity=output.error, hooks=hooks,
            lock=sync_lock(path, vault, "tapes storage sync --watch"),
        )  # fmt: skip
        worker = SyncWorker(runner, sync_on_close=cloud.sync_on_close)
        output.note(
            f"watching {path}: new nodes are pushed as they are written, and vault {vault} is "
            f"pulled every {cloud.sync_interval:g} s; SIGTERM or Ctrl-C stops"
        )
        finished = watch(
            worker, DataVersion(path), lambda: runner.state.pending_push_count(vault), stop,
            dotdir=settings.dotdir.path,
        )  # fmt: skip
        pending = runner.state.pending_push_count(vault)
    cut = "" if finished else "; the last round was cut short"
    output.note(
        f"stopped: pushed {runner.pushed:,}, pulled {runner.pulled:,} in {runner.rounds} "
        f"round(s){cut}; {pending:,} waiting to push (the next sync sends them)"
    )


@app.command("sync")
def sync(
    ctx: typer.Context,
    watch_: Annotated[
        bool,
        typer.Option(
            "--watch",
            help="Keep running: push new nodes within a second of their being written, pull "
            "every sync_interval, until SIGTERM or Ctrl-C.",
        ),
    ] = False,
    wait: Annotated[
        bool,
        typer.Option(
            "--wait",
            help="If another sync of this store and vault is running, wait for it to finish "
            "(then sync what is left) instead of exiting.",
        ),
    ] = False,
    as_json: output.JsonFlag = False,
) -> None:
    """Push local nodes to the server (sealed), then pull, verify and store what is new.

    One sync of a store and vault at a time: a second one says who holds it and exits 1, or
    waits with --wait. Ctrl-C keeps what was pushed and pulled; the next sync resumes."""
    settings = _settings(ctx)
    linked = context.connect(settings, prompt=auth.prompt_for_passphrase())
    if watch_:
        _watch(settings, linked)
        return
    lock = sync_lock(settings.database.path, linked.vault, "tapes storage sync")
    with lock.hold(wait=wait, waiting=lambda holder: output.note(f"waiting for {holder}")):
        report = _sync_once(settings, linked)
    if as_json:
        output.emit_json(report)
    else:
        _print_sync(report)
    if report["rejected"] or report["result"] != "ok":
        raise typer.Exit(1)


def _sync_once(settings: Settings, linked: context.Connection) -> dict[str, Any]:
    """One round of ``tapes storage sync`` (holding the lock), with a progress bar; its report.
    Ctrl-C ends it with one line saying what was kept (exit 130)."""
    api, identity, vault = linked.api, linked.identity, linked.vault
    rejected: list[str] = []
    with (
        _explain_a_team_left_behind(settings),
        LocalProvider(settings.database.path) as store,
        output.progress("syncing", None) as bar,
    ):
        hooks = team_sync_hooks(
            api, identity, settings.dotdir.path, settings.config.cloud, store=store, vault=vault
        )
        task = bar.task_ids[0]

        def show(event: Event) -> None:
            if isinstance(event, PushAcked):
                bar.update(task, advance=event.count, description="pushing")
            elif isinstance(event, PulledPage):
                bar.update(task, description=f"pulling: {event.count:,} in the last page")

        runner = vault_runner(
            store, api, vault, linked.trust, on_integrity=rejected.append, on_progress=show,
            hooks=hooks,
        )  # fmt: skip
        bar.update(task, total=runner.state.pending_push_count(vault) or None)
        try:
            result = run_sync(runner)
        except KeyboardInterrupt:
            raise InterruptedWorkError(
                f"interrupted: pushed {runner.pushed:,}, pulled {runner.pulled:,}, kept; "
                "the next `tapes storage sync` resumes from there"
            ) from None
        pending = runner.state.pending_push_count(vault)
    return {
        "vault": vault,
        "pushed": runner.pushed,
        "pulled": runner.pulled,
        "rejected": rejected,
        "pending_push": pending,
        "result": "unfinished" if result is None else result.result,
        "message": None if result is None else result.message,
        "notices": linked.trust.notices,
    }


def _print_sync(report: dict[str, Any]) -> None:
    for notice in report["notices"]:
        output.note(notice)
    for message in report["rejected"]:
        output.error(message)
    if report["result"] not in ("ok", "integrity"):
        output.error(
            f"sync failed: {report['result']}: {report['message']}",
            "the nodes stay recorded locally and are pushed on the next successful sync",
        )
    output.note(
        f"sync {report['result']}: pushed {report['pushed']:,}, pulled {report['pulled']:,}, "
        f"{len(report['rejected'])} rejected, {report['pending_push']:,} waiting to push"
        + (f" ({report['message']})" if report["message"] else "")
    )
