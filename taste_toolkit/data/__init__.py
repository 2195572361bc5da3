"""Data preparation: synthetic corpora, manifests and dataset helpers."""
