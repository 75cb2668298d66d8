"""Release rules: which model version is served: the model registry, canary assignment and the
promote/rollback rule, shadow comparisons, and the retrain's hold-out gate."""
