"""Built-in codec plugins: neural audio codec baselines (one per file, registered on import)."""
