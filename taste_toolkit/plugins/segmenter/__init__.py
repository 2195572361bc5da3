"""Built-in segmenter plugins (one per file, registered on import): words for every script."""
