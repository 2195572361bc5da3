"""Models composed from plugins."""
