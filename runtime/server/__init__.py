"""`edgelm serve`: an OpenAI-compatible HTTP server on the batching engine (needs the `serve` extra)."""
