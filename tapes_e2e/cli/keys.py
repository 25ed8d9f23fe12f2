"""``tapes keys``: the identity key of this machine: show it, change its passphrase, export a
recovery kit, import a kit or key file on another machine, and keep it in the OS keyring.

The identity key is the only way to read what was synced: lose every copy and every session in
a vault is lost with it. A recovery kit is the key sealed under a passphrase (Argon2id at the
same floor as the key file), printable and typeable; with the kit and its passphrase a new
machine becomes this identity again (``tapes keys import``, then ``tapes auth login``).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer

import keymgmt
from tapes_e2e import identity as identities
from tapes_e2e.cli import output
from tapes_e2e.cli.auth import device_name, new_passphrase, prompt_for_passphrase, settings_of
from tapes_e2e.context import logged_in
from tapes_e2e.errors import ConfigError, ServerError
from tapes_e2e.protocol.teams import RekeyOut
from tapes_e2e.teams import rekey

__all__ = ["app"]

app = typer.Typer(
    help="Your identity key: show, passwd, export a recovery kit, import, rotate, remember, "
    "forget.",
    no_args_is_help=True,
    rich_markup_mode=None,
)

NEW_PASSPHRASE_ENV = "TAPES_NEW_PASSPHRASE"  # noqa: S105 - a variable's name, not a secret


def _key_path(ctx: typer.Context) -> Path:
    path = identities.identity_path(settings_of(ctx).dotdir.path)
    if not path.exists():
        raise ConfigError(
            f"no identity key at {path}",
            hint="`tapes auth login` creates one; `tapes keys import KIT` restores one",
        )
    return path


def _unlocked(ctx: typer.Context) -> keymgmt.Identity:
    return identities.unlock(settings_of(ctx).dotdir.path, prompt=prompt_for_passphrase())


@app.command("show")
def show(ctx: typer.Context, as_json: output.JsonFlag = False) -> None:
    """Print the fingerprint, where the key file is and how it is unlocked (no passphrase)."""
    path = _key_path(ctx)
    public = keymgmt.read_public_identity(path)
    remembered = keymgmt.os_keyring_holds(public.fingerprint)
    report = {
        "fingerprint": public.fingerprint,
        "key_file": str(path),
        "unlock": "OS keyring" if remembered else "passphrase",
        "os_keyring": remembered,
    }
    if as_json:
        output.emit_json(report)
        return
    output.stdout.print(f"fingerprint: {public.fingerprint}", markup=False)
    output.stdout.print(f"key file:    {path}", markup=False)
    how = "from the OS keyring (tapes keys forget to stop)" if remembered else "by passphrase"
    output.stdout.print(f"unlocked:    {how}", markup=False)


@app.command("passwd")
def passwd(ctx: typer.Context) -> None:
    """Seal the key file under a new passphrase (same key, same fingerprint)."""
    path = _key_path(ctx)
    identity = _unlocked(ctx)
    new = os.environ.get(NEW_PASSPHRASE_ENV) or new_passphrase(
        "New passphrase for your identity key", env=False
    )
    identities.check_passphrase(new)
    keymgmt.write_key_file(
        path,
        identity,
        new,
        params=identities.KDF,
        floor=identities.KDF_FLOOR,
        overwrite=True,
    )
    output.note(f"the key file {path} is sealed under the new passphrase")


@app.command("export")
def export(
    ctx: typer.Context,
    recovery_kit: Annotated[
        bool,
        typer.Option("--recovery-kit", help="Write a recovery kit: the key under a passphrase."),
    ] = False,
    paper_key: Annotated[
        bool,
        typer.Option(
            "--paper-key",
            help="Write a paper key: the key itself in base32 with a checksum, to "
            "keep where only you can reach it.",
        ),
    ] = False,
    out: Annotated[
        str | None,
        typer.Option(
            "--output", "-o", help="File to write (0600; never replaced), or - for stdout."
        ),
    ] = None,
) -> None:
    """Write a recovery kit (your key sealed under a passphrase) or a paper key (your key
    itself, for a safe), to restore your identity on another machine."""
    if recovery_kit == paper_key:
        raise typer.BadParameter("say --recovery-kit or --paper-key (one of them)")
    _key_path(ctx)
    identity = _unlocked(ctx)
    if paper_key:
        _write(out, keymgmt.export_paper_key(identity), identity.fingerprint, "paper-key")
        output.note(
            "the paper key IS your identity, unsealed: keep it where only you can reach it; "
            "`tapes keys import FILE` restores it"
        )
        return
    passphrase = os.environ.get(NEW_PASSPHRASE_ENV) or keymgmt.passphrase_from_env()
    if passphrase is None:
        passphrase = new_passphrase("Passphrase for the recovery kit", env=False)
    identities.check_passphrase(passphrase)
    kit = keymgmt.export_recovery_kit(
        identity, passphrase, params=identities.KDF, floor=identities.KDF_FLOOR
    )
    target = _write(out, kit, identity.fingerprint, "recovery-kit")
    if target is not None:
        output.note(
            f"wrote the recovery kit to {target} (0600). Print it or copy it offline, then "
            "delete the file; with it and its passphrase anyone becomes you"
        )


def _write(out: str | None, text: str, fingerprint: str, kind: str) -> Path | None:
    """``text`` to stdout (``-``) or a new 0600 file, never over an existing one."""
    if out == "-":
        output.stdout.print(text, markup=False, end="")
        return None
    target = Path(out) if out else Path.cwd() / f"tapes-{kind}-{fingerprint}.txt"
    try:
        fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raise ConfigError(
            f"{target} exists; a {kind.replace('-', ' ')} is never written over a file",
            hint="choose another file with -o",
        ) from None
    except OSError as exc:
        raise ConfigError(f"cannot write {target}: {exc.strerror}") from None
    with os.fdopen(fd, "w", encoding="utf-8") as file:
        file.write(text)
    return target


@app.command("import")
def import_(
    ctx: typer.Context,
    source: Annotated[
        Path, typer.Argument(help="A recovery kit, a paper key or an identity.key file.")
    ],
) -> None:
    """Make this machine's identity the one in a recovery kit, paper key or key file."""
    settings = settings_of(ctx)
    target = identities.identity_path(settings.dotdir.path)
    try:
        raw = source.read_bytes()
    except OSError as exc:
        raise ConfigError(f"cannot read {source}: {exc.strerror}") from None
    identity = identities.restore(raw, prompt=prompt_for_passphrase())
    if target.exists():
        present = keymgmt.read_public_identity(target)
        if present.fingerprint == identity.fingerprint:
            output.note(f"this machine already holds {identity.fingerprint}")
            return
        raise ConfigError(
            f"this machine already has another identity ({present.fingerprint}) in {target}",
            hint="use another --config-dir, or move that key file away first",
        )
    passphrase = keymgmt.passphrase_from_env() or new_passphrase(
        "Passphrase for the key file on this machine", env=False
    )
    identities.save(settings.dotdir.path, identity, passphrase)
    output.stdout.print(f"imported identity {identity.fingerprint}", markup=False)
    output.note(f"saved to {target}; `tapes auth login --server URL` logs this machine in")


@app.command("rotate")
def rotate(
    ctx: typer.Context,
    yes: Annotated[bool, typer.Option("--yes", help="Do not ask for confirmation.")] = False,
    device: Annotated[
        str | None,
        typer.Option(help="Name the new login in `tapes auth devices` (default: the hostname)."),
    ] = None,
) -> None:
    """Replace your identity key with a new one everywhere (a lost or stolen laptop): every
    vault records the change and starts a new key epoch, and every login and API key ends."""
    settings = settings_of(ctx)
    dotdir = settings.dotdir.path
    _key_path(ctx)
    api, session = logged_in(settings, "rotating your identity key")
    name = device_name(device)
    old = _unlocked(ctx)
    output.confirm(
        yes,
        "rotating your identity key",
        f"Replace {old.fingerprint} with a new key in all your vaults? Every login and API key "
        "of your account ends, and so do the sessions you shared",
    )

    def unlock_next(path: Path) -> keymgmt.Identity:
        passphrase = os.environ.get(NEW_PASSPHRASE_ENV) or keymgmt.passphrase_from_env()
        passphrase = passphrase or typer.prompt(
            "Passphrase of the new identity key (from the rotation that was interrupted)",
            hide_input=True,
        )
        return keymgmt.open_key_file_bytes(
            path.read_bytes(), passphrase, floor=identities.KDF_FLOOR
        )

    new, new_session = rekey.resume_or_new(api, dotdir, unlock_next, name)
    states: tuple[keymgmt.VerifiedTeamState, ...] = ()
    if new_session is None:
        if not rekey.next_path(dotdir).exists():
            passphrase = os.environ.get(NEW_PASSPHRASE_ENV) or keymgmt.passphrase_from_env()
            passphrase = passphrase or new_passphrase("Passphrase for the new identity key",
                                                      env=False)  # fmt: skip
            identities.check_passphrase(passphrase)
            keymgmt.write_key_file(
                rekey.next_path(dotdir), new, passphrase, params=identities.KDF,
                floor=identities.KDF_FLOOR,
            )  # fmt: skip
        rotation = rekey.rotate(api, session, old, new, dotdir)
        states = rotation.states
        _report(rotation.answer)
    retired = rekey.finish_locally(dotdir, old, new, states)
    output.stdout.print(f"your identity is now {new.fingerprint}", markup=False)
    output.note(f"the old key file is kept as {retired}; it no longer logs in")
    output.note(
        "a thief with the old key can still read what was sealed before this rotation (every "
        "earlier epoch) and nothing after it; export a recovery kit of the new key now: "
        "`tapes keys export --recovery-kit`"
    )
    if new_session is None:
        try:
            api.login(new, device=name)
        except ServerError as exc:
            output.note(f"log in again with `tapes auth login` ({exc.message})")


def _report(answer: RekeyOut) -> None:
    vaults = output.count(len(answer.vaults), "vault")
    output.note(
        f"recorded in {vaults}; ended {output.count(answer.logins_ended, 'login')} and "
        f"{output.count(answer.api_keys_revoked, 'API key')}"
    )
    if answer.shares_ended:
        output.note(
            f"{output.count(answer.shares_ended, 'shared session')} ended: share "
            "again with `tapes session share`"
        )
    if answer.join_requests_withdrawn:
        output.note(
            f"{output.count(answer.join_requests_withdrawn, 'pending join request')} "
            "withdrawn: ask for a new invite"
        )


@app.command("remember")
def remember(ctx: typer.Context) -> None:
    """Keep the unlocked key in the OS keyring, so later commands do not ask."""
    _key_path(ctx)
    identity = _unlocked(ctx)
    if not keymgmt.remember_in_os_keyring(identity):
        raise ConfigError(
            "no usable OS keyring on this machine",
            hint=f"set {keymgmt.PASSPHRASE_ENV} for automation instead",
        )
    output.note(f"{identity.fingerprint} is in the OS keyring; `tapes keys forget` removes it")


@app.command("forget")
def forget(ctx: typer.Context) -> None:
    """Remove the key from the OS keyring (the key file stays)."""
    public = keymgmt.read_public_identity(_key_path(ctx))
    removed = keymgmt.forget_in_os_keyring(public.fingerprint)
    output.note("removed from the OS keyring" if removed else "the OS keyring did not hold it")
