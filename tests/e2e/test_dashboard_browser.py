"""The usage dashboard in a real headless Chromium, against a real ``tapes-server`` process.

Users, teams and usage metadata are made through the real API; the browser signs in with a
read-usage key and with a one-time link, switches team and range (htmx), and every figure it
shows is compared with ``GET /api/v1/teams/{id}/usage``. Hostile model, provider and harness
names must run nothing. Keyboard use, visible focus and a 375-px-wide window are checked, and
screenshots are saved under the test's tmp_path.

Needs Debian's ``chromium`` and ``chromium-driver`` (``.ci/run`` installs them where apt works);
skipped with the reason when they are absent.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, cast

import pytest

from tests.e2e.conftest import LiveServer, ServerFactory
from tests.server.conftest import Clock, User
from tests.server.test_dashboard import HOSTILE, key_for, link_for, metadata, push_usage
from tests.server.test_teams import TeamKit

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")
WAIT = 20.0

try:
    from selenium import webdriver
    from selenium.common.exceptions import NoAlertPresentException
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.ui import Select, WebDriverWait
except ImportError:  # pragma: no cover - selenium is in the test extra
    webdriver = None  # type: ignore[assignment]

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(
        webdriver is None or CHROMIUM is None or CHROMEDRIVER is None,
        reason="needs chromium and chromium-driver (apt-get install chromium chromium-driver)",
    ),
]

FLAGS = (
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--disable-dev-shm-usage", "--window-size=1280,1200",
)  # fmt: skip


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[Any]:
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in (*FLAGS, f"--user-data-dir={tmp_path / 'chromium-profile'}"):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(executable_path=str(CHROMEDRIVER)), options=options)
    driver.set_page_load_timeout(WAIT)
    try:
        yield driver
    finally:
        driver.quit()


class World:
    """Alice owns teams Acme and Globex; Bob is a member of Acme, Dave its viewer. Every node's
    work happened within the last days: the usage API on main counts by upload day, the dashboard
    by the day the work happened (tests/server/test_dashboard.py checks a backfilled node)."""

    def __init__(self, server: LiveServer) -> None:
        self.server = server
        self.http = server.client()
        clock = Clock()
        http = cast(Any, self.http)  # an httpx client to a live server: TestClient's interface
        self.alice, self.bob, self.dave = (User(http, n) for n in ("alice", "bob", "dave"))
        self.acme = TeamKit(self.alice, clock)
        assert self.acme.add(self.bob).status_code == 200
        assert self.acme.add(self.dave, "viewer").status_code == 200
        self.globex = TeamKit(self.alice, clock)
        push_usage(self.alice, self.acme.vault(self.alice), [
            metadata("claude-sonnet", provider="anthropic", agent_name="claude-code",
                     prompt_tokens=1200, completion_tokens=300, total_tokens=1500,
                     cache_read_input_tokens=800, hours_ago=30),
            metadata("claude-sonnet", provider="anthropic", agent_name="claude-code",
                     prompt_tokens=900, completion_tokens=100, total_tokens=1000),
        ])  # fmt: skip
        push_usage(self.bob, self.acme.vault(self.bob), [
            metadata(value, provider=value, agent_name=value, total_tokens=7 * (i + 1))
            for i, value in enumerate(HOSTILE)
        ] + [metadata("gpt-5", provider="openai", agent_name="codex", total_tokens=640,
                      hours_ago=2)])  # fmt: skip
        push_usage(self.alice, self.globex.vault(self.alice), [
            metadata("gemini", provider="google", agent_name="gemini-cli", total_tokens=4242,
                     hours_ago=24 * 3),
        ])  # fmt: skip

    def api_totals(self, user: User, team: str, days: int) -> dict[str, int]:
        """The usage API's totals over the same whole UTC days the page shows."""
        today = datetime.now(UTC).date()
        first = today - timedelta(days=days - 1)
        url = f"/api/v1/teams/{team}/usage/?from={first.isoformat()}&to={today.isoformat()}"
        totals = user.get(url).json()["totals"]
        return {
            "total-tokens": totals["total_tokens"],
            "prompt-tokens": totals["prompt_tokens"],
            "completion-tokens": totals["completion_tokens"],
            "nodes": totals["nodes"],
        }


@pytest.fixture
def world(live_server_factory: ServerFactory) -> World:
    return World(live_server_factory(workers=1))


KEYBOARD_STOPS = ("sign-out", "team", "from", "to", "show", "days-7", "days-30", "days-90")
# The focused element's outline, once the element matches :focus (None until then).
FOCUS_STYLE = (
    "const e = arguments[0]; if (!e.matches(':focus')) return null;"
    " const s = getComputedStyle(e); return [s.outlineStyle, s.outlineWidth];"
)


def wait(driver: Any, condition: Any) -> Any:
    return WebDriverWait(driver, WAIT).until(condition)


def shown_totals(driver: Any) -> dict[str, int]:
    return {
        name: int(driver.find_element(By.ID, name).get_attribute("data-value"))
        for name in ("total-tokens", "prompt-tokens", "completion-tokens", "nodes")
    }


def assert_nothing_ran(driver: Any) -> None:
    """No alert, no console error (a CSP violation or a script error is one), no element
    injected by a hostile name: the page's only script is htmx and it holds no image."""
    with pytest.raises(NoAlertPresentException):
        _ = driver.switch_to.alert.text
    errors = [e for e in driver.get_log("browser") if e["level"] in ("SEVERE", "WARNING")]
    assert errors == []
    scripts = driver.find_elements(By.TAG_NAME, "script")
    assert [s.get_attribute("src").rsplit("/", 1)[1] for s in scripts] == ["htmx.min.js"]
    assert driver.find_elements(By.TAG_NAME, "img") == []
    assert driver.execute_script("return typeof window.htmx") == "object"


def sign_in_with_key(driver: Any, base: str, key: str) -> None:
    driver.get(f"{base}/dashboard")
    wait(driver, lambda d: d.current_url.endswith("/dashboard/sign-in"))
    field = driver.find_element(By.ID, "api-key")
    field.send_keys(key)
    field.send_keys(Keys.ENTER)
    wait(driver, lambda d: d.find_elements(By.ID, "total-tokens"))


def _by_key(browser: Any, world: World, tmp_path: Path) -> None:
    """A read-usage key of Acme: Acme's figures, equal to the API's; sign-out ends it."""
    base = world.server.base_url
    key = key_for(world.alice, world.acme.team_id)
    sign_in_with_key(browser, base, key)
    assert (
        Select(browser.find_element(By.ID, "team")).first_selected_option.get_attribute("value")
        == world.acme.team_id
    )
    assert shown_totals(browser) == world.api_totals(world.alice, world.acme.team_id, 30)
    assert "content: encrypted, the server cannot read it" in browser.page_source
    for value in HOSTILE:  # shown as text, verbatim
        assert value in browser.find_element(By.ID, "by-model").text
    assert_nothing_ran(browser)
    browser.save_screenshot(str(tmp_path / "dashboard-key.png"))
    browser.find_element(By.ID, "sign-out").click()
    wait(browser, lambda d: d.current_url.endswith("/dashboard/sign-in"))
    browser.get(f"{base}/dashboard")  # the session is over
    wait(browser, lambda d: d.current_url.endswith("/dashboard/sign-in"))


def _by_link(browser: Any, world: World, tmp_path: Path) -> None:
    """A one-time link for Alice: every team she reads; switch team and range (htmx)."""
    base = world.server.base_url
    today = datetime.now(UTC).date()
    url = link_for(world.alice)
    browser.get(url)
    browser.find_element(By.ID, "continue").click()
    wait(browser, lambda d: d.find_elements(By.ID, "total-tokens"))
    options = [
        o.get_attribute("value") for o in browser.find_elements(By.CSS_SELECTOR, "#team option")
    ]
    assert set(options) == {world.alice.vault, world.acme.team_id, world.globex.team_id}
    browser.get(url)  # the link is spent
    assert "this sign-in link is not valid" in browser.find_element(By.ID, "error").text
    browser.get_log("browser")  # drop the console's note of that expected 410
    browser.get(f"{base}/dashboard")

    Select(browser.find_element(By.ID, "team")).select_by_value(world.globex.team_id)  # htmx
    wait(browser, lambda d: world.globex.team_id in d.current_url)
    wait(
        browser,
        lambda d: d.find_element(By.ID, "total-tokens").get_attribute("data-value") == "4242",
    )
    assert shown_totals(browser) == world.api_totals(world.alice, world.globex.team_id, 30)

    Select(browser.find_element(By.ID, "team")).select_by_value(world.acme.team_id)
    wait(browser, lambda d: world.acme.team_id in d.current_url)
    for days in (7, 30, 90):
        browser.find_element(By.ID, f"days-{days}").click()
        wait(browser, lambda d, n=days: f"days={n}" in d.current_url)
        wait(
            browser,
            lambda d, n=days: (
                d.find_element(By.ID, f"days-{n}").get_attribute("aria-pressed") == "true"
            ),
        )
        start = (today - timedelta(days=days - 1)).isoformat()
        assert browser.find_element(By.ID, "from").get_attribute("value") == start
        assert shown_totals(browser) == world.api_totals(world.alice, world.acme.team_id, days)
    assert shown_totals(browser)["total-tokens"] == 2500 + 7 * 10 + 640
    assert_nothing_ran(browser)
    browser.save_screenshot(str(tmp_path / "dashboard.png"))


def _keyboard(browser: Any, world: World, tmp_path: Path) -> None:
    """The tab order reaches sign-out and the pickers, each with a visible focus."""
    base = world.server.base_url
    browser.get(f"{base}/dashboard?team={world.acme.team_id}&days=30")
    browser.find_element(By.TAG_NAME, "body").click()
    reached: list[str] = []
    for _ in range(40):
        browser.switch_to.active_element.send_keys(Keys.TAB)
        active = browser.switch_to.active_element
        ident = active.get_attribute("id")
        if ident in KEYBOARD_STOPS and ident not in reached:
            style = wait(browser, lambda d, e=active: d.execute_script(FOCUS_STYLE, e))
            assert style[0] != "none", (ident, style)
            assert style[1] != "0px", (ident, style)
            reached.append(ident)
    assert reached == list(KEYBOARD_STOPS)


def _narrow(browser: Any, world: World, tmp_path: Path) -> None:
    """A 375-px-wide window scrolls only vertically."""
    base = world.server.base_url
    browser.execute_cdp_cmd(
        "Emulation.setDeviceMetricsOverride",
        {"width": 375, "height": 812, "deviceScaleFactor": 1, "mobile": True},
    )
    browser.get(f"{base}/dashboard?team={world.acme.team_id}&days=90")
    widths = browser.execute_script(
        "return [document.documentElement.scrollWidth, document.documentElement.clientWidth,"
        " window.innerWidth]"
    )
    assert widths[2] == 375
    assert widths[0] <= widths[1], widths
    browser.save_screenshot(str(tmp_path / "dashboard-375.png"))
    assert_nothing_ran(browser)
    print(f"screenshots: {tmp_path}")


def test_the_dashboard_in_a_real_browser(browser: Any, world: World, tmp_path: Path) -> None:
    for step in (_by_key, _by_link, _keyboard, _narrow):
        step(browser, world, tmp_path)
