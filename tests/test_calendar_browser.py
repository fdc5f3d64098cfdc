"""The calendar of bookings (``/calendar``) in a real headless Chromium, driven by Selenium,
against a real node process trusting a real OIDC issuer: alice and bob each have a confirmed
session (on two pools) and an open offer set. As alice, in the Europe/Paris time zone: her
session is drawn in its pool at its time and opens when clicked; bob's bookings are there as
anonymous occupancy, with nothing of his session in the page; dragging across free time
pre-fills the request form, and submitting it shows the node's offers.

``EBROKER_CALENDAR_SCREENSHOT=docs/calendar.png`` also writes the README's screenshot.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import httpx
import pytest

from tests.conftest import ACCEPT, POOL_CONFIG, REQUIRE, request_doc, unavailable
from tests.nodes import Node, oidc_node
from tests.oidc_issuer import OidcIssuer

pytestmark = pytest.mark.slow  # a node process and a browser

CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"
ZONE = "Europe/Paris"
PLATFORMS = [
    {**POOL_CONFIG["platforms"][0], "name": name, "pools": [{"name": "main", "inventories": {
        "cores": {"total": 8}, "memory": {"total": 32}, "storage": {"total": 100}}}]}
    for name in ("east", "west")
]  # fmt: skip
WAIT = 15


# the next whole hour when the module was loaded: one origin for every fixture and test, even
# when the clock passes an hour meanwhile
BASE = datetime.now(UTC).replace(minute=0, second=0, microsecond=0) + timedelta(hours=1)


def at(hours: float) -> datetime:
    """``hours`` after ``BASE`` (UTC)."""
    return BASE + timedelta(hours=hours)


def text(instant: datetime) -> str:
    return instant.isoformat().replace("+00:00", "Z")


@pytest.fixture(scope="module")
def selenium() -> Any:
    try:
        import selenium.webdriver
    except ImportError:
        unavailable("selenium is not installed (pip install selenium)")
    if not (Path(CHROMIUM).exists() and Path(CHROMEDRIVER).exists()):
        unavailable("chromium or chromedriver is missing (run .ci/setup-chromium.sh)")
    return selenium.webdriver



@pytest.fixture(scope="module")
def node(issuer: OidcIssuer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Node]:
    tmp = tmp_path_factory.mktemp("calendar-browser")
    feeds = {"secret": "browser-test-feed-secret-0123456789abcdef"}
    started = oidc_node(
        issuer, tmp, "Calendar test node", "calendar",
        platforms=PLATFORMS,
        offers={"max_offers": 3, "hold": "PT30M"},
        auth={**issuer.auth_config(), "admin_groups": ["test:admins"], "feeds": feeds},
        lifecycle={"enabled": False, "workdir": str(tmp / "work")},
    )  # fmt: skip
    yield started
    started.stop()


@pytest.fixture(scope="module")
def tokens(issuer: OidcIssuer) -> dict[str, str]:
    return {"alice": issuer.token(sub="alice", groups=(), expires_in=3600),
            "bob": issuer.token(sub="bob", groups=(), expires_in=3600),
            "root": issuer.token(sub="root", groups=("admins",), expires_in=3600)}  # fmt: skip


def book(node: Node, token: str, hours: float, cores: int, accept: bool) -> dict[str, Any]:
    """An offer set of ``cores`` for an hour at ``hours``; its first offer accepted if asked."""
    headers = {"Authorization": f"Bearer {token}"}
    doc = request_doc(cores=(cores, cores), start=[f"{text(at(hours))}/PT0S"], duration="PT1H")
    r = httpx.post(f"{node.url}/requests", json=doc, headers=headers, timeout=10)
    assert r.status_code == 200 and r.json()["result"] == "YES", r.text
    offer = r.json()["offers"][0]
    if accept:
        r = httpx.post(f"{node.url}/sessions/{offer['meta']['uuid']}", json=ACCEPT,
                       headers=headers, timeout=10)  # fmt: skip
        assert r.status_code == 200, r.text
    return {"uuid": offer["meta"]["uuid"], "pool": offer["site"]["pools"][0],
            "offerset": r.json()["offerset"]["uuid"] if accept else None}  # fmt: skip


@pytest.fixture(scope="module")
def bookings(node: Node, tokens: dict[str, str]) -> dict[str, dict[str, Any]]:
    window = {"start": text(at(12)), "end": text(at(15)), "reason": "firmware",
              "amounts": {"cores": 4}}  # fmt: skip
    r = httpx.post(f"{node.url}/pools/west/main/maintenance", json=window, timeout=10,
                   headers={"Authorization": f"Bearer {tokens['root']}"})  # fmt: skip
    assert r.status_code == 201, r.text
    return {
        "alice": book(node, tokens["alice"], 2, 2, accept=True),
        # 7 cores when alice has 2 of east's 8: on west
        "bob": book(node, tokens["bob"], 2, 7, accept=True),
        "bob_held": book(node, tokens["bob"], 8, 4, accept=False),
        "alice_held": book(node, tokens["alice"], 10, 1, accept=False),
    }


@pytest.fixture(scope="module")
def browser(selenium: Any) -> Iterator[Any]:
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    options = Options()
    options.binary_location = CHROMIUM
    for flag in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--window-size=1280,1000",
        "--lang=en-GB",
        "--force-device-scale-factor=1",
    ):
        options.add_argument(flag)  # fmt: skip
    service = Service(CHROMEDRIVER, env={**os.environ, "TZ": ZONE})  # the user is in Paris
    try:
        driver = selenium.Chrome(options=options, service=service)
    except Exception as exc:  # a browser that cannot start here is a missing dependency
        if REQUIRE:
            raise
        pytest.skip(f"chromium does not start: {exc}")
    driver.set_page_load_timeout(30)
    yield driver
    driver.quit()


def wait_for(browser: Any, css: str, timeout: float = WAIT) -> Any:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions
    from selenium.webdriver.support.wait import WebDriverWait

    return WebDriverWait(browser, timeout).until(
        expected_conditions.presence_of_element_located((By.CSS_SELECTOR, css))
    )


@pytest.fixture(scope="module")
def page(browser: Any, node: Node, tokens: dict[str, str], bookings: dict[str, Any]) -> Any:
    """The calendar of the day ahead, signed in as alice by typing her token."""
    from selenium.webdriver.common.by import By

    browser.get(f"{node.url}/calendar?from={text(at(0))}&days=1")
    field = wait_for(browser, "#token")
    field.send_keys(tokens["alice"])
    browser.find_element(By.CSS_SELECTOR, "#token-form button[type=submit]").click()
    wait_for(browser, f'button.bar[data-session="{bookings["alice"]["uuid"]}"]')
    return browser


ZONE_OF = "return Intl.DateTimeFormat().resolvedOptions().timeZone"


def clock(page: Any, instant: datetime, zone: str | None = None) -> str:
    """The time of day of ``instant`` as the browser writes it (in its locale), in its own time
    zone or in ``zone``."""
    return str(page.execute_script(
        "return new Intl.DateTimeFormat(undefined, {hour: '2-digit', minute: '2-digit', "
        "timeZone: arguments[1] || undefined}).format(new Date(arguments[0]))",
        text(instant), zone,
    ))  # fmt: skip


def section(page: Any, pool: str) -> Any:
    from selenium.webdriver.common.by import By

    return page.find_element(By.CSS_SELECTOR, f'section.pool[data-pool="{pool}"]')


def test_a_confirmed_booking_is_drawn_in_its_pool_at_its_time(page, bookings):
    from selenium.webdriver.common.by import By

    alice = bookings["alice"]
    assert (alice["pool"], bookings["bob"]["pool"]) == ("east/main", "west/main")
    pool = section(page, alice["pool"])
    bars = pool.find_elements(By.CSS_SELECTOR, f'button.bar[data-session="{alice["uuid"]}"]')
    assert len(bars) == 1
    bar = bars[0]
    assert bar.get_attribute("data-state") == "confirmed"
    assert "own" in bar.get_attribute("class").split()
    assert bar.get_attribute("data-start") == text(at(2))
    assert bar.get_attribute("data-end") == text(at(3))
    # where it is drawn: 2 h into a 24 h window, an hour wide
    lanes = pool.find_element(By.CSS_SELECTOR, ".lanes")
    left = (bar.rect["x"] - lanes.rect["x"]) / lanes.rect["width"]
    width = bar.rect["width"] / lanes.rect["width"]
    assert abs(left - 2 / 24) < 0.01 and abs(width - 1 / 24) < 0.01, (left, width)
    # its label reads in the user's time zone, with UTC beside it
    label = bar.get_attribute("aria-label")
    assert page.execute_script(ZONE_OF) == ZONE
    assert clock(page, at(2)) in label and f"{clock(page, at(2), 'UTC')} UTC" in label
    # and in no other pool
    for other in page.find_elements(By.CSS_SELECTOR, "section.pool"):
        if other.get_attribute("data-pool") != alice["pool"]:
            assert alice["uuid"] not in other.get_attribute("innerHTML")
    # the chart of its pool shows it booked then
    chart = pool.find_element(By.CSS_SELECTOR, "svg.chart")
    assert chart.find_elements(By.CSS_SELECTOR, "rect.area.confirmed")


def test_another_users_session_is_anonymous_occupancy(page, bookings):
    from selenium.webdriver.common.by import By

    bob = bookings["bob"]
    pool = section(page, bob["pool"])
    anonymous = [
        b for b in pool.find_elements(By.CSS_SELECTOR, ".bar.anonymous")
        if b.get_attribute("data-start") == text(at(2))
    ]  # fmt: skip
    assert len(anonymous) == 1
    assert anonymous[0].tag_name == "span"  # nothing to click, nothing to open
    assert anonymous[0].get_attribute("data-session") is None
    assert "someone else" in anonymous[0].get_attribute("aria-label")
    source = page.page_source
    for secret in (bob["uuid"], bob["offerset"], bookings["bob_held"]["uuid"], "test:bob"):
        assert secret not in source


def test_maintenance_is_drawn_in_its_pool(page):
    from selenium.webdriver.common.by import By

    pool = section(page, "west/main")
    (bar,) = pool.find_elements(By.CSS_SELECTOR, ".bar.maintenance")
    assert (bar.get_attribute("data-start"), bar.get_attribute("data-end")) == (
        text(at(12)), text(at(15)))  # fmt: skip
    assert "4 cores" in bar.get_attribute("aria-label")
    assert pool.find_elements(By.CSS_SELECTOR, "rect.area.maintenance")
    assert not section(page, "east/main").find_elements(By.CSS_SELECTOR, ".bar.maintenance")


def test_a_click_opens_the_session(page, bookings):
    from selenium.webdriver.common.by import By

    alice = bookings["alice"]
    page.find_element(By.CSS_SELECTOR, f'button.bar[data-session="{alice["uuid"]}"]').click()
    dialog = wait_for(page, "dialog#session-dialog[open]")
    assert alice["uuid"] in dialog.text
    from selenium.webdriver.support.wait import WebDriverWait

    WebDriverWait(page, WAIT).until(
        lambda d: '"phase": "ACCEPTED"' in d.find_element(By.ID, "session-json")
        .get_attribute("textContent")
    )  # fmt: skip
    page.find_element(By.ID, "session-close").click()
    WebDriverWait(page, WAIT).until(lambda d: not d.find_elements(By.CSS_SELECTOR, "dialog[open]"))


def drag(page: Any, chart: Any, start: float, end: float, hours: float = 24) -> None:
    """Press on the chart at ``start`` hours into the window, let go at ``end``."""
    from selenium.webdriver.common.action_chains import ActionChains

    width = chart.rect["width"]
    x = lambda h: round(h / hours * width - width / 2)  # noqa: E731 (offsets from the centre)
    chain = ActionChains(page)
    chain.move_to_element_with_offset(chart, x(start), 0).click_and_hold()
    chain.move_to_element_with_offset(chart, x((start + end) / 2), 0)
    chain.move_to_element_with_offset(chart, x(end), 0).release().perform()


def test_picking_a_free_slot_prefills_a_request_that_gets_offers(page, bookings, node):
    from selenium.webdriver.common.by import By

    pool = section(page, bookings["alice"]["pool"])
    page.execute_script("arguments[0].scrollIntoView({block: 'center'})", pool)
    chart = pool.find_element(By.CSS_SELECTOR, "svg.chart")
    drag(page, chart, 3, 4)
    value = lambda name: page.find_element(By.ID, name).get_attribute("value")  # noqa: E731
    local_start = at(3).astimezone(ZoneInfo(ZONE))
    assert value("req-start") == f"{local_start:%Y-%m-%dT%H:%M}"
    assert value("req-duration") == "60"
    assert value("req-within") == "0"
    # all 8 cores of the pool are free then (alice's ends at 3 h), and 32 GiB
    assert (value("req-cores-min"), value("req-cores-max")) == ("1", "8")
    assert value("req-memory-max") == "32"
    note = page.find_element(By.ID, "request-note").text
    assert bookings["alice"]["pool"] in note and f"{clock(page, at(3), 'UTC')} UTC" in note
    assert page.find_element(By.CSS_SELECTOR, "rect.selection").get_attribute("visibility") == (
        "visible")  # fmt: skip

    screenshot = os.environ.get("EBROKER_CALENDAR_SCREENSHOT")
    if screenshot:
        size = page.get_window_size()
        page.set_window_size(1280, 1560)  # both pools and the form's first lines
        page.execute_script("window.scrollTo(0, 0)")
        page.save_screenshot(screenshot)
        page.set_window_size(size["width"], size["height"])

    page.find_element(By.ID, "req-submit").click()
    first = wait_for(page, "#offers tr.offer")
    offers = page.find_elements(By.CSS_SELECTOR, "#offers tr.offer")
    assert offers and first.get_attribute("data-offer")
    # the offer is the slot picked: it starts then, in the user's time and in UTC
    assert clock(page, at(3)) in first.text and f"{clock(page, at(3), 'UTC')} UTC" in first.text
    token = page.execute_script('return sessionStorage.getItem("ebroker.calendar.token")')
    r = httpx.get(f"{node.url}/sessions/{first.get_attribute('data-offer')}",
                  headers={"Authorization": f"Bearer {token}"}, timeout=10)  # fmt: skip
    assert r.status_code == 200 and r.json()["phase"] == "OFFERED"
    assert r.json()["schedule"]["available"]["start"].startswith(text(at(3)))


def test_the_page_loads_nothing_from_elsewhere(page, node):
    from selenium.webdriver.common.by import By

    for element in page.find_elements(By.CSS_SELECTOR, "script[src], link[href]"):
        for attribute in ("src", "href"):
            url = element.get_attribute(attribute)
            if url:
                assert url.startswith(f"{node.url}/"), url
    r = httpx.get(f"{node.url}/calendar", timeout=10)
    assert "script-src 'self'" in r.headers["content-security-policy"]


def test_free_time_is_reached_with_the_keyboard(page, bookings):
    """Every free stretch is a row of a list under the chart, with a button that pre-fills the
    request as a drag does: no mouse needed."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    pool = section(page, bookings["bob"]["pool"])
    summary = pool.find_element(By.CSS_SELECTOR, "details.free > summary")
    summary.send_keys(Keys.ENTER)  # opens the list
    buttons = pool.find_elements(By.CSS_SELECTOR, "details.free[open] button.pick")
    # west is free but for bob's 7 cores at 2 h and the maintenance's 4 from 12 h to 15 h
    starts = f"{clock(page, at(3))} to"  # the stretch from 3 h on
    after_bob = next(b for b in buttons if starts in b.get_attribute("aria-label"))
    after_bob.send_keys(Keys.ENTER)
    value = lambda name: page.find_element(By.ID, name).get_attribute("value")  # noqa: E731
    assert value("req-start") == f"{at(3).astimezone(ZoneInfo(ZONE)):%Y-%m-%dT%H:%M}"
    assert value("req-duration") == str(9 * 60)  # until the maintenance
    assert value("req-cores-max") == "8"
    assert page.switch_to.active_element == page.find_element(By.ID, "req-cores-max")
