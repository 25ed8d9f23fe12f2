"""The tapes CLI, end to end in-process, plus the installed console script once."""

from __future__ import annotations

import json
import logging
import os
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from tapes_e2e.cli import GO_BIN, main
from tapes_e2e.node import Node
from tapes_e2e.providers.local import LocalProvider
from tests.conftest import chain, text_bucket


class Run:
    def __init__(self, code: int, out: str, err: str) -> None:
        self.code, self.out, self.err = code, out, err


class TapesRunner:
    """Runs ``tapes`` in-process with its own .tapes directory and captures what it prints."""

    def __init__(self, capsys: pytest.CaptureFixture[str], home: Path) -> None:
        self.capsys, self.home = capsys, home

    def __call__(self, *args: str) -> Run:
        with pytest.raises(SystemExit) as info:
            main(["--config-dir", str(self.home), *args])
        captured = self.capsys.readouterr()
        assert "Traceback" not in captured.err
        return Run(int(info.value.code or 0), captured.out, captured.err)


@pytest.fixture
def tapes(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> TapesRunner:
    return TapesRunner(capsys, tmp_path / "dot")


def write_jsonl(path: Path, nodes: list[Node]) -> Path:
    path.write_text("".join(json.dumps(n.to_json()) + "\n" for n in nodes), encoding="utf-8")
    return path


def sample(tmp_path: Path) -> tuple[Path, list[Node], list[Node]]:
    trunk = chain(["Write a haiku", "Old pond, frog jumps", "Another", "Silence again"])
    branch = chain(["A different last verse"], parent=trunk[2])
    return write_jsonl(tmp_path / "nodes.jsonl", [*trunk, *branch]), trunk, branch


def test_commands_on_a_missing_database_explain_and_create_nothing(
    tapes: TapesRunner, tmp_path: Path
) -> None:
    result = tapes("session", "list")
    assert result.code == 1
    assert result.err.startswith("tapes: error: no database at ")
    assert "tapes: hint:" in result.err
    assert not (tapes.home / "tapes.sqlite").exists()


def test_import_list_show_export_round_trip(tapes: TapesRunner, tmp_path: Path) -> None:
    source, trunk, branch = sample(tmp_path)
    result = tapes("session", "import", str(source))
    assert result.code == 0, result.err
    assert "imported 5 new nodes, 0 already present" in result.err

    listed = json.loads(tapes("session", "list", "--json").out)
    assert {s["session_id"] for s in listed} == {trunk[-1].hash, branch[-1].hash}
    assert {s["nodes"] for s in listed} == {4}
    assert {s["first_message"] for s in listed} == {"Write a haiku"}

    shown = json.loads(tapes("session", "show", branch[-1].hash[:10], "--json").out)
    assert [n["hash"] for n in shown] == [*(n.hash for n in trunk[:3]), branch[-1].hash]
    assert "A different last verse" in tapes("session", "show", branch[-1].hash).out

    exported = tmp_path / "out.jsonl"
    assert tapes("session", "export", "-o", str(exported)).code == 0
    lines = exported.read_text("utf-8").splitlines()
    assert len(lines) == 5
    first = json.loads(lines[0])
    assert first["hash"] == trunk[0].hash
    assert first["created_at"] == trunk[0].created_at

    # A second store imported from the export exports the same bytes.
    other = tmp_path / "other.sqlite"
    assert tapes("--db", str(other), "session", "import", str(exported)).code == 0
    again = tmp_path / "again.jsonl"
    assert tapes("--db", str(other), "session", "export", "-o", str(again)).code == 0
    assert again.read_bytes() == exported.read_bytes()

    one = tapes("session", "export", trunk[-1].hash)
    assert [json.loads(line)["hash"] for line in one.out.splitlines()] == [n.hash for n in trunk]


def test_reimport_is_a_no_op(tapes: TapesRunner, tmp_path: Path) -> None:
    source, _, _ = sample(tmp_path)
    tapes("session", "import", str(source))
    assert "imported 0 new nodes, 5 already present" in tapes("session", "import", str(source)).err


def test_children_before_parents_in_a_file_import_fine(tapes: TapesRunner, tmp_path: Path) -> None:
    nodes = chain(["a", "b", "c"])
    source = write_jsonl(tmp_path / "reversed.jsonl", list(reversed(nodes)))
    assert tapes("session", "import", str(source)).code == 0
    assert json.loads(tapes("storage", "status", "--json").out)["nodes"] == 3


def _nested(depth: int) -> str:
    tool = '{"type": "tool_use", "tool_input": {"x": ' + "[" * depth + "]" * depth + "}}"
    return '{"hash": "' + "ab" * 32 + '", "bucket": {"type": "message", "content": [' + tool + "]}}"


@pytest.mark.parametrize(
    ("bad_line", "message"),
    [
        ("{not json", "line 3: malformed JSON"),
        ('{"hash": "' + "0" * 64 + '", "bucket": {}}', "line 3: hash 000000000000… does not match"),
        ("[1, 2]", "line 3: a node must be a JSON object"),
        ('{"hash": "zz"}', "line 3: hash must be 64"),
        *(  # a tool_input nested deeper than this reader follows (Go's own decoder stops at 10,000)
            (_nested(depth), "line 3: the node's JSON nests too deeply") for depth in (900, 100_000)
        ),
    ],
)
def test_a_bad_line_imports_nothing_and_is_named(
    tapes: TapesRunner, tmp_path: Path, bad_line: str, message: str
) -> None:
    good = chain(["fine", "also fine"])
    source = tmp_path / "bad.jsonl"
    source.write_text(
        "".join(json.dumps(n.to_json()) + "\n" for n in good) + bad_line + "\n", encoding="utf-8"
    )
    result = tapes("session", "import", str(source))
    assert result.code == 1
    assert message in result.err
    assert "nothing was imported" in result.err
    with LocalProvider(tapes.home / "tapes.sqlite") as store:
        assert store.counts() == (0, 0, 0)


def test_a_missing_parent_imports_nothing_and_names_the_line(
    tapes: TapesRunner, tmp_path: Path
) -> None:
    nodes = chain(["root", "child", "grandchild"])
    source = write_jsonl(tmp_path / "gap.jsonl", [nodes[0], nodes[2]])
    result = tapes("session", "import", str(source))
    assert result.code == 1
    assert f"line 2: parent {nodes[1].hash} is neither in the file nor in the store" in result.err
    with LocalProvider(tapes.home / "tapes.sqlite") as store:
        assert store.counts()[0] == 0


def test_import_of_a_missing_file(tapes: TapesRunner, tmp_path: Path) -> None:
    result = tapes("session", "import", str(tmp_path / "nope.jsonl"))
    assert result.code == 1
    assert "cannot read" in result.err


def test_export_to_an_unwritable_place_is_a_clear_error(tapes: TapesRunner, tmp_path: Path) -> None:
    source, _, _ = sample(tmp_path)
    tapes("session", "import", str(source))
    result = tapes("session", "export", "-o", str(tmp_path / "no" / "such" / "dir.jsonl"))
    assert result.code == 1
    assert "cannot write" in result.err


def test_verify_reports_each_damaged_node_and_exits_non_zero(
    tapes: TapesRunner, tmp_path: Path
) -> None:
    source, trunk, _ = sample(tmp_path)
    tapes("session", "import", str(source))
    assert tapes("verify").code == 0
    with sqlite3.connect(tapes.home / "tapes.sqlite") as raw:
        raw.execute(
            "UPDATE nodes SET bucket = "
            "CAST(REPLACE(CAST(bucket AS TEXT), 'haiku', 'HAIKU') AS BLOB) WHERE hash = ?",
            (trunk[0].hash,),
        )
    result = tapes("verify", "--json")
    assert result.code == 1
    report = json.loads(result.out)
    assert report["checked"] == 5
    assert [d["hash"] for d in report["damaged"]] == [trunk[0].hash]
    text = tapes("verify")
    assert f"damaged {trunk[0].hash}" in text.out


def test_storage_status_reports_file_reason_and_counts(tapes: TapesRunner, tmp_path: Path) -> None:
    source, _, _ = sample(tmp_path)
    tapes("session", "import", str(source))
    report = json.loads(tapes("storage", "status", "--json").out)
    assert report["provider"] == "local"
    assert report["database"] == str(tapes.home / "tapes.sqlite")
    assert report["database_reason"].startswith("tapes.sqlite in the .tapes directory")
    assert (report["nodes"], report["sessions"], report["roots"]) == (5, 2, 1)
    assert report["journal_mode"] == "wal"
    text = tapes("storage", "status").out
    assert "Provider: local" in text
    assert "2 sessions, 5 nodes" in text


def test_set_provider_refuses_cloud_without_settings_and_writes_nothing(tapes: TapesRunner) -> None:
    result = tapes("storage", "set-provider", "hybrid")
    assert result.code == 1
    assert "needs storage.cloud.api_url" in result.err
    assert "tapes storage configure" in result.err
    assert not (tapes.home / "config.toml").exists()
    assert tapes("storage", "set-provider", "s3").code == 1


def test_configure_then_set_provider(tapes: TapesRunner) -> None:
    assert tapes("storage", "configure", "--api-url", "http://127.0.0.1:9", "--no-check").code == 0
    assert tapes("storage", "configure", "--sync-interval", "soon").code == 1
    assert tapes("storage", "set-provider", "hybrid").code == 0
    report = json.loads(tapes("storage", "status", "--json").out)
    assert report["provider"] == "hybrid"
    assert report["remote"] == "http://127.0.0.1:9"
    assert tapes("storage", "configure").code == 1


def test_a_file_that_is_not_sqlite_is_refused_untouched(tapes: TapesRunner, tmp_path: Path) -> None:
    impostor = tmp_path / "notes.txt"
    impostor.write_bytes(b"these are my notes, not a database\n")
    result = tapes("--db", str(impostor), "session", "list")
    assert result.code == 1
    assert "is not an SQLite database" in result.err
    assert impostor.read_bytes() == b"these are my notes, not a database\n"


def test_a_bad_config_file_is_one_clear_line(tapes: TapesRunner) -> None:
    tapes.home.mkdir()
    (tapes.home / "config.toml").write_text('[storage]\nprovider = "s3"\n', encoding="utf-8")
    result = tapes("storage", "status")
    assert result.code == 1
    assert result.err.splitlines()[0] == (
        "tapes: error: storage.provider = 's3' is not valid: expected one of local, cloud, hybrid"
    )


def test_usage_errors_exit_2(tapes: TapesRunner) -> None:
    assert tapes("no-such-command").code == 2
    assert tapes("session", "list", "--limit", "0").code == 2


def test_session_show_of_an_unknown_prefix(tapes: TapesRunner, tmp_path: Path) -> None:
    source, _, _ = sample(tmp_path)
    tapes("session", "import", str(source))
    result = tapes("session", "show", "ffffffff")
    assert result.code == 1
    assert "no node ffffffff" in result.err


def test_installed_console_script(tmp_path: Path) -> None:
    script = shutil.which("tapes", path=str(Path(sys.executable).parent))
    assert script is not None
    node = Node.new(text_bucket("user", "from a subprocess"))
    source = write_jsonl(tmp_path / "one.jsonl", [node])
    home = str(tmp_path / "dot")
    done = subprocess.run(
        [script, "--config-dir", home, "session", "import", str(source)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    listed = subprocess.run(
        [script, "--config-dir", home, "session", "list", "--json"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert json.loads(listed.stdout)[0]["session_id"] == node.hash
    failed = subprocess.run(
        [script, "--config-dir", home, "session", "show", "abcd"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert failed.returncode == 1
    assert failed.stderr.startswith("tapes: error: ")
    assert "Traceback" not in failed.stderr


def test_progress_bars_render_on_a_terminal_with_or_without_a_total(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import io

    from rich.console import Console

    from tapes_e2e.cli import output

    screen = io.StringIO()
    monkeypatch.setattr(output, "_stderr", Console(file=screen, force_terminal=True, width=80))
    for total in (None, 10):
        with output.progress("working", total) as bar:
            bar.update(bar.task_ids[0], advance=3)
    assert "working" in screen.getvalue()


MARKUP = "[/INST] [link=https://evil.example]click[/link] [bold]x"


def test_text_from_a_session_is_printed_verbatim_never_as_markup(
    tapes: TapesRunner, tmp_path: Path
) -> None:
    """A prompt is data: ``[/INST]`` read as Rich markup crashed ``session list`` (a closing tag
    with nothing open), and ``[link=…]`` became a live link with its text hidden."""
    source = write_jsonl(tmp_path / "nodes.jsonl", chain([MARKUP, "ok"]))
    assert tapes("session", "import", str(source)).code == 0
    listed = tapes("session", "list")
    assert listed.code == 0, listed.err
    for tag in ("[/INST]", "[link=", "[/link]", "[bold]x"):  # the table folds long cells
        assert tag in listed.out


def test_the_command_is_also_installed_as_tapes_e2e_beside_go_tapes() -> None:
    """Go tapes installs its own ``tapes``: ours is reachable by a name of its own too."""
    script = shutil.which("tapes-e2e", path=str(Path(sys.executable).parent))
    assert script is not None
    done = subprocess.run([script, "version"], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("tapes-e2e ")


def test_help_text_is_printed_as_written(tapes: TapesRunner) -> None:
    """Help is not Rich markup either: ``[storage.cloud]`` was eaten ("Set the  settings.") and
    every flag showed a ``<bool>`` metavar."""
    shown = tapes("storage", "configure", "--help")
    assert shown.code == 0
    assert "Set the [storage.cloud] settings." in " ".join(shown.out.split())
    assert "<bool>" not in shown.out
    assert "--auto-share / --no-auto-share" in shown.out


def test_a_db_in_a_missing_directory_is_an_error_not_a_new_tree(
    tapes: TapesRunner, tmp_path: Path
) -> None:
    source, _trunk, _branch = sample(tmp_path)
    target = tmp_path / "typo" / "tapes.sqlite"
    result = tapes("--db", str(target), "session", "import", str(source))
    assert result.code == 1
    assert result.err.startswith(f"tapes: error: no directory {target.parent} for the database")
    assert not target.parent.exists()


def test_a_new_database_is_readable_by_its_owner_only(tapes: TapesRunner, tmp_path: Path) -> None:
    source, _trunk, _branch = sample(tmp_path)
    assert tapes("session", "import", str(source)).code == 0
    made = sorted(tapes.home.glob("tapes.sqlite*"))
    assert made, "no database was made"
    assert {p.name: oct(p.stat().st_mode & 0o777) for p in made} == {p.name: "0o600" for p in made}


def test_warnings_speak_once_in_the_clis_voice(capsys: pytest.CaptureFixture[str]) -> None:
    from tapes_e2e.cli import configure_logging

    root = logging.getLogger()
    before, level = root.handlers[:], root.level
    try:
        configure_logging(debug=False)
        log = logging.getLogger("tapes_e2e.sync.worker")
        for _ in range(3):
            log.warning("sync %s failure: %s", "push", "server unreachable")
        log.info("not shown without --debug")
        log.error("integrity: reported by the command's own error line")
    finally:
        root.handlers[:], root.level = before, level
    err = capsys.readouterr().err
    assert err == "tapes: warning: sync push failure: server unreachable\n"


def _fake_go_tapes(folder: Path, name: str = "tapes") -> Path:
    """An executable standing in for Go tapes' binary: prints its arguments, exits 7."""
    folder.mkdir(parents=True, exist_ok=True)
    fake = folder / name
    fake.write_text('#!/bin/sh\necho "go tapes: $*"\nexit 7\n', encoding="utf-8")
    fake.chmod(0o755)
    return fake


def _installed_tapes(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    script = shutil.which("tapes", path=str(Path(sys.executable).parent))
    assert script is not None
    return subprocess.run([script, *args], capture_output=True, text=True, env=env, check=False)


def test_commands_of_go_tapes_are_handed_to_go_tapes(tmp_path: Path) -> None:
    """``tapes start`` (and ``serve``, ``deck``, …) are Go tapes' commands: ours runs Go tapes'
    binary with the same arguments, from TAPES_GO_BIN or else the next ``tapes`` on PATH that is
    not this program, and its exit status is Go tapes' own."""
    ours = str(Path(sys.executable).parent)
    fake = _fake_go_tapes(tmp_path / "go")
    env = {"PATH": f"{ours}{os.pathsep}/usr/bin:/bin", "HOME": str(tmp_path), GO_BIN: str(fake)}
    done = _installed_tapes("start", "--port", "8080", env=env)
    assert (done.returncode, done.stdout) == (7, "go tapes: start --port 8080\n")

    env = {
        "PATH": os.pathsep.join([ours, str(fake.parent), "/usr/bin:/bin"]),
        "HOME": str(tmp_path),
    }
    done = _installed_tapes("--db", "x.sqlite", "deck", env=env)
    assert (done.returncode, done.stdout) == (7, "go tapes: --db x.sqlite deck\n")
    assert _installed_tapes("version", env=env).stdout.startswith("tapes-e2e ")  # ours, still


def test_a_command_nobody_has_is_one_error_naming_go_tapes(tapes: TapesRunner) -> None:
    result = tapes("start")
    assert result.code == 2
    assert result.err.startswith("tapes: error: 'start' is not a tapes-e2e command, and Go tapes")
    assert f"set {GO_BIN}" in result.err


def test_an_unreachable_server_hint_names_commands_that_work(tapes: TapesRunner) -> None:
    result = tapes("storage", "configure", "--api-url", "http://127.0.0.1:9")
    assert result.code == 1
    assert result.err.startswith("tapes: error: cannot reach http://127.0.0.1:9")
    assert "tapes storage configure --api-url" in result.err
    assert "config.toml" not in result.err


def test_version_flag(tapes: TapesRunner) -> None:
    shown = tapes("--version")
    assert (shown.code, shown.out.split()[0]) == (0, "tapes-e2e")
    assert shown.out == tapes("version").out


def test_shell_completion_names_our_commands(tmp_path: Path) -> None:
    """``tapes --show-completion bash`` prints the script ``--install-completion`` installs, and
    the installed script completes commands and subcommands."""
    env = {"PATH": f"{Path(sys.executable).parent}{os.pathsep}/usr/bin:/bin", "HOME": str(tmp_path)}
    script = _installed_tapes("--show-completion", "bash", env=env)
    assert script.returncode == 0, script.stderr
    assert "_TAPES_COMPLETE" in script.stdout
    for words, cword, expected in (("tapes te", "1", "team"), ("tapes team ro", "2", "role")):
        done = _installed_tapes(env=env | {
            "_TAPES_COMPLETE": "complete_bash", "COMP_WORDS": words, "COMP_CWORD": cword,
        })  # fmt: skip
        assert expected in done.stdout.split(), (words, done.stdout, done.stderr)


def test_counts_agree_with_their_nouns(tapes: TapesRunner, tmp_path: Path) -> None:
    """One session is "1 session", never "1 sessions" or "1 session(s)"."""
    source = write_jsonl(tmp_path / "one.jsonl", [Node.new(text_bucket("user", "alone"))])
    imported = tapes("session", "import", str(source))
    assert "imported 1 new node, 0 already present" in imported.err
    shown = tapes("storage", "status")
    assert "(1 session, 1 node)" in shown.out
    assert "checked 1 node, 0 damaged" in tapes("verify").err


CONTROL = (
    "\x1b]8;;https://evil.example\x1b\\click\x1b]8;;\x1b\\"  # a hidden link (OSC 8)
    " \x1b[2J\x1b[H"  # clear the screen, cursor home
    " \x1b]0;window title\x07"  # set the terminal's title
    " safe\rEVIL"  # carriage return: overwrite what was shown
    " \x9b31m"  # C1 CSI, an escape sequence in one character
    " \u202egnp.exe"  # right-to-left override: reads "exe.png"
)
RAW = ("\x1b", "\x07", "\r", "\x9b", "\u202e")


def test_control_characters_from_a_session_reach_no_terminal(
    tapes: TapesRunner, tmp_path: Path
) -> None:
    """A prompt is data for the terminal too: an escape sequence in it (from a teammate's shared
    session, a server's answer) could make a hidden link, clear the screen, set the title or
    overwrite a line. Every listing, ``show`` and ``--json`` shows each control as an escape."""
    nodes = chain([CONTROL, "ok"])
    assert tapes("session", "import", str(write_jsonl(tmp_path / "n.jsonl", nodes))).code == 0
    leaf = nodes[-1].hash
    shown = [
        tapes("session", "list"),
        tapes("session", "list", "--json"),
        tapes("session", "show", leaf, "--full"),
        tapes("session", "show", leaf, "--json"),
    ]
    for result in shown:
        assert result.code == 0, result.err
        assert not any(raw in result.out for raw in RAW), repr(result.out)
    assert "\\x1b]8;;https://evil.example" in shown[2].out
    assert "safe\\x0dEVIL" in shown[2].out
    assert "\\u202egnp.exe" in shown[2].out
    assert json.loads(shown[3].out)  # still JSON, the controls escaped inside its strings
