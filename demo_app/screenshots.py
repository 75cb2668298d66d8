"""`python -m pocketrank.demo_app.screenshots`: refresh the README's screenshots of the demo app.

Starts the interactive stack on a published home (default var/demo, set up as
`make demo` does when it has no bundle yet), clicks through a short session in
headless Chromium (Debian's /usr/bin/chromium, driven by playwright; nothing
is downloaded) and writes docs/screenshots/feed-online.png, feed-offline.png
and operator.png.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--disable-quic"]
PHONE_VIEWPORT = {"width": 860, "height": 896}
OPERATOR_VIEWPORT = {"width": 1280, "height": 900}


def launch(playwright):
    """Debian's Chromium, headless; `playwright install` is never needed."""
    return playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)


class Phone:
    """The page-level moves the tests and the screenshots share."""

    def __init__(self, page):
        self.page = page

    def open(self, url: str) -> Phone:
        self.page.goto(url)
        self.page.wait_for_function("Number(document.querySelector('#feed').dataset.listId) > 0")
        return self

    @property
    def list_id(self) -> int:
        return int(self.page.locator("#feed").get_attribute("data-list-id"))

    def item_ids(self) -> list[str]:
        """The feed's products, by their own ids."""
        return self.page.locator("#feed > li[data-item-id]").evaluate_all("els => els.map(e => e.dataset.itemId)")

    def source(self) -> str:
        return self.page.locator("#source-badge").inner_text()

    def act(self, action: str, position: int) -> None:
        """Press an item's button (click, view, add_to_cart, purchase) and wait for the next list."""
        before = self.list_id
        self.page.locator(f"#feed > li:nth-child({position + 1}) button[data-action='{action}']").click()
        self.page.wait_for_function(f"Number(document.querySelector('#feed').dataset.listId) > {before}")

    def network(self, mode: str) -> None:
        before = self.list_id
        self.page.locator(f"#net-{mode}").click()
        self.page.wait_for_function(f"Number(document.querySelector('#feed').dataset.listId) > {before}")

    def search(self, query: str) -> None:
        before = self.list_id
        self.page.locator("#search").fill(query)
        self.page.locator("#search-form button").click()
        self.page.wait_for_function(f"Number(document.querySelector('#feed').dataset.listId) > {before}")

    def user(self, user_id: str) -> None:
        before = self.list_id
        self.page.locator("#user").select_option(user_id)
        self.page.wait_for_function(f"Number(document.querySelector('#feed').dataset.listId) > {before}")


def capture(home: Path, out_dir: Path, out=print) -> list[Path]:
    from playwright.sync_api import sync_playwright

    from .stack import DemoStack

    out_dir.mkdir(parents=True, exist_ok=True)
    paths = [out_dir / "feed-online.png", out_dir / "feed-offline.png", out_dir / "operator.png"]
    with DemoStack(home, latency_budget=1.0) as stack, sync_playwright() as pw:
        browser = launch(pw)
        page = browser.new_page(viewport=PHONE_VIEWPORT, device_scale_factor=1.5)
        phone = Phone(page).open(stack.url + "/")
        # A short session: browse and click online, then offline, then back.
        phone.act("view", 1)
        phone.act("click", 2)
        phone.act("add_to_cart", 0)
        time.sleep(1.2)  # let the status panel's poll catch up
        page.mouse.move(0, 0)  # no hover highlight in the picture
        page.screenshot(path=str(paths[0]))
        out(f"   {paths[0]}")

        phone.network("offline")
        phone.act("click", 3)
        phone.act("click", 1)
        time.sleep(1.2)
        page.mouse.move(0, 0)
        page.screenshot(path=str(paths[1]))
        out(f"   {paths[1]}")

        # More of a session, paced like a person, so the operator's time series have a shape.
        steps: list[tuple[str, Any]] = [("network", "online"), ("purchase", 0), ("search", "star wars"), ("view", 0), ("user", "186"),
                 ("click", 0), ("view", 3), ("purchase", 2), ("network", "offline"), ("view", 4), ("click", 2),
                 ("add_to_cart", 1), ("network", "online"), ("click", 5), ("user", "22"), ("view", 1),
                 ("click", 1), ("network", "poor"), ("click", 0), ("network", "online"), ("purchase", 3)]
        for what, arg in steps:
            if what == "network":
                phone.network(arg)
            elif what == "search":
                phone.search(arg)
            elif what == "user":
                phone.user(arg)
            else:
                phone.act(what, arg)
            time.sleep(0.8)
        time.sleep(2.0)  # the last uploads and one-second samples

        page.set_viewport_size(OPERATOR_VIEWPORT)
        page.goto(stack.url + "/operator")
        page.wait_for_selector("#c-ctr svg path")
        time.sleep(0.5)
        page.screenshot(path=str(paths[2]), full_page=True)
        out(f"   {paths[2]}")
        browser.close()
    return paths


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pocketrank.demo_app.screenshots", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--home", type=Path, default=Path("var") / "demo", help="published server home (default: var/demo)")
    parser.add_argument("--out", type=Path, default=Path("docs") / "screenshots")
    parser.add_argument("--epochs", type=int, default=None, help="cap training epochs if the home has no bundle yet")
    args = parser.parse_args(argv)
    if not Path(CHROMIUM).exists():
        raise SystemExit(f"{CHROMIUM} not found: apt-get install chromium")
    from .scenario import prepare

    home = prepare(args.home, args.epochs, only_if_missing=True)
    print("== screenshots")
    capture(home, args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
