"""Built-in aggregator plugins (one per file, registered on import)."""
