"""Built-in vocoder plugins (one per file, registered on import)."""
