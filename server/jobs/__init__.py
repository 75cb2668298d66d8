"""Batch jobs, one per CLI command: train/export, retrain, refresh-items, features, rebase, the canary
rollout (and its Watcher), and the quickstart train/recommend on files."""
