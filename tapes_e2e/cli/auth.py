"""``tapes auth``: log in to a sync server with the identity key, see the login, log out."""

from __future__ import annotations

import re
import socket
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import msgspec
import tomlkit
import typer

import keymgmt
from tapes_e2e import account
from tapes_e2e.cli import output
from tapes_e2e.client import ApiClient
from tapes_e2e.config import save_config, storage_table
from tapes_e2e.context import Settings, api_client, logged_in
from tapes_e2e.errors import AuthError, ConfigError, RemoteError, ServerError, TapesError
from tapes_e2e.identity import create_identity, identity_path, restore, save, unlock
from tapes_e2e.protocol import GITHUB_LOGIN
from tapes_e2e.protocol.text import is_name

app = typer.Typer(
    help="Log in to a sync server, show the login, log out.",
    no_args_is_help=True,
    rich_markup_mode=None,
)


def settings_of(ctx: typer.Context) -> Settings:
    settings: Settings = ctx.obj
    return settings


def _interactive() -> bool:
    return sys.stdin is not None and sys.stdin.isatty()


def new_passphrase(
    question: str = "New passphrase for your identity key", *, env: bool = True
) -> str:
    """A new passphrase: ``TAPES_PASSPHRASE`` (with ``env``), else typed twice at a terminal."""
    from_env = keymgmt.passphrase_from_env() if env else None
    if from_env is not None:
        return from_env
    if not _interactive():
        raise keymgmt.UnlockError(
            "a new passphrase is needed and there is no terminal to type it in",
            hint=f"set {keymgmt.PASSPHRASE_ENV} (and TAPES_NEW_PASSPHRASE for a second one), "
            "or run the command in a terminal",
        )
    first = typer.prompt(question, hide_input=True)
    if typer.prompt("Repeat it", hide_input=True) != first:
        raise keymgmt.UnlockError("the two passphrases differ; nothing was changed")
    return str(first)


def prompt_for_passphrase() -> Callable[[], str] | None:
    if not _interactive():
        return None
    return lambda: str(typer.prompt("Passphrase for your identity key", hide_input=True))


def _first_identity(dotdir: Path) -> keymgmt.Identity:
    """No key on this machine: at a terminal, ask whether to create one or bring one (a
    recovery kit or key file); otherwise create one. Says which, and warns to export a kit."""
    if _interactive():
        answer = typer.prompt(
            "No identity key on this machine. Create a new identity, or import one from a "
            "recovery kit or key file? [create/import]",
            default="create",
        )
        if str(answer).strip().lower().startswith("i"):
            source = Path(str(typer.prompt("Path of the recovery kit or key file")))
            try:
                raw = source.read_bytes()
            except OSError as exc:
                raise ConfigError(f"cannot read {source}: {exc.strerror}") from None
            identity = restore(raw, prompt=prompt_for_passphrase())
            save(dotdir, identity, new_passphrase("Passphrase for the key file on this machine"))
            output.note(f"imported identity {identity.fingerprint} into {identity_path(dotdir)}")
            return identity
    identity = create_identity(dotdir, new_passphrase())
    output.note(f"created a new identity in {identity_path(dotdir)}")
    output.note(
        "warning: this key is the only way to read your synced sessions; "
        "run `tapes keys export --recovery-kit` and keep the kit offline"
    )
    return identity


@app.command("login")
def login(
    ctx: typer.Context,
    server: Annotated[str | None, typer.Option(help="Sync server URL (saved to config).")] = None,
    handle: Annotated[
        str | None, typer.Option(help="Register a new account with this handle.")
    ] = None,
    device: Annotated[
        str | None,
        typer.Option(help="Name this login in `tapes auth devices` (default: the hostname)."),
    ] = None,
    github: Annotated[
        bool,
        typer.Option(
            "--github", help="Then bind your GitHub login to the account (GitHub's device flow)."
        ),
    ] = False,
) -> None:
    """Create or unlock your identity, log in (registering with --handle), set up your vault."""
    settings = settings_of(ctx)
    dotdir = settings.dotdir.path
    name = device_name(device)  # before anything is created
    api_url = server or settings.config.cloud.api_url
    if not api_url:
        raise ConfigError(
            "no sync server configured",
            hint="pass --server https://… or run `tapes storage configure --api-url …`",
        )
    if identity_path(dotdir).exists():
        identity = unlock(dotdir, prompt=prompt_for_passphrase())
    else:
        identity = _first_identity(dotdir)
    api = api_client(settings, api_url)
    session = api.login(identity, handle=handle, device=name)
    trust = account.trust_for(dotdir, identity)
    vault = account.ensure_personal_vault(api, session, trust)
    if server and server.rstrip("/") != (settings.config.cloud.api_url or ""):

        def edit(doc: tomlkit.TOMLDocument) -> None:
            storage_table(doc, "cloud")["api_url"] = server.rstrip("/")

        save_config(settings.config, edit)
    output.stdout.print(f"logged in to {api_url} as {session.handle}", markup=False)
    output.stdout.print(f"fingerprint:    {identity.fingerprint}", markup=False)
    output.stdout.print(
        f"personal vault: {vault.vault} (safety number {keymgmt.safety_number(vault.state)})",
        markup=False,
    )
    if github:
        bind_github(api)


def _printable(text: str, limit: int = 200) -> str:
    """A string from the server as one harmless line (no escape sequences, bounded)."""
    return "".join(ch for ch in text if ch.isprintable())[:limit]


sleep = time.sleep  # the wait between polls (tests move it on at once)


def bind_github(api: ApiClient) -> None:
    """GitHub's device flow through the server: show the code, poll until it is approved,
    declined or expired. GitHub vouches for the login only; the identity key stays the login."""
    try:
        _device_flow(api)
    except RemoteError as exc:
        hint = _GITHUB_HINTS.get(exc.status, exc.hint)
        raise AuthError(f"GitHub binding: {_printable(exc.detail)}", hint=hint) from None


_GITHUB_HINTS = {
    404: "a server without a GitHub app says so: its administrator sets "
    "TAPES_SERVER_GITHUB_CLIENT_ID and _SECRET; otherwise run it again",
    403: "run `tapes auth login --github` again and approve the code at GitHub",
    410: "run `tapes auth login --github` again, and enter the code within its time",
    409: "log in to that GitHub account's tapes account instead, or use another GitHub login",
    502: "GitHub or the way to it failed; try again later",
}


def _device_flow(api: ApiClient) -> None:
    started = api.github_start()
    output.note(
        f"open {_printable(started.verification_uri)} and enter the code "
        f"{_printable(started.user_code, 20)} (it expires in {started.expires_in // 60} min)"
    )
    deadline = time.monotonic() + started.expires_in
    interval = started.interval
    while time.monotonic() < deadline:
        sleep(min(max(interval, 1), 60))
        try:
            result = api.github_poll(started.bind_id)
        except RemoteError as exc:
            if exc.status != 429:  # others logging in from this address: wait, ask again
                raise
            interval = max(interval, 20)
            continue
        if result.status == "bound":
            output.stdout.print(
                f"bound to GitHub user @{_printable(result.github_login or '', 40)}", markup=False
            )
            return
        interval = result.interval
    raise AuthError("the GitHub code expired before it was approved", hint="run it again")


def device_name(given: str | None) -> str:
    """The name this login goes by: ``--device``, else the hostname; printable, 64 characters."""
    name = given if given is not None else socket.gethostname()
    clean = "".join(ch for ch in name if ch.isprintable()).strip()[:64]
    if given is not None and clean != given:
        raise typer.BadParameter(
            f"{given!r} is not a printable name of 1 to 64 characters", param_hint="--device"
        )
    return clean or "unnamed device"


@app.command("status")
def status(
    ctx: typer.Context,
    as_json: output.JsonFlag = False,
) -> None:
    """Show the saved login and whether the server accepts it."""
    settings = settings_of(ctx)
    session = account.load_session(settings.dotdir.path)
    report: dict[str, Any] = {"logged_in": session is not None}
    if session is not None:
        report |= {
            "server": session.server,
            "handle": session.handle,
            "fingerprint": session.fingerprint,
            "personal_vault": session.personal_vault,
        }
        try:
            me = api_client(settings, session.server).me()
            report["server_accepts_login"] = True
            report["github_login"] = me.github_login
        except TapesError as exc:  # the status reports the failure as a fact
            report["server_accepts_login"] = False
            report["problem"] = exc.message
    if as_json:
        output.emit_json(report)
    elif session is None:
        output.stdout.print("not logged in (run `tapes auth login`)", markup=False)
    else:
        state = (
            "accepted" if report["server_accepts_login"] else f"NOT accepted: {report['problem']}"
        )
        output.stdout.print(f"logged in to {session.server} as {session.handle}", markup=False)
        output.stdout.print(f"fingerprint:    {session.fingerprint}", markup=False)
        output.stdout.print(f"personal vault: {session.personal_vault}", markup=False)
        output.stdout.print(f"login:          {state}", markup=False)
        if report.get("github_login"):
            output.stdout.print(
                f"GitHub:         @{_printable(report['github_login'], 40)} (a label; the key "
                "is the login)",
                markup=False,
            )
    if session is None or not report["server_accepts_login"]:
        raise typer.Exit(1)


@app.command("whois")
def whois(
    ctx: typer.Context,
    github: Annotated[
        str,
        typer.Option(
            "--github",
            metavar="LOGIN",
            help="A GitHub login a teammate bound with `tapes auth login --github`.",
        ),
    ],
    as_json: output.JsonFlag = False,
) -> None:
    """The account here bound to a GitHub login: its handle and key fingerprint."""
    login = github.removeprefix("gh:").removeprefix("@")
    if not re.fullmatch(GITHUB_LOGIN, login):
        raise typer.BadParameter(f"{github!r} is not a GitHub login", param_hint="--github")
    found = logged_in(settings_of(ctx), "finding a teammate")[0].user_by_github(login)
    if as_json:
        output.emit_json(msgspec.to_builtins(found))
        return
    output.stdout.print(
        f"GitHub user @{found.github_login} is {found.handle} here, fingerprint "
        f"{found.fingerprint}", markup=False,
    )  # fmt: skip
    output.note(
        "GitHub vouched for the login, the server pairs it with that key: compare the "
        "fingerprint with its owner before you trust it"
    )


@app.command("logout")
def logout(ctx: typer.Context) -> None:
    """End the login on the server and forget it on this machine (the identity key stays)."""
    settings = settings_of(ctx)
    session = account.load_session(settings.dotdir.path)
    if session is None:
        output.note("not logged in")
        return
    try:
        api_client(settings, session.server).logout()
        ended = "the server ended it"
    except ServerError as exc:
        ended = f"the server could not be told ({exc.message}); it expires by itself"
    account.forget_session(settings.dotdir.path)
    output.note(f"logged out: {ended}; the saved login is deleted; your identity key is kept")


devices_app = typer.Typer(
    help="Your logins (devices): list them, or end one at once with `revoke ID`.",
    invoke_without_command=True,
    rich_markup_mode=None,
)
app.add_typer(devices_app, name="devices")


@devices_app.callback()
def devices(ctx: typer.Context, as_json: output.JsonFlag = False) -> None:
    """List your logins: name, last seen and from where; `*` marks this one."""
    if ctx.invoked_subcommand is not None:
        return
    found = logged_in(settings_of(ctx))[0].devices()
    if as_json:
        output.emit_json([msgspec.to_builtins(d) for d in found])
        return
    output.table(
        ("", "DEVICE ID", "NAME", "LAST SEEN", "FROM", "SINCE"),
        [
            ("*" if d.current else "", d.device_id, d.name, d.last_seen_at[:16].replace("T", " "),
             d.address, d.created_at[:10])
            for d in found
        ],
    )  # fmt: skip


@devices_app.command("revoke")
def revoke_device(
    ctx: typer.Context,
    device_id: Annotated[str, typer.Argument(help="The id from `tapes auth devices`.")],
) -> None:
    """End one login at once: its tokens stop working on its next request (a stolen laptop)."""
    settings = settings_of(ctx)
    api = logged_in(settings)[0]
    current = any(d.current and d.device_id == device_id for d in api.devices())
    api.revoke_device(device_id)
    if current:
        account.forget_session(settings.dotdir.path)
        output.note(f"revoked {device_id}, this machine's login: log in again to continue")
    else:
        output.note(f"revoked {device_id}: that login ends with its next request")


api_keys = typer.Typer(
    help="Team-scoped API keys (tapes_…) for automation.",
    no_args_is_help=True,
    rich_markup_mode=None,
)
app.add_typer(api_keys, name="api-key")


@api_keys.command("create")
def create_key(
    ctx: typer.Context,
    permission: Annotated[
        list[str], typer.Option("--permission", "-p", help="push, pull, read-usage or admin.")
    ],
    vault: Annotated[
        str | None, typer.Option(help="Vault or team id (default: your personal vault).")
    ] = None,
    name: Annotated[str, typer.Option(help="A label to recognise the key by.")] = "",
    as_json: output.JsonFlag = False,
) -> None:
    """Create a key for one vault; it is shown once and stored only hashed on the server."""
    if not is_name(name, 0, 100):
        raise TapesError(
            "a key's name is one line of up to 100 characters, with no control characters"
        )
    settings = settings_of(ctx)
    api, _ = logged_in(settings)
    session = api.session
    target = vault or (session.personal_vault if session else "")
    created = api.create_api_key(target, permission, name)
    if as_json:
        output.emit_json(msgspec.to_builtins(created))
        return
    output.stdout.print(created.api_key, markup=False)
    info = created.info
    output.note(
        f"key {info.key_id} for {info.vault} ({', '.join(info.permissions)}) — shown once: "
        "put it in config as storage.cloud.api_key or a CI secret"
    )


@api_keys.command("list")
def list_keys(
    ctx: typer.Context,
    as_json: output.JsonFlag = False,
) -> None:
    """Keys you created, with their scope and last use (never the keys themselves)."""
    keys = logged_in(settings_of(ctx))[0].list_api_keys()
    if as_json:
        output.emit_json([msgspec.to_builtins(k) for k in keys])
        return
    output.table(
        ("KEY ID", "VAULT", "PERMISSIONS", "NAME", "LAST USED", "REVOKED"),
        [
            (k.key_id, k.vault, ",".join(k.permissions), k.name, k.last_used_at or "never",
             "yes" if k.revoked else "no")
            for k in keys
        ],
    )  # fmt: skip


@api_keys.command("revoke")
def revoke_key(
    ctx: typer.Context,
    key_id: Annotated[str, typer.Argument(help="The key id from `tapes auth api-key list`.")],
) -> None:
    """Revoke a key at once."""
    logged_in(settings_of(ctx))[0].revoke_api_key(key_id)
    output.note(f"revoked {key_id}")
