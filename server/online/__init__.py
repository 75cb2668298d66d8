"""Online: what answers a request and keeps user vectors fresh: serving, the ranker per model version,
the catalogue, cold-start segments, the real-time updater and the fold of events into user vectors."""
