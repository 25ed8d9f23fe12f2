"""``tapes session``: list, show, export and import sessions (``list``, ``show`` and ``export``
read through the configured provider: the local store, or with ``cloud`` the server)."""

from __future__ import annotations

import hashlib
import io
import os
import re
import shutil
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import IO, Annotated

import typer

from tapes_e2e import __version__
from tapes_e2e.cli import output, team
from tapes_e2e.cli.auth import prompt_for_passphrase
from tapes_e2e.cli.verify import describe
from tapes_e2e.context import Settings, reading
from tapes_e2e.errors import TapesError, TeamError
from tapes_e2e.node import Node
from tapes_e2e.proof import build_proof, verify_proof
from tapes_e2e.teams import sharing
from tapes_e2e.teams.access import resolve_team
from tapes_e2e.transfer import export_nodes, import_nodes

app = typer.Typer(
    help="List, show, export and import recorded sessions.",
    no_args_is_help=True,
    rich_markup_mode=None,
)


def _settings(ctx: typer.Context) -> Settings:
    settings: Settings = ctx.obj
    return settings


def _preview(node: Node | None, width: int = 60) -> str:
    if node is None:
        return ""
    text = " ".join(node.bucket.text().split())
    return text if len(text) <= width else text[: width - 1] + "…"


@app.command("list")
def list_sessions(
    ctx: typer.Context,
    limit: Annotated[int, typer.Option(min=1, help="How many sessions, newest first.")] = 50,
    as_json: output.JsonFlag = False,
) -> None:
    """List sessions (leaf nodes and their ancestry), newest first."""
    with reading(_settings(ctx), prompt=prompt_for_passphrase()) as store:
        sessions = store.sessions(limit)
        roots = store.get_many([s.root_hash for s in sessions if s.root_hash])
    if as_json:
        output.emit_json(
            [
                {
                    "session_id": s.session_id,
                    "root_hash": s.root_hash,
                    "nodes": s.node_count,
                    "model": s.model,
                    "prompt_tokens": s.prompt_tokens,
                    "completion_tokens": s.completion_tokens,
                    "total_tokens": s.total_tokens,
                    "started_at": s.started_at,
                    "last_at": s.last_at,
                    "first_message": _preview(roots.get(s.root_hash or ""), 200),
                }
                for s in sessions
            ]
        )
        return
    if not sessions:
        output.note("no sessions recorded yet")
        return
    rows = [
        (
            s.session_id[:12],
            s.node_count,
            s.model,
            f"{s.total_tokens:,}",
            s.last_at[:16],
            _preview(roots.get(s.root_hash or "")),
        )
        for s in sessions
    ]
    output.table(("SESSION", "NODES", "MODEL", "TOKENS", "LAST", "FIRST MESSAGE"), rows)


def _session_path(settings: Settings, session: str) -> list[Node]:
    with reading(settings, prompt=prompt_for_passphrase()) as store:
        return list(reversed(store.ancestry(store.resolve_prefix(session))))


@app.command("show")
def show_session(
    ctx: typer.Context,
    session: Annotated[str, typer.Argument(help="Session ID (leaf hash) or a unique prefix.")],
    full: Annotated[bool, typer.Option("--full", help="Print whole messages.")] = False,
    as_json: output.JsonFlag = False,
) -> None:
    """Show a session from its first message to its leaf."""
    path = _session_path(_settings(ctx), session)
    if as_json:
        output.emit_json([node.to_json() for node in path])
        return
    for index, node in enumerate(path, start=1):
        usage = node.usage
        tokens = f"  {usage.total_tokens:,} tokens" if usage and usage.total_tokens else ""
        output.stdout.print(
            f"[bold]{index:>3}. {node.bucket.role or node.bucket.type}[/bold]"
            f"  {node.hash[:12]}  {node.bucket.model}{tokens}"
        )
        text = node.bucket.text() if full else _preview(node, 200)
        output.stdout.print(text, markup=False)


@contextmanager
def _output_file(path: Path | None) -> Iterator[IO[bytes]]:
    """stdout, or a temporary file renamed over ``path`` only once everything is written."""
    if path is None or str(path) == "-":
        yield sys.stdout.buffer
        sys.stdout.flush()
        return
    target = path.resolve()
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    except OSError as exc:
        raise TapesError(f"cannot write {path}: {exc.strerror}") from exc
    try:
        with os.fdopen(fd, "wb") as out:
            yield out
            out.flush()
            os.fsync(out.fileno())
        Path(tmp).replace(target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


TeamProofOption = Annotated[
    str | None,
    typer.Option("--team", help="Add the evidence that a member shared it with this team."),
]


def _proof(settings: Settings, path: list[Node], team_name: str | None, redact: int) -> bytes:
    evidence = None
    if team_name is not None:
        api, identity = team.connect(settings)
        team_id = resolve_team(api, team_name)
        evidence = sharing.share_evidence(
            api, identity, settings.dotdir.path, team_id, path[-1].hash
        )
    return build_proof(path, redact=redact, team=evidence)


@app.command("prove")
def prove_session(
    ctx: typer.Context,
    session: Annotated[str, typer.Argument(help="Session ID (leaf hash) or a unique prefix.")],
    team_name: TeamProofOption = None,
    redact: Annotated[
        int,
        typer.Option(
            "--redact",
            min=0,
            metavar="N",
            help="Hide the first N turns (a turn after one shown cannot be hidden).",
        ),
    ] = 0,
    out: Annotated[
        Path | None, typer.Option("--output", "-o", help="Write to this file (default stdout).")
    ] = None,
) -> None:
    """Write a self-contained proof of a session for an auditor (check it with
    `tapes verify --proof FILE`, offline and without keys)."""
    settings = _settings(ctx)
    path = _session_path(settings, session)
    data = _proof(settings, path, team_name, redact)
    with _output_file(out) as sink:
        sink.write(data)
    shown = output.count(len(path) - redact, "turn")
    where = f" with the evidence that it was shared with team {team_name}" if team_name else ""
    output.note(f"proof of session {path[-1].hash[:12]}: {shown} shown{where}"
                + (f", written to {out}" if out else ""))  # fmt: skip


def _audit_readme(path: list[Node], proof: bytes, files: dict[str, bytes]) -> bytes:
    report = verify_proof(proof)
    created = [n.created_at for n in path if n.created_at]
    models = sorted({n.bucket.model for n in path if n.bucket.model})
    digests = "\n".join(
        f"    {hashlib.sha256(data).hexdigest()}  {name}" for name, data in files.items()
    )
    proof_lines = "\n".join(f"    {line.strip()}" for line in describe(report))
    return f"""# Export of tapes session {path[-1].hash}

Written by `tapes session export --for-audit` (tapes-e2e {__version__}) on
{datetime.now(UTC).isoformat(timespec="seconds")}.

## What this directory holds

- `session.jsonl`: the session's {len(path)} turns, decrypted, one JSON object per line, from
  the first turn to the last, in the node form of Go tapes (hash, parent_hash, bucket,
  stop_reason, usage, project, created_at). Recorded between {min(created, default="?")} and
  {max(created, default="?")}; models: {", ".join(models) or "none named"}.
- `proof.json`: a proof of the session (format tapes-session-proof, version 1; docs/proofs.md
  in tapes-e2e). Check it on any machine, with no network and no keys:

      tapes verify --proof proof.json

  What it showed when this export was written:

{proof_lines}

## What the proof covers, and what it does not

Each turn's hash covers its message (the bucket: role, model, provider, content) and its
parent's hash, exactly as Go tapes computes it, so the proof fixes the content and order of
every turn. The other fields in `session.jsonl` (token usage, stop reason, project and times)
are recorded by tapes but no hash covers them: they are as this machine stored them.

## Checksums (SHA-256)

{digests}
""".encode()


def _refuse_existing(target: Path) -> None:
    if target.exists() or target.is_symlink():
        raise TapesError(f"{target} already exists; the export writes a new directory",
                         hint="name a directory that does not exist yet")  # fmt: skip


def _write_new_directory(target: Path, files: dict[str, bytes]) -> None:
    """Create ``target`` holding ``files``, all at once: written into a hidden directory beside
    it and renamed into place, so a failure leaves nothing behind, and never over a path
    that exists."""
    _refuse_existing(target)
    try:
        staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    except OSError as exc:
        raise TapesError(f"cannot write in {target.parent}: {exc.strerror}",
                         hint="choose a directory you can write to") from None  # fmt: skip
    try:
        for name, data in files.items():
            with (staging / name).open("xb") as out:
                out.write(data)
                out.flush()
                os.fsync(out.fileno())
        staging.rename(target)  # refused if target appeared meanwhile and is not empty
    except BaseException as exc:
        shutil.rmtree(staging, ignore_errors=True)
        if isinstance(exc, OSError):
            raise TapesError(f"cannot write {target}: {exc.strerror}",
                             hint="nothing was left behind; free space or choose another "
                             "directory, then run it again") from None  # fmt: skip
        raise


def _export_for_audit(
    settings: Settings, session: str | None, out: Path | None, team_name: str | None
) -> None:
    if session is None or out is None or str(out) == "-":
        raise TapesError("--for-audit exports one session into a new directory",
                         hint="tapes session export --for-audit SESSION -o DIR")  # fmt: skip
    target = out.absolute()
    _refuse_existing(target)  # before anything is read or fetched
    path = _session_path(settings, session)
    proof = _proof(settings, path, team_name, 0)
    lines = io.BytesIO()
    export_nodes(iter(path), lines)
    files = {"session.jsonl": lines.getvalue(), "proof.json": proof}
    files = {"README.md": _audit_readme(path, proof, files), **files}
    _write_new_directory(target, files)
    output.note(f"exported session {path[-1].hash[:12]} ({output.count(len(path), 'turn')}) "
                f"with its proof to {out}")  # fmt: skip


@app.command("export")
def export_sessions(
    ctx: typer.Context,
    session: Annotated[
        str | None, typer.Argument(help="Export only this session (ID or prefix).")
    ] = None,
    out: Annotated[
        Path | None,
        typer.Option(
            "--output",
            "-o",
            help="Write to this file (default stdout); a new directory with --for-audit.",
        ),
    ] = None,
    for_audit: Annotated[
        bool,
        typer.Option(
            "--for-audit",
            help="Write the session as JSON Lines, its proof and a "
            "README saying what they hold, into a new directory (for e-discovery).",
        ),
    ] = False,
    team_name: TeamProofOption = None,
) -> None:
    """Export nodes as JSON Lines, parents before children."""
    if for_audit or team_name is not None:
        _export_for_audit(_settings(ctx), session, out, team_name)
        return
    with reading(_settings(ctx), prompt=prompt_for_passphrase()) as store:
        if session is not None:
            nodes: Iterator[Node] = reversed(store.ancestry(store.resolve_prefix(session)))
            total = None
        else:
            nodes, total = store.iter_topological(), store.counts()[0]
        with output.progress("exporting", total) as bar, _output_file(out) as sink:
            count = export_nodes(_ticking(nodes, bar), sink)
    output.note(f"exported {output.count(count, 'node')}" + (f" to {out}" if out else ""))


def _ticking(nodes: Iterator[Node], bar: output.Progress) -> Iterator[Node]:
    task = bar.task_ids[0]
    for index, node in enumerate(nodes, start=1):
        if index % 1000 == 0:
            bar.update(task, completed=index)
        yield node


@app.command("import")
def import_sessions(
    ctx: typer.Context,
    source: Annotated[Path, typer.Argument(help="JSON Lines file of nodes, or - for stdin.")],
) -> None:
    """Import nodes from JSON Lines: all of them, or (on any bad line) none."""
    settings = _settings(ctx)
    reading_stdin = str(source) == "-"
    try:
        stream = sys.stdin.buffer if reading_stdin else source.open("rb")
    except OSError as exc:
        raise TapesError(f"cannot read {source}: {exc.strerror}") from exc
    total = None if reading_stdin else source.stat().st_size
    try:
        with settings.store(create=True) as store, output.progress("importing", total) as bar:
            task = bar.task_ids[0]

            def advance(_count: int) -> None:
                if not reading_stdin:
                    bar.update(task, completed=stream.tell())

            result = import_nodes(store, stream, progress=advance)
    finally:
        if not reading_stdin:
            stream.close()
    output.note(
        f"imported {output.count(result.new, 'new node')}, {result.existing:,} already present, "
        f"into {settings.database.path}"
    )


# --- sharing with a team ---------------------------------------------------------------------

TeamOption = Annotated[str, typer.Option("--team", help="Team id or name.")]


@app.command("share")
def share_session(
    ctx: typer.Context,
    leaf: Annotated[str, typer.Argument(help="Session ID (leaf hash) or a unique prefix.")],
    team_name: TeamOption,
    title: Annotated[str, typer.Option(help="A title, encrypted for the team.")] = "",
    note: Annotated[str, typer.Option(help="A note, encrypted for the team.")] = "",
    expires_in: Annotated[
        str | None, typer.Option(help="Stop sharing after this long, e.g. 7d or 12h.")
    ] = None,
    as_json: output.JsonFlag = False,
) -> None:
    """Share a session with a team (pushed sealed into the team vault first, if needed)."""
    settings = _settings(ctx)
    expires_at = None
    if expires_in is not None:
        expires_at = datetime.now(UTC) + timedelta(seconds=team.seconds(expires_in))
    with settings.store() as store:
        path = list(reversed(store.ancestry(store.resolve_prefix(leaf))))
    api, identity = team.connect(settings)
    team_id = resolve_team(api, team_name)
    sharing.share_session(
        api, identity, settings.dotdir.path, team_id, path,
        title=title, note=note, expires_at=expires_at,
    )  # fmt: skip
    if as_json:
        output.emit_json({
            "session_id": path[-1].hash, "team_id": team_id, "nodes": len(path),
            "expires_at": expires_at.isoformat() if expires_at else None,
        })  # fmt: skip
        return
    output.stdout.print(f"shared session {path[-1].hash} with {team_id}", markup=False)
    output.note(
        "members of the team can now pull it (the server enforces who may fetch it; every "
        "member holding the team key could decrypt it)"
    )


def _leaf_hash(settings: Settings, text: str) -> str:
    """A local session prefix, or (with no local database) a full 64-hex leaf hash."""
    if settings.database.path.exists():
        with settings.store() as store:
            return store.resolve_prefix(text)
    if re.fullmatch(r"[0-9a-f]{64}", text):
        return text
    raise TeamError(
        f"{text!r} is not a session hash", hint="give the full session ID (64 hex digits)"
    )


@app.command("unshare")
def unshare_session(
    ctx: typer.Context,
    leaf: Annotated[str, typer.Argument(help="Session ID (leaf hash) or a unique prefix.")],
    team_name: TeamOption,
) -> None:
    """Stop sharing a session with a team; members lose access to it at once."""
    settings = _settings(ctx)
    leaf_hash = _leaf_hash(settings, leaf)
    api, identity = team.connect(settings)
    team_id = resolve_team(api, team_name)
    sharing.unshare_session(api, identity, settings.dotdir.path, team_id, leaf_hash)
    output.stdout.print(f"unshared session {leaf_hash} from {team_id}", markup=False)
    output.note("what members already pulled stays on their machines")


@app.command("pull")
def pull_shared(
    ctx: typer.Context,
    share: Annotated[
        str, typer.Argument(help="The shared session's ID, or its start (`tapes session shared`).")
    ],
    team_name: Annotated[
        str | None, typer.Option("--team", help="Look only in this team (id or name).")
    ] = None,
    as_json: output.JsonFlag = False,
) -> None:
    """Fetch one session shared with you, verify every node, and store it in the local
    database (its nodes keep the hashes Go tapes gives them)."""
    settings = _settings(ctx)
    api, identity = team.connect(settings)
    team_id = resolve_team(api, team_name) if team_name is not None else None
    view, nodes = sharing.fetch_shared(api, identity, settings.dotdir.path, share, team_id)
    with settings.store(create=True) as store:
        if nodes[0].parent_hash is not None and not store.has(nodes[0].parent_hash):
            raise TeamError(
                f"the beginning of session {nodes[-1].hash[:12]} is not shared with you: "
                f"{len(nodes)} of its turns are, from {nodes[0].hash[:12]}",
                hint="ask whoever wrote its earlier turns to share their part; nothing was stored",
            )
        new = store.put_many(nodes)
    result = {"session_id": nodes[-1].hash, "team_id": view.team_id, "title": view.title,
              "nodes": len(nodes), "new": new}  # fmt: skip
    if as_json:
        output.emit_json(result)
        return
    output.stdout.print(
        f"pulled session {nodes[-1].hash} from {view.team_id}: "
        f"{output.count(len(nodes), 'node')} verified, {new} new",
        markup=False,
    )


@app.command("shared")
def shared_sessions(
    ctx: typer.Context,
    team_name: Annotated[
        str | None, typer.Option("--team", help="Only this team (id or name).")
    ] = None,
    as_json: output.JsonFlag = False,
) -> None:
    """Sessions shared with your teams, verified, with their decrypted titles."""
    settings = _settings(ctx)
    api, identity = team.connect(settings)
    team_id = resolve_team(api, team_name) if team_name is not None else None
    views, refused = sharing.list_shared(api, identity, settings.dotdir.path, team_id)
    if as_json:
        output.emit_json([v.to_json() for v in views])
    elif not views:
        output.note("no sessions are shared with your teams")
    else:
        rows = [
            ((v.session_id or v.leaf_id)[:12], v.team_id, v.title, v.shared_by[:14] + "…",
             v.shared_at.isoformat()[:16], v.expires_at.isoformat()[:16] if v.expires_at else "")
            for v in views
        ]  # fmt: skip
        output.table(("SESSION", "TEAM", "TITLE", "SHARED BY", "SHARED", "EXPIRES"), rows)
    for message in refused:
        output.error(message)
    if refused:
        raise typer.Exit(1)
