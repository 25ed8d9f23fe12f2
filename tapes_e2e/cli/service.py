"""``tapes storage service``: install, remove and inspect the user service that runs
``tapes storage sync --watch`` (a systemd user unit on Linux, a launchd agent on macOS)."""

from __future__ import annotations

from typing import Annotated, Literal

import typer

import keymgmt
from tapes_e2e.cli import output
from tapes_e2e.context import Settings
from tapes_e2e.errors import ConfigError
from tapes_e2e.identity import identity_path
from tapes_e2e.service import Service, service_for
from tapes_e2e.sync.watch import describe, read_status

app = typer.Typer(
    help="Run the sync in the background as a user service (systemd or launchd).",
    no_args_is_help=True,
    rich_markup_mode=None,
)

KindOption = Annotated[
    Literal["systemd", "launchd"] | None,
    typer.Option("--kind", help="systemd or launchd (default: this system's)."),
]


def _service(ctx: typer.Context, kind: Literal["systemd", "launchd"] | None) -> Service:
    settings: Settings = ctx.obj
    return service_for(settings.dotdir.path, kind=kind)


@app.command("install")
def install(
    ctx: typer.Context,
    kind: KindOption = None,
    enable: Annotated[
        bool, typer.Option("--enable/--no-enable", help="Enable and start it now.")
    ] = True,
) -> None:
    """Write the service file and (by default) enable and start it."""
    settings: Settings = ctx.obj
    if settings.config.provider == "local":
        raise ConfigError("the provider is local: there is nothing to sync",
                          hint="`tapes storage set-provider hybrid` first")  # fmt: skip
    key = identity_path(settings.dotdir.path)
    if not key.exists():
        raise ConfigError("no identity here yet", hint="log in first with `tapes auth login`")
    fingerprint = keymgmt.read_public_identity(key).fingerprint
    if not keymgmt.os_keyring_holds(fingerprint):
        raise ConfigError(
            "a service cannot type your passphrase, and the OS keyring does not hold your key",
            hint="run `tapes keys remember` first (the service unlocks the key from the keyring)",
        )
    service = _service(ctx, kind)
    service.write()
    output.stdout.print(f"wrote {service.path}", markup=False)
    if not enable:
        return
    problem = service.run(service.enable_commands())
    if problem is not None:
        output.note(problem)
        return
    output.stdout.print(f"enabled and started ({service.kind})", markup=False)


@app.command("uninstall")
def uninstall(ctx: typer.Context, kind: KindOption = None) -> None:
    """Stop and disable the service and remove its file."""
    service = _service(ctx, kind)
    if not service.path.exists():
        output.note(f"no service file at {service.path}: nothing to remove")
        return
    problem = service.run(service.disable_commands())
    if problem is not None:
        output.note(problem)
    service.path.unlink()
    output.stdout.print(f"removed {service.path}", markup=False)


@app.command("status")
def status(ctx: typer.Context, kind: KindOption = None, as_json: output.JsonFlag = False) -> None:
    """Whether the service is installed and running, and its last sync."""
    settings: Settings = ctx.obj
    service = _service(ctx, kind)
    watcher = read_status(settings.dotdir.path)
    seen = watcher.summary() if watcher else {}
    report = {
        "kind": service.kind,
        "file": str(service.path),
        "installed": service.path.exists(),
        "manager_state": service.state() if service.path.exists() else None,
        "watching": bool(seen.get("running")),
        "last_round_at": seen.get("last_round_at"),
        "last_result": seen.get("last_result"),
    }
    if as_json:
        output.emit_json(report)
        return
    installed = "installed" if report["installed"] else "not installed"
    state = f", {report['manager_state']}" if report["manager_state"] else ""
    output.stdout.print(f"Service: {service.kind} {installed}{state} ({service.path})",
                        markup=False)  # fmt: skip
    output.stdout.print(f"Watch:   {describe(watcher)}", markup=False)
