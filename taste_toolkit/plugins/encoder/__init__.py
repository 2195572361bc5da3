"""Built-in encoder plugins (one per file, registered on import)."""
