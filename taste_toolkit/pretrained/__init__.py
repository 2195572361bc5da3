"""Offline pretrained weights: loaders and converters for models bundled in registry packages."""
