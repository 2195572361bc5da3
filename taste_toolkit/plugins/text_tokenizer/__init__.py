"""Built-in text_tokenizer plugins (one per file, registered on import)."""
