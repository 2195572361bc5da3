"""Built-in metric plugins (one per file, registered on import)."""
