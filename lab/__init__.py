"""Research, not shipped: recommendation-quality protocols, the marketplace simulator, simulated rollouts,
quantization candidates, and the derived model versions and simulated users (served_models) that tests
and benches share. bench/ and tests/ import it; the product (server, pocketrank, ...) never does."""
