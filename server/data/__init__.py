"""Data: the importers (your catalogue, events and users files) and MovieLens-100k (real); the synthetic
marketplace simulator is research and lives in lab/."""
