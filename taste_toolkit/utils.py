"""Small shared helpers (length conventions, hashing, atomic writes)."""

import contextlib
import hashlib
import json
import os
import tempfile

import torch


def relative_to_absolute(rel_lengths, max_len):
    """SpeechBrain relative lengths (0-1) ``(B,)`` -> absolute counts ``(B,)`` (long).

    Example
    -------
    >>> relative_to_absolute(torch.tensor([1.0, 0.5]), 10).tolist()
    [10, 5]
    """
    return torch.round(rel_lengths * max_len).long()


def lengths_to_mask(lengths, max_len=None):
    """``(B,)`` lengths -> ``(B, T)`` bool mask, True on valid positions."""
    max_len = int(lengths.max()) if max_len is None else max_len
    return torch.arange(max_len, device=lengths.device)[None] < lengths[:, None]


def stable_hash(obj):
    """Short sha1 of a JSON-serializable object (cache keys)."""
    return hashlib.sha1(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]


@contextlib.contextmanager
def atomic_write(path, mode="w"):
    """Write ``path`` through a temp file in the same folder, then rename it in place."""
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=".tmp_")
    try:
        with os.fdopen(fd, mode) as f:
            yield f
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
