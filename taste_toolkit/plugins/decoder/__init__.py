"""Built-in decoder plugins (one per file, registered on import)."""
