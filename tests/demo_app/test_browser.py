"""The phone page in a real browser: online, offline, back online; every event reaches the server once.

Debian's Chromium (/usr/bin/chromium) driven by playwright; no browser is downloaded.
"""

import sqlite3
import time
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import expect, sync_playwright

from pocketrank.demo_app.screenshots import CHROMIUM, OPERATOR_VIEWPORT, PHONE_VIEWPORT, Phone, launch
from pocketrank.demo_app.stack import DemoStack

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(not Path(CHROMIUM).exists(),
                                 reason=f"{CHROMIUM} is absent: `apt-get install chromium` to run the browser tests")]


@pytest.fixture(scope="module")
def browser():
    with sync_playwright() as pw:
        b = launch(pw)
        yield b
        b.close()


@pytest.fixture
def stack(home, tmp_path):
    # A generous latency budget: CI machines are shared, and "online" must mean the server answers.
    with DemoStack(home, workdir=tmp_path, latency_budget=2.0, device_id="browser-phone") as s:
        yield s


@pytest.fixture
def page(browser):
    p = browser.new_page(viewport=PHONE_VIEWPORT)
    p.set_default_timeout(15_000)
    yield p
    p.close()


def server_counts(home: Path, device_id: str) -> dict[str, int]:
    """event_id -> rows in the server's event log, read-only."""
    with sqlite3.connect(f"file:{home / 'store.sqlite'}?mode=ro", uri=True) as db:
        return dict(db.execute("SELECT event_id, COUNT(*) FROM events WHERE device_id = ? GROUP BY event_id",
                               [device_id]).fetchall())


def test_feed_survives_offline_and_every_event_arrives_once(stack, page, home):
    phone = Phone(page).open(stack.url + "/")
    badge = page.locator("#source-badge")
    expect(badge).to_have_text("server")
    assert len(phone.item_ids()) == 10
    expect(page.locator("#feed > li").first).to_contain_text("synthetic price")

    phone.act("click", 2)  # online: uploaded at once, the server's list reacts
    expect(badge).to_have_text("server")

    phone.network("offline")
    expect(badge).to_contain_text("on-device")
    assert badge.get_attribute("data-source") == "edge"
    expect(page.locator("#signal-text")).to_have_text("No signal")
    before = phone.item_ids()
    clicked = before[3]
    phone.act("click", 3)
    after = phone.item_ids()
    expect(badge).to_contain_text("on-device")  # still served, from the device
    assert len(after) == 10 and after != before and clicked not in after
    expect(page.locator("#outbox-count")).not_to_have_text("0")  # the click waits on the device

    phone.network("online")
    expect(page.locator("#banner")).to_contain_text("→ 0")  # the reconnect drained the outbox
    expect(badge).to_have_text("server")

    # The new list's impressions upload with the next upload job; then nothing is left.
    deadline = time.monotonic() + 15
    while httpx.get(stack.url + "/api/status").json()["outbox"] and time.monotonic() < deadline:
        time.sleep(0.2)
    expect(page.locator("#outbox-count")).to_have_text("0")
    tracked = httpx.get(stack.url + "/api/events").json()["events"]
    ids = [e["event_id"] for e in tracked]
    assert len(ids) == len(set(ids)) and {"click", "impression"} <= {e["type"] for e in tracked}
    assert server_counts(home, "browser-phone") == {i: 1 for i in ids}


def test_search_cart_buy_and_the_operator_page(stack, page, home):
    phone = Phone(page).open(stack.url + "/")
    phone.search("star wars")
    expect(page.locator("#results-list > li").first).to_contain_text("Star Wars")
    phone.act("add_to_cart", 0)
    phone.act("purchase", 1)
    phone.user("186")
    phone.act("view", 0)

    page.set_viewport_size(OPERATOR_VIEWPORT)
    page.goto(stack.url + "/operator")
    expect(page.locator("#c-ctr svg path").first).to_be_attached()
    expect(page.locator("#c-revenue svg path").first).to_be_attached()
    expect(page.locator("#tiles")).to_contain_text("impressions")
    expect(page.locator("#versions")).to_contain_text("ready")
    metrics = httpx.get(stack.url + "/api/metrics").json()
    assert metrics["totals"]["lists"] == 6 and metrics["totals"]["impressions"] == 60
    assert metrics["totals"]["purchases"] == 1 and metrics["totals"]["revenue"] > 0
    assert set(metrics["ctr"]["user"]) == {"196", "186"}
    assert metrics["versions"]["server"]["model_version"] == metrics["versions"]["device"]["model_version"]
    # The server's own monitoring sees the uploaded impressions under the path that served them.
    expect(page.locator("#server-table")).to_contain_text("server", timeout=15_000)
    by_source = httpx.get(stack.url + "/api/metrics").json()["server_monitoring"]["by_source"]
    assert by_source["server"]["impressions"] >= 10 and by_source["server"]["clicks"] == 0
