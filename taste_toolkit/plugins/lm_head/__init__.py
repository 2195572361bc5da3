"""Built-in lm_head plugins (one per file, registered on import)."""
