"""Training: the torch model, its training loop, per-user sequences and splits, the event log as
training history, and offline evaluation (ranking metrics)."""
