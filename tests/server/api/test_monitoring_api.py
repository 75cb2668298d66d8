"""GET /metrics and GET /v1/metrics/summary through Flask's test client."""

from __future__ import annotations

import time

from pocketrank.server.release.registry import Registry
from tests.factories import complete_scrape, event_dict

T0 = int(time.time()) - 600  # the server refuses events from the future


def post_sessions(api):
    rows = [  # event id, user, type, item, seconds, session id, context
        ("mon-1", "mu1", "impression", 1, 0, "ms1", dict(source="server", platform="android")),
        ("mon-2", "mu1", "impression", 2, 1, "ms1", dict(source="server", platform="android")),
        ("mon-3", "mu1", "click", 1, 2, "ms1", dict(source="server", platform="android")),
        ("mon-4", "mu1", "purchase", 1, 3, "ms1", dict()),
        ("mon-5", "mu2", "impression", 3, 10, "ms2", dict(source="edge", connectivity="offline")),
        ("mon-6", "mu2", "impression", 4, 11, "ms2", dict(source="edge", connectivity="offline")),
    ]
    batch = [event_dict(event_id, user, item, etype, ts=T0 + t, device=f"d-{user}", session_id=session,
                        **({"context": context} if context else {}))
             for event_id, user, etype, item, t, session, context in rows]
    body = api.post("/v1/events", json={"events": batch}).get_json()
    assert body["accepted"] == len(batch), body


def test_summary_has_overall_segments_timeseries_and_models(api, home):
    post_sessions(api)
    Registry(home).register("m-next", {"hr@10": 0.1}, {"parent": "current"})
    resp = api.get("/v1/metrics/summary?window=3600&bucket=60")
    assert resp.status_code == 200
    s = resp.get_json()
    o = s["overall"]
    assert (o["impressions"], o["clicks"], o["sessions"], o["bounces"], o["purchases"]) == (4, 1, 2, 1, 1)
    assert o["ctr"] == 0.25 and o["bounce_rate"] == 0.5 and o["revenue"] > 0
    assert s["by_segment"]["source"]["edge"]["bounce_rate"] == 1.0
    assert s["by_segment"]["source"]["server"]["ctr"] == 0.5
    assert s["by_segment"]["connectivity"]["offline"]["impressions"] == 2
    assert sum(b["sessions"] for b in s["timeseries"]) == 2
    assert s["models"]["current"] and s["registry"] == {"m-next": "candidate"} and s["canary"] is None
    assert s["events_per_second"] > 0 and s["window"]["events"] == 6


def test_metrics_is_prometheus_text(api):
    post_sessions(api)
    resp = api.get("/metrics?window=3600")
    assert resp.status_code == 200 and resp.content_type.startswith("text/plain")
    text = complete_scrape(api, "?window=3600")
    assert 'pocketrank_ctr{key="all",value="all"} 0.25' in text
    assert 'pocketrank_bounce_rate{key="source",value="edge"} 1.0' in text
    assert "# TYPE pocketrank_revenue_per_user gauge" in text
    assert "pocketrank_model_info{" in text


def test_bad_parameters_get_a_400(api):
    for query in ("window=abc", "window=-1", "bucket=0", "window=86400&bucket=1"):
        resp = api.get(f"/v1/metrics/summary?{query}")
        assert resp.status_code == 400 and resp.get_json()["field"] in ("window", "bucket")


def test_a_running_canary_is_in_the_summary_and_in_prometheus(api, home):
    from lab.served_models import derive_version
    from pocketrank.server.config import Config
    from pocketrank.server.jobs import rollout
    from pocketrank.server.stores import open_store

    store = open_store(Config(home=home))
    derive_version(home, store, "m-next")
    Registry(home).register("m-next")
    ro = rollout.start(home, store, "m-next", 0.05)
    store.close()
    s = api.get("/v1/metrics/summary").get_json()
    assert s["canary"]["rollout_id"] == ro["rollout_id"] and s["canary"]["share"] == 0.05
    assert s["canary"]["looks"] == 0 and s["canary"]["last_decision"] is None
    assert s["models"]["canary"] == "m-next" and s["registry"]["m-next"] == "canary"
    text = api.get("/metrics").get_data(as_text=True)
    assert "pocketrank_canary_share 0.05" in text and "pocketrank_canary_looks 0.0" in text
    assert 'pocketrank_model_info{role="canary",version="m-next"} 1.0' in text


def test_a_new_workers_first_scrape_does_not_wait_for_the_log(api, monkeypatch):
    """The trained home's log holds 100,000 events: reading them takes seconds, a scrape must not."""
    from pocketrank.server.api import monitoring

    monkeypatch.setattr(monitoring, "INLINE_SECONDS", 0.0)  # however fast this machine, the read is left behind
    running = api.application.extensions["pocketrank.metrics"]
    t0 = time.monotonic()
    resp = api.get("/metrics")
    assert resp.status_code == 200 and running.following
    text = resp.get_data(as_text=True)
    assert "pocketrank_business_figures_complete 0.0" in text
    assert 'pocketrank_sessions{' not in text  # figures from the log's oldest part would be wrong, not merely stale
    assert "pocketrank_http_requests_total" in text and "pocketrank_bundle_version" in text
    assert time.monotonic() - t0 < 5  # not the whole read (the bound itself is bench metrics' to measure)

    monkeypatch.setattr(monitoring, "JSON_WAIT_SECONDS", 0.0)
    busy = api.get("/v1/metrics/summary")
    if running.following:  # still reading: a 503 that says when to ask again
        assert busy.status_code == 503 and busy.headers["Retry-After"] == str(monitoring.RETRY_AFTER_SECONDS)
        assert "still reading the event log" in busy.get_json()["message"]
    assert running.wait(120) and running.complete
    s = api.get("/v1/metrics/summary").get_json()
    assert s["window"]["events"] > 0 and running.pos == api.application.extensions["pocketrank"].store.log_head()
    text = api.get("/metrics").get_data(as_text=True)
    assert "pocketrank_business_figures_complete 1.0" in text and 'pocketrank_sessions{key="all"' in text
    assert "pocketrank_business_figures_behind_seconds 0.0" in text
