"""Built-in quantizer plugins (one per file, registered on import)."""
