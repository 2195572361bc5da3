"""Built-in fusion plugins (one per file, registered on import)."""
