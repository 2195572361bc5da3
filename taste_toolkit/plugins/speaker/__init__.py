"""Built-in speaker plugins (one per file, registered on import)."""
