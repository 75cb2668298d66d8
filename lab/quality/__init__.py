"""Recommendation quality: the benchmark protocols, their splits, the peers and the hybrid model.

- `data`: interactions in file order (MovieLens-100k or any user_id,item_id,timestamp CSV);
- `splits`: Microsoft Recommenders' stratified split, leave-last-out, global-time, cold users/items;
- `peers`: popularity, EASE, implicit ALS/BPR, cornac BPR, behind one `fit`/`score` face;
- `seqrec`: the causal self-attention user tower (the sequential retrieval source);
- `hybrid`: the project's model on each protocol (EASE + towers + content path);
- `beyond`: coverage, popularity percentile, intra-list diversity, MMR re-rank;
- `protocols`: protocols 1-4 of docs/architecture.md (How quality is measured) plus cold start, each a function of a model factory.
- `defaults`: the tuned hyperparameters (DEFAULTS); `tuning`: the studies and grids that chose them.
"""
