"""Monitoring: CTR, bounce and revenue per segment, and drift.

    collector  pure functions over events: figures overall, per segment, per time bucket
    drift      population stability index with a sample-size-aware noise floor, and a decision record
    prom       the figures as Prometheus metrics, on a private CollectorRegistry
    running    the collector's figures kept up to date as the log grows (what the metrics endpoints serve)
    window     one window's figures as running totals, so a scrape costs O(segments + buckets)
    service    the service's own metrics: requests, latency, errors, sync bytes, ingest and updater lag,
               summed over gunicorn workers (prometheus_client's multiprocess mode)
    source     the log's head, and the events after a position (the canary rule's evidence)

The canary rule, the model registry and shadow mode are in server/release/; the canary job
(pocketrank canary) is server/jobs/rollout.py; simulated rollouts are research, in lab/simulate.py.
"""
