"""Built-in units plugins (one per file, registered on import)."""
