"""Data sets: MovieLens-100k (real) and the marketplace simulator (synthetic)."""
