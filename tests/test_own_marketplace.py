"""A marketplace that is not MovieLens, end to end through the one production pipeline.

The simulator's shop (string SKUs, category paths, EUR prices, impressions, carts, purchases,
ISO-8601 times with a zone) is written as its own Parquet and JSON Lines files, with its own
column names; imported with `pocketrank import` and --map; trained, exported and published; served
by a real server process; synced to a real EdgeClient; and reranked on the device offline, the
products named by their SKUs everywhere.
"""

from __future__ import annotations

import json
import sqlite3

import pytest
from click.testing import CliRunner

from lab.sim_files import CATALOGUE_MAP, EVENTS_MAP, write_marketplace
from lab.simulator import MarketplaceSimulator, SimConfig
from pocketrank.cli import main
from pocketrank.demo_app.localserver import LocalServer
from pocketrank.edge_runtime import EdgeClient

pytestmark = pytest.mark.slow  # see `make test-fast`


def _maps(mapping: dict[str, str]) -> list[str]:
    return [arg for k, v in mapping.items() for arg in ("--map", f"{k}={v}")]


def _cli(*args: str) -> str:
    result = CliRunner().invoke(main, list(args), catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.output


@pytest.fixture(scope="module")
def shop_home(tmp_path_factory):
    sim = MarketplaceSimulator(SimConfig(n_users=400, n_items=300, n_days=12, seed=3))
    files = tmp_path_factory.mktemp("shop")
    cat_pq, ev_pq = write_marketplace(sim, files / "pq", "parquet")
    cat_js, ev_js = write_marketplace(sim, files / "js", "jsonl")
    home = str(tmp_path_factory.mktemp("home"))
    _cli("import", "catalogue", str(cat_pq), "--home", home, "--no-progress", *_maps(CATALOGUE_MAP))
    out = _cli("import", "events", str(ev_pq), "--home", home, "--no-progress", "--json", *_maps(EVENTS_MAP))
    first = json.loads(out)
    # The same log as JSON Lines adds nothing: events are idempotent by their id.
    again = json.loads(_cli("import", "events", str(ev_js), "--home", home, "--no-progress", "--json",
                            *_maps(EVENTS_MAP)))
    _cli("import", "catalogue", str(cat_js), "--home", home, "--no-progress", *_maps(CATALOGUE_MAP))
    _cli("train", "--home", home, "--epochs", "2")
    _cli("export", "--home", home)
    _cli("publish", "--home", home)
    return home, first, again, (cat_pq, ev_pq)


def test_the_shop_imports_once(shop_home):
    home, first, again, _ = shop_home
    assert first["accepted"] > 5000 and first["rejected"] == 0
    assert again["accepted"] == 0 and again["duplicates"] == first["accepted"]
    with sqlite3.connect(f"{home}/store.sqlite") as db:
        skus = {r[0] for r in db.execute("SELECT sku FROM items")}
        types = {r[0] for r in db.execute("SELECT DISTINCT type FROM events")}
    assert len(skus) == 300 + 11 * 5 and all(s.startswith("SKU-") for s in skus)
    assert {"impression", "click", "add_to_cart", "purchase", "search"} <= types


def test_a_phone_gets_the_shop_by_its_skus_online_and_offline(shop_home, tmp_path):
    home, _, _, _ = shop_home
    key = open(f"{home}/keys/signing.pub").read().strip()
    with sqlite3.connect(f"{home}/store.sqlite") as db:
        user = db.execute("SELECT user_id FROM events WHERE type = 'click' GROUP BY user_id "
                          "ORDER BY COUNT(*) DESC LIMIT 1").fetchone()[0]
    with LocalServer(__import__("pathlib").Path(home)) as server:
        client = EdgeClient(tmp_path / "phone.sqlite", key, base_url=server.url, device_id="shop-phone",
                            latency_budget=2.0)
        client.sync([user])
        online = client.recommend(user, 10)
        assert online.source == "server" and len(online.items) == 10
        assert all(i.item_id.startswith("SKU-") for i in online.items)
        server.stop()
        before = client.recommend(user, 10)
        assert before.source == "edge" and all(i.item_id.startswith("SKU-") for i in before.items)
        for sku in before.item_ids[:3]:
            client.track(user, "click", sku)
        after = client.recommend(user, 10)
        assert after.source == "edge" and not set(before.item_ids[:3]) & set(after.item_ids)
        assert after.item_ids != before.item_ids
        server.start()
        flushed = client.flush()
        assert flushed.acknowledged == 3 and flushed.remaining == 0
        client.close()
    with sqlite3.connect(f"{home}/store.sqlite") as db:
        got = db.execute("SELECT items.sku FROM events JOIN items USING (item_id) WHERE device_id = 'shop-phone'"
                         ).fetchall()
    assert sorted(r[0] for r in got) == sorted(before.item_ids[:3])


def test_train_and_recommend_on_a_file_of_ones_own(tmp_path):
    events = tmp_path / "events.csv"
    rows = ["user_id,item_id,timestamp"] + [f"u{u},sku-{(u * 7 + k * 3) % 40},{1_700_000_000 + u * 100 + k}"
                                            for u in range(60) for k in range(8)]
    events.write_text("\n".join(rows) + "\n")
    users = tmp_path / "users.txt"
    users.write_text("u1\nu2\nnobody\n")
    home = tmp_path / "mine"
    _cli("train", "--interactions", str(events), "--out", str(home), "--epochs", "1")
    _cli("recommend", "--model", str(home), "--users", str(users), "-k", "5", "--out", str(tmp_path / "recs.csv"))
    lines = (tmp_path / "recs.csv").read_text().splitlines()
    assert lines[0] == "user_id,item_id,rank,score,path"
    recs = [line.split(",") for line in lines[1:]]
    assert len(recs) == 15 and all(r[1].startswith("sku-") for r in recs)
    assert {r[4] for r in recs if r[0] == "nobody"} == {"popular"}
    assert {r[4] for r in recs if r[0] == "u1"} == {"personal"}


def test_a_model_trained_on_a_window_exports_against_the_whole_log(shop_home, tmp_path):
    _, _, _, (catalogue, events) = shop_home
    home = str(tmp_path / "windowed")
    _cli("import", "catalogue", str(catalogue), "--home", home, "--no-progress", *_maps(CATALOGUE_MAP))
    _cli("import", "events", str(events), "--home", home, "--no-progress", *_maps(EVENTS_MAP))
    out = _cli("train", "--home", home, "--epochs", "1", "--window-days", "8", "--no-progress")
    assert "products without events keep content-only vectors" in out  # the window saw fewer products
    _cli("export", "--home", home)  # its parity gates map the log's products through the model's own rows
    # A window with nothing to learn from is one clear error, not a traceback.
    result = CliRunner().invoke(main, ["train", "--home", home, "--window-days", "0.001", "--no-progress"])
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert "nothing to learn from" in result.output or "no view/click" in result.output


def test_train_spends_a_linear_schedule_by_the_last_epoch(shop_home, tmp_path):
    _, _, _, (catalogue, events) = shop_home
    home = str(tmp_path / "budget")
    _cli("import", "catalogue", str(catalogue), "--home", home, "--no-progress", *_maps(CATALOGUE_MAP))
    _cli("import", "events", str(events), "--home", home, "--no-progress", *_maps(EVENTS_MAP))
    out = _cli("train", "--home", home, "--epochs", "2", "--lr-schedule", "linear", "--lr", "0.004", "--no-progress")
    assert "lr 0.004, lr_schedule linear" in out
    from pocketrank.server.home import Home

    h = Home(tmp_path / "budget")
    metrics = json.loads((h.model_dir(h.current_model()) / "metrics.json").read_text())
    assert metrics["config"]["lr_schedule"] == "linear" and metrics["config"]["lr"] == 0.004
    assert [row["lr"] for row in metrics["history"]][-1] == 0.0  # spent by the last epoch
    # The fold model has no such schedule: a usage error, not a traceback.
    for where in (["--home", home], ["--interactions", str(events), "--out", str(tmp_path / "o")]):
        for extra in (["--lr-schedule", "linear"], ["--ranker", "learned"]):
            result = CliRunner().invoke(main, ["train", *where, "--model", "fold", *extra])
            assert result.exit_code == 2 and "--lr-schedule, --lr and --ranker are for --model sequence" in result.output


def test_the_commands_schedules_and_rankers_are_the_models():
    from pocketrank.server.training.seqmodel import LR_SCHEDULES, RANKER_CHOICES

    (option,) = [p for p in main.commands["train"].params if p.name == "lr_schedule"]
    assert tuple(option.type.choices) == LR_SCHEDULES
    (option,) = [p for p in main.commands["train"].params if p.name == "ranker"]
    assert tuple(option.type.choices) == RANKER_CHOICES
