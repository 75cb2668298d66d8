"""Monitoring and iteration: CTR, bounce and revenue per segment, drift, canaries, the model registry.

    collector  pure functions over events: figures overall, per segment, per time bucket
    drift      population stability index with a sample-size-aware noise floor, and a decision record
    canary     stable hashing of users to an arm, and the promote / rollback / continue rule
    registry   model versions with metrics, lineage and state (candidate, canary, live, retired)
    rollout    the canary job: start a rollout, look, and promote, widen or roll back (pocketrank canary)
    shadow     shadow mode: a candidate ranks a sample of requests beside the served model, never served
    prom       the figures as Prometheus metrics, on a private CollectorRegistry
    source     the one place that reads events from the server's store
    simulate   simulated rollouts on the marketplace simulator, for tests and bench/ab
"""
