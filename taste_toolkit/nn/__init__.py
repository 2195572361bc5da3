"""Reusable neural-network building blocks (Transformer layers, positions, KV cache)."""
