"""``tapes team``: create teams, invite and approve members, remove them, see the verified roster.

What ``show`` prints comes from the team's signed chain as this client verified it (members
are named by key fingerprint); ``list`` is the server's list of teams and roles. Invite codes
carry a one-time secret: they are printed once, to be passed out of band, and kept in
``teams.json`` (mode 0600) until used.
"""

from __future__ import annotations

import csv
import sys
from datetime import UTC, datetime
from typing import Annotated, Literal, cast

import tomlkit
import typer

import keymgmt
from tapes_e2e.cli import auth, output
from tapes_e2e.client import ApiClient
from tapes_e2e.config import parse_duration, save_config, storage_table
from tapes_e2e.context import Settings, logged_in
from tapes_e2e.errors import InterruptedWorkError, RemoteError, TapesError, TeamError
from tapes_e2e.identity import unlock
from tapes_e2e.protocol.teams import MemberOut
from tapes_e2e.protocol.text import is_name
from tapes_e2e.protocol.usage import spreadsheet_cell
from tapes_e2e.teams import audit, flows, reencrypt
from tapes_e2e.teams.access import resolve_team, verify_team

__all__ = ["app", "connect", "seconds"]

app = typer.Typer(
    help="Create teams, invite and approve members, remove them.", no_args_is_help=True
)

MAX_INVITE_DAYS = 30


def _settings(ctx: typer.Context) -> Settings:
    settings: Settings = ctx.obj
    return settings


def connect(settings: Settings) -> tuple[ApiClient, keymgmt.Identity]:
    """The logged-in client and the unlocked identity; a clear error when not logged in."""
    api, _ = logged_in(settings)
    return api, unlock(settings.dotdir.path, prompt=auth.prompt_for_passphrase())


def seconds(text: str, option: str = "--expires-in") -> int:
    """``7d``, ``24h``, ``90m`` or a Go duration, in whole seconds (more than zero)."""
    try:
        value = int(text[:-1]) * 86400 if text.endswith("d") else int(parse_duration(text))
    except ValueError:
        value = 0
    if value <= 0:
        raise TeamError(f"{option} {text!r} is not a duration", hint="write it like 7d, 24h or 30m")
    return value


@app.command("create")
def create(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="The team's name.")],
    metadata: Annotated[
        str, typer.Option(help="Clear metadata the server sees: none, coarse or full.")
    ] = "coarse",
    content: Annotated[
        str, typer.Option(help="encrypted, or omit (metadata only: no content leaves).")
    ] = "encrypted",
    as_json: output.JsonFlag = False,
) -> None:
    """Create a team owned by you: its signed chain and first keyring, made on this machine."""
    if metadata not in ("none", "coarse", "full"):
        raise TeamError(f"--metadata {metadata!r}: expected none, coarse or full")
    if content not in ("encrypted", "omit"):
        raise TeamError(f"--content {content!r}: expected encrypted or omit")
    if not name.strip() or not is_name(name, 1, 200):
        raise TapesError(
            "a team name is one line of 1 to 200 characters, with no control characters"
        )
    api, identity = connect(_settings(ctx))
    created = flows.create_team(
        api, identity, _settings(ctx).dotdir.path, name.strip(),
        metadata_policy=cast(Literal["none", "coarse", "full"], metadata),
        content_policy=cast(Literal["encrypted", "omit"], content),
    )  # fmt: skip
    if as_json:
        output.emit_json({"team_id": created.team_id, "name": created.name,
                          "metadata_policy": metadata, "content_policy": content})  # fmt: skip
        return
    output.stdout.print(f"created team {created.name} ({created.team_id})", markup=False)
    output.note(
        f"policy: metadata {metadata}, content {content}; invite members with "
        f"`tapes team invite {created.team_id}`; sync into it with "
        f"`tapes storage configure --team {created.team_id}`"
    )


@app.command("list")
def list_teams(ctx: typer.Context, as_json: output.JsonFlag = False) -> None:
    """Your teams, with your role in each."""
    settings = _settings(ctx)
    api, _ = logged_in(settings)
    teams = [v for v in api.vaults() if v.kind == "team"]
    configured = settings.config.cloud.team_id
    rows = [
        {"team_id": v.vault_id, "name": v.name, "role": v.role, "tier": v.tier,
         "nodes": v.node_count, "sync_target": v.vault_id == configured}
        for v in teams
    ]  # fmt: skip
    if as_json:
        output.emit_json(rows)
        return
    if not rows:
        output.note("you are in no team yet (`tapes team create NAME`, or `tapes team join CODE`)")
        return
    output.table(
        ("TEAM", "NAME", "ROLE", "TIER", "NODES", "SYNC"),
        [(r["team_id"], r["name"], r["role"], r["tier"], r["nodes"],
          "yes" if r["sync_target"] else "") for r in rows],
    )  # fmt: skip


@app.command("show")
def show(
    ctx: typer.Context,
    team: Annotated[str, typer.Argument(help="Team id or name.")],
    as_json: output.JsonFlag = False,
) -> None:
    """Members, roles and key fingerprints from the verified chain; the epoch and policy."""
    settings = _settings(ctx)
    api, identity = connect(settings)
    team_id = resolve_team(api, team)
    state = verify_team(api, team_id, identity, settings.dotdir.path)
    held = any(v.legal_hold for v in api.vaults() if v.vault_id == team_id)
    members = sorted(state.members.values(), key=lambda m: (m.role, m.fingerprint))
    roster = _roster(api, team_id)
    handles = {fp: m.handle + (" (left)" if m.left_at else "") for fp, m in roster.items()}
    githubs = {fp: m.github_login for fp, m in roster.items() if m.github_login}
    report = {
        "team_id": team_id,
        "epoch": state.epoch,
        "metadata_policy": state.metadata_policy,
        "content_policy": state.content_policy,
        "chain_head": state.head.seqno,
        "legal_hold": held,
        "safety_number": keymgmt.safety_number(state),
        "members": [
            {
                "fingerprint": m.fingerprint,
                "handle": handles.get(m.fingerprint, ""),
                "github_login": githubs.get(m.fingerprint),
                "role": m.role,
                "you": m.fingerprint == identity.fingerprint,
            }
            for m in members
        ],
    }
    if as_json:
        output.emit_json(report)
        return
    output.stdout.print(f"team {team_id}: epoch {state.epoch}, chain head {state.head.seqno}",
                        markup=False)  # fmt: skip
    output.stdout.print(
        f"policy: metadata {state.metadata_policy}, content {state.content_policy}", markup=False
    )
    output.stdout.print(f"safety number: {report['safety_number']}", markup=False)
    if held:
        output.stdout.print("legal hold: on (the server's retention deletes nothing)",
                            markup=False)  # fmt: skip
    output.table(
        ("HANDLE", "FINGERPRINT", "ROLE", ""),
        [(_label(m.fingerprint, handles, githubs), m.fingerprint, m.role,
          "you" if m.fingerprint == identity.fingerprint else "")
         for m in members],
    )  # fmt: skip
    output.note(
        "roles and fingerprints are from the signed chain; handles and GitHub logins are the "
        "server's labels: compare a fingerprint with its owner before trusting a handle"
    )


def _roster(api: ApiClient, team_id: str) -> dict[str, MemberOut]:
    """Fingerprint → the server's labels for the member (an older server: none)."""
    try:
        return {m.fingerprint: m for m in api.members(team_id)}
    except RemoteError as exc:
        if exc.status != 404:
            raise
        return {}


def _label(fingerprint: str, handles: dict[str, str], githubs: dict[str, str]) -> str:
    """A member's handle as the roster shows it, with its bound GitHub login (``gh:LOGIN``)."""
    github = githubs.get(fingerprint)
    return handles.get(fingerprint, "?") + (f" gh:{github}" if github else "")


@app.command("requests")
def requests(
    ctx: typer.Context,
    team: Annotated[str, typer.Argument(help="Team id or name.")],
    as_json: output.JsonFlag = False,
) -> None:
    """Pending join requests (owners and admins). `tapes team approve` verifies each one with
    the invite secret before anybody is admitted."""
    settings = _settings(ctx)
    api, _ = logged_in(settings)
    team_id = resolve_team(api, team)
    pending = api.join_requests(team_id)
    leaving = [m for m in api.members(team_id) if m.left_at is not None]
    rows = [
        {"request_id": r.request_id, "handle": r.handle, "fingerprint": r.fingerprint,
         "role": r.role, "invite_id": r.invite_id, "created_at": r.created_at}
        for r in pending
    ]  # fmt: skip
    gone = [
        {"handle": m.handle, "fingerprint": m.fingerprint, "role": m.role, "left_at": m.left_at}
        for m in leaving
    ]
    if as_json:
        output.emit_json(rows + [{"leaving": True} | g for g in gone])
        return
    for g in gone:
        output.note(
            f"{g['handle']} ({g['fingerprint']}) left; `tapes team remove {team_id} "
            f"@{g['handle']}` starts the new key epoch they do not get"
        )
    if not rows:
        output.note(f"no pending join requests for {team_id}")
        return
    output.table(
        ("REQUEST", "HANDLE", "FINGERPRINT", "ROLE", "SINCE"),
        [(r["request_id"], r["handle"], r["fingerprint"], r["role"], r["created_at"][:16])
         for r in rows],
    )  # fmt: skip
    count = len(rows)
    output.note(
        f"{count} pending request{'' if count == 1 else 's'}: `tapes team approve {team_id}` "
        "checks each against its invite and asks you to confirm the joiner's fingerprint"
    )


@app.command("invite")
def invite(
    ctx: typer.Context,
    team: Annotated[str, typer.Argument(help="Team id or name.")],
    role: Annotated[str, typer.Option(help="member, admin or viewer.")] = "member",
    expires_in: Annotated[str, typer.Option(help="How long the code works, e.g. 7d or 2h.")] = "7d",
    as_json: output.JsonFlag = False,
) -> None:
    """Make a single-use invite code. Pass it to the invitee out of band (not through tapes)."""
    if role not in ("member", "admin", "viewer"):
        raise TeamError(f"--role {role!r}: expected member, admin or viewer")
    ttl = seconds(expires_in)
    if ttl > MAX_INVITE_DAYS * 86400:
        raise TeamError(f"--expires-in {expires_in!r} is too long (at most {MAX_INVITE_DAYS}d)")
    settings = _settings(ctx)
    api, identity = connect(settings)
    team_id = resolve_team(api, team)
    made = flows.invite(
        api, identity, settings.dotdir.path, team_id,
        role=cast(Literal["admin", "member", "viewer"], role), ttl=ttl,
    )  # fmt: skip
    if as_json:
        output.emit_json({"team_id": team_id, "code": made.code.text, "role": role,
                          "expires_in_seconds": ttl, "inviter": identity.fingerprint})  # fmt: skip
        return
    output.stdout.print(made.code.text, markup=False)
    output.note(
        f"invite to {team_id} as {role}, single use, valid for {expires_in}. Give the code to "
        "the invitee yourself (in person, a call, a message you trust): whoever has it can ask to "
        f"join. Your fingerprint, which they should see: {identity.fingerprint}. Then run "
        f"`tapes team approve {team_id}`."
    )


@app.command("join")
def join(
    ctx: typer.Context,
    code: Annotated[str, typer.Argument(help="The invite code (TAPES-…).")],
    as_json: output.JsonFlag = False,
) -> None:
    """Ask to join a team with an invite code; run it again once approved, to verify the team."""
    settings = _settings(ctx)
    api, identity = connect(settings)
    outcome = flows.join(api, identity, settings.dotdir.path, code)
    if as_json:
        output.emit_json({"team_id": outcome.team, "status": outcome.status,
                          "role": outcome.role, "fingerprint": identity.fingerprint})  # fmt: skip
        return
    if outcome.status == "joined":
        output.stdout.print(f"joined team {outcome.team} as {outcome.role}", markup=False)
        output.note(
            "the team's chain verified against your invite code; sync into it with "
            f"`tapes storage configure --team {outcome.team}`"
        )
        return
    output.stdout.print(f"asked to join team {outcome.team}", markup=False)
    output.note(
        f"tell the inviter your fingerprint {identity.fingerprint} so they can compare it when "
        f"they approve; then run `tapes team join` with the same code again"
    )


@app.command("approve")
def approve(
    ctx: typer.Context,
    team: Annotated[str, typer.Argument(help="Team id or name.")],
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Approve without asking.")] = False,
) -> None:
    """Verify pending join requests with the invite secret and admit the joiners you accept."""
    if not yes and not (sys.stdin is not None and sys.stdin.isatty()):
        raise TeamError(
            "approving asks about each joiner", hint="run it in a terminal, or pass --yes"
        )
    settings = _settings(ctx)
    api, identity = connect(settings)
    team_id = resolve_team(api, team)

    def confirm(fingerprint: str, role: str) -> bool:
        output.note(f"joiner {fingerprint} wants to join as {role}")
        return yes or typer.confirm("Is that the fingerprint the joiner told you?", default=False)

    results = flows.approve_requests(api, identity, settings.dotdir.path, team_id, confirm)
    if not results:
        output.note(f"no pending join requests for {team_id}")
    for result in results:
        if result.outcome == "refused":
            output.error(
                f"join request {result.request_id} refused: {result.reason}",
                "ask the joiner to use a fresh invite; the server may have altered it",
            )
        else:
            detail = f" ({result.reason})" if result.reason else ""
            output.stdout.print(
                f"{result.outcome}: {result.fingerprint} as {result.role}{detail}", markup=False
            )
    if any(r.outcome == "refused" for r in results):
        raise typer.Exit(1)


_MEMBER_HELP = "The member: the start of their key fingerprint, @handle, or gh:GITHUB-LOGIN."


def _confirm_member(api: ApiClient, identity: keymgmt.Identity, settings: Settings,
                    team_id: str, member: str, question: str) -> None:  # fmt: skip
    """Ask (in a terminal) before changing a member, naming them by verified fingerprint."""
    state = verify_team(api, team_id, identity, settings.dotdir.path)
    fingerprint = flows.member_fingerprint(api, state, member)
    if not typer.confirm(question.format(member=f"{member} ({fingerprint})"), default=False):
        raise TeamError("nothing was changed", hint="answer yes, or pass --yes")


def _need_terminal_or_yes(yes: bool, what: str) -> None:
    if not yes and not (sys.stdin is not None and sys.stdin.isatty()):
        raise TeamError(f"{what} asks you to confirm", hint="run it in a terminal, or pass --yes")


@app.command("remove")
def remove(
    ctx: typer.Context,
    team: Annotated[str, typer.Argument(help="Team id or name.")],
    member: Annotated[str, typer.Argument(help=_MEMBER_HELP)],
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Remove without asking.")] = False,
) -> None:
    """Remove a member. Removal starts a new key epoch; only the others get its key."""
    _need_terminal_or_yes(yes, "removing")
    settings = _settings(ctx)
    api, identity = connect(settings)
    team_id = resolve_team(api, team)
    if not yes:
        _confirm_member(
            api, identity, settings, team_id, member,
            f"Remove {{member}} from {team_id}? They keep what they downloaded, and read "
            "nothing pushed after this",
        )  # fmt: skip
    state = flows.remove_member(api, identity, settings.dotdir.path, team_id, member)
    output.stdout.print(f"removed {member} from {team_id}", markup=False)
    output.note(
        f"a new key epoch {state.epoch} was made and sealed to the "
        f"{output.count(len(state.readers), 'remaining reader')}; what you push from now on "
        "uses it. What the removed member already downloaded stays with them."
    )


@app.command("role")
def set_role(
    ctx: typer.Context,
    team: Annotated[str, typer.Argument(help="Team id or name.")],
    member: Annotated[str, typer.Argument(help=_MEMBER_HELP)],
    role: Annotated[str, typer.Argument(help="owner, admin, member or viewer.")],
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Change it without asking.")] = False,
) -> None:
    """Change a member's role. A reader made viewer starts a new key epoch they do not get; a
    viewer made reader is sealed every epoch key, history included."""
    if role not in ("owner", "admin", "member", "viewer"):
        raise TeamError(f"role {role!r}: expected owner, admin, member or viewer")
    _need_terminal_or_yes(yes, "changing a role")
    settings = _settings(ctx)
    api, identity = connect(settings)
    team_id = resolve_team(api, team)
    if not yes:
        _confirm_member(
            api, identity, settings, team_id, member, f"Make {{member}} {role} in {team_id}?"
        )
    state = flows.change_role(
        api, identity, settings.dotdir.path, team_id, member=member,
        role=cast(keymgmt.Role, role),
    )  # fmt: skip
    output.stdout.print(f"{member} is now {role} in {team_id}", markup=False)
    if state.epoch != state.checkpoints[-2].epoch:  # the change started a new epoch
        output.note(
            f"a new key epoch {state.epoch} was sealed to "
            f"{output.count(len(state.readers), 'reader')}; as a viewer they read nothing "
            "pushed from now on"
        )


@app.command("rotate")
def rotate(
    ctx: typer.Context,
    team: Annotated[str, typer.Argument(help="Team id or name.")],
) -> None:
    """Start a new key epoch without changing who is in the team (a lost laptop, a doubt):
    what is pushed from now on is sealed under a key only the current readers get."""
    settings = _settings(ctx)
    api, identity = connect(settings)
    team_id = resolve_team(api, team)
    state = flows.rotate(api, identity, settings.dotdir.path, team_id)
    output.stdout.print(f"team {team_id} is now in key epoch {state.epoch}", markup=False)
    output.note(
        f"sealed to {output.count(len(state.readers), 'current reader')}; history stays under "
        "the epochs it was written in"
    )


@app.command("reencrypt")
def reencrypt_history(
    ctx: typer.Context,
    team: Annotated[str, typer.Argument(help="Team id or name.")],
    as_json: output.JsonFlag = False,
) -> None:
    """Seal what you uploaded to the team again under its current key epoch (after a removal
    or a rotation), so older epoch keys open none of it. Safe to interrupt and run again."""
    settings = _settings(ctx)
    api, identity = connect(settings)
    team_id = resolve_team(api, team)
    done = 0

    def advance(count: int, total: int) -> None:
        nonlocal done
        done = count
        bar.update(task, completed=count, total=total)

    try:
        with output.progress("re-sealing", None) as bar:
            task = bar.task_ids[0]
            result = reencrypt.reencrypt(api, identity, settings.dotdir.path, team_id, advance)
    except KeyboardInterrupt:
        raise InterruptedWorkError(
            f"interrupted: {output.count(done, 'node')} re-sealed and kept; run "
            f"`tapes team reencrypt {team_id}` again to finish"
        ) from None
    if as_json:
        output.emit_json({"team_id": team_id, "resealed": result.resealed,
                          "epoch": result.epoch, "others": result.others})  # fmt: skip
        return
    output.stdout.print(
        f"re-sealed {output.count(result.resealed, 'node')} of yours in team {team_id} under "
        f"key epoch {result.epoch}",
        markup=False,
    )
    if result.others:
        output.note(
            f"{output.count(result.others, 'node')} of other members are still under older "
            "epochs: each member re-seals their own with this command"
        )


@app.command("audit")
def audit_log(
    ctx: typer.Context,
    team: Annotated[str, typer.Argument(help="Team id or name.")],
    since: Annotated[
        str | None, typer.Option(help="Only events from this day on (YYYY-MM-DD, UTC).")
    ] = None,
    as_json: output.JsonFlag = False,
    as_csv: Annotated[
        bool, typer.Option("--csv", help="Comma-separated, for a spreadsheet.")
    ] = False,
) -> None:
    """The team's audit trail, each line marked by what vouches for it: `verified` (the signed
    chain and share statements, checked here) or `server` (its signed, hash-chained log,
    checked against what this machine read before). Owners and admins."""
    start = None
    if since is not None:
        try:
            start = datetime.strptime(since, "%Y-%m-%d").replace(tzinfo=UTC)
        except ValueError:
            raise typer.BadParameter(f"expected a day such as 2026-01-31, not {since!r}") from None
    settings = _settings(ctx)
    api, identity = connect(settings)
    team_id = resolve_team(api, team)
    lines = audit.audit_trail(api, identity, settings.dotdir.path, team_id, start)
    if as_json:
        output.emit_json([line.to_json() for line in lines])
    elif as_csv:
        writer = csv.writer(sys.stdout, lineterminator="\n")
        writer.writerow(("time", "source", "who", "event"))
        for line in lines:
            writer.writerow([output.visible(spreadsheet_cell(v)) for v in line.to_json().values()])
    else:
        output.table(
            ("TIME", "SOURCE", "WHO", "EVENT"),
            [(f"{line.time:%Y-%m-%d %H:%M:%S}", line.source, line.who[:19], line.event)
             for line in lines],
        )  # fmt: skip
        output.note(
            "verified: the signed chain and share statements, checked here; server: the "
            "server's own log, checked to be the one this machine read before"
        )


@app.command("hold")
def hold(
    ctx: typer.Context,
    team: Annotated[str, typer.Argument(help="Team id or name.")],
    state: Annotated[str, typer.Argument(help="on or off.", metavar="on|off")],
) -> None:
    """Put the team on legal hold (the server's retention deletes nothing of it) or take it off:
    owners; recorded in the team's audit trail."""
    if state not in ("on", "off"):
        raise typer.BadParameter(f"expected on or off, not {state!r}")
    settings = _settings(ctx)
    api, _identity = connect(settings)
    team_id = resolve_team(api, team)
    held = api.hold(team_id, on=state == "on")
    output.stdout.print(
        f"team {team_id}: legal hold {'on' if held else 'off'}"
        + (" (retention deletes nothing of it)" if held else ""),
        markup=False,
    )


@app.command("leave")
def leave(
    ctx: typer.Context,
    team: Annotated[str, typer.Argument(help="Team id or name.")],
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Leave without asking.")] = False,
) -> None:
    """Leave a team: the server stops serving it to you at once, and an owner or admin's
    removal starts a new key epoch without you. What you downloaded stays on this machine."""
    _need_terminal_or_yes(yes, "leaving")
    settings = _settings(ctx)
    api, _ = logged_in(settings)
    team_id = resolve_team(api, team)
    if not yes and not typer.confirm(
        f"Leave {team_id}? You will read and push nothing of it from now on", default=False
    ):
        raise TeamError("you are still in the team", hint="answer yes, or pass --yes")
    api.leave(team_id)
    output.stdout.print(f"left team {team_id}", markup=False)
    if settings.config.cloud.team_id == team_id:

        def edit(doc: tomlkit.TOMLDocument) -> None:
            storage_table(doc, "cloud").pop("team_id", None)

        save_config(settings.config, edit)
        output.note("storage syncs to your personal vault again")
    output.note(
        "an owner or admin now sees you as leaving in `tapes team requests` and removes you, "
        "which starts a new key epoch"
    )
