"""The usage dashboard through the real app (Litestar's TestClient): its headers, sign-in with a
key or a one-time link, sessions, CSRF, who sees which team, escaping, and its figures beside the
usage API's. tests/e2e/test_dashboard_browser.py drives the same pages in a real Chromium."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import httpx
import pytest
from litestar.testing import TestClient
from markupsafe import escape

import keymgmt
from server.dashboard import data
from server.dashboard.web import CSP
from server.domain.usage import labels
from tapes_e2e.protocol.text import visible
from tests.server.conftest import Clock, User, Vault
from tests.server.test_teams import TeamKit

HOSTILE = ("<script>alert(1)</script>", '"><img src=x onerror=alert(2)>', "</script>&", "{{7*7}}")
HOST = "testserver.local"
CSRF = re.compile(r'name="csrf" value="([0-9a-f]{64})"')
ERROR = re.compile(r'id="error"[^>]*>([^<]*)<')


# --- helpers (the browser test uses them too) -------------------------------------------------


def metadata(model: str = "m", *, hours_ago: float = 0, **fields: Any) -> dict[str, Any]:
    """Clear metadata as a ``coarse`` team's client sends it."""
    created = datetime.now(UTC) - timedelta(hours=hours_ago)
    values = {"model": model, "role": "assistant", "created_at": created.isoformat()} | fields
    return keymgmt.project_metadata("coarse", values)


def push_usage(user: User, vault: Vault, rows: list[dict[str, Any]]) -> None:
    """One node per row of clear metadata, pushed into ``vault`` by ``user``."""
    envelopes = [
        vault.seal(f"{user.handle} {index} {row}")[1] | {"metadata": row}
        for index, row in enumerate(rows)
    ]
    pushed = user.post("/api/v1/sync/push", {"vault": vault.vault_id, "envelopes": envelopes})
    assert pushed.status_code == 200, pushed.text


def csrf_of(page: httpx.Response) -> str:
    found = CSRF.search(page.text)
    assert found, page.text
    return found.group(1)


def error_of(page: httpx.Response) -> str:
    found = ERROR.search(page.text)
    assert found, page.text
    return found.group(1).strip()


def key_for(user: User, vault: str, permissions: tuple[str, ...] = ("read-usage",)) -> str:
    created = user.post("/api/v1/api-keys/", {"vault": vault, "permissions": list(permissions)})
    assert created.status_code == 201, created.text
    return str(created.json()["api_key"])


def sign_in_with_key(client: Any, key: str) -> httpx.Response:
    form = client.get("/dashboard/sign-in")
    signed: httpx.Response = client.post(
        "/dashboard/sign-in", data={"csrf": csrf_of(form), "api_key": key}, follow_redirects=False
    )
    return signed


def link_for(user: User, team: str | None = None) -> str:
    made = user.post("/api/v1/dashboard/links", {"team": team} if team else {})
    assert made.status_code == 201, made.text
    return str(made.json()["url"])


def sign_in_with_link(client: Any, url: str) -> httpx.Response:
    path = httpx.URL(url).path
    page = client.get(path)
    assert page.status_code == 200, page.text
    signed: httpx.Response = client.post(path, data={"csrf": csrf_of(page)}, follow_redirects=False)
    return signed


def shown(page: httpx.Response, element: str) -> int:
    found = re.search(rf'id="{element}" data-value="(\d+)"', page.text)
    assert found, element
    return int(found.group(1))


def table(page: httpx.Response, table_id: str) -> dict[str, tuple[int, int]]:
    """``label → (nodes, tokens)`` of one breakdown table, labels unescaped."""
    body = page.text.split(f'<table id="{table_id}">', 1)[1].split("</table>", 1)[0]
    rows = {}
    for row in re.findall(r"<tr>(.*?)</tr>", body, re.DOTALL)[1:]:
        label = re.search(r'<th scope="row" class="name"><bdi>(.*?)</bdi></th>', row, re.DOTALL)
        numbers = re.findall(r'data-value="(\d+)"', row)
        assert label, row
        assert len(numbers) == 2, row
        text = label.group(1).replace("&lt;", "<").replace("&gt;", ">").replace("&#34;", '"')
        text = text.replace("&#39;", "'").replace("&amp;", "&")
        rows[text] = (int(numbers[0]), int(numbers[1]))
    return rows


def fresh(client: TestClient[Any]) -> TestClient[Any]:
    """The same app, as another browser (no cookies)."""
    client.cookies.clear()
    return client


# --- tests -----------------------------------------------------------------------------------


def test_every_dashboard_response_carries_the_strict_headers(
    client: TestClient[Any], alice: User
) -> None:
    key = key_for(alice, alice.vault)
    answers = [
        client.get("/dashboard", follow_redirects=False),  # 303 to the sign-in page
        client.get("/dashboard/sign-in"),
        client.post("/dashboard/sign-in", data={"api_key": key}),  # no CSRF token: 403
        client.get("/dashboard/no-such-page"),
        client.get("/dashboard/link/made-up"),
        client.get("/dashboard/static/htmx.min.js"),
        client.get("/dashboard/static/dashboard.css"),
    ]
    assert sign_in_with_key(client, key).status_code == 303
    answers += [client.get("/dashboard"), client.get("/dashboard?team=nope&from=x")]
    assert [a.status_code for a in answers] == [303, 200, 403, 404, 410, 200, 200, 200, 404]
    for answer in answers:
        assert answer.headers["content-security-policy"] == CSP, answer.request.url
        assert answer.headers["x-content-type-options"] == "nosniff"
        assert answer.headers["referrer-policy"] == "no-referrer"
        assert answer.headers["x-frame-options"] == "DENY"
    assert "frame-ancestors 'none'" in CSP
    assert "script-src 'self';" in CSP
    pages = [a for a in answers if a.headers["content-type"].startswith("text/html")]
    assert len(pages) == 6
    for page in pages:  # nothing inline for the CSP to refuse: no script, style or handler
        assert re.findall(r"<script(?![^>]*\bsrc=)", page.text) == []
        assert not re.search(r"<style|\sstyle=|\son[a-z]+=", page.text, re.IGNORECASE)
        assert '"includeIndicatorStyles": false' in page.text


def test_the_api_is_unchanged_by_the_dashboard(client: TestClient[Any], alice: User) -> None:
    """Problem+json stays the API's error format; the dashboard's pages are not in the schema."""
    missing = alice.get("/api/v1/teams/nope/usage/")
    assert missing.headers["content-type"].startswith("application/problem+json")
    assert "content-security-policy" not in missing.headers
    paths = client.get("/schema/openapi.json").json()["paths"]
    assert [p for p in paths if "dashboard" in p] == ["/api/v1/dashboard/links"]


def test_a_wrong_key_gets_one_clear_message(client: TestClient[Any], clock: Clock) -> None:
    alice, mallory = User(client, "alice"), User(client, "mallory")
    kit = TeamKit(alice, clock)
    revoked = key_for(alice, alice.vault)
    key_id = alice.get("/api/v1/api-keys/").json()[0]["key_id"]
    assert alice.delete(f"/api/v1/api-keys/{key_id}").status_code == 204
    refused = {
        "made up": "tapes_" + "x" * 43,
        "not a key": "hunter2",
        "revoked": revoked,
        "pull only": key_for(alice, alice.vault, ("pull",)),
        "empty": "",
        "huge": "tapes_" + "y" * 5000,
        "mallory's key to her vault, on alice's team": key_for(mallory, mallory.vault)[:-1],
    }
    messages = set()
    for name, key in refused.items():
        answer = sign_in_with_key(fresh(client), key)
        assert answer.status_code == 401, name
        assert "tapes_dashboard=" not in answer.headers.get("set-cookie", ""), name
        messages.add(error_of(answer))
    assert messages == {
        "this key was not accepted: paste a live tapes_… API key with the read-usage permission"
    }
    # a read-usage key of the team signs in, and sees that team only
    assert sign_in_with_key(fresh(client), key_for(alice, kit.team_id)).status_code == 303
    page = client.get("/dashboard")
    assert page.status_code == 200
    assert re.findall(r'<option value="([^"]+)"', page.text) == [kit.team_id]
    assert client.get(f"/dashboard?team={alice.vault}").status_code == 404


def test_a_post_without_the_right_csrf_token_is_refused(
    client: TestClient[Any], alice: User
) -> None:
    key = key_for(alice, alice.vault)
    real = csrf_of(client.get("/dashboard/sign-in"))
    # one character changed: the last one, to a character it is not already
    tampered = real[:-1] + ("1" if real[-1] == "0" else "0")
    for token in ("", "0" * 64, tampered, "é" * 64):
        refused = client.post("/dashboard/sign-in", data={"csrf": token, "api_key": key})
        assert refused.status_code == 403
        assert "came from another site" in error_of(refused)
    # the token of another browser's cookie does not do either
    other = TestClient(client.app, base_url=str(client.base_url))
    with other:
        stolen = csrf_of(other.get("/dashboard/sign-in"))
    assert (
        client.post("/dashboard/sign-in", data={"csrf": stolen, "api_key": key}).status_code == 403
    )
    assert sign_in_with_key(client, key).status_code == 303
    page = client.get("/dashboard")
    # signed in: sign-out without the session's token ends nothing
    assert client.post("/dashboard/sign-out", data={"csrf": stolen}).status_code == 403
    assert client.get("/dashboard").status_code == 200
    # a link is not spent by a forged POST
    url = link_for(alice)
    path = httpx.URL(url).path
    assert client.post(path, data={"csrf": "0" * 64}).status_code == 403
    assert client.get(path).status_code == 200
    signed_out = client.post("/dashboard/sign-out", data={"csrf": csrf_of(page)})
    assert signed_out.status_code == 200
    assert "Sign in to the usage dashboard" in signed_out.text


def test_a_link_is_single_use_and_expires(
    client: TestClient[Any], clock: Clock, alice: User
) -> None:
    url = link_for(alice)
    assert url.startswith("http://testserver.local/dashboard/link/")
    secret = url.rsplit("/", 1)[1]
    assert len(secret) >= 43
    # the server holds only the link's hash
    engine = client.app.state.engine
    with engine.connect() as conn:
        stored = conn.exec_driver_sql("SELECT token_hash FROM dashboard_links").scalars().all()
    assert secret not in stored
    assert len(stored) == 1
    opened = client.get(httpx.URL(url).path)
    assert "Sign in as alice?" in opened.text
    assert sign_in_with_link(client, url).status_code == 303
    assert client.get("/dashboard").status_code == 200
    gone = [fresh(client).get(httpx.URL(url).path), client.get("/dashboard/link/" + "A" * 43)]
    late = link_for(alice)
    clock.advance(minutes=5, seconds=1)
    gone.append(client.get(httpx.URL(late).path))
    assert {g.status_code for g in gone} == {410}
    assert {error_of(g) for g in gone} == {
        (
            "this sign-in link is not valid: it was used, it expired (links last 5 minutes) or it "
            "never existed; run `tapes usage --open` again"
        )
    }
    # spending a used link by POST is refused the same way
    path = httpx.URL(url).path
    form = client.get("/dashboard/sign-in")
    assert client.post(path, data={"csrf": csrf_of(form)}).status_code == 410


def test_links_need_an_interactive_login_and_a_readable_team(
    client: TestClient[Any], clock: Clock, alice: User, bob: User
) -> None:
    kit = TeamKit(alice, clock)
    assert kit.add(bob).status_code == 200  # a member (not a viewer) reads no team usage here
    key = {"Authorization": f"Bearer {key_for(alice, alice.vault)}"}
    by_key = client.post("/api/v1/dashboard/links", json={}, headers=key)
    assert by_key.status_code == 403
    for team in (kit.team_id, "t_doesnotexist00"):
        refused = bob.post("/api/v1/dashboard/links", {"team": team})
        assert (refused.status_code, refused.json()["detail"]) == (404, "no such team")
    assert bob.post("/api/v1/dashboard/links", {"team": "bad id!"}).status_code == 400
    assert client.post("/api/v1/dashboard/links", json={}).status_code == 401
    url = link_for(alice, kit.team_id)
    assert sign_in_with_link(client, url).headers["location"] == f"/dashboard?team={kit.team_id}"


def test_the_session_cookie_is_strict_fresh_and_ends(
    client: TestClient[Any], clock: Clock, alice: User
) -> None:
    client.cookies.set("tapes_dashboard", "chosen-by-an-attacker", HOST, "/dashboard")
    signed_in = sign_in_with_key(client, key_for(alice, alice.vault))
    cookie = signed_in.headers["set-cookie"]
    assert re.search(r"tapes_dashboard=[A-Za-z0-9_-]{43};", cookie)
    assert "chosen-by-an-attacker" not in cookie
    for attribute in ("HttpOnly", "Path=/dashboard", "SameSite=strict", "Max-Age=28800"):
        assert attribute in cookie
    assert "Secure" not in cookie  # the public URL is http here (see the https test below)
    assert client.get("/dashboard").status_code == 200
    clock.advance(hours=8, seconds=1)
    assert client.get("/dashboard", follow_redirects=False).headers["location"] == (
        "/dashboard/sign-in"
    )
    # a stolen cookie stops working at sign-out: the row is gone
    alice.relogin()
    assert sign_in_with_key(client, key_for(alice, alice.vault)).status_code == 303
    (stolen,) = [c.value for c in client.cookies.jar if c.name == "tapes_dashboard"]
    page = client.get("/dashboard")
    client.post("/dashboard/sign-out", data={"csrf": csrf_of(page)})
    client.cookies.set("tapes_dashboard", str(stolen), HOST, "/dashboard")
    assert client.get("/dashboard", follow_redirects=False).status_code == 303
    # revoking the key ends the sessions it opened
    assert sign_in_with_key(client, key_for(alice, alice.vault)).status_code == 303
    for info in alice.get("/api/v1/api-keys/").json():
        alice.delete(f"/api/v1/api-keys/{info['key_id']}")
    assert client.get("/dashboard", follow_redirects=False).status_code == 303


def test_the_cookie_is_secure_behind_an_https_public_url(database_url: str) -> None:
    from server.app import create_app
    from server.db.engine import make_engine
    from server.db.migrate import upgrade
    from server.settings import Settings

    engine = make_engine(database_url)
    upgrade(engine)
    settings = Settings(database_url=database_url, public_url="https://tapes.example")
    with TestClient(create_app(settings, engine=engine), base_url="https://tapes.example") as web:
        assert "Secure" in web.get("/dashboard/sign-in").headers["set-cookie"]
    engine.dispose()


def test_a_member_of_another_team_sees_nothing_of_this_team(
    client: TestClient[Any], clock: Clock
) -> None:
    alice, bob, mallory = User(client, "alice"), User(client, "bob"), User(client, "mallory")
    kit = TeamKit(alice, clock)
    assert kit.add(bob).status_code == 200
    push_usage(alice, kit.vault(alice), [metadata("secret-model", total_tokens=5)])
    TeamKit(mallory, clock)
    for outsider in (mallory, bob):  # another team's owner; this team's plain member
        assert sign_in_with_link(fresh(client), link_for(outsider)).status_code == 303
        home = client.get("/dashboard")
        assert kit.team_id not in home.text
        real = client.get(f"/dashboard?team={kit.team_id}")
        absent = client.get("/dashboard?team=t_doesnotexist00")
        assert (real.status_code, real.text) == (absent.status_code, absent.text)
        assert real.status_code == 404
        assert "secret-model" not in real.text


def test_every_string_of_clear_metadata_is_escaped(client: TestClient[Any], clock: Clock) -> None:
    alice = User(client, "alice")
    kit = TeamKit(alice, clock)
    rows = [metadata(value, provider=value, agent_name=value, total_tokens=3) for value in HOSTILE]
    push_usage(alice, kit.vault(alice), rows)
    assert sign_in_with_link(client, link_for(alice, kit.team_id)).status_code == 303
    page = client.get(f"/dashboard?team={kit.team_id}")
    assert page.status_code == 200
    for value in HOSTILE:
        assert str(escape(value)) in page.text, value
        if value != "{{7*7}}":  # braces need no escaping; the template engine never runs them
            assert value not in page.text, value
    assert "{{7*7}}" in page.text
    assert ">49<" not in page.text
    assert table(page, "by-model").keys() == set(HOSTILE)
    assert table(page, "by-agent").keys() == set(HOSTILE)
    # the SVG chart's text says the top model, escaped too
    svg = page.text.split("<svg", 1)[1].split("</svg>", 1)[0]
    assert "most used model" in svg
    assert "<script" not in svg
    assert "<img" not in svg
    assert re.findall(r"<script\b", page.text) == ["<script"]  # htmx, and nothing else


CONTROLLED = ("gpt\u202egnp.exe", "m\x1b]8;;https://evil.example\x1b\\x", "a\u2066b\u009bc\rd")


def test_control_characters_of_clear_metadata_are_shown_and_names_isolated(
    client: TestClient[Any], clock: Clock
) -> None:
    """A member's model, provider or harness name holding a bidirectional override, an escape
    sequence, a C1 control or a carriage return reaches the page as visible escapes, never as
    the character (threat model T), and each name sits in its own ``<bdi>``, so right-to-left
    text in one cannot reorder the figures beside it."""
    alice = User(client, "alice")
    kit = TeamKit(alice, clock)
    names = (*CONTROLLED, "\u05e9\u05dc\u05d5\u05dd")  # and honest right-to-left script
    push_usage(alice, kit.vault(alice), [metadata(v, agent_name=v, total_tokens=3) for v in names])
    assert sign_in_with_link(client, link_for(alice, kit.team_id)).status_code == 303
    page = client.get(f"/dashboard?team={kit.team_id}")
    assert page.status_code == 200
    assert re.search("[\x00-\x08\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]", page.text) is None
    shown = {visible(v) for v in names}
    assert table(page, "by-model").keys() == shown
    assert table(page, "by-agent").keys() == shown
    assert "gpt\\u202egnp.exe" in page.text
    assert "\u05e9\u05dc\u05d5\u05dd" in page.text  # shown as it is


def test_a_long_breakdown_shows_its_largest_rows_and_one_row_of_the_rest(
    client: TestClient[Any], clock: Clock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """However many models a vault names, a breakdown shows the largest ``SHOWN`` and one row
    of the others' sums, and the unpriced note names ``UNPRICED_SHOWN`` models and counts the
    rest: a member's flood of names cannot make the manager's page as long as the vault."""
    monkeypatch.setattr(data, "SHOWN", 2)
    monkeypatch.setattr(data, "UNPRICED_SHOWN", 1)
    alice = User(client, "alice")
    kit = TeamKit(alice, clock)
    rows = [metadata(f"m{i}", prompt_tokens=10 * i, total_tokens=10 * i) for i in range(1, 6)]
    push_usage(alice, kit.vault(alice), rows)
    assert sign_in_with_link(client, link_for(alice, kit.team_id)).status_code == 303
    page = client.get(f"/dashboard?team={kit.team_id}")
    assert page.status_code == 200
    body = page.text.split('<table id="by-model">', 1)[1].split("</table>", 1)[0]
    assert re.findall(r"<bdi>(m\d)</bdi></th>", body) == ["m5", "m4"]
    rest = re.search(
        r"and (\d+) more</span></th>.*?data-value=\"(\d+)\".*?data-value=\"(\d+)\"", body, re.DOTALL
    )
    assert rest is not None, body
    assert tuple(map(int, rest.groups())) == (3, 3, 60)  # m3, m2, m1: 3 nodes, 30+20+10 tokens
    assert shown(page, "total-tokens") == 150
    assert re.search(r'id="unpriced-more">and 4 more<', page.text), page.text
    assert re.findall(r'<bdi class="tag">(m\d)</bdi>', page.text) == ["m1"]


def test_names_past_the_teams_cap_are_said_to_be_counted_as_other(
    client: TestClient[Any], clock: Clock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A team whose members named more models than the server itemizes shows ``(other)`` as a
    row and says why, once; a team within the caps says nothing of it."""
    alice = User(client, "alice")
    kit = TeamKit(alice, clock)
    push_usage(alice, kit.vault(alice), [metadata("m1", total_tokens=1)])
    assert sign_in_with_link(client, link_for(alice, kit.team_id)).status_code == 303
    assert 'id="folded"' not in client.get(f"/dashboard?team={kit.team_id}").text
    monkeypatch.setitem(labels.CAPS, "model", 1)
    push_usage(alice, kit.vault(alice), [metadata(f"m{i}", total_tokens=i) for i in (2, 3)])
    page = client.get(f"/dashboard?team={kit.team_id}")
    assert table(page, "by-model") == {"m1": (1, 1), labels.OTHER: (2, 5)}
    note = re.search(r'id="folded">([^<]*)<', page.text)
    assert note is not None, page.text
    assert note.group(1).startswith("This team named more than 1 models: the server itemizes")


def test_the_figures_equal_the_usage_apis(client: TestClient[Any], clock: Clock) -> None:
    alice, bob, dave = User(client, "alice"), User(client, "bob"), User(client, "dave")
    kit = TeamKit(alice, clock)
    assert kit.add(bob).status_code == 200
    assert kit.add(dave, "viewer").status_code == 200
    push_usage(alice, kit.vault(alice), [
        metadata("claude", provider="anthropic", agent_name="claude-code", prompt_tokens=100,
                 completion_tokens=20, total_tokens=120, cache_read_input_tokens=50),
        metadata("claude", provider="anthropic", agent_name="claude-code", total_tokens=30),
    ])  # fmt: skip
    push_usage(bob, kit.vault(bob), [
        metadata("gpt", provider="openai", agent_name="codex", prompt_tokens=7,
                 completion_tokens=3, total_tokens=10),
    ])  # fmt: skip
    assert sign_in_with_link(client, link_for(dave)).status_code == 303
    page = client.get(f"/dashboard?team={kit.team_id}&days=7")
    today = clock().date()
    span = f"from={(today - timedelta(days=6)).isoformat()}&to={today.isoformat()}"

    def api(group_by: str) -> dict[str, Any]:
        url = f"/api/v1/teams/{kit.team_id}/usage/?{span}&group_by={group_by}"
        answer: dict[str, Any] = dave.get(url).json()
        return answer

    totals = api("day")["totals"]
    assert shown(page, "total-tokens") == totals["total_tokens"] == 160
    assert shown(page, "prompt-tokens") == totals["prompt_tokens"] == 107
    assert shown(page, "completion-tokens") == totals["completion_tokens"] == 23
    assert shown(page, "nodes") == totals["nodes"] == 3
    assert shown(page, "cache-read-tokens") == totals["cache_read_input_tokens"] == 50
    for key, table_id in (("member", "by-member"), ("model", "by-model"), ("agent", "by-agent")):
        rows = api(key)["rows"]
        expected = {r["group"][key]: r["figures"]["total_tokens"] for r in rows}
        assert {k: v[1] for k, v in table(page, table_id).items()} == expected
    assert table(page, "by-agent") == {"claude-code": (2, 150), "codex": (1, 10)}
    assert "content: encrypted, the server cannot read it" in page.text
    assert "metadata in clear: model, provider, harness, tokens, hour" in page.text
    # models no price table knows: all unpriced, as the API says, and never shown as $0
    assert shown(page, "unpriced-tokens") == totals["unpriced_tokens"] > 0
    assert "not priced" in page.text
    assert "$0.00" not in page.text


def test_usage_counts_on_the_day_the_work_happened(client: TestClient[Any], alice: User) -> None:
    """A backfilled node lands on its own day, not on the day it was uploaded."""
    vault = Vault(alice.vault, alice.identity)
    push_usage(alice, vault, [metadata(hours_ago=24 * 10, total_tokens=40),
                              metadata(total_tokens=2)])  # fmt: skip
    assert sign_in_with_link(client, link_for(alice)).status_code == 303
    assert shown(client.get("/dashboard?days=7"), "total-tokens") == 2
    assert shown(client.get("/dashboard?days=30"), "total-tokens") == 42
    ten_days_ago = (datetime.now(UTC) - timedelta(days=10)).date().isoformat()
    page = client.get(f"/dashboard?from={ten_days_ago}&to={ten_days_ago}")
    assert shown(page, "total-tokens") == 40


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ("days=abc", "days: 'abc' is not a whole number of days (1..400)"),
        ("days=0", "days: '0' is not a whole number of days (1..400)"),
        ("days=401", "days: '401' is not a whole number of days (1..400)"),
        ("from=yesterday", "from: 'yesterday' is not a date (YYYY-MM-DD)"),
        ("from=2026-02-01&to=2026-01-01", "from (2026-02-01) is after to (2026-01-01)"),
        ("from=2020-01-01&to=2026-01-01", "the range spans more than 400 days; pick a shorter one"),
        ("to=9999-12-31", "to: the date is too late"),
        ("to=0001-01-02", "to: the date is too early"),
        ("team=", "no such team"),
        ("team=" + "x" * 5000, "no such team"),
    ],
)
def test_a_bad_range_or_team_is_one_clear_line(
    client: TestClient[Any], alice: User, query: str, message: str
) -> None:
    assert sign_in_with_link(client, link_for(alice)).status_code == 303
    page = client.get(f"/dashboard?{query}")
    assert page.status_code in (400, 404)
    assert error_of(page) == str(escape(message))


def test_dashboard_sign_in_is_rate_limited_like_the_login(database_url: str) -> None:
    from server.app import create_app
    from server.db.engine import make_engine
    from server.db.migrate import upgrade
    from server.settings import Settings

    engine = make_engine(database_url)
    upgrade(engine)
    settings = Settings(database_url=database_url, auth_rate_per_minute=3)
    with TestClient(create_app(settings, engine=engine)) as web:
        csrf = csrf_of(web.get("/dashboard/sign-in"))
        answers = [
            web.post("/dashboard/sign-in", data={"csrf": csrf, "api_key": f"tapes_{n}"})
            for n in range(4)
        ]
        assert [a.status_code for a in answers] == [401, 401, 401, 429]
        assert error_of(answers[-1]) == "too many attempts; wait a minute and try again"
        assert web.get("/dashboard/link/whatever").status_code == 429
    engine.dispose()


def test_a_priced_models_cost_is_the_usage_apis_and_an_unpriceable_one_is_never_0(
    client: TestClient[Any], alice: User, clock: Clock
) -> None:
    """Cost comes from the same price book as the API; tokens that cannot be priced (a model no
    table knows, or a bare total) read "not priced", never $0.00."""
    vault = Vault(alice.vault, alice.identity)
    push_usage(alice, vault, [
        metadata("gpt-4o-mini", provider="openai", prompt_tokens=1_000_000,
                 completion_tokens=1_000_000, total_tokens=2_000_000),
        metadata("no-such-model", provider="nobody", prompt_tokens=500, total_tokens=500),
        metadata("gpt-4o-mini", provider="openai", agent_name="bare", total_tokens=70),
    ])  # fmt: skip
    key = alice.post("/api/v1/api-keys/", {"vault": alice.vault, "permissions": ["read-usage"]})
    assert sign_in_with_key(client, key.json()["api_key"]).status_code == 303
    page = client.get(f"/dashboard?team={alice.vault}&days=1")
    today = clock().date().isoformat()
    api = alice.get(
        f"/api/v1/teams/{alice.vault}/usage/?from={today}&to={today}&group_by=model"
    ).json()
    cost = Decimal(api["totals"]["cost_usd"])
    assert cost > 0
    assert re.search(r'id="cost">\$([\d,.]+)<', page.text).group(1) == f"{cost:,.2f}"  # type: ignore[union-attr]
    models = page.text.split('<table id="by-model">', 1)[1].split("</table>", 1)[0]
    assert "no-such-model" in models
    assert "$0.00" not in page.text
