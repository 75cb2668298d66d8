"""Research, not shipped: recommendation-quality protocols, the marketplace simulator, simulated rollouts
and quantization candidates. bench/ and tests/ import it; the product (server, pocketrank, ...) never does."""
